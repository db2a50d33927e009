"""The gradient structure of problem.md, asserted with Jacobians on small shapes.

With model A causal, Out[t] never depends on x[t'] for t' > t. With model A the identity,
x is IR, which exposes B's dependencies: in reset mode Out[t] depends on IR[t] alone, in carry
mode on IR[t'] for t' <= t only. An outer step with no inner steps, and every other sample,
carries exactly zero gradient.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from chain import STATES, STRATEGIES, Chain

from ..tiers import each_once

TWO_MODES = ("carry", "reset")
STEPS = np.array([[2, 0, 3, 1, 2], [1, 3, 0, 2, 0]], "int32")


def _jacobian(net, x, steps):
    """`J[p, b, t]`: L1 norm of d Out_flat[p] / d x[b, t]; plus each position's (b, t)."""
    x, steps_t = tf.constant(x), tf.constant(steps)

    @tf.function
    def row(x, p, d):
        with tf.GradientTape() as tape:
            tape.watch(x)
            target = net(x, steps_t).flat_values[p, d]
        return tf.reduce_sum(tf.abs(tape.gradient(target, x)), axis=-1)

    width = net.output_size
    norms = np.array(
        [sum(row(x, tf.constant(p), tf.constant(d)).numpy() for d in range(width)) for p in range(int(steps.sum()))]
    )
    owner = np.repeat(np.arange(steps.size), steps.reshape(-1))
    return norms, np.stack(np.unravel_index(owner, steps.shape), 1)


def _net(model_a, state, strategy):
    keras.utils.set_random_seed(3)
    net = Chain(model_a, keras.layers.GRUCell(4), output_size=2, state=state, strategy=strategy)
    net.build((None, None, 3))
    return net


def _x():
    return np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("state", STATES)
def test_causal_a_means_no_dependence_on_future_inputs(state, strategy):
    net = _net(keras.layers.GRU(4, return_sequences=True), state, strategy)
    jac, owner = _jacobian(net, _x(), STEPS)
    for p, (b, t) in enumerate(owner):
        assert np.all(jac[p, b, t + 1 :] == 0), f"Out[{b},{t}] depends on a later input"
        assert np.all(jac[p, 1 - b] == 0), f"Out[{b},{t}] depends on the other sample"
        assert jac[p, b, t] > 0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_reset_output_depends_on_its_own_ir_only(strategy):
    net = _net(keras.layers.Identity(), "reset", strategy)
    jac, owner = _jacobian(net, _x(), STEPS)
    for p, (b, t) in enumerate(owner):
        mask = np.zeros_like(jac[p], dtype=bool)
        mask[b, t] = True
        assert np.all(jac[p][~mask] == 0), f"Out[{b},{t}] depends on another outer step"
        assert jac[p, b, t] > 0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_carry_output_depends_on_past_and_present_ir(strategy):
    net = _net(keras.layers.Identity(), "carry", strategy)
    jac, owner = _jacobian(net, _x(), STEPS)
    for p, (b, t) in enumerate(owner):
        assert np.all(jac[p, b, t + 1 :] == 0), f"Out[{b},{t}] depends on a later IR"
        assert np.all(jac[p, 1 - b] == 0)
        # Every earlier outer step that ran B feeds this one through the carried state.
        for earlier in range(t + 1):
            assert (jac[p, b, earlier] > 0) == (STEPS[b, earlier] > 0 or earlier == t)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("state", TWO_MODES)
def test_steps_without_inner_steps_get_zero_gradient(state, strategy):
    net = _net(keras.layers.Identity(), state, strategy)
    x = tf.constant(_x())
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(net(x, STEPS).flat_values ** 2)
    grad = np.abs(tape.gradient(loss, x).numpy()).sum(-1)
    np.testing.assert_array_equal(grad == 0, STEPS == 0)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_padding_never_changes_a_result(strategy):
    """A sample's outputs and gradients are the same alone and beside a much longer sample."""
    net = _net(keras.layers.GRU(4, return_sequences=True), "carry", strategy)
    x = _x()
    short = np.array([[1, 0, 2, 1, 0]], "int32")
    long = np.array([[4, 4, 4, 4, 4]], "int32")  # twice the short sample's longest run, at every t

    def run(xs, steps):
        xs = tf.constant(xs)
        with tf.GradientTape() as tape:
            tape.watch(xs)
            out = net(xs, steps)
            loss = tf.reduce_sum(out[0].flat_values ** 2)
        return out[0].flat_values.numpy(), tape.gradient(loss, [xs, *net.trainable_weights])

    alone = run(x[:1], short)
    padded = run(x, np.concatenate([short, long]))
    np.testing.assert_allclose(alone[0], padded[0], atol=1e-6)
    np.testing.assert_allclose(alone[1][0].numpy()[0], padded[1][0].numpy()[0], atol=1e-6)
    assert np.all(padded[1][0].numpy()[1] == 0)
    for a, p in zip(alone[1][1:], padded[1][1:]):
        np.testing.assert_allclose(tf.convert_to_tensor(a), tf.convert_to_tensor(p), atol=1e-6)


# The default tier runs every strategy once, the modes in turn; `-m slow` runs every mode.
DEFAULT_TIER = {
    "test_causal_a_means_no_dependence_on_future_inputs": each_once({"strategy": STRATEGIES}, {"state": STATES}),
    "test_steps_without_inner_steps_get_zero_gradient": each_once({"strategy": STRATEGIES}, {"state": TWO_MODES}),
}
