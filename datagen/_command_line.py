"""What the three commands (``datagen``, ``chain``, ``bench``) share: one-line errors and output
directory options.

Click prints an error's message as given, so a line break in a path the user passed would split
the error over two lines, and the reason after the path would fall off the line that starts
``Error:``. Every error these commands print goes through :func:`one_line` instead.
"""

from __future__ import annotations

import os
from typing import Any

import click

_BREAKS = {ord(char): repr(char)[1:-1] for char in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


def one_line(text: str) -> str:
    """``text`` with its line breaks escaped as Python writes them (``\\n``), so it stays one line."""
    return text.translate(_BREAKS)


class OneLineGroup(click.Group):
    """A command group whose subcommands' errors, click's own included, print on one line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as error:
            error.message = one_line(error.message)
            raise


class OutputDir(click.Path):
    """A directory to write into, as ``click.Path(file_okay=False)``; an empty path is refused,
    since it would name the current directory and the command would write its files there."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(file_okay=False, **kwargs)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, (str, os.PathLike)) and os.fspath(value) == "":
            self.fail("expected a directory to write into; received '', which would be the current directory "
                      "(pass . for that)", param, ctx)  # fmt: skip
        return super().convert(value, param, ctx)
