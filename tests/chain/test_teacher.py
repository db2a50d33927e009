"""Cross-check with datagen: a Chain loaded with the teacher's weights reproduces its targets."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import datagen
from chain import STRATEGIES, Chain


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    datagen.make(str(out), task="teacher", n_samples=48, noise=0.05, seed=11)
    return out, datagen.read(str(out))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_teacher_weights_reproduce_clean_targets(teacher, strategy):
    path, data = teacher
    weights = datagen.teacher_weights(str(path))
    hidden = weights["model_b"][1].shape[0]
    net = Chain(
        keras.layers.GRU(weights["model_a"][1].shape[0], return_sequences=True),
        keras.layers.GRUCell(hidden),
        output_size=weights["head"][1].shape[0],
        state=data["manifest"]["law"]["state"],
        strategy=strategy,
    )
    net.build((None, None, data["x"].shape[-1]))
    net.model_a.set_weights(weights["model_a"])
    net.model_b.set_weights(weights["model_b"])
    net.head.set_weights(weights["head"])
    out = net(data["x"], data["steps"])
    np.testing.assert_allclose(out.flat_values.numpy(), data["y_clean_values"], atol=1e-5)
    # The noisy targets differ from the clean ones by the stated noise.
    assert abs(np.std(data["y_values"] - data["y_clean_values"]) - 0.05) < 0.01
