"""`bench run` and `bench report` options: bad values exit 2 with one line naming them."""

import pytest
from click.testing import CliRunner

from bench.cli import main


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default --out and --storage land here if a test omits them


def _run(*args):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize(
    ("args", "option", "value"),
    [
        (["--longest-steps", "a,2"], "--longest-steps", "'a,2'"),
        (["--longest-steps", "0,4"], "--longest-steps", "'0,4'"),
        (["--longest-steps", ""], "--longest-steps", "''"),
        (["--states", "carry,sideways"], "--states", "'carry,sideways'"),
        (["--phases", "backward"], "--phases", "'backward'"),
        (["--strategies", "packed,warp"], "--strategies", "'packed,warp'"),
        (["--lengths", "gauss"], "--lengths", "'gauss'"),
        (["--device", "tpu"], "--device", "'tpu'"),
        (["--rounds", "0"], "--rounds", "0"),
        (["--timeout", "0"], "--timeout", "0"),
        (["--threads", "-1"], "--threads", "-1"),
        (["--save", "a/b"], "--save", "'a/b'"),
        (["--isolate", "thread"], "--isolate", "'thread'"),
    ],
)
def test_bad_run_options_exit_2_naming_option_and_value(args, option, value, tmp_path):
    result = _run("run", "--out", str(tmp_path / "o"), "--storage", str(tmp_path / "s"), *args)
    assert result.exit_code == 2, result.output
    error_lines = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(error_lines) == 1
    assert option in error_lines[0] and value in error_lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "s").exists()  # nothing is written for a rejected command


def test_gpu_without_a_gpu_exits_2(tmp_path):
    from bench._tf_framework import gpu_count

    if gpu_count():
        pytest.skip("this machine has a GPU; the error is for machines without one")
    result = _run("run", "--device", "gpu", "--storage", str(tmp_path))
    assert result.exit_code == 2
    assert "Invalid value for '--device': TensorFlow sees no GPU" in result.output
    assert "received 'gpu'" in result.output


def test_no_case_selected_is_a_usage_error(tmp_path):
    result = _run(
        "run", "--strategies", "reference", "--no-peers", "--longest-steps", "16", "--storage", str(tmp_path)
    )
    assert result.exit_code == 2 and "select no case" in result.output


def test_report_of_a_missing_run_exits_2(tmp_path):
    result = _run("report", "0042", "--storage", str(tmp_path))
    assert result.exit_code == 2
    assert "Invalid value for 'RUN'" in result.output and "'0042'" in result.output


def test_report_of_a_foreign_json_exits_2(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"hello": 1}')
    result = _run("report", str(path))
    assert result.exit_code == 2 and "cannot read a run from" in result.output


def test_help_lists_the_sweep_options():
    result = _run("run", "--help")
    assert result.exit_code == 0
    for option in ("--longest-steps", "--strategies", "--states", "--phases", "--lengths", "--device",
                   "--quick", "--out", "--peers / --no-peers", "--rounds", "--timeout"):
        assert option in result.output
