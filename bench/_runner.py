"""Runs a sweep's cases through pytest in child processes, one group at a time.

A group is the cases of one case module on one device (or a single case with
``isolate="case"``); one ``python -m pytest`` child runs it. The child appends a line to an events
file when a case starts and when it ends (see ``bench/cases/conftest.py``). The parent follows
that file and:

- kills the child's process group when a case runs past ``sweep.timeout_s``, records the case
  as a timeout, and starts a new child for the rest of the group;
- records a case as crashed when the child dies during it (a signal such as SIGKILL from the
  out-of-memory killer, or an abort), and goes on the same way;
- hands each finished case to a callback at once, so results are saved as they arrive.

A child never outlives the parent: on Linux it asks the kernel for SIGKILL when its parent dies
(``PR_SET_PDEATHSIG``, so even ``kill -9`` of ``bench run`` takes its child along), and the
parent kills the child's process group when it unwinds from SIGINT, SIGTERM or SIGHUP.
"""

from __future__ import annotations

import ctypes
import dataclasses
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench.cases
from bench._workloads import Case, Sweep
from ragged_common import atomic

CASES_DIR = Path(bench.cases.__file__).resolve().parent
POLL_S = 0.1
STARTUP_S = 120.0  # a child's silence allowed before its first case and between cases


def nodeid(case: Case) -> str:
    """The pytest node id of `case`, relative to the case directory."""
    return f"{case.module}::{case.function}[{case.id}]"


ISOLATE = ("cell", "group", "case")
"""`--isolate` choices: one child process per case module, device, cell and hidden size (the
default); per case module and device; per case."""


def groups(sweep: Sweep, isolate: str) -> list[list[Case]]:
    """Splits the cases into child-process groups (see `ISOLATE`), keeping their order within a group.

    A child that has built and run many cases runs later ones slower, more so for a framework
    that traces and compiles a program per case; `"cell"` keeps each child's share small, and
    the same for every framework.
    """
    if isolate == "case":
        return [[c] for c in sweep.cases]
    by_key: dict[tuple[Any, ...], list[Case]] = {}
    for case in sweep.cases:
        key: tuple[Any, ...] = (case.module, case.device)
        if isolate == "cell":
            key += (case.cell, case.hidden)
        by_key.setdefault(key, []).append(case)
    return list(by_key.values())


@dataclasses.dataclass
class _Child:
    proc: subprocess.Popen[bytes]
    events: Path
    log: Path
    offset: int = 0
    current: str | None = None
    started: float = 0.0


def _pytest_command(cases: list[Case], work: Path) -> list[str]:
    # The project's addopts disable benchmarks for the test suite; the cases need them on. The
    # parent saves the run; the child's own storage only has to stay out of the package. The
    # child runs its cases itself: pytest-benchmark times nothing under pytest-xdist.
    return [
        sys.executable, "-m", "pytest", *[nodeid(c) for c in cases],
        "-o", "addopts=", "-o", "python_files=test_*.py", "-p", "no:cacheprovider", "-p", "no:xdist",
        "--benchmark-enable", "--benchmark-disable-gc", f"--benchmark-storage={work / 'pytest-storage'}",
        "-q", "--no-header", "-rN", f"--rootdir={CASES_DIR}",
    ]


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn``: the child gets SIGKILL when `parent` dies (Linux only; elsewhere None).

    libc is loaded here, in the parent: between fork and exec the child only makes the call.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return arm


def child_environ(**extra: str) -> dict[str, str]:
    """This process's environment with `extra`, for a pytest child that is a run of its own.

    A sweep started inside a pytest run (bench's tests under pytest-xdist, or a user's) would
    hand its child the enclosing run's settings: the ``PYTEST_XDIST_*`` variables of an xdist
    worker, with which pytest-benchmark disables itself, and ``PYTEST_ADDOPTS``, options meant
    for the enclosing run (``-n``, ``--benchmark-disable``). Both are left out.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_") and k != "PYTEST_ADDOPTS"}
    return {**env, **extra}


def _start(cases: list[Case], sweep_file: Path, work: Path, index: int, tensor_memory: bool = False) -> _Child:
    events, log = work / f"events-{index:03d}.jsonl", work / f"child-{index:03d}.log"
    env = child_environ(BENCH_SWEEP=str(sweep_file), BENCH_EVENTS=str(events))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if tensor_memory:
        env["TF_CPU_ALLOCATOR_USE_BFC"] = "true"  # a counting host allocator; see bench._measure
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            _pytest_command(cases, work), cwd=CASES_DIR, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with(os.getpid()),
        )
    return _Child(proc, events, log, started=time.monotonic())


def _read_events(child: _Child) -> list[dict[str, Any]]:
    if not child.events.exists():
        return []
    with open(child.events, "rb") as fh:
        fh.seek(child.offset)
        data = fh.read()
    complete = data[: data.rfind(b"\n") + 1]
    child.offset += len(complete)
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


def _kill(child: _Child) -> None:
    try:
        os.killpg(child.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.proc.wait()


def _log_tail(child: _Child) -> str:
    try:
        lines = [ln for ln in child.log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def _death_message(child: _Child) -> str:
    code = child.proc.returncode
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        hint = " (likely out of memory)" if -code == signal.SIGKILL else ""
        return f"child process killed by {name}{hint} during the case"
    return f"child process exited with code {code} during the case: {_log_tail(child)}"


def _error_record(case: Case, status: str, message: str) -> dict[str, Any]:
    return {
        "event": "end", "nodeid": nodeid(case), "params": dataclasses.asdict(case),
        "status": status, "message": message, "benchmark": None,
    }


def _follow(child: _Child, pending: dict[str, Case], on_end: Callable[[dict[str, Any]], None], timeout_s: float) -> None:
    """Follows one child until it exits or is killed, recording every case it ends."""
    while True:
        exited = child.proc.poll() is not None
        for event in _read_events(child):
            child.started = time.monotonic()
            if event["event"] == "start":
                child.current, child.started = event["nodeid"], time.monotonic()
            elif event["nodeid"] in pending:
                pending.pop(event["nodeid"])
                child.current = None
                on_end(event)
        if exited:
            break
        limit = timeout_s if child.current else max(timeout_s, STARTUP_S)
        if time.monotonic() - child.started > limit:
            # Past the cap in a case, or silent too long between cases (start-up, collection).
            _kill(child)
            if child.current in pending:
                message = f"timeout: still running after {timeout_s:g} s"
                on_end(_error_record(pending.pop(child.current), "error", message))
            return
        time.sleep(POLL_S)
    if child.current in pending:
        on_end(_error_record(pending.pop(child.current), "error", _death_message(child)))


PEER_PACKAGES = {"test_torch.py": ("torch",), "test_jax.py": ("jax", "optax")}
"""The packages each peer's case module imports, by module."""


def missing_packages(module: str) -> list[str]:
    """The packages of `PEER_PACKAGES[module]` that are not installed (none for other modules)."""
    return [name for name in PEER_PACKAGES.get(module, ()) if importlib.util.find_spec(name) is None]


def _run_group(
    cases: list[Case], sweep_file: Path, work: Path, counter: list[int],
    on_end: Callable[[dict[str, Any]], None], sweep: Sweep,
) -> None:
    """Runs one group, restarting a child after each crash or timeout until every case ended.

    A peer's group whose packages are not installed at all ends as skipped without a child: a
    child would start Python and pytest only to find the same (an installed package that fails
    to import still gets its child, which records the import's own error).
    """
    missing = missing_packages(cases[0].module) if cases else []
    if missing:
        message = f"{missing[0]} cannot be imported (it is not installed); install the `peers` extra"
        for case in cases:
            on_end(_error_record(case, "skipped", message))
        return
    pending = {nodeid(c): c for c in cases}
    while pending:
        before = len(pending)
        counter[0] += 1
        child = _start(list(pending.values()), sweep_file, work, counter[0], sweep.tensor_memory)
        try:
            _follow(child, pending, on_end, sweep.timeout_s)
        finally:
            if child.proc.poll() is None:
                _kill(child)
        if len(pending) == before:
            # The child ended without starting a case (an import or collection error).
            reason = f"pytest exited with code {child.proc.returncode} before the case: {_log_tail(child)}"
            for case in list(pending.values()):
                on_end(_error_record(case, "error", reason))
            pending.clear()


def pass_order(cases: list[Case], index: int) -> list[Case]:
    """The cases in the order pass `index` (from 0) visits them: as given, then reversed, in turn.

    Alternating the direction puts each case early in one pass and late in the next, so a
    machine that slows down (or speeds up) steadily during a sweep weighs on every case alike.
    """
    return list(cases) if index % 2 == 0 else list(reversed(cases))


def run_sweep(
    sweep: Sweep, work: Path, on_end: Callable[[dict[str, Any]], None], isolate: str = "cell"
) -> None:
    """Runs every case of `sweep` in pytest child processes, `sweep.passes` times over.

    Each pass visits every case once, building it afresh in a new child and timing
    ``sweep.rounds`` rounds, in the order `pass_order` gives. A case whose visit does not end
    ``ok`` (an error, a timeout, a skip) is not visited again.

    Args:
        sweep: The cases and their shared settings.
        work: A directory for the sweep file, the events files and the children's logs.
        on_end: Called in the parent with each visit's end record, in the order visits end:
            ``params``, ``status`` (``ok``, ``error`` or ``skipped``), ``message``, ``benchmark``
            (the pytest-benchmark record of a measured case, else None) and ``pass`` (from 1).
        isolate: ``"cell"`` (one child per case module, device, cell and hidden size),
            ``"group"`` (one child per case module and device) or ``"case"`` (one child per
            case; slower, and the only way with exact ``ru_maxrss`` peaks off Linux).
    """
    work = work.resolve()  # the children run in the case directory
    work.mkdir(parents=True, exist_ok=True)
    sweep_file = work / "sweep.json"
    atomic.atomic_write(sweep_file, sweep.to_json())
    counter = [0]
    live = list(sweep.cases)
    for index in range(sweep.passes):
        ended: set[str] = set()

        def on_visit(record: dict[str, Any], number: int = index + 1) -> None:
            record["pass"] = number
            if record["status"] != "ok":
                ended.add(record["nodeid"])
            on_end(record)

        visit = dataclasses.replace(sweep, cases=tuple(pass_order(live, index)))
        for group in groups(visit, isolate):
            _run_group(group, sweep_file, work, counter, on_visit, sweep)
        live = [c for c in live if nodeid(c) not in ended]
