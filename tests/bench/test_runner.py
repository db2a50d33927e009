"""The runner on its own: GPU cases skip with a reason on a CPU machine; a run where every case
fails exits 1."""

import json

import pytest
from click.testing import CliRunner

from bench._runner import groups, nodeid, run_sweep
from bench._workloads import QUICK_SIZES, Case, Sweep, build_cases
from bench.cli import main


def test_groups_split_by_module_and_device():
    cases = build_cases(["packed", "reference", "torch-packed"], ["reset"], ["forward"], [1, 2], "uniform", "cpu")
    by_group = groups(Sweep(tuple(cases)), "group")
    assert [len(g) for g in by_group] == [2, 2, 2]
    assert len(groups(Sweep(tuple(cases)), "case")) == 6
    assert nodeid(cases[0]) == "test_chain.py::test_chain[packed-reset-forward-L1-uniform-cpu]"


def test_gpu_cases_skip_with_the_reason_without_a_gpu(tmp_path):
    from bench._tf_framework import gpu_count

    if gpu_count():
        pytest.skip("this machine has a GPU")
    cases = tuple(Case("reference", "reset", phase, 1, "uniform", "gpu") for phase in ("forward", "train"))
    records = []
    run_sweep(Sweep(cases, sizes=QUICK_SIZES, rounds=1), tmp_path, records.append, isolate="case")
    assert [r["status"] for r in records] == ["skipped", "skipped"]
    assert all("TensorFlow sees no GPU" in r["message"] for r in records)
    assert len(list(tmp_path.glob("child-*.log"))) == 2  # one child per case


def test_every_case_failing_exits_1(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_FAULT", "raise:reference-reset")
    result = CliRunner().invoke(main, [
        "run", "--strategies", "reference", "--no-peers", "--states", "reset", "--phases", "forward",
        "--longest-steps", "1", "--out", str(tmp_path / "out"), "--storage", str(tmp_path / "s"), "--save", "bad",
    ])
    assert result.exit_code == 1
    assert "Error: every case failed" in result.output
    records = json.loads((tmp_path / "out" / "0001_bad" / "results.json").read_text())["records"]
    assert records[0]["status"] == "error" and "fault injected" in records[0]["message"]
