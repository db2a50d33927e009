"""XLA: `loop` and `padded` compile under `jit_compile=True`; `packed` does not.

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


# The default tier compiles every state mode once, the strategies in turn; `-m slow` runs both.
DEFAULT_TIER = {
    "test_fixed_shape_strategies_compile_with_xla": each_once({"state": STATES}, {"strategy": FIXED_SHAPE}),
}
