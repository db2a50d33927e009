"""Small datasets shared by the storage, CLI and tf.data tests."""

from __future__ import annotations

import pytest

import datagen

SMALL = {"n_samples": 300, "timesteps": 6, "longest_step": 5, "seed": 3}


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
