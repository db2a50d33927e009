"""The runner on its own: GPU cases skip with a reason on a CPU machine; a run where every case
fails exits 1. Its children measure the fake framework of fake_cases.py."""

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench import _runner
from bench._runner import child_environ, groups, missing_packages, nodeid, run_sweep
from bench._workloads import QUICK_SIZES, Case, Sweep, build_cases
from bench.cli import main

from .fake_cases import NO_GPU, STEP_S


def test_groups_split_by_module_and_device():
    cases = build_cases(["packed", "reference", "torch-packed"], ["reset"], ["forward"], [1, 2], "uniform", "cpu")
    by_group = groups(Sweep(tuple(cases)), "group")
    assert [len(g) for g in by_group] == [2, 2, 2]
    assert len(groups(Sweep(tuple(cases)), "case")) == 6
    assert nodeid(cases[0]) == "test_chain.py::test_chain[packed-reset-forward-L1-uniform-cpu-gru-H64]"


def test_cell_groups_give_each_cell_and_width_a_child_of_its_own():
    """The default: a child that ran many cases runs later ones slower, so each cell and width of
    each framework gets a fresh one, in the order the cases first appear."""
    cases = [Case(s, "reset", "forward", 8, "uniform", "cpu", cell, hidden)
             for s in ("packed", "jax") for hidden in (64, 256) for cell in ("gru", "rnn")]  # fmt: skip
    by_cell = groups(Sweep(tuple(cases)), "cell")
    assert [[(c.strategy, c.cell, c.hidden) for c in g] for g in by_cell] == [
        [(s, cell, hidden)] for s in ("packed", "jax") for hidden in (64, 256) for cell in ("gru", "rnn")
    ]
    assert [len(g) for g in groups(Sweep(tuple(cases * 2)), "cell")] == [2] * 8
    assert [len(g) for g in groups(Sweep(tuple(cases)), "group")] == [4, 4]


def test_gpu_cases_skip_with_the_reason_the_framework_gives(tmp_path, fake_cases):
    cases = tuple(Case("reference", "reset", phase, 1, "uniform", "gpu") for phase in ("forward", "train"))
    records = []
    run_sweep(Sweep(cases, sizes=QUICK_SIZES, rounds=1), tmp_path, records.append)
    assert [r["status"] for r in records] == ["skipped", "skipped"]
    assert all(r["message"] == NO_GPU and r["benchmark"] is None for r in records)
    assert len(list(tmp_path.glob("child-*.log"))) == 1  # one child for the group: a skip is no crash


def test_a_peer_that_is_not_installed_is_skipped_without_a_child(tmp_path, monkeypatch):
    monkeypatch.setitem(_runner.PEER_PACKAGES, "test_torch.py", ("json", "no_such_package_for_this_test"))
    assert missing_packages("test_torch.py") == ["no_such_package_for_this_test"]
    assert missing_packages("test_chain.py") == []
    cases = tuple(Case("torch-packed", "reset", phase, 1, "uniform", "cpu") for phase in ("forward", "train"))
    records = []
    run_sweep(Sweep(cases, sizes=QUICK_SIZES, rounds=1), tmp_path, records.append)
    assert [(r["status"], r["nodeid"], r["pass"]) for r in records] == [("skipped", nodeid(c), 1) for c in cases]
    assert all(r["message"] == "no_such_package_for_this_test cannot be imported (it is not installed); install "
               "the `peers` extra" and r["benchmark"] is None for r in records)  # fmt: skip
    assert not list(tmp_path.glob("child-*.log"))


def test_tensorflow_names_the_missing_gpu(monkeypatch):
    from bench import _tf_framework
    from bench._tf_framework import TensorFlowFramework, gpu_count

    if gpu_count():
        pytest.skip("this machine has a GPU")
    monkeypatch.setattr(_tf_framework, "configure_threads", lambda threads: None)  # a child's, not this process's
    reason = TensorFlowFramework(1).skip_reason("gpu")
    assert reason == "TensorFlow sees no GPU (tf.config.list_physical_devices('GPU') is empty)"
    assert TensorFlowFramework(1).skip_reason("cpu") is None


def test_a_sweep_started_inside_pytest_xdist_measures_its_cases(tmp_path, fake_cases, monkeypatch):
    """The child is a pytest run of its own: an enclosing xdist worker's variables and options,
    with which pytest-benchmark disables itself, do not reach it."""
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    monkeypatch.setenv("PYTEST_ADDOPTS", "--benchmark-disable")
    cases = tuple(Case("packed", "reset", "forward", longest, "uniform", "cpu") for longest in (1, 2))
    records = []
    run_sweep(Sweep(cases, sizes=QUICK_SIZES, rounds=2, warmup_rounds=0), tmp_path, records.append)
    assert [r["status"] for r in records] == ["ok", "ok"], records
    assert [r["benchmark"]["stats"]["rounds"] for r in records] == [2, 2]
    assert all(r["benchmark"]["stats"]["median"] >= STEP_S for r in records)


def test_the_child_environment_leaves_out_the_enclosing_runs_settings(monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    monkeypatch.setenv("PYTEST_ADDOPTS", "-n 2")
    monkeypatch.setenv("BENCH_KEPT", "yes")
    env = child_environ(BENCH_SWEEP="s.json")
    assert env["BENCH_KEPT"] == "yes" and env["BENCH_SWEEP"] == "s.json"
    assert not [name for name in env if name.startswith("PYTEST_XDIST_") or name == "PYTEST_ADDOPTS"]


def test_every_case_failing_exits_1(tmp_path, monkeypatch, fake_cases):
    monkeypatch.setenv("BENCH_FAULT", "raise:reference-reset")
    result = CliRunner().invoke(main, [
        "run", "--strategies", "reference", "--no-peers", "--states", "reset", "--phases", "forward",
        "--longest-steps", "1", "--passes", "2",
        "--out", str(tmp_path / "out"), "--storage", str(tmp_path / "s"), "--save", "bad",
    ])
    assert result.exit_code == 1
    assert "Error: every case failed" in result.output
    records = json.loads((tmp_path / "out" / "0001_bad" / "results.json").read_text())["records"]
    assert len(records) == 1
    assert records[0]["status"] == "error" and "fault injected" in records[0]["message"]
    # a case that failed is not visited again: the second pass starts no child
    assert len(list((tmp_path / "out" / "0001_bad" / "work").glob("child-*.log"))) == 1


def _children_of(pid):
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # fields after the command: state, ppid, ...
            found.append(int(stat.parent.name))
    return found


def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_killing_the_parent_kills_its_pytest_child(tmp_path, fake_cases):
    """kill -9 of the process running a sweep takes its pytest child along (no orphan left)."""
    sweep = Sweep((Case("packed", "reset", "forward", 1, "uniform", "cpu"),), sizes=QUICK_SIZES, rounds=1)
    script = (
        "import sys; from pathlib import Path; from bench import _runner; "
        "from bench._workloads import Sweep; "
        f"_runner.CASES_DIR = Path({str(fake_cases)!r}); "
        f"_runner.run_sweep(Sweep.from_json({sweep.to_json()!r}), Path(sys.argv[1]), print)"
    )
    env = {**os.environ, "BENCH_FAULT": "hang:packed"}
    parent, children = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], env=env), []
    try:
        deadline = time.monotonic() + 60
        while not children and time.monotonic() < deadline:
            children = [c for c in _children_of(parent.pid)
                        if b"pytest" in Path(f"/proc/{c}/cmdline").read_bytes()]
            time.sleep(0.1)
        assert children, "the sweep never started its pytest child"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(c) for c in children), "the pytest child outlived its parent"
    finally:
        parent.kill()
        for child in children:  # only if the test failed: the orphan this test made
            if _alive(child):
                os.kill(child, signal.SIGKILL)


def test_each_case_has_the_partner_versus_names():
    feedback = Case("packed", "reset", "train-feedback", 4, "uniform", "cpu", "lstm")
    by_phase = Sweep((feedback,), versus=("phase", "train"))
    assert by_phase.partner_of(feedback) == Case("packed", "reset", "train", 4, "uniform", "cpu", "lstm")
    assert by_phase.partner_of(Case("packed", "reset", "train", 4, "uniform", "cpu")) is None  # itself
    assert Sweep.from_json(by_phase.to_json()) == by_phase
    by_strategy = Sweep((), versus=("strategy", "loop"))
    assert by_strategy.partner_of(Case("torch-padded", "reset", "train", 4, "uniform", "cpu")) is None  # torch
    reference = Sweep((), versus=("phase", "train-feedback"))
    assert reference.partner_of(Case("reference", "reset", "train", 4, "uniform", "cpu")) is None  # not run
    assert Sweep(()).partner_of(feedback) is None


def test_passes_alternate_their_direction():
    from bench._runner import pass_order

    cases = build_cases(["packed", "loop"], ["reset"], ["forward"], [1, 2], "uniform", "cpu")
    assert pass_order(cases, 0) == cases
    assert pass_order(cases, 1) == cases[::-1]
    assert pass_order(cases, 2) == cases


def test_passes_visit_every_case_and_pool_the_rounds_of_case_and_partner(tmp_path, fake_cases):
    result = CliRunner().invoke(main, [
        "run", "--quick", "--strategies", "packed", "--no-peers", "--states", "reset", "--phases", "forward",
        "--longest-steps", "1,2", "--passes", "2", "--versus", "strategy=loop",
        "--out", str(tmp_path / "out"), "--storage", str(tmp_path / "s"), "--save", "twice",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "2 passes of 2 rounds; round by round against strategy=loop" in result.output
    assert "pass 2/2 [4/4]" in result.output and " x strategy=loop" in result.output
    data = json.loads((tmp_path / "out" / "0001_twice" / "results.json").read_text())
    assert [r["params"]["longest_step"] for r in data["records"]] == [1, 2]
    for record in data["records"]:
        stats, extra = record["benchmark"]["stats"], record["benchmark"]["extra_info"]
        assert record["status"] == "ok" and stats["rounds"] == 4 and stats["passes"] == 2
        assert len(extra["visit_medians_s"]) == 2
        # the loop partner ran one round before each of the case's, in both visits
        assert extra["versus"] == "strategy=loop" and len(extra["versus_data_s"]) == 4
        assert extra["versus_median_s"] == pytest.approx(statistics.median(extra["versus_data_s"]))
        assert extra["versus_ratio"] == pytest.approx(stats["median"] / extra["versus_median_s"])
    # the second pass ran the cases in reverse, each in a fresh child: L2's visit ended before L1's
    order = [line.split(": ")[0].split()[-1] for line in result.output.splitlines() if line.startswith("pass 2/2")]
    assert order == ["packed-reset-forward-L2-gru-H64", "packed-reset-forward-L1-gru-H64"]
    assert len(list((tmp_path / "out" / "0001_twice" / "work").glob("child-*.log"))) == 2


@pytest.mark.filterwarnings("error::UserWarning")  # the plot of a panel without positive figures too
def test_generation_cases_record_tokens_per_second_next_to_their_greedy_partner(tmp_path, fake_cases):
    result = CliRunner().invoke(main, [
        "run", "--quick", "--strategies", "packed,per-sample", "--no-peers", "--states", "carry",
        "--phases", "generate-sampling", "--longest-steps", "2", "--versus", "phase=generate-greedy",
        "--out", str(tmp_path / "out"), "--storage", str(tmp_path / "s"), "--save", "gen",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    progress = [line for line in result.output.splitlines() if line.startswith("[")]
    assert len(progress) == 2 and all(" tokens/s, " in line for line in progress)
    saved = json.loads(next((tmp_path / "s").glob("*/0001_gen.json")).read_text())["benchmarks"]
    assert [b["fullname"].split("::")[0] for b in saved] == ["test_chain.py", "test_per_sample.py"]
    for bench in saved:
        extra = bench["extra_info"]
        assert extra["tokens"] == extra["real_steps"] > 0 and extra["decoder"].startswith("sampling")
        assert extra["tokens_per_s"] == pytest.approx(extra["tokens"] / bench["stats"]["median"])
        assert extra["versus"] == "phase=generate-greedy" and extra["versus_ratio"] > 0
