"""What the three commands share: output directories and one-line errors."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from bench.cli import main as bench_main
from chain_app.cli import main as chain_main
from datagen.cli import main as datagen_main


def one_error_line(result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    errors = [line for line in result.output.splitlines() if "Error:" in line]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


@pytest.mark.parametrize(
    "main,args,option",
    [
        (datagen_main, ["make", "--out", "", "--samples", "20"], "--out"),
        (datagen_main, ["merge", ".", "--out", ""], "--out"),
        (chain_main, ["fit", "data", "--out", ""], "--out"),
        (bench_main, ["run", "--quick", "--dry-run", "--out", ""], "--out"),
        (bench_main, ["run", "--quick", "--dry-run", "--storage", ""], "--storage"),
        (bench_main, ["report", "0001", "--out", ""], "--out"),
    ],
    ids=["datagen-make", "datagen-merge", "chain-fit", "bench-run-out", "bench-run-storage", "bench-report"],
)
def test_an_empty_output_directory_exits_2_writing_nothing_in_the_current_one(tmp_path, monkeypatch, main, args,
                                                                               option):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    line = one_error_line(CliRunner().invoke(main, args), 2)
    assert line == (f"Error: Invalid value for '{option}': expected a directory to write into; received '', "
                    "which would be the current directory (pass . for that)")  # fmt: skip
    assert list(tmp_path.iterdir()) == []
