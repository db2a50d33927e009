"""Training under tf.distribute.MirroredStrategy on 2 logical CPUs matches one device."""

from __future__ import annotations

import json
import os
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
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-4)
    for a, b in zip(one["weights"], two["weights"]):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-4, atol=1e-6)

