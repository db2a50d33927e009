"""Mixed precision: under `mixed_bfloat16`, `fit` trains in every strategy and with every cell.

Variables and losses stay float32; the chain computes in bfloat16.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from chain import _train

from .conftest import make_chain
from .test_train import ragged_dataset


@pytest.fixture
def mixed_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("kind", ["gru", "lstm", "simple"])
@pytest.mark.parametrize("strategy", ["loop", "padded", "packed"])
def test_fit_under_mixed_bfloat16(mixed_bfloat16, strategy, kind):
    data, (x, steps, y) = ragged_dataset(n=16, batch_size=8)
    net = make_chain(kind, "carry", strategy=strategy)
    assert net.compute_dtype == "bfloat16"
    net.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    before = [w.copy() for w in net.get_weights()]
    history = net.fit(data, epochs=2, verbose=0).history
    assert all(np.isfinite(history["loss"]))
    assert {v.dtype for v in net.weights} == {"float32"}
    assert any(not np.array_equal(a, b) for a, b in zip(before, net.get_weights()))
    parts = _train.forward(net, tf.constant(x), tf.constant(steps), training=False)
    assert parts["flat"].dtype == tf.bfloat16
    assert _train.objective(net, parts, y, tf.constant(steps)).dtype == tf.float32


# The default tier trains the packed fast paths of the GRU (the case that once failed) and the LSTM,
# and the other strategies once each; `-m slow` runs every strategy with every cell.
DEFAULT_TIER = {
    "test_fit_under_mixed_bfloat16": lambda p: (p["strategy"], p["kind"]) in {
        ("packed", "gru"), ("packed", "lstm"), ("loop", "simple"), ("padded", "gru")},
}
