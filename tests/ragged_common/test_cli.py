"""The commands' shared click pieces: the bridge from an OptionError to exit 2, and one-line errors."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from ragged_common.checks import OptionError, check_int
from ragged_common.cli import Choice, OneLineGroup, OutputDir, bad_parameter, checked, one_line


def _error_lines(result) -> list[str]:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return [line for line in result.output.splitlines() if line.startswith("Error:")]


@click.group(cls=OneLineGroup)
def group() -> None:
    """A group as the three commands build theirs."""


@group.command()
@click.option("--epochs", type=int, default=1, callback=checked(check_int, 1, 10))
@click.option("--window", type=int, default=None, callback=checked(check_int, 1, 10))
@click.option("--state", type=Choice(("carry", "reset")), default="carry")
@click.option("--out", type=OutputDir(), default="o")
def fit(epochs: int, window: int | None, state: str, out: str) -> None:
    click.echo(f"{epochs} {window} {state} {out}")


@group.command()
@click.option("--samples", "n_samples", type=int, default=1)
@click.option("--path", default="p")
def make(n_samples: int, path: str) -> None:
    try:
        check_int("n_samples", n_samples, 1)
        if "\n" in path:
            raise OptionError("path", message=f"`path` cannot hold {path!r} or\n{path}",
                              cli_message=f"--path cannot hold\n{path}")  # fmt: skip
    except OptionError as error:
        raise bad_parameter(error, "--samples" if error.name == "n_samples" else None) from None


def test_a_checked_option_passes_its_value_on_and_an_option_left_out_is_not_checked():
    result = CliRunner().invoke(group, ["fit", "--epochs", "3", "--state", "reset"])
    assert result.exit_code == 0 and result.output == "3 None reset o\n"


@pytest.mark.parametrize(
    "args,line",
    [
        (["--epochs", "0"], "Error: Invalid value for '--epochs': must be an integer in [1, 10]; received 0"),
        (["--window", "11"], "Error: Invalid value for '--window': must be an integer in [1, 10]; received 11"),
        (["--state", "init"], "Error: Invalid value for '--state': must be one of carry, reset; received 'init'"),
        (["--state", "a\nb"], "Error: Invalid value for '--state': must be one of carry, reset; received 'a\\nb'"),
        (["--out", ""], "Error: Invalid value for '--out': expected a directory to write into; received '', which "
                        "would be the current directory (pass . for that)"),
    ],
)
def test_a_refused_option_exits_2_in_one_line_naming_the_option_and_the_value(args, line):
    result = CliRunner().invoke(group, ["fit", *args])
    assert result.exit_code == 2
    assert _error_lines(result) == [line]


def test_a_library_s_option_error_exits_2_naming_the_option_as_the_command_spells_it():
    result = CliRunner().invoke(group, ["make", "--samples", "0"])
    assert result.exit_code == 2
    assert _error_lines(result) == ["Error: Invalid value for '--samples': must be an integer >= 1; received 0"]


def test_a_cli_message_wins_and_a_line_break_in_it_is_escaped():
    result = CliRunner().invoke(group, ["make", "--path", "a\nb"])
    assert result.exit_code == 2
    assert _error_lines(result) == ["Error: Invalid value for '--path': --path cannot hold\\na\\nb"]


def test_bad_parameter_names_the_argument_with_dashes_by_default():
    error = bad_parameter(OptionError("shard_size", "an integer >= 1", 0))
    assert isinstance(error, click.BadParameter) and error.exit_code == 2
    assert error.format_message() == "Invalid value for '--shard-size': must be an integer >= 1; received 0"


def test_one_line_escapes_every_line_break():
    assert one_line("a\nb\rc\u2028d") == "a\\nb\\rc\\u2028d"
