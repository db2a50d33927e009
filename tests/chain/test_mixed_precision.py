"""Mixed precision: under `mixed_bfloat16`, `fit` trains in every strategy and with every cell.

Variables and losses stay float32; the chain computes in bfloat16.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from chain import _train

from .conftest import batch, make_chain, ragged_dataset


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


def _probe(net, x, steps):
    """Flat outputs and weight gradients of a loss that weighs every output element differently."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        flat = tf.cast(net(x, steps, training=True).flat_values, tf.float32)
        loss = tf.reduce_sum(tf.reshape(flat, [-1]) * tf.sin(tf.cast(tf.range(tf.size(flat)), tf.float32) + 0.5))
    return flat.numpy(), [g.numpy() for g in tape.gradient(loss, net.trainable_weights)]


@pytest.mark.parametrize("kind", ["gru", "lstm", "simple"])
@pytest.mark.parametrize("strategy", ["loop", "padded", "packed"])
def test_mixed_bfloat16_outputs_and_gradients_follow_float32(strategy, kind):
    x, steps = batch(seed=3, batch_size=4, big_t=5, longest=4)
    full = make_chain(kind, "carry", strategy=strategy, compiled=False)  # the reference, called eagerly
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        half = make_chain(kind, "carry", strategy=strategy)
        half.set_weights(full.get_weights())
        got = _probe(half, x, steps)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    want = _probe(full, x, steps)
    # bfloat16 keeps 8 bits of mantissa: measured 1% on outputs and up to 5% on a gradient, each
    # relative to its largest entry; a wrong or missing gradient term is off by its own size.
    np.testing.assert_allclose(got[0], want[0], atol=0.03 * np.abs(want[0]).max())
    for g, w in zip(got[1], want[1]):
        np.testing.assert_allclose(g, w, atol=0.1 * np.abs(w).max())


# The default tier checks the packed fast paths of the GRU (the case that once failed) and the LSTM,
# and the other strategies once each, and fits the GRU's; `-m slow` runs every strategy with every cell.
_DEFAULT_CASES = {("packed", "gru"), ("packed", "lstm"), ("loop", "simple"), ("padded", "gru")}
DEFAULT_TIER = {
    "test_fit_under_mixed_bfloat16": lambda p: (p["strategy"], p["kind"]) == ("packed", "gru"),
    "test_mixed_bfloat16_outputs_and_gradients_follow_float32": lambda p: (p["strategy"], p["kind"]) in _DEFAULT_CASES,
}
