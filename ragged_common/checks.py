"""The one way the packages check an argument or option, and word its error.

Every check takes the argument's `name` and its `value`, returns the value normalised (an `int`,
a `float`, a `Path`, ...) and raises an `OptionError`: a `ValueError` whose message names the
argument, what was expected and the value received, e.g.
"`epochs` must be an integer in [1, 2147483647]; received 0".

The command lines turn an `OptionError` into click's exit 2 naming the option, through
`ragged_common.cli.checked` (an option callback) or `ragged_common.cli.bad_parameter`.

Examples:
    >>> check_int("epochs", 3, 1)
    3
    >>> check_int("epochs", 0, 1)
    Traceback (most recent call last):
    ...
    ragged_common.checks.OptionError: `epochs` must be an integer >= 1; received 0
"""

from __future__ import annotations

import math
import operator
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence


class OptionError(ValueError):
    """An invalid argument or option: "`name` must be EXPECTED; received VALUE".

    An error that is no simple range, such as two options that exclude each other, gives its
    own `message` instead of `expected` and `value`; it names the argument and what it received.

    Args:
        name: the argument's Python name, e.g. `"batch_size"`; a command line's option is the
            same name with dashes (`--batch-size`).
        expected: what the argument must be, e.g. `"an integer in [1, 8192]"`.
        value: the value received, shown with `repr`.
        received: the value as the message shows it, where `repr` would not say it best.
        message: the whole message, instead of `expected` and `value`.
        cli_message: the message as a command line says it, where it advises other arguments
            (`--overwrite` for `overwrite=True`); None where the message says it already.

    Attributes:
        name: as given.
        expected: as given (None with `message`).
        value: as given (None with `message`).
        detail: the message without the leading name, for a command line that names the
            option itself: `"must be EXPECTED; received VALUE"`, or `message` whole.
        cli_message: as given.

    Examples:
        >>> str(OptionError("hidden", "an integer in [1, 8192]", 0))
        '`hidden` must be an integer in [1, 8192]; received 0'
    """

    def __init__(self, name: str, expected: str | None = None, value: Any = None, *, received: str | None = None,
                 message: str | None = None, cli_message: str | None = None) -> None:  # fmt: skip
        if (expected is None) == (message is None):
            raise TypeError("OptionError takes `expected` (and the value) or `message`, one of the two")
        self.name = name
        self.expected = expected
        self.value = value
        shown = repr(value) if received is None else received
        self.detail = message if message is not None else f"must be {expected}; received {shown}"
        self.cli_message = cli_message
        super().__init__(message if message is not None else f"`{name}` {self.detail}")


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """`value` as an `int` in `[low, high]` (`high` None: no upper bound).

    Any integer type passes (numpy's too); `True` and `False` do not, nor floats.

    Raises:
        OptionError: naming `name`, the range and the value.
    """
    expected = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise OptionError(name, expected, value) from None
    if number < low or (high is not None and number > high):
        raise OptionError(name, expected, number)
    return number


def check_number(name: str, value: Any, low: float, high: float, *, open_low: bool = False,
                 open_high: bool = False, expected: str | None = None) -> float:  # fmt: skip
    """`value` as a finite `float` in the interval from `low` to `high`.

    Args:
        open_low: leave `low` out: `(0, 1]` rather than `[0, 1]`.
        open_high: leave `high` out: `[0, 1)` rather than `[0, 1]`.
        expected: the words for the range, where the interval alone would not say it best.

    Raises:
        OptionError: not a real number (`True`, a string and a complex number are not), not
            finite, or outside the interval.
    """
    if expected is None:
        expected = f"a number in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        expected = expected if math.isfinite(high) else f"a finite number {'>' if open_low else '>='} {low}"
    try:
        if isinstance(value, (bool, str, bytes)):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise OptionError(name, expected, value) from None
    above = number > low if open_low else number >= low
    below = number < high if open_high else number <= high
    if not (math.isfinite(number) and above and below):
        raise OptionError(name, expected, value)
    return number


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """`value` if it is one of `choices` (of the same kind: `1` is not `True`), else an OptionError.

    Returns:
        The choice itself (a plain `str` for a `str` subclass such as numpy's).
    """
    for choice in choices:
        if isinstance(value, type(choice)) and value == choice:
            return choice
    raise OptionError(name, f"one of {_listed(choices)}", value)


def check_optional(check: Callable[..., Any], name: str, value: Any, *args: Any, **kwargs: Any) -> Any:
    """None, or `check(name, value, *args, **kwargs)`; a refusal then says "EXPECTED or None".

    >>> check_optional(check_int, "max_steps", None, 0) is None
    True
    >>> check_optional(check_int, "max_steps", -1, 0)
    Traceback (most recent call last):
    ...
    ragged_common.checks.OptionError: `max_steps` must be an integer >= 0 or None; received -1
    """
    if value is None:
        return None
    try:
        return check(name, value, *args, **kwargs)
    except OptionError as error:
        if error.expected is None:
            raise
        raise OptionError(name, f"{error.expected} or None", error.value) from None


def check_flag(name: str, value: Any) -> bool:
    """`value` if it is `True` or `False`: `"no"`, `None` or `1` would pass by truthiness."""
    if not isinstance(value, bool):
        raise OptionError(name, "True or False", value)
    return value


def check_path(name: str, value: Any) -> Path:
    """`value` as a `Path`: a non-empty `str` or `os.PathLike` of one.

    An empty path would stand for the current directory, so it is refused too.
    """
    try:
        text = os.fspath(value)
    except TypeError:
        text = None
    if not isinstance(text, str) or not text:
        raise OptionError(name, "a non-empty path (str or os.PathLike)", value)
    return Path(text)


def check_file_path(name: str, value: Any, suffix: str | None = None) -> Path:
    """`value` as the `Path` of a file to write: in an existing, writable directory, not a
    directory itself, and ending in `suffix` (any case) where one is given.

    Raises:
        OptionError: another suffix, a missing or unwritable directory, or an existing directory
            as the path.
    """
    target = check_path(name, value)
    if suffix is not None and target.suffix.lower() != suffix:
        raise OptionError(name, f"a path ending in {suffix}", str(target))
    if target.is_dir():
        raise OptionError(name, "a file, not a directory", str(target))
    parent = target.parent
    if not parent.is_dir():
        raise OptionError(name, "in an existing directory", target,
                          received=f"{str(target)!r}, and {str(parent)!r} is not one")  # fmt: skip
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OptionError(name, "in a writable directory", str(target))
    return target


def check_int_list(name: str, value: str | Iterable[Any], low: int, high: int) -> list[int]:
    """Integers in `[low, high]`, given as a comma-separated string or an iterable: sorted, unique.

    Raises:
        OptionError: no integer, or one that is not an integer in `[low, high]`.
    """
    items = _split(value)
    expected = f"comma-separated integers in [{low}, {high}]"
    try:
        numbers = {check_int(name, int(item) if isinstance(item, str) else item, low, high) for item in items}
    except (OptionError, ValueError):
        numbers = set()
    if not numbers:
        raise OptionError(name, expected, value)
    return sorted(numbers)


def check_subset(name: str, value: str | Iterable[Any], choices: Sequence[str]) -> list[str]:
    """Some of `choices`, given as a comma-separated string or an iterable: in order, unique.

    Raises:
        OptionError: none given, or one that is not in `choices`.
    """
    items = _split(value)
    if not items or any(not isinstance(item, str) or item not in choices for item in items):
        raise OptionError(name, f"a comma-separated subset of {_listed(choices)}", value)
    return list(dict.fromkeys(items))


def _split(value: str | Iterable[Any]) -> list[Any]:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    try:
        return list(value)
    except TypeError:
        return []


def _listed(choices: Iterable[Any]) -> str:
    return ", ".join(choice if isinstance(choice, str) else repr(choice) for choice in choices)
