"""A case that raises, crashes or hangs is recorded with its reason, and the sweep goes on.

The failures are real: ``BENCH_FAULT`` makes the named case raise, abort its process, or sleep
past ``--timeout`` inside the pytest child (which measures the fake framework of fake_cases.py).
"""

import json

from click.testing import CliRunner

from bench.cli import main


def test_failures_are_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch, fake_cases):
    monkeypatch.setenv("BENCH_FAULT", "raise:-L1-,crash:-L2-,hang:-L3-")
    result = CliRunner().invoke(main, [
        "run", "--quick", "--strategies", "packed", "--no-peers", "--states", "reset", "--phases", "forward",
        "--longest-steps", "1,2,3,4", "--timeout", "2", "--out", str(tmp_path / "out"),
        "--storage", str(tmp_path / "storage"), "--save", "faults",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    records = json.loads((tmp_path / "out" / "0001_faults" / "results.json").read_text())["records"]
    by_l = {r["params"]["longest_step"]: r for r in records}
    assert sorted(by_l) == [1, 2, 3, 4]
    assert by_l[1]["status"] == "error" and "fault injected by BENCH_FAULT" in by_l[1]["message"]
    assert by_l[2]["status"] == "error" and "SIGABRT" in by_l[2]["message"]
    assert by_l[3]["status"] == "error" and "timeout: still running after 2 s" in by_l[3]["message"]
    assert by_l[4]["status"] == "ok" and by_l[4]["benchmark"]["extra_info"]["real_steps_per_s"] > 0
    saved = json.loads(next((tmp_path / "storage").glob("*/0001_faults.json")).read_text())
    assert [b["params"]["longest_step"] for b in saved["benchmarks"]] == [4]
    assert len(saved["bench"]["failures"]) == 3
    assert "3 of 4 cases failed" in result.output
