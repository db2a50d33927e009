"""What the three commands share: output directories and one-line errors."""

from __future__ import annotations

import sys
import types

import pytest
from click.testing import CliRunner

import datagen
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


def escaped(path) -> str:
    return str(path).replace("\n", "\\n")


def fake_fit(monkeypatch, error: Exception) -> None:
    """`chain fit` runs a stand-in for `chain_app.fit` that raises `error` (no TensorFlow)."""

    def fit_run(*args, **kwargs):
        raise error

    module = types.ModuleType("chain_app.fit")
    module.fit_run, module.tensorboard_available = fit_run, lambda: True
    monkeypatch.setitem(sys.modules, "chain_app.fit", module)


def test_datagen_errors_keep_their_reason_on_the_line_of_a_path_with_a_line_break(tmp_path):
    missing, empty = tmp_path / "no\nsuch", tmp_path / "empty\ndir"
    empty.mkdir()
    line = one_error_line(CliRunner().invoke(datagen_main, ["inspect", str(missing)]), 1)
    assert line == f"Error: {escaped(missing)}: no such dataset directory"
    line = one_error_line(CliRunner().invoke(datagen_main, ["merge", str(empty)]), 1)
    assert line == f"Error: {escaped(empty)}: no slice manifests (manifest.slice-*-of-*.json)"


def test_chain_errors_keep_their_reason_on_the_line_of_a_path_with_a_line_break(tmp_path, monkeypatch):
    run_dir = tmp_path / "run\ndir"
    line = one_error_line(CliRunner().invoke(chain_main, ["fit", "data", "--out", str(run_dir), "--resume"]), 2)
    assert line == f"Error: Invalid value for '--out': {escaped(run_dir)} holds no run to resume (no state.json)"
    line = one_error_line(CliRunner().invoke(chain_main, ["evaluate", str(run_dir), "data"]), 2)
    assert line == f"Error: Invalid value for 'RUN_DIR': Directory '{escaped(run_dir)}' does not exist."
    data = tmp_path / "no\nsuch"
    fake_fit(monkeypatch, datagen.DatasetError(f"{data}: no such dataset directory"))
    line = one_error_line(CliRunner().invoke(chain_main, ["fit", str(data), "--out", str(tmp_path / "r")]), 1)
    assert line == f"Error: {escaped(data)}: no such dataset directory"


def test_chain_gives_another_library_s_error_by_its_first_line(tmp_path, monkeypatch):
    fake_fit(monkeypatch, ValueError("Exception encountered when calling GRU.call().\n\nArguments received: ..."))
    result = CliRunner().invoke(chain_main, ["fit", "data", "--out", str(tmp_path / "r")])
    assert one_error_line(result, 1) == "Error: Exception encountered when calling GRU.call()."
    assert "Arguments received" not in result.output


def test_bench_errors_keep_their_reason_on_one_line():
    # bench quotes the values it names with repr; its group escapes the rest
    line = one_error_line(CliRunner().invoke(bench_main, ["run", "--quick", "--dry-run", "--lengths", "a\nb"]), 2)
    assert line == "Error: Invalid value for '--lengths': must be one of uniform, zipf; received 'a\\nb'"
