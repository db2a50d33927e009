"""Errors raised when a stored dataset cannot be trusted."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset on disk is missing, corrupt or hostile; the message names the file.

    Attributes:
        cli_message: the message as ``datagen``'s command line says it, where it advises other
            arguments (``--out`` for ``out``); None where the message is the same.
    """

    def __init__(self, message: str, *, cli_message: str | None = None) -> None:
        super().__init__(message)
        self.cli_message = cli_message
