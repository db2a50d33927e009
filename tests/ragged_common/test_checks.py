"""The one checker: what each check accepts, returns and refuses, and the words of its error."""

from __future__ import annotations

import math
import pathlib
import re

import numpy as np
import pytest

from ragged_common.bounds import FLOAT32_MAX, INT32_MAX, INT64_MAX, UINT32_MAX
from ragged_common.checks import (OptionError, check_choice, check_file_path, check_flag, check_int, check_int_list,
                                  check_number, check_optional, check_path, check_subset)  # fmt: skip


def test_bounds_are_the_dtypes_own():
    assert INT32_MAX == np.iinfo(np.int32).max and INT64_MAX == np.iinfo(np.int64).max
    assert UINT32_MAX == np.iinfo(np.uint32).max and FLOAT32_MAX == float(np.finfo(np.float32).max)


def test_an_option_error_names_the_argument_what_was_expected_and_the_value():
    error = OptionError("hidden", "an integer in [1, 8192]", 0)
    assert isinstance(error, ValueError)
    assert str(error) == "`hidden` must be an integer in [1, 8192]; received 0"
    assert (error.name, error.expected, error.value) == ("hidden", "an integer in [1, 8192]", 0)
    assert error.detail == "must be an integer in [1, 8192]; received 0" and error.cli_message is None


def test_an_option_error_may_show_the_value_in_its_own_words_or_say_all_of_it():
    shown = OptionError("out", "a directory", "/a", received="'/a', an existing file")
    assert str(shown) == "`out` must be a directory; received '/a', an existing file"
    whole = OptionError("resume", message="`resume` and `overwrite` exclude each other; received both",
                        cli_message="use one of --resume and --overwrite, not both")  # fmt: skip
    assert str(whole) == whole.detail == "`resume` and `overwrite` exclude each other; received both"
    assert whole.cli_message == "use one of --resume and --overwrite, not both"
    with pytest.raises(TypeError, match="one of the two"):
        OptionError("x", "an integer", 1, message="both")
    with pytest.raises(TypeError, match="one of the two"):
        OptionError("x")


@pytest.mark.parametrize("value,expected", [(3, 3), (np.int64(5), 5), (np.uint8(1), 1), (8192, 8192)])
def test_check_int_returns_a_plain_int(value, expected):
    result = check_int("hidden", value, 1, 8192)
    assert result == expected and type(result) is int


@pytest.mark.parametrize(
    "value,low,high,match",
    [
        (0, 1, 8192, r"^`n` must be an integer in \[1, 8192\]; received 0$"),
        (8193, 1, 8192, r"^`n` must be an integer in \[1, 8192\]; received 8193$"),
        (np.int64(-2), 0, None, r"^`n` must be an integer >= 0; received -2$"),
        (2.0, 1, None, r"^`n` must be an integer >= 1; received 2.0$"),
        (True, 0, None, r"^`n` must be an integer >= 0; received True$"),
        ("4", 1, 9, r"^`n` must be an integer in \[1, 9\]; received '4'$"),
        (None, 1, 9, r"^`n` must be an integer in \[1, 9\]; received None$"),
    ],
)
def test_check_int_refuses_what_is_no_integer_in_range(value, low, high, match):
    with pytest.raises(OptionError, match=match):
        check_int("n", value, low, high)


def test_check_number_returns_a_float_inside_the_interval():
    assert check_number("p", 1, 0, 1) == 1.0 and type(check_number("p", 1, 0, 1)) is float
    assert check_number("p", np.float32(0.5), 0, 1, open_low=True, open_high=True) == 0.5
    assert check_number("lr", 1e-3, 0, math.inf, open_low=True) == 1e-3


@pytest.mark.parametrize(
    "value,kwargs,match",
    [
        (1.5, {}, r"^`p` must be a number in \[0, 1\]; received 1.5$"),
        (1, {"open_high": True}, r"^`p` must be a number in \[0, 1\); received 1$"),
        (0.0, {"open_low": True}, r"^`p` must be a number in \(0, 1\]; received 0.0$"),
        (math.nan, {}, r"^`p` must be a number in \[0, 1\]; received nan$"),
        ("0.5", {}, r"^`p` must be a number in \[0, 1\]; received '0.5'$"),
        (True, {}, r"^`p` must be a number in \[0, 1\]; received True$"),
        (1j, {}, r"^`p` must be a number in \[0, 1\]; received 1j$"),
        (0.5, {"expected": "a share"}, None),
    ],
)
def test_check_number_refuses_what_is_no_finite_number_in_the_interval(value, kwargs, match):
    if match is None:
        assert check_number("p", value, 0, 1, **kwargs) == 0.5
        return
    with pytest.raises(OptionError, match=match):
        check_number("p", value, 0, 1, **kwargs)


def test_check_number_without_an_upper_end_asks_for_a_finite_number_in_its_own_words():
    with pytest.raises(OptionError, match=r"^`lr` must be a finite number > 0; received inf$"):
        check_number("lr", math.inf, 0, math.inf, open_low=True)
    with pytest.raises(OptionError, match=r"^`t` must be a finite number of seconds > 0; received -1$"):
        check_number("t", -1, 0, math.inf, open_low=True, expected="a finite number of seconds > 0")


def test_check_choice_takes_a_choice_of_the_same_kind_only():
    assert check_choice("stop", None, (None, "token")) is None
    assert type(check_choice("task", np.str_("echo"), ("echo", "ar"))) is str
    assert check_choice("fused", False, ("auto", True, False)) is False
    with pytest.raises(OptionError, match=r"^`fused` must be one of auto, True, False; received 0$"):
        check_choice("fused", 0, ("auto", True, False))
    with pytest.raises(OptionError, match=r"^`stop` must be one of None, token; received 'norm'$"):
        check_choice("stop", "norm", (None, "token"))
    with pytest.raises(OptionError, match=r"^`task` must be one of echo, ar; received array\(\[1, 2\]\)$"):
        check_choice("task", np.array([1, 2]), ("echo", "ar"))


@pytest.mark.parametrize("value", ["no", None, 1, np.bool_(True)])
def test_check_flag_takes_true_or_false_only(value):
    assert check_flag("verify", True) is True and check_flag("verify", False) is False
    with pytest.raises(OptionError, match=rf"^`verify` must be True or False; received {re.escape(repr(value))}$"):
        check_flag("verify", value)


def test_check_path_takes_a_non_empty_path():
    assert check_path("out", "a/b") == pathlib.Path("a/b")
    assert check_path("out", pathlib.Path("c")) == pathlib.Path("c")
    for value in ("", None, 3, b"bytes"):
        with pytest.raises(OptionError, match=r"^`out` must be a non-empty path \(str or os.PathLike\); received "):
            check_path("out", value)


def test_check_file_path_takes_a_file_to_write_in_an_existing_directory(tmp_path):
    assert check_file_path("out", tmp_path / "a.JSON", ".json") == tmp_path / "a.JSON"
    assert check_file_path("out", str(tmp_path / "a.bin")) == tmp_path / "a.bin"
    with pytest.raises(OptionError, match=rf"^`out` must be a path ending in .json; received '{tmp_path}/a.txt'$"):
        check_file_path("out", tmp_path / "a.txt", ".json")
    with pytest.raises(OptionError, match=rf"^`out` must be a file, not a directory; received '{tmp_path}'$"):
        check_file_path("out", tmp_path)
    with pytest.raises(OptionError, match=rf"^`out` must be in an existing directory; received '{tmp_path}/no/a', "
                                          rf"and '{tmp_path}/no' is not one$"):  # fmt: skip
        check_file_path("out", tmp_path / "no" / "a")


def test_check_int_list_sorts_and_deduplicates():
    assert check_int_list("hidden", "64, 8,64", 1, INT32_MAX) == [8, 64]
    assert check_int_list("hidden", [4, np.int64(2)], 1, 9) == [2, 4]


@pytest.mark.parametrize("value", ["", "a,2", "0,4", "1.5", f"1,{INT32_MAX + 1}", [], [1, 2.5], 7])
def test_check_int_list_refuses_any_item_out_of_range_or_none_at_all(value):
    with pytest.raises(OptionError, match=rf"^`hidden` must be comma-separated integers in \[1, {INT32_MAX}\]; "
                                          rf"received {re.escape(repr(value))}$"):  # fmt: skip
        check_int_list("hidden", value, 1, INT32_MAX)


def test_check_subset_keeps_the_order_given():
    assert check_subset("phases", "train, forward,train", ("forward", "train")) == ["train", "forward"]
    for value in ("", "forward,back", ["forward", 1]):
        with pytest.raises(OptionError, match=r"^`phases` must be a comma-separated subset of forward, train; "):
            check_subset("phases", value, ("forward", "train"))


def test_check_optional_lets_none_through_and_says_so_when_it_refuses():
    assert check_optional(check_int, "max_steps", None, 0, 9) is None
    assert check_optional(check_int, "max_steps", np.int32(4), 0, 9) == 4
    with pytest.raises(OptionError, match=r"^`max_steps` must be an integer in \[0, 9\] or None; received 10$"):
        check_optional(check_int, "max_steps", 10, 0, 9)


def test_check_optional_keeps_an_error_in_its_own_words():
    def refuse(name, value):
        raise OptionError(name, message=f"`{name}` conflicts; received {value!r}")

    with pytest.raises(OptionError, match=r"^`a` conflicts; received 1$"):
        check_optional(refuse, "a", 1)
