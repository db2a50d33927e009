"""`bench run` and `bench report` options: bad values exit 2 with one line naming them."""

from pathlib import Path

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
        (["--passes", "0"], "--passes", "0"),
        (["--versus", "cell=lstm"], "--versus", "'cell=lstm'"),
        (["--versus", "phase"], "--versus", "'phase'"),
        (["--versus", "phase=backward"], "--versus", "'phase=backward'"),
        (["--versus", "strategy=torch-packed"], "--versus", "'strategy=torch-packed'"),
        (["--versus", "strategy=jax"], "--versus", "'strategy=jax'"),  # another framework's process
        (["--versus", "strategy=per-sample"], "--versus", "'strategy=per-sample'"),
        (["--timeout", "0"], "--timeout", "0"),
        (["--threads", "-1"], "--threads", "-1"),
        (["--save", "a/b"], "--save", "'a/b'"),
        (["--isolate", "thread"], "--isolate", "'thread'"),
        (["--cells", "gru,cnn"], "--cells", "'gru,cnn'"),
        (["--hidden", "0"], "--hidden", "'0'"),
        (["--hidden", "64,x"], "--hidden", "'64,x'"),
        # numbers the code cannot hold, or that make no sense (issue: every case then failed)
        (["--seed", "-1"], "--seed", "-1"),
        (["--seed", str(2**32)], "--seed", str(2**32)),
        (["--timeout", "nan"], "--timeout", "received nan"),
        (["--timeout", "inf"], "--timeout", "received inf"),
        (["--timeout", "-5"], "--timeout", "received -5.0"),
        (["--rounds", str(2**31)], "--rounds", str(2**31)),
        (["--warmup-rounds", "0"], "--warmup-rounds", "0"),
        (["--batch", "0"], "--batch", "0"),
        (["--timesteps", str(2**40)], "--timesteps", str(2**40)),
        (["--reference-max-step", "-1"], "--reference-max-step", "-1"),
        (["--longest-steps", str(3_000_000_000)], "--longest-steps", "'3000000000'"),
        (["--hidden", str(2**31)], "--hidden", f"'{2**31}'"),
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


@pytest.mark.parametrize(
    "options",
    [["--strategies", "reference", "--longest-steps", "16"], ["--strategies", "xla-loop", "--phases", "train"]],
)
def test_no_case_selected_is_a_usage_error(tmp_path, options):
    result = _run("run", *options, "--no-peers", "--storage", str(tmp_path))
    assert result.exit_code == 2 and "select no case" in result.output
    assert not any(tmp_path.iterdir())  # nothing written


def test_report_of_a_missing_run_exits_2(tmp_path):
    result = _run("report", "0042", "--storage", str(tmp_path))
    assert result.exit_code == 2
    assert "Invalid value for 'RUN'" in result.output and "'0042'" in result.output


def test_report_of_a_foreign_json_exits_2(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"hello": 1}')
    line = _one_error_line(_run("report", str(path)), "'RUN'")
    assert f"{path} is neither a bench results.json nor a pytest-benchmark saved run" in line, line


def test_help_lists_the_sweep_options():
    result = _run("run", "--help")
    assert result.exit_code == 0
    for option in ("--longest-steps", "--strategies", "--states", "--phases", "--lengths", "--device",
                   "--quick", "--out", "--peers / --no-peers", "--rounds", "--timeout"):
        assert option in result.output


@pytest.mark.parametrize("command", [[], ["run"], ["report"]])
def test_dash_h_is_help_on_every_command(command):
    result = _run(*command, "-h")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage:") and "-h, --help" in result.output


def _one_error_line(result, option):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    error_lines = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(error_lines) == 1 and option in error_lines[0], result.output
    return error_lines[0]


def test_out_that_is_not_a_directory_exits_2_writing_nothing(tmp_path):
    result = _run("run", "--out", "/dev/null", "--storage", str(tmp_path / "s"), "--no-peers", "--strategies", "packed")
    line = _one_error_line(result, "'--out'")
    assert "/dev/null" in line and "not one" in line
    assert not (tmp_path / "s").exists()


def test_storage_under_a_file_exits_2_writing_nothing(tmp_path):
    (tmp_path / "file").write_text("x")
    result = _run("run", "--out", str(tmp_path / "o"), "--storage", str(tmp_path / "file" / "missing" / "s"),
                  "--no-peers", "--strategies", "packed")
    line = _one_error_line(result, "'--storage'")
    assert "is not a directory" in line
    assert not (tmp_path / "o").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_storage_in_an_unwritable_place_exits_2(tmp_path):
    result = _run("run", "--out", str(tmp_path / "o"), "--storage", "/proc/bench-storage", "--no-peers",
                  "--strategies", "packed")
    line = _one_error_line(result, "'--storage'")
    assert "expected a writable directory; received '/proc/bench-storage' ('/proc':" in line, line
    assert not (tmp_path / "o").exists()


def test_dry_run_lists_cells_and_hidden_sizes_and_writes_nothing(tmp_path):
    result = _run("run", "--dry-run", "--cells", "lstm,functional", "--hidden", "16,256", "--strategies", "packed",
                  "--no-peers", "--states", "carry", "--phases", "train,train-notraining", "--longest-steps", "8",
                  "--out", str(tmp_path / "o"), "--storage", str(tmp_path / "s"))
    assert result.exit_code == 0, result.output
    assert "packed-carry-train-notraining-L8-uniform-cpu-functional-H256" in result.output
    assert "8 cases" in result.output and "cells lstm,functional, hidden 16,256" in result.output
    assert list(tmp_path.iterdir()) == []


def test_peers_add_the_pytorch_and_jax_cases_in_carry_and_reset_only(tmp_path):
    result = _run("run", "--dry-run", "--strategies", "packed", "--states", "carry,init", "--phases", "forward",
                  "--longest-steps", "8", "--out", str(tmp_path / "o"), "--storage", str(tmp_path / "s"))
    assert result.exit_code == 0, result.output
    listed = set(result.output.splitlines())
    assert {"torch-packed-carry-forward-L8-uniform-cpu-gru-H64", "jax-carry-forward-L8-uniform-cpu-gru-H64"} <= listed
    assert not any(line.startswith(("jax-init", "torch-packed-init")) for line in listed)
    assert "5 cases" in result.output  # packed twice, then torch-packed, torch-padded and jax in carry mode
    assert not any(line.startswith("jax-tf") for line in listed)  # asked for by name only


def test_the_peer_run_by_tensorflow_is_asked_for_by_name_and_skips_generation(tmp_path):
    result = _run("run", "--dry-run", "--strategies", "jax-tf", "--states", "reset,init",
                  "--phases", "forward,train,generate-greedy", "--longest-steps", "8",
                  "--out", str(tmp_path / "o"), "--storage", str(tmp_path / "s"))
    assert result.exit_code == 0, result.output
    ours = [line for line in result.output.splitlines() if line.startswith("jax-tf")]
    assert ours == ["jax-tf-reset-forward-L8-uniform-cpu-gru-H64", "jax-tf-reset-train-L8-uniform-cpu-gru-H64"]


def test_dry_run_of_the_generation_phases_lists_chain_and_the_baseline(tmp_path):
    result = _run("run", "--dry-run", "--no-peers", "--states", "reset",
                  "--phases", "generate-greedy,generate-sampling", "--longest-steps", "4,16", "--out", str(tmp_path / "o"), "--storage", str(tmp_path / "s"))
    assert result.exit_code == 0, result.output
    ids = result.output.splitlines()[:-1]
    assert "per-sample-reset-generate-sampling-L4-uniform-cpu-gru-H64" in ids
    assert "eager-auto-reset-generate-greedy-L16-uniform-cpu-gru-H64" in ids
    assert not [i for i in ids if i.startswith("reference") or i.startswith("per-sample") and "L16" in i]
    assert len(ids) == (3 + 1) * 2 * 2 + 2  # loop, padded, packed and eager-auto at L 4 and 16; per-sample at 4
    assert f"{len(ids)} cases" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        ([{"params": {"strategy": "packed"}}], "record 0 .* needs a `status`"),
        ([{"status": "ok"}], "record 0 .* has no `params` dict"),
        ([{"params": {}, "status": "ok"}], "status 'ok' but no `benchmark`"),
        (["x"], "record 0 .* has no `params` dict"),
    ],
)
def test_report_of_records_without_status_exits_2(tmp_path, records, expected):
    import json
    import re

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text(json.dumps({"run_id": "0001_x", "records": records}))
    result = _run("report", str(run_dir))
    line = _one_error_line(result, "'RUN'")
    assert re.search(expected, line), line
    assert sorted(p.name for p in run_dir.iterdir()) == ["results.json"]


def test_report_into_a_file_exits_2(tmp_path):
    import json

    (tmp_path / "results.json").write_text(json.dumps({"run_id": "0001_x", "records": []}))
    result = _run("report", str(tmp_path / "results.json"), "--out", "/dev/null")
    assert "/dev/null" in _one_error_line(result, "'--out'")


def test_report_of_a_file_that_is_not_utf8_says_so(tmp_path):
    path = tmp_path / "results.json"
    path.write_bytes(b"\xff\xfe garbage")
    line = _one_error_line(_run("report", str(path)), "'RUN'")
    assert f"cannot read a run from {str(path)!r}: {path} is not JSON text (invalid start byte)" in line, line


def test_report_of_a_file_that_is_not_json_names_the_line(tmp_path):
    path = tmp_path / "results.json"
    path.write_text('{"run_id": "0001_x",\n "records": [,]}')
    line = _one_error_line(_run("report", str(path)), "'RUN'")
    assert f"{path} is not JSON (Expecting value at line 2)" in line, line


def test_an_interrupted_run_exits_1_keeping_the_cases_that_ended(tmp_path, monkeypatch):
    import json
    import signal

    from bench import _runner

    def interrupted(sweep, work, on_end, isolate):
        case = sweep.cases[0]
        on_end({"event": "end", "params": dict(vars(case)), "status": "error", "message": "crashed", "benchmark": None})
        raise KeyboardInterrupt

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    monkeypatch.setattr(_runner, "run_sweep", interrupted)
    result = _run("run", "--strategies", "packed", "--no-peers", "--states", "reset", "--phases", "forward",
                  "--longest-steps", "1,2", "--out", str(tmp_path / "out"), "--storage", str(tmp_path / "s"),
                  "--save", "cut")
    run_dir = tmp_path / "out" / "0001_cut"
    assert result.exit_code == 1, result.output
    assert (f"Error: interrupted; the 1 cases that ended are saved in {run_dir} "
            f"(render them with `bench report {run_dir}`)") in result.output
    records = json.loads((run_dir / "results.json").read_text())["records"]
    assert [(r["params"]["longest_step"], r["message"]) for r in records] == [(1, "crashed")]
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers  # the handlers are put back


def test_report_of_a_glob_pattern_that_is_no_file_exits_2(tmp_path):
    (tmp_path / "storage" / "machine").mkdir(parents=True)  # a storage to look run ids up in
    line = _one_error_line(_run("report", "*", "--storage", str(tmp_path / "storage")), "'RUN'")
    assert "received '*' (no such file, and no run id)" in line, line


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_report_of_a_file_that_is_not_regular_exits_2_without_reading_it(tmp_path, kind):
    import os

    path = "/dev/zero" if kind == "device" else str(tmp_path / "fifo")
    if kind == "fifo":
        os.mkfifo(path)  # reading it would wait for a writer forever
    line = _one_error_line(_run("report", path), "'RUN'")
    assert f"cannot read a run from {path!r}: {path}: not a regular file; a run file must be one" in line, line


def test_report_of_a_run_file_too_large_exits_2(tmp_path, monkeypatch):
    from bench import _results

    monkeypatch.setattr(_results, "MAX_RUN_BYTES", 10)
    (tmp_path / "results.json").write_text('{"run_id": "0001_x", "records": []}')
    line = _one_error_line(_run("report", str(tmp_path)), "'RUN'")
    assert "results.json: run file larger than 10 bytes" in line, line


def test_report_of_a_run_interrupted_before_any_case_ended_says_so(tmp_path):
    import json

    (tmp_path / "results.json").write_text(json.dumps({"run_id": "0001_x", "records": []}))
    result = _run("report", str(tmp_path))
    assert result.exit_code == 1, result.output
    assert result.output == (f"Error: {tmp_path} holds no case that ended (a run interrupted before any did); "
                             "nothing to report\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def _sweep_args(tmp_path):
    return ["run", "--strategies", "packed", "--no-peers", "--states", "reset", "--phases", "forward",
            "--longest-steps", "1,2", "--out", str(tmp_path / "out"), "--storage", str(tmp_path / "s"), "--save", "cut"]


def test_a_run_interrupted_before_any_case_ended_suggests_no_report(tmp_path, monkeypatch):
    from bench import _runner

    def interrupted(sweep, work, on_end, isolate):
        raise KeyboardInterrupt

    monkeypatch.setattr(_runner, "run_sweep", interrupted)
    result = _run(*_sweep_args(tmp_path))
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last == f"Error: interrupted before any case ended; nothing to report in {tmp_path / 'out' / '0001_cut'}"


def test_a_full_disk_while_saving_a_run_exits_1_in_one_line_keeping_the_saved_files(tmp_path, monkeypatch):
    import errno
    import json

    from bench import _results, _runner
    from ragged_common import atomic

    real = atomic.atomic_write

    def two_cases(sweep, work, on_end, isolate):
        for case in sweep.cases:
            on_end({"event": "end", "params": dict(vars(case)), "status": "error", "message": "x", "benchmark": None})

    def full(path, data):
        if Path(path).name == "results.json" and data.count('"message": "x"') == 2:  # the second case's save
            with atomic.atomic_path(path) as temporary:
                temporary.write_text(str(data)[:50])  # half of it, then the disk is full
                raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(_runner, "run_sweep", two_cases)
    monkeypatch.setattr(atomic, "atomic_write", full)
    result = _run(*_sweep_args(tmp_path))
    run_dir = tmp_path / "out" / "0001_cut"
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"Error: cannot save the run (the cases saved before are in {run_dir}): ")
    assert last.endswith(f"{run_dir / 'results.json'}: No space left on device") and "Traceback" not in result.output
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()]  # no temporary file left
    records = json.loads((run_dir / "results.json").read_text())["records"]
    assert [r["params"]["longest_step"] for r in records] == [1]  # the case saved before the disk filled
    for saved in (tmp_path / "s").rglob("*.json"):
        json.loads(saved.read_text())  # whole: pytest-benchmark compare can read it


def test_a_full_disk_while_reserving_the_run_leaves_no_half_written_file(tmp_path, monkeypatch):
    import errno

    from pytest_benchmark.storage.file import FileStorage

    def full(self, output_json, save):
        path = self.get(f"0001_{save}.json")
        path.write_text('{"machine_info": {')  # what a write cut short leaves
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(FileStorage, "save", full)
    result = _run(*_sweep_args(tmp_path))
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == "Error: cannot save the run: No space left on device"
    assert not [p for p in (tmp_path / "s").rglob("*") if p.is_file()]
    assert not (tmp_path / "out").exists()
