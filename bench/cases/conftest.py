"""Parametrizes the cases from the sweep that `bench run` hands over, and streams their results.

Environment (set by `bench run`; without it a quick CPU sweep runs):

- ``BENCH_SWEEP``: path of a sweep JSON file (`bench._workloads.Sweep.to_json`).
- ``BENCH_EVENTS``: path of a JSON-lines file; a line is appended when a case starts and when it
  ends (its pytest-benchmark record, error or skip reason), so a crash loses nothing finished.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from bench._workloads import PARAM_NAMES, Case, Sweep, quick_sweep

SWEEP_ENV = "BENCH_SWEEP"
EVENTS_ENV = "BENCH_EVENTS"


def _load_sweep() -> Sweep:
    path = os.environ.get(SWEEP_ENV)
    if path:
        return Sweep.from_json(Path(path).read_text())
    from bench._tf_framework import chain_strategies

    return quick_sweep(list(chain_strategies()))


_SWEEP = _load_sweep()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrizes each case module with its cases of the sweep."""
    if "bench_case" not in metafunc.fixturenames:
        return
    cases = _SWEEP.cases_of(Path(metafunc.module.__file__).name)
    values = [tuple(getattr(c, name) for name in PARAM_NAMES) for c in cases]
    metafunc.parametrize(PARAM_NAMES, values, ids=[c.id for c in cases])


@pytest.fixture
def sweep() -> Sweep:
    """The sweep being run."""
    return _SWEEP


@pytest.fixture
def bench_case(
    strategy: str, state: str, phase: str, longest_step: int, lengths: str, device: str, cell: str, hidden: int
) -> Case:
    """The case named by the params."""
    return Case(strategy, state, phase, longest_step, lengths, device, cell, hidden)


def _emit(record: dict[str, Any]) -> None:
    path = os.environ.get(EVENTS_ENV)
    if not path:
        return
    line = json.dumps(record, default=str) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    """Notes that a case started (the parent's per-case timeout runs from here)."""
    _emit({"event": "start", "nodeid": nodeid})


def _outcome(report: pytest.TestReport, call: pytest.CallInfo[Any]) -> tuple[str, str | None]:
    if report.skipped:
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        return "skipped", reason.removeprefix("Skipped: ")
    if report.failed:
        text = call.excinfo.exconly() if call.excinfo else str(report.longrepr)
        return "error", text.strip().splitlines()[0][:500] if text.strip() else "failed"
    return "ok", None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    """Appends the case's pytest-benchmark record, error or skip reason to the events file."""
    outcome = yield
    report = outcome.get_result()
    if not hasattr(item, "callspec") or report.when == "teardown":
        return
    if report.when == "setup" and report.passed:
        return
    status, message = _outcome(report, call)
    fixture = getattr(item, "funcargs", {}).get("benchmark")
    stats = getattr(fixture, "stats", None)
    record = {
        "event": "end",
        "nodeid": item.nodeid,
        "params": {name: item.callspec.params[name] for name in PARAM_NAMES},
        "status": status,
        "message": message,
        "benchmark": stats.as_dict(include_data=True) if stats is not None and status == "ok" else None,
    }
    _emit(record)
