"""Small datasets shared by the storage, CLI and tf.data tests."""

from __future__ import annotations

import pytest

import datagen

SMALL = {"n_samples": 300, "timesteps": 6, "longest_step": 5, "seed": 3}

# Python code that puts Ctrl-C back as a terminal's foreground process has it (SIGINT raises
# KeyboardInterrupt, and is not blocked), for child processes whose subject is Ctrl-C: a child
# inherits an ignored or blocked SIGINT from whatever started the test run.
SIGINT_AS_IN_A_TERMINAL = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                           "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})\n")  # fmt: skip


@pytest.fixture(scope="session")
def small_npz(tmp_path_factory):
    out = tmp_path_factory.mktemp("npz") / "data"
    datagen.make(out, **SMALL, shard_size=128)
    return out


@pytest.fixture(scope="session")
def small_tfrecord(tmp_path_factory):
    out = tmp_path_factory.mktemp("tfrecord") / "data"
    datagen.make(out, **SMALL, shard_size=100, format="tfrecord")
    return out
