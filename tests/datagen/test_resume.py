"""An interrupted ``datagen make`` resumes to exactly what an uninterrupted run writes.

``make`` records the shards it has finished in ``manifest.pending.json`` as it goes; that manifest
lists some of the shards, not all, and ``--resume`` keeps those and makes the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import datagen
from datagen.cli import main

from .conftest import SIGINT_AS_IN_A_TERMINAL

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--samples", "24000", "--shard-size", "1000"]  # 24 shards, about a second on one core
PENDING = "manifest.pending.json"
LOCK = ".datagen.lock"
# The run flushes its pending manifest after every shard (not once a second), so a kill soon
# after the start already leaves one to resume from.
MAKE = SIGINT_AS_IN_A_TERMINAL + "import datagen._make as m; m._FLUSH_SECONDS = 0.0; from datagen.cli import main; main()"


def digests(directory: Path) -> dict[str, str]:
    """Every file's sha256; none for a directory an interrupted run removed again, being empty."""
    if not directory.exists():
        return {}
    return {entry.name: hashlib.sha256(entry.read_bytes()).hexdigest()
            for entry in sorted(directory.iterdir()) if entry.is_file()}  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("whole") / "d"
    result = CliRunner().invoke(main, ["make", "--out", str(out), *ARGS])
    assert result.exit_code == 0, result.output
    return digests(out)


def wait_for_group(group: int, seconds: float = 10.0) -> None:
    """Waits until every process of ``group`` (the run and its workers) is gone."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    os.killpg(group, signal.SIGKILL)
    raise AssertionError(f"processes of group {group} outlived the run")


def interrupt(out: Path, workers: int, sig: signal.Signals, delay: float, after: str) -> bool:
    """Starts ``datagen make``, signals it ``delay`` seconds after the file ``after`` appears in
    ``out`` (its lock: the run has begun; its pending manifest: it has recorded shards); returns
    whether it was still running when signalled.

    SIGKILL goes to the run alone, as ``kill -9 PID`` (its workers must follow it); SIGINT to its
    whole process group, as Ctrl-C in a terminal does.
    """
    command = [sys.executable, "-c", MAKE, "make", "--out", str(out), *ARGS, "--workers", str(workers)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        while not (out / after).exists() and process.poll() is None:
            time.sleep(0.005)
        began = (out / after).exists()
        time.sleep(delay)
        running = process.poll() is None
        if running and sig == signal.SIGKILL:
            os.kill(process.pid, sig)
        elif running:
            os.killpg(process.pid, sig)
        stderr = process.communicate(timeout=60)[1]
    finally:
        if process.poll() is None:
            process.kill()
    wait_for_group(process.pid)
    assert began and "Traceback" not in stderr, stderr
    return running


def resume(out: Path, workers: int) -> None:
    result = CliRunner().invoke(main, ["make", "--out", str(out), *ARGS, "--workers", str(workers), "--resume"])
    assert result.exit_code == 0, result.output


def check_kill_and_resume(out: Path, workers: int, sig: signal.Signals, delay: float, after: str,
                          expected: dict[str, str]) -> bool:  # fmt: skip
    """Interrupts a run, resumes it, and checks the directory against an uninterrupted run's;
    returns whether the run was interrupted after it recorded shards."""
    interrupted = interrupt(out, workers, sig, delay, after)
    left = set(digests(out))
    resume(out, workers)
    assert digests(out) == expected  # every file, the manifest included, byte for byte
    return interrupted and PENDING in left


@pytest.mark.parametrize("workers,sig,delay", [(1, signal.SIGKILL, 0.05), (2, signal.SIGINT, 0.1)], ids=["kill-1", "int-2"])
def test_a_run_killed_after_it_recorded_shards_resumes_to_the_uninterrupted_dataset(
    tmp_path, uninterrupted, workers, sig, delay
):
    out = tmp_path / "d"
    assert check_kill_and_resume(out, workers, sig, delay, PENDING, uninterrupted), "the run ended before the kill"


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill", "int"])
def test_runs_killed_at_random_points_resume_to_the_uninterrupted_dataset(tmp_path, uninterrupted, workers, sig):
    # three points anywhere from the start, before or after shards were recorded, and three soon
    # after the first shard was: timed from the start alone, a loaded machine may kill every run
    # before its first shard, and the resume from a pending manifest would go untested
    draw = random.Random(f"{workers}-{sig}")
    points = [(LOCK, delay) for delay in draw.sample([step / 20 for step in range(30)], 3)]
    points += [(PENDING, delay) for delay in draw.sample([step / 100 for step in range(10)], 3)]
    resumed_from_pending = 0
    for attempt, (after, delay) in enumerate(points):
        out = tmp_path / f"d{attempt}"
        resumed_from_pending += check_kill_and_resume(out, workers, sig, delay, after, uninterrupted)
    assert resumed_from_pending >= 2, f"only {resumed_from_pending} of {points} left a pending manifest"


def pending_of(tmp_path: Path, keep: list[int]) -> Path:
    """A dataset of 5 shards whose manifest was, as a run interrupted partway, pending with ``keep``."""
    out = tmp_path / "d"
    datagen.make(out, n_samples=50, shard_size=10, task="running")
    manifest = json.loads((out / "manifest.json").read_text())
    shards = [manifest["shards"][index] for index in keep]
    manifest["shards"] = shards
    manifest["counts"].update(samples=sum(r["stop"] - r["start"] for r in shards), shards=len(shards),
                              real_steps=sum(r["real_steps"] for r in shards))  # fmt: skip
    (out / "manifest.json").unlink()
    (out / PENDING).write_text(json.dumps(manifest))
    return out


def test_a_pending_manifest_with_gaps_resumes(tmp_path):
    out = pending_of(tmp_path, [0, 2, 3])
    datagen.make(out, n_samples=50, shard_size=10, task="running", resume=True)
    data = datagen.read(out, verify=True)
    assert data["manifest"]["counts"]["shards"] == 5 and not (out / PENDING).exists()
    assert (data["x"] == datagen.generate(50, task="running")["x"]).all()


@pytest.mark.parametrize(
    "keep,match",
    [
        ([2, 0], r"shard ranges overlap or are out of order"),
        ([1, 1], r"shard ranges overlap or are out of order"),
    ],
)
def test_a_pending_manifest_out_of_order_or_listing_a_shard_twice_is_refused(tmp_path, keep, match):
    out = pending_of(tmp_path, keep)
    with pytest.raises(datagen.DatasetError, match=rf"manifest.pending.json: invalid manifest: {match}"):
        datagen.make(out, n_samples=50, shard_size=10, task="running", resume=True)


def test_a_pending_manifest_with_a_range_off_the_plan_is_refused(tmp_path):
    out = pending_of(tmp_path, [0, 1])
    manifest = json.loads((out / PENDING).read_text())
    manifest["shards"][1].update(start=15, stop=25)
    (out / PENDING).write_text(json.dumps(manifest))
    with pytest.raises(datagen.DatasetError, match=r"shard range \(15, 25\) is not one of the 5 shard\(s\) of 10 "
                                                   r"samples in \[0, 50\)"):  # fmt: skip
        datagen.make(out, n_samples=50, shard_size=10, task="running", resume=True)


def test_a_final_manifest_must_still_list_every_shard(tmp_path):
    out = pending_of(tmp_path, [0, 1, 2])
    (out / PENDING).rename(out / "manifest.json")
    with pytest.raises(datagen.DatasetError, match=r"shard ranges must tile \[0, 50\) in 5 shard\(s\)"):
        datagen.read(out)
