"""Training under tf.distribute.MirroredStrategy on 2 logical CPUs matches one device."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

CHILD = Path(__file__).with_name("_distribute_child.py")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("state", ["carry", "reset"])
def test_mirrored_strategy_follows_the_single_device_trajectory(state):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, str(CHILD), state], capture_output=True, text=True,
                          env=env, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    one, two = result["one"], result["two"]
    assert len(one["losses"]) == 3
    # Two replicas only split the float32 sums (measured: losses 1.1e-7 apart relative, weights 6e-8
    # apart); a loss normalised by a replica's own count of real steps would be off by percents.
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-6)
    for a, b in zip(one["weights"], two["weights"]):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-5, atol=1e-6)



def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_on_localhost_follow_the_single_process_trajectory(tmp_path):
    child = Path(__file__).with_name("_multiworker_child.py")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    workers = [f"localhost:{port}" for port in _free_ports(2)]
    procs = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        procs.append(subprocess.Popen(
            [sys.executable, str(child), str(tmp_path / f"w{index}.json")],
            env={**env, "TF_CONFIG": json.dumps(config)}, stderr=subprocess.PIPE, text=True,
        ))  # fmt: skip
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors[0][-2000:] + errors[1][-2000:]
    reference = subprocess.run([sys.executable, str(child), str(tmp_path / "one.json")], env=env,
                               capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert reference.returncode == 0, reference.stderr[-2000:]
    one = json.loads((tmp_path / "one.json").read_text())
    for index in range(2):
        worker = json.loads((tmp_path / f"w{index}.json").read_text())
        assert worker["replicas"] == 2
        np.testing.assert_allclose(worker["losses"], one["losses"], rtol=1e-4)
        for a, b in zip(one["weights"], worker["weights"]):
            np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-4, atol=1e-6)


# Each case fits in a child process that starts TensorFlow on 2 logical CPUs: `-m slow` runs them.
DEFAULT_TIER = {"test_mirrored_strategy_follows_the_single_device_trajectory": lambda p: False}
