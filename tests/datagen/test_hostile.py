"""Hostile input, faults and concurrency: one clear line, no mixed data, no orphaned worker.

Each test here was a failure first: concurrent runs into one directory, ``--resume`` with nothing
left to make, workers outliving a killed parent, manifests whose shards or counts disagree, and
values or files the code cannot hold.
"""

from __future__ import annotations

import collections
import fcntl
import json
import re
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import datagen
from datagen import _storage, _tfrecord
from datagen.cli import main

from .conftest import SIGINT_AS_IN_A_TERMINAL

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def one_error_line(result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    errors = [line for line in result.output.splitlines() if "Error:" in line]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


def listing(directory: Path) -> dict[str, bytes]:
    return {entry.name: entry.read_bytes() for entry in sorted(directory.iterdir()) if entry.is_file()}


def python(code: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)  # fmt: skip


# 8: one run at a time per directory


def hold_lock(directory: Path, name: str = ".datagen.lock", shared: bool = False) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(directory / name, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(descriptor, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    return descriptor


@pytest.mark.parametrize("extra", [[], ["--resume"], ["--overwrite"]])
def test_a_directory_another_run_writes_is_refused_and_left_as_it_was(tmp_path, extra):
    out = tmp_path / "d"
    descriptor = hold_lock(out)
    try:
        before = listing(out)
        line = one_error_line(run("make", "--out", out, "--samples", "20", *extra), 1)
        assert line == (f"Error: {out}: another datagen run is writing this directory (it holds .datagen.lock); "
                        "wait for it to finish or choose another --out")
        assert listing(out) == before
    finally:
        os.close(descriptor)
    assert run("make", "--out", out, "--samples", "20", *extra).exit_code == 0


def test_merge_into_a_directory_another_run_writes_is_refused(tmp_path):
    for index in range(2):
        datagen.make(tmp_path / "s", n_samples=20, shard_size=10, num_shards=2, shard_index=index)
    descriptor = hold_lock(tmp_path / "all")
    try:
        with pytest.raises(datagen.DatasetError, match=r"another datagen run is writing this directory "
                                                       r"\(it holds .datagen.lock\); wait for it to finish "
                                                       r"or choose another `out`$"):  # fmt: skip
            datagen.merge(tmp_path / "s", out=tmp_path / "all")
        assert not (tmp_path / "all" / "manifest.json").exists()
    finally:
        os.close(descriptor)


def test_slices_of_one_dataset_may_run_at_once_but_not_beside_a_whole_run(tmp_path):
    out = tmp_path / "d"
    whole_run = hold_lock(out, shared=True)  # as slice 0 holds it while it runs
    slice_zero = hold_lock(out, ".datagen.slice-00000-of-00002.lock")
    try:
        datagen.make(out, n_samples=20, shard_size=10, num_shards=2, shard_index=1)
        with pytest.raises(datagen.DatasetError, match=r"another datagen run is writing this directory"):
            datagen.make(out, n_samples=20, shard_size=10, num_shards=2, shard_index=0)
        with pytest.raises(datagen.DatasetError, match=r"another datagen run is writing this directory"):
            datagen.make(out, n_samples=20, shard_size=10)
    finally:
        os.close(slice_zero)
        os.close(whole_run)
    assert not (out / "manifest.slice-00000-of-00002.json").exists()


def test_two_runs_started_at_once_into_one_new_directory_never_mix(tmp_path):
    for attempt in range(2):
        out = tmp_path / f"d{attempt}"
        code = ("import sys; from datagen.cli import main; "
                f"main(['make', '--out', {str(out)!r}, '--samples', '6000', '--shard-size', '500', "
                "'--task', 'running', '--seed', sys.argv[1]])")  # fmt: skip
        runs = [python(code.replace("sys.argv[1]", repr(str(seed)))) for seed in (1, 2)]
        results = [(process.wait(120), process.communicate()[1]) for process in runs]
        winners = [seed for seed, (code_, _) in zip((1, 2), results) if code_ == 0]
        assert len(winners) == 1, results
        loser = results[2 - winners[0]]
        assert loser[0] in (1, 2) and ("another datagen run" in loser[1] or "already holds a dataset" in loser[1])
        data = datagen.read(out, verify=True)
        assert data["manifest"]["params"]["seed"] == winners[0]
        np.testing.assert_array_equal(data["x"], datagen.generate(6000, task="running", seed=winners[0])["x"])


def test_a_refused_run_into_a_new_directory_leaves_nothing(tmp_path, monkeypatch):
    from datagen import _make

    def fail(*args, **kwargs):
        raise datagen.DatasetError("boom")

    monkeypatch.setattr(_make, "_write_truth", fail)
    with pytest.raises(datagen.DatasetError, match="boom"):
        datagen.make(tmp_path / "new" / "d", n_samples=5)
    assert not (tmp_path / "new").exists()


# 9: resume with nothing left to make


def test_resume_with_workers_and_no_shard_left_writes_the_manifest(tmp_path):
    out = tmp_path / "d"
    datagen.make(out, n_samples=40, shard_size=10)
    (out / "manifest.json").rename(out / "manifest.pending.json")  # as a crash just before the manifest
    result = run("make", "--out", out, "--samples", "40", "--shard-size", "10", "--resume", "--workers", "2")
    assert result.exit_code == 0, result.output
    assert (out / "manifest.json").exists() and not (out / "manifest.pending.json").exists()
    np.testing.assert_array_equal(datagen.read(out, verify=True)["x"], datagen.generate(40)["x"])


# 10: workers die with their parent


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_the_parent_of_a_parallel_make_ends_its_workers(tmp_path):
    code = ("from datagen.cli import main; "
            f"main(['make', '--out', {str(tmp_path / 'd')!r}, '--samples', '400000', '--shard-size', '1024', "
            "'--task', 'running', '--workers', '2'])")  # fmt: skip
    parent = python(code)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(workers) < 2 and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.05)
            workers = children_of(parent.pid)
        assert len(workers) >= 2, parent.poll()
        time.sleep(0.5)  # let them start work
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 5
        while any(map(alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(map(alive, workers)), [pid for pid in workers if alive(pid)]
    finally:
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
        parent.communicate()


def test_ctrl_c_of_a_parallel_run_ends_it_without_worker_tracebacks():
    # Job 0 ends at once, so its worker waits idle for more; job 1 presses Ctrl-C (SIGINT to the
    # whole process group, as a terminal does) and carries on. An idle worker raised
    # KeyboardInterrupt and printed its traceback; now the parent alone stops, once job 1 is done.
    code = (SIGINT_AS_IN_A_TERMINAL +
            "import os, signal, time\n"
            "from datagen import _pool\n"
            "def job(index):\n"
            "    if index == 1:\n"
            "        time.sleep(0.5)\n"
            "        os.killpg(0, signal.SIGINT)\n"
            "        time.sleep(0.5)\n"
            "    return index\n"
            "try:\n"
            "    print(list(_pool.imap(job, [0, 1], 2)))\n"
            "except KeyboardInterrupt:\n"
            "    print('interrupted')\n")  # fmt: skip
    process = python(code, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert (process.returncode, stdout, stderr) == (0, "interrupted\n", "")


# 11: manifests whose shards or counts disagree


def edit_manifest(directory: Path, edit) -> None:
    manifest = json.loads((directory / "manifest.json").read_text())
    edit(manifest)
    (directory / "manifest.json").write_text(json.dumps(manifest))


def listed_twice(manifest):
    copy = dict(manifest["shards"][0], start=40, stop=50)
    manifest["shards"].append(copy)
    manifest["counts"].update(samples=50, shards=5, real_steps=manifest["counts"]["real_steps"] + copy["real_steps"])


def same_file_twice(manifest):
    manifest["shards"][1]["file"] = manifest["shards"][0]["file"]
    manifest["shards"][1]["sha256"] = manifest["shards"][0]["sha256"]


@pytest.mark.parametrize("verify", [False, True])
@pytest.mark.parametrize(
    "edit,match",
    [
        (listed_twice, r"shard ranges must tile \[0, 40\) in 4 shard\(s\) of 10 samples; received 5 range"),
        (lambda m: m["shards"].pop(), r"shard ranges must tile \[0, 40\)"),
        (lambda m: m["params"].update(n_samples=50), r"shard ranges must tile \[0, 50\)"),
        (lambda m: [r.update(start=r["start"] + 1, stop=r["stop"] + 1) for r in m["shards"]], r"must tile \[0, 40\)"),
        (same_file_twice, r"a shard file is listed more than once"),
        (lambda m: m["counts"].update(samples=41), r"`counts.samples` is 41, the shards give 40"),
        (lambda m: m["counts"].update(real_steps=m["counts"]["real_steps"] + 1), r"`counts.real_steps` is"),
        (lambda m: m["counts"].update(shards=3), r"`counts.shards` is 3, the shards give 4"),
        (lambda m: m["counts"].update(timesteps="16"), r"`counts` must hold four integers"),
        (lambda m: m["slice"].update(total_samples=400), r"`slice.total_samples` must be 40; received 400"),
    ],
)  # fmt: skip
def test_manifests_whose_shards_do_not_tile_or_whose_counts_disagree_are_refused(tmp_path, edit, match, verify):
    datagen.make(tmp_path / "d", n_samples=40, shard_size=10, task="running")
    edit_manifest(tmp_path / "d", edit)
    with pytest.raises(datagen.DatasetError, match=match):
        datagen.read(tmp_path / "d", verify=verify)
    assert "invalid manifest" in one_error_line(run("inspect", tmp_path / "d"), 1)


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda m: m.pop("noise_floor"), r"`noise_floor` must be noise \*\* 2 = 0.0025000000000000005; received None"),
        (lambda m: m.update(noise_floor="0.0025"), r"`noise_floor` must be noise \*\* 2"),
        (lambda m: m.update(noise_floor=0.5), r"`noise_floor` must be noise \*\* 2 = .*; received 0.5"),
        (lambda m: m.update(noise_floor=True), r"`noise_floor` must be noise \*\* 2"),
        (lambda m: m.pop("law"), r"`law` must be an object whose task is 'running'"),
        (lambda m: m.update(law="running"), r"`law` must be an object whose task is 'running'"),
        (lambda m: m["law"].update(task="echo"), r"`law` must be an object whose task is 'running'"),
        (lambda m: m["law"].update(state=3), r"`law.law` and `law.state` must be strings"),
        (lambda m: m["truth"].pop("parameters"), r"`truth.parameters` must be an object"),
        (lambda m: m["truth"].update(parameters=[1, 2]), r"`truth.parameters` must be an object"),
        (lambda m: m["truth"]["parameters"].update(tau="abc"), r"`truth.parameters.tau` must be a finite number"),
        (lambda m: m["truth"]["parameters"].update(tau=[[1], [2, 3]]), r"`truth.parameters.tau` must be a finite"),
        (lambda m: m["truth"]["parameters"].update(tau={"a": 1}), r"`truth.parameters.tau` must be a finite"),
        (lambda m: m["truth"]["parameters"].update(tau=[1.0, 2.0, 3.0, 4.0]), r"`truth.parameters.tau` differs from "
                                                                               r"the law's tau"),
        (lambda m: m["truth"]["parameters"].update(tau=[1.0]), r"`truth.parameters.tau` differs from the law's"),
        (lambda m: m["truth"]["parameters"].pop("rho"), r"`truth.parameters` must hold \['amplitude', 'rho', 'tau'\] "
                                                        r"for task 'running'; received \['amplitude', 'tau'\]"),
        (lambda m: m["generator"].pop("version"), r"`generator.version` must be a string"),
    ],
)  # fmt: skip
def test_manifests_with_a_missing_or_mistyped_law_are_refused_in_one_line(tmp_path, edit, match):
    datagen.make(tmp_path / "d", n_samples=10, task="running")
    edit_manifest(tmp_path / "d", edit)
    with pytest.raises(datagen.DatasetError, match=match):
        datagen.read(tmp_path / "d")
    assert "invalid manifest" in one_error_line(run("inspect", tmp_path / "d"), 1)


# 12: values the code cannot hold


@pytest.mark.parametrize(
    "args,message",
    [
        (["--noise", "1e200"], "Invalid value for '--noise': must be a number in [0, 1e+18]; received 1e+200"),
        (["--noise", "1e19", "--workers", "2"], "Invalid value for '--noise': must be a number in [0, 1e+18]"),
        (["--longest-step", "3000000000"], "Invalid value for '--longest-step': must be an integer in "
                                           "[1, 2147483647]; received 3000000000"),  # fmt: skip
        (["--timesteps", "100000000"], "Invalid value for '--timesteps/--input-size/--output-size/--longest-step/"
                                       "--teacher-hidden': the sizes need about"),  # fmt: skip
        (["--input-size", "10000000", "--output-size", "10000000"], "the sizes need about"),
        (["--longest-step", "2000000000", "--lengths", "fixed"], "more than this machine's"),
        (["--task", "teacher", "--teacher-hidden", "1000000"], "the sizes need about"),
        (["--seed", str(2**64)], "Invalid value for '--seed': must be an integer in"),
    ],
)
def test_values_that_cannot_be_held_exit_2_in_one_line_writing_nothing(tmp_path, args, message):
    out = tmp_path / "new" / "d"
    result = run("make", "--out", out, "--samples", "4000", "--shard-size", "1000", *args)
    assert message in one_error_line(result, 2)
    assert not (tmp_path / "new").exists()


def test_generate_refuses_sizes_that_cannot_fit_in_memory():
    with pytest.raises(datagen.ParameterError, match=r"the sizes need about .* GiB of memory") as caught:
        datagen.generate(4, timesteps=10**8)
    assert caught.value.name == "sizes"
    with pytest.raises(datagen.ParameterError, match=r"GiB of memory to generate 2000000001024 samples") as caught:
        datagen.generate(10**12, timesteps=4)
    assert caught.value.name == "n_samples"


def test_a_dataset_over_twice_the_free_disk_exits_2_at_once_writing_nothing(tmp_path):
    out = tmp_path / "new" / "d"
    started = time.monotonic()
    line = one_error_line(run("make", "--out", out, "--samples", "3000000000000"), 2)
    assert time.monotonic() - started < 60  # refused up front, not after listing 3e9 shard names
    assert line.startswith("Error: Invalid value for '--samples': 3000000000000 samples would take about ")
    assert "GiB on disk uncompressed" in line and "free at" in line and line.endswith("received 3000000000000")
    assert not (tmp_path / "new").exists()


def test_the_disk_check_counts_the_files_a_run_replaces(monkeypatch, tmp_path):
    from datagen import _memory

    need = _memory.bytes_stored(datagen._params.Spec(), 4000)
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(_memory.shutil, "disk_usage", lambda _: usage(10 * need, 0, need / 3))
    with pytest.raises(datagen.ParameterError, match=r"4000 samples would take about .* received 4000") as caught:
        datagen.make(tmp_path / "d", n_samples=4000, shard_size=1000)  # over twice the free space
    assert caught.value.name == "n_samples" and not (tmp_path / "d").exists()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "old.bin").write_bytes(b"\0" * int(need))
    with pytest.raises(datagen.ParameterError, match=r"4000 samples would take about"):
        datagen.make(tmp_path / "d", n_samples=4000, shard_size=1000)  # old.bin stays: no room
    manifest = datagen.make(tmp_path / "d", n_samples=4000, shard_size=1000, overwrite=True)  # its bytes count
    assert manifest["counts"]["samples"] == 4000


def test_workers_whose_memory_adds_up_past_the_machine_are_refused(monkeypatch, tmp_path):
    from datagen import _memory

    need = _memory.bytes_needed(datagen._params.Spec(), 1024 + 1000)
    monkeypatch.setattr(_memory, "available_bytes", lambda: need * 2.5)
    with pytest.raises(datagen.ParameterError, match=r"`workers` 3 would need about .* GiB; received 3") as caught:
        datagen.make(tmp_path / "d", n_samples=4000, shard_size=1000, workers=3)
    assert caught.value.name == "workers" and not (tmp_path / "d").exists()
    datagen.make(tmp_path / "d", n_samples=4000, shard_size=1000, workers=2)


@pytest.mark.parametrize("out", ["/proc/x", "/proc/x/y", "/sys/x"])
def test_an_out_that_cannot_be_created_exits_2(out):
    if not Path(out).parts[1] in os.listdir("/") or not os.path.isdir("/" + Path(out).parts[1]):
        pytest.skip(f"no {out} on this system")
    line = one_error_line(run("make", "--out", out, "--samples", "5"), 2)
    assert "Invalid value for '--out': `out`" in line and repr(out) in line
    assert not os.path.exists(out)


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE and SIGXFSZ")
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_full_disk_gives_one_line_naming_the_file_and_leaves_no_temporary(tmp_path, workers):
    out = tmp_path / "d"
    code = ("import resource, signal\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))\n"
            "from datagen.cli import main\n"
            f"main(['make', '--out', {str(out)!r}, '--samples', '3000', '--task', 'running',"
            f" '--workers', {workers!r}])")  # fmt: skip
    process = python(code)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if "Error:" in line]
    assert len(errors) == 1 and errors[0].startswith("Error: no space left while writing "), stderr
    assert f"{out}/shard-0000" in errors[0] and errors[0].endswith(".npz")
    assert not list(out.glob(".*.tmp")) and not (out / "manifest.json").exists()


def test_a_full_disk_while_plotting_leaves_no_file(small_npz, tmp_path, monkeypatch):
    import errno

    from ragged_common import atomic

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "atomic_write", full)
    line = one_error_line(run("inspect", small_npz, "--plot", tmp_path / "p.png"), 1)
    assert line == f"Error: no space left while writing {tmp_path / 'p.png'}"
    assert not (tmp_path / "p.png").exists()


@pytest.mark.parametrize(
    "name,message",
    [
        ("p.txt", "Invalid value for '--plot': must be a path ending in .png; received"),
        ("p", "Invalid value for '--plot': must be a path ending in .png"),
        ("missing/p.png", "Invalid value for '--plot': must be in an existing directory; received"),
        ("shard/p.png", "Invalid value for '--plot': must be in an existing directory"),
        ("dir.png", "dir.png' is a directory"),  # click's own check; the library says "`plot` must be a file"
    ],
)
def test_inspect_plot_into_a_bad_path_exits_2_before_anything(small_npz, tmp_path, name, message):
    (tmp_path / "shard").write_text("a file")
    (tmp_path / "dir.png").mkdir()
    before = sorted(tmp_path.rglob("*"))
    result = run("inspect", small_npz, "--plot", tmp_path / name)
    assert message in one_error_line(result, 2)
    assert "samples" not in result.output  # refused before the summary
    assert sorted(tmp_path.rglob("*")) == before
    with pytest.raises(datagen.ParameterError, match=r"`plot` must"):
        datagen._inspect.plot(small_npz, tmp_path / name)


def rewrite_first_sample_steps(directory: Path, value: int) -> None:
    """Writes shard 0 of a tfrecord dataset again with ``steps[0, 0] = value`` (a varint of any size)."""
    data = datagen.read(directory)
    manifest = data["manifest"]
    stop = manifest["shards"][0]["stop"]
    offsets = np.concatenate([[0], np.cumsum(data["steps"].sum(axis=1))])
    records = []
    for i in range(stop):
        steps = np.array([int(s) for s in data["steps"][i]], dtype=object)
        if i == 0:
            steps[0] = value
        rows = slice(offsets[i], offsets[i + 1])
        records.append(_tfrecord.encode_example({"x": data["x"][i], "steps": steps, "y_values": data["y_values"][rows],
                                                 "y_clean_values": data["y_clean_values"][rows]}))  # fmt: skip
    (directory / "shard-00000.tfrecord").write_bytes(_tfrecord.frame(records))


@pytest.mark.parametrize(
    "value,match",
    [
        (2**69, r"shard-00000.tfrecord: protobuf varint overflows 64 bits"),  # ten bytes, 70 bits
        (2**70, r"shard-00000.tfrecord: malformed protobuf varint"),  # eleven bytes
        (2**64 - 1, r"shard-00000.tfrecord: `steps` holds -1, outside \[0, 2147483647\]"),
        (2**32, r"shard-00000.tfrecord: `steps` holds 4294967296, outside \[0, 2147483647\]"),
    ],
)
def test_tfrecord_steps_that_overflow_or_would_wrap_are_refused(tmp_path, value, match):
    datagen.make(tmp_path / "d", n_samples=20, shard_size=10, format="tfrecord", task="running")
    rewrite_first_sample_steps(tmp_path / "d", value)
    with pytest.raises(datagen.DatasetError, match=match):
        datagen.read(tmp_path / "d")
    assert "shard-00000.tfrecord" in one_error_line(run("inspect", tmp_path / "d"), 1)


def test_tfrecord_steps_of_2_to_the_32_plus_a_real_length_do_not_read_as_that_length(tmp_path):
    datagen.make(tmp_path / "d", n_samples=20, shard_size=10, format="tfrecord", task="running", lengths="fixed")
    rewrite_first_sample_steps(tmp_path / "d", 2**32 + 8)  # an int32 cast would read 8, the true length
    with pytest.raises(datagen.DatasetError, match=r"`steps` holds 4294967304"):
        datagen.read(tmp_path / "d")


def with_timeout(function, seconds: float = 10.0):
    outcome: dict[str, object] = {}

    def target():
        try:
            outcome["value"] = function()
        except BaseException as error:  # handed back to the test
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    return thread.is_alive(), outcome


@pytest.mark.parametrize("name", ["shard-00001.npz", "manifest.json", "teacher.npz"])
def test_a_fifo_named_as_a_dataset_file_is_refused_without_hanging(tmp_path, name):
    datagen.make(tmp_path / "d", n_samples=20, shard_size=10)
    (tmp_path / "d" / name).unlink()
    os.mkfifo(tmp_path / "d" / name)
    hung, outcome = with_timeout(lambda: run("inspect", tmp_path / "d"))
    if hung:  # unblock the reader so the test process can end
        os.close(os.open(tmp_path / "d" / name, os.O_WRONLY | os.O_NONBLOCK))
    assert not hung, "inspect hung on a FIFO"
    assert f"{name}: not a regular file" in one_error_line(outcome["value"], 1)
    with pytest.raises(datagen.DatasetError, match=f"{name}: not a regular file"):
        _storage.read_file(tmp_path / "d" / name)


def test_resume_over_a_fifo_does_not_hang(tmp_path):
    datagen.make(tmp_path / "d", n_samples=20, shard_size=10)
    (tmp_path / "d" / "teacher.npz").unlink()
    os.mkfifo(tmp_path / "d" / "teacher.npz")
    hung, outcome = with_timeout(lambda: run("make", "--out", tmp_path / "d", "--samples", "20", "--shard-size", "10",
                                             "--resume"))  # fmt: skip
    if hung:
        os.close(os.open(tmp_path / "d" / "teacher.npz", os.O_WRONLY | os.O_NONBLOCK))
    assert not hung
    assert outcome["value"].exit_code == 0, outcome["value"].output
    assert datagen.read(tmp_path / "d", verify=True)["truth"]["a_kernel"].shape == (4, 24)


def test_a_write_that_fails_for_another_reason_names_the_file_and_the_reason(tmp_path):
    from datagen import _storage

    target = tmp_path / "shard-00000.npz"
    target.mkdir()  # the rename of the finished temporary onto a directory fails
    with pytest.raises(datagen.DatasetError, match=rf"^cannot write {re.escape(str(target))} \(Is a directory\)$"):
        _storage.atomic_write(target, b"data")
    assert target.is_dir() and list(target.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-00000.npz"]  # no temporary left


def test_a_plot_into_a_directory_without_write_permission_is_refused(tmp_path, monkeypatch):
    from datagen import _inspect

    # Tests may run as root, for whom every directory is writable: the permission check is told no.
    asked = []
    monkeypatch.setattr(_inspect.os, "access", lambda path, mode: asked.append((Path(path), mode)) or False)
    with pytest.raises(datagen.ParameterError, match=rf"^`plot` must be in a writable directory; received "
                                                     rf"{re.escape(repr(str(tmp_path / 'p.png')))}$"):
        _inspect.check_plot_path(tmp_path / "p.png")
    assert asked == [(tmp_path, os.W_OK | os.X_OK)]
