"""datagen's numpy teacher equals Keras's GRU, GRUCell and Dense loaded with its stored weights."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import datagen
from datagen import _gru


@pytest.fixture(scope="module")
def teacher():
    data = datagen.generate(32, task="teacher", noise=0.0, input_size=3, output_size=2, teacher_hidden=6,
                            zero_fraction=0.3, seed=8, return_truth=True)  # fmt: skip
    return data, datagen.teacher_weights(data["truth"])


def test_numpy_gru_equals_keras_gru(teacher):
    data, weights = teacher
    layer = keras.layers.GRU(6, return_sequences=True)
    layer.build((None, 16, 3))
    layer.set_weights(weights["model_a"])
    expected = np.asarray(layer(data["x"]))
    ours = _gru.gru_sequence(data["x"].astype(np.float64), *[w.astype(np.float64) for w in weights["model_a"]])
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_teacher_targets_equal_a_keras_chain_in_carry_mode(teacher):
    """Model A = GRU, model B = GRUCell fed IR[b, t] at every inner step, state carried across outer
    steps and left untouched where steps[b, t] = 0, then a Dense head."""
    data, weights = teacher
    gru, cell, head = keras.layers.GRU(6, return_sequences=True), keras.layers.GRUCell(6), keras.layers.Dense(2)
    gru.build((None, 16, 3)), cell.build((None, 6)), head.build((None, 6))
    gru.set_weights(weights["model_a"]), cell.set_weights(weights["model_b"]), head.set_weights(weights["head"])
    assert cell.reset_after and gru.reset_after
    ir = np.asarray(gru(data["x"]))
    steps = data["steps"]
    state = np.zeros((32, 6), np.float32)
    outputs = {}
    for t in range(16):
        for k in range(int(steps[:, t].max())):
            output, new = cell(ir[:, t], [state])
            active = steps[:, t] > k
            state = np.where(active[:, None], np.asarray(new[0]), state)
            for b in np.flatnonzero(active):
                outputs[b, t, k] = np.asarray(head(np.asarray(output)[b : b + 1]))[0]
    expected = np.stack([outputs[key] for key in sorted(outputs)])
    assert len(expected) == steps.sum() and (steps == 0).any()
    np.testing.assert_allclose(data["y_clean_values"], expected, atol=1e-5)
