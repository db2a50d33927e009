"""Datasets and a finished run shared by chain_app's tests; build them once, copy before changing."""

from __future__ import annotations

import shutil

import pytest
import tensorflow as tf
from click.testing import CliRunner

import chain
import datagen
from chain_app.cli import main

SMALL = {"n_samples": 48, "timesteps": 4, "longest_step": 3, "shard_size": 24}
OPTIONS = {"hidden": 8, "batch_size": 16}  # tiny runs: with SMALL, 3 batches an epoch
QUICK = ["--epochs", "2", "--hidden", "8", "--batch-size", "16"]  # OPTIONS and 2 epochs, on the command line


def run(*args):
    """`chain ARGS...` through click's CliRunner."""
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="session")
def datasets(tmp_path_factory):
    """Teacher datasets: "a"; "same", of a's law (task, seed, sizes) with other samples, count and
    noise; "b", another teacher; "wide", another input size (and so another law)."""
    root = tmp_path_factory.mktemp("data")
    laws = {"a": {}, "same": {"n_samples": 40, "noise": 0.1, "shard_size": 40}, "b": {"seed": 1},
            "wide": {"input_size": 5}}  # fmt: skip
    made = {}
    for name, extra in laws.items():
        made[name] = root / name
        datagen.make(made[name], task="teacher", **{**SMALL, **extra})
    return made


@pytest.fixture(scope="session")
def noiseless(tmp_path_factory):
    out = tmp_path_factory.mktemp("noiseless") / "data"
    datagen.make(out, task="teacher", **SMALL, noise=0.0)
    return out


TOKENS = {**SMALL, "task": "tokens", "vocab_size": 5}


@pytest.fixture(scope="session")
def token_data(tmp_path_factory):
    """Token datasets of one law (`--task tokens`, V = 5): "a" and "same" (other samples, count)."""
    root = tmp_path_factory.mktemp("tokens")
    made = {"a": root / "a", "same": root / "same"}
    datagen.make(made["a"], **TOKENS)
    datagen.make(made["same"], **{**TOKENS, "n_samples": 40, "shard_size": 40})
    return made


@pytest.fixture(scope="session")
def token_fitted(token_data, tmp_path_factory):
    """`chain fit --feedback` of token dataset "a" for 2 epochs: the run directory and the output."""
    out = tmp_path_factory.mktemp("token-run") / "run"
    result = run("fit", token_data["a"], "--out", out, *QUICK, "--feedback")
    assert result.exit_code == 0, result.output
    return out, result.output


@pytest.fixture(scope="session")
def fitted(datasets, tmp_path_factory):
    """`chain fit` of dataset "a" for 2 epochs: the run directory and the command's output."""
    out = tmp_path_factory.mktemp("finished") / "run"
    result = run("fit", datasets["a"], "--out", out, *QUICK)
    assert result.exit_code == 0, result.output
    return out, result.output


@pytest.fixture(scope="session")
def finished(fitted):
    """The finished 2-epoch run, to read; tests that change a run take `copy_of` it."""
    return fitted[0]


@pytest.fixture
def copy_of(finished, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    return copy


def _stand_in_step(net, data):
    """A training step without gradients: every trainable weight moves by 1e-3, the optimizer
    counts the step, and the logs are the batch's loss and metrics as `evaluate` computes them."""
    for variable in net.trainable_variables:
        variable.assign_add(tf.fill(tf.shape(variable), tf.constant(1e-3, variable.dtype)))
    net.optimizer.iterations.assign_add(1)
    return net.test_step(data)


@pytest.fixture
def stand_in_training(monkeypatch):
    """`Chain.fit` runs Keras' loop, callbacks and validation as ever, with `_stand_in_step` for
    each training step: for tests of what a run does around training (its files, checkpoints,
    reads and logs), which need no gradient. The suite's real fits are test_cli.py's."""
    monkeypatch.setattr(chain.Chain, "train_step", _stand_in_step)
