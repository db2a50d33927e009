"""What the three commands (``datagen``, ``chain``, ``bench``) share: output directory options."""

from __future__ import annotations

import os
from typing import Any

import click


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
