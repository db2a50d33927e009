"""Errors raised when a stored dataset cannot be trusted."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset on disk is missing, corrupt or hostile; the message names the file."""
