"""State across calls: the states a call starts from, and those a `stateful=True` chain keeps.

A call starts from `initial_state` where given, else from the kept states of a stateful chain,
else from model A's and model B's defaults (zeros). See `docs/semantics.md`, "State across calls".
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from . import _validate
from ._cells import StateList
from ._forward import Forward


class StateVariables:
    """The states a `stateful=True` chain keeps between calls (kept out of Keras tracking).

    Model A's state (where it has one, see `chain._model_a`) and, in carry mode, model B's, each
    `(batch, s)`; `batch` is fixed by the first call, as in a stateful Keras RNN layer.
    """

    def __init__(self, forward: Forward, batch: int | None, dtype: tf.DType) -> None:
        if batch is None:
            raise ValueError(
                "`stateful=True` needs a fixed batch size: call the chain on a batch of known size "
                "first, or build model A with `keras.Input(batch_shape=(batch, T, input_size))`; "
                "received a batch of unknown size"
            )
        self.batch = int(batch)
        with tf.init_scope():
            self.a = [tf.Variable(tf.zeros([self.batch, s], dtype), trainable=False) for s in forward.model_a.state_sizes]
            self.b = [tf.Variable(tf.zeros([self.batch, s], dtype), trainable=False) for s in forward.b_state_sizes()]

    def check_batch(self, x: tf.Tensor) -> None:
        batch = x.shape[0]
        if batch is not None and batch != self.batch:
            raise ValueError(
                f"a stateful chain keeps states for a batch of {self.batch}; received x of shape "
                f"{tuple(x.shape)}. Keep the batch size fixed (drop the remainder), or use "
                "`initial_state`/`return_state` instead of `stateful=True`"
            )

    def values(self) -> tuple[StateList, StateList]:
        return [tf.convert_to_tensor(v) for v in self.a], [tf.convert_to_tensor(v) for v in self.b]

    def assign(self, a_out: StateList, b_out: StateList) -> None:
        for v, s in zip(self.a, a_out):
            v.assign(tf.cast(s, v.dtype))
        for v, s in zip(self.b, b_out):
            v.assign(tf.cast(s, v.dtype))

    def reset(self) -> None:
        for v in [*self.a, *self.b]:
            v.assign(tf.zeros_like(v))


def states_in(forward: Forward, kept: StateVariables | None, initial_state: Any, x: tf.Tensor,
              dtype: tf.DType) -> tuple[StateList | None, StateList | None]:  # fmt: skip
    """`(model A's, model B's)` starting states: given, kept (stateful) or None (defaults).

    Raises:
        ValueError: `initial_state` does not match the states' sizes or `x`'s batch, or a
            stateful chain is called on another batch size.
    """
    a_sizes = forward.model_a.state_sizes
    a_in, b_in = _validate.check_initial_state(
        initial_state, x, a_sizes, forward.b_state_sizes(), forward.options.state, dtype
    )
    if kept is not None:
        kept.check_batch(x)
        a_kept, b_kept = kept.values()
        a_in = a_kept if a_in is None and a_sizes else a_in
        b_in = b_kept if b_in is None and forward.options.state == "carry" else b_in
    return a_in, b_in
