"""XLA: `loop` and `padded` compile under `jit_compile=True`; `packed` does not. Training
compiles with `padded`, whose gradients there are packed's.

`packed` shrinks its working set as runs end, so its shapes depend on the values of `steps`,
which XLA cannot compile. `loop` and `padded` keep the shapes of their steps fixed, so they
compile; a chain compiled with `jit_compile=True` sizes their buffers by `max_steps`, so that
one program serves every `steps` of a shape (see `test_keras_habits`).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from chain import STATES

from ..tiers import each_once
from .conftest import batch, make_chain

FIXED_SHAPE = ("loop", "padded")  # the strategies XLA can compile


@pytest.mark.parametrize("strategy", FIXED_SHAPE)
@pytest.mark.parametrize("state", STATES)
def test_fixed_shape_strategies_compile_with_xla(strategy, state):
    x, steps = batch(seed=5)
    net = make_chain("lstm", state, strategy=strategy)
    run = tf.function(lambda x, s: net(x, s).flat_values, jit_compile=True)
    np.testing.assert_allclose(
        run(tf.constant(x), tf.constant(steps)).numpy(),
        net(x, steps).flat_values.numpy(),
        atol=1e-5,
    )


def test_packed_does_not_compile_with_xla():
    x, steps = batch(seed=5)
    net = make_chain("gru", "reset", strategy="packed")
    run = tf.function(lambda x, s: net(x, s).flat_values, jit_compile=True)
    with pytest.raises((tf.errors.UnimplementedError, tf.errors.InvalidArgumentError)):
        run(tf.constant(x), tf.constant(steps))


def _loss_and_gradients(net, x, steps, jit_compile, return_state=False):
    def step(x, steps):
        with tf.GradientTape() as tape:
            if return_state:  # the carried final states: the window edge of stateful training
                out, states = net(x, steps, training=True, return_state=True)
                extra = sum(tf.reduce_sum(s) for s in tf.nest.flatten(states))
            else:
                out, extra = net(x, steps, training=True), 0.0
            loss = tf.reduce_sum(tf.sin(1.7 * out.flat_values)) + extra
        return loss, tape.gradient(loss, net.trainable_variables)

    loss, grads = tf.function(step, jit_compile=jit_compile)(tf.constant(x), tf.constant(steps))
    return [loss.numpy(), *(g.numpy() for g in grads)]


@pytest.mark.parametrize("kind", ["gru", "lstm", "simple", "stacked", "functional", "custom"])
@pytest.mark.parametrize("state", ["carry", "reset"])
def test_under_xla_padded_trains_with_the_gradients_of_packed(kind, state):
    """Kernel cells through their backward step, a custom cell by autodiff of the loop (which XLA
    needs bounded); carried final states stop at each sample's last real step."""
    x, steps = batch(seed=7)
    final = state == "carry"
    want = _loss_and_gradients(make_chain(kind, state, strategy="packed"), x, steps, False, final)
    net = make_chain(kind, state, strategy="padded", max_steps=int(steps.max()))
    net.compile(jit_compile=True)
    got = _loss_and_gradients(net, x, steps, True, final)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# The default tier compiles every state mode once, the strategies in turn, and trains a kernel
# cell and a cell without one in carry mode; `-m slow` runs every case.
DEFAULT_TIER = {
    "test_fixed_shape_strategies_compile_with_xla": each_once({"state": STATES}, {"strategy": FIXED_SHAPE}),
    "test_under_xla_padded_trains_with_the_gradients_of_packed": lambda p: (p["kind"], p["state"]) in {
        ("gru", "carry"), ("custom", "carry")},
}
