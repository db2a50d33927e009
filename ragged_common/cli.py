"""What the three commands (`datagen`, `chain`, `bench`) share: one-line errors, output directory
options, and the bridge from an `OptionError` to click's exit 2 naming the option.

Click prints an error's message as given, so a line break in a path the user passed would split
the error over two lines, and the reason after the path would fall off the line that starts
`Error:`. Every error these commands print goes through `one_line` instead.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import click

from .checks import OptionError, check_choice

_BREAKS = {ord(char): repr(char)[1:-1] for char in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


def one_line(text: str) -> str:
    """`text` with its line breaks escaped as Python writes them (`\\n`), so it stays one line."""
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
    """A directory to write into, as `click.Path(file_okay=False)`; an empty path is refused,
    since it would name the current directory and the command would write its files there."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(file_okay=False, **kwargs)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, (str, os.PathLike)) and os.fspath(value) == "":
            self.fail("expected a directory to write into; received '', which would be the current directory "
                      "(pass . for that)", param, ctx)  # fmt: skip
        return super().convert(value, param, ctx)


class Choice(click.Choice):
    """`click.Choice` whose refusal is `check_choice`'s: "must be one of a, b; received 'c'"."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return check_choice(getattr(param, "name", None) or "value", value, tuple(self.choices))
        except OptionError as error:
            self.fail(error.detail, param, ctx)


def checked(check: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[[click.Context, click.Parameter, Any],
                                                                             Any]:
    """An option callback running `check(name, value, *args, **kwargs)`, `name` the option's.

    An option left out (None) is not checked. An `OptionError` exits 2 naming the option:
    "Invalid value for '--epochs': must be an integer in [1, 2147483647]; received 0".

    Examples:
        >>> from ragged_common.checks import check_int
        >>> option = click.option("--epochs", type=int, default=1, callback=checked(check_int, 1))
    """

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        try:
            return check(param.name, value, *args, **kwargs)
        except OptionError as error:
            raise _bad(error, ctx=ctx, param=param) from None

    return callback


def bad_parameter(error: OptionError, hint: str | None = None) -> click.BadParameter:
    """The click error (exit 2) of an `OptionError` raised by library code behind a command.

    Args:
        error: the error; its `cli_message`, else its `detail`, is the message.
        hint: how the command line spells the argument, e.g. `"--samples"` for `n_samples`;
            default: the argument's name with dashes, `--shard-size` for `shard_size`.
    """
    return _bad(error, param_hint=f"'{hint or '--' + error.name.replace('_', '-')}'")


def _bad(error: OptionError, **where: Any) -> click.BadParameter:
    return click.BadParameter(error.cli_message or error.detail, **where)
