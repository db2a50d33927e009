"""The graph functions that eager calls run through, each traced once for any batch, T and steps.

They are traced without autograph: the library's loops are explicit `tf.while_loop`s, and
converting them made the first call about 1.5x slower.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from ._feedback import Feed
from ._forward import Forward, Result


class Graphs:
    """One cache of traced graph functions per chain (kept out of Keras tracking).

    Args:
        forward: the chain's forward pass.
        dtype: the compute dtype of `x` and the states.
    """

    def __init__(self, forward: Forward, dtype: tf.DType) -> None:
        self.forward = forward
        self.dtype = dtype
        self._fns: dict[tuple, Callable] = {}

    def run(self, x: tf.Tensor, steps: tf.Tensor, a_in: list | None, b_in: list, training: bool,
            differentiable: bool, final: bool, head: bool, feed: Feed) -> Result:  # fmt: skip
        """`Forward.run` through a graph function; `b_in` is given (zeros by default) in carry mode."""
        has_a = a_in is not None
        key = ("run", self.forward.options.resolved_strategy(), training, differentiable, has_a, head, final, feed.key)
        fn = self._fns.get(key)
        if fn is None:
            x_spec, a_specs, b_specs = self.forward.specs(has_a, self.dtype)
            width = self.forward.parts.feedback_size
            signature = [x_spec, tf.TensorSpec([None, None], tf.int32, name="steps"), a_specs, b_specs,
                         *feed.specs(width, self.dtype, self.forward.options.vocab_size is not None)]  # fmt: skip

            def run(x, steps, a_in, b_in, *fed):
                with self.forward.not_xla():
                    result = self.forward.run(x, steps, a_in if has_a else None, b_in or None, training,
                                              differentiable, final, head, feed.rebuilt(fed))  # fmt: skip
                return result.flat, result.a_states, result.b_states

            fn = self._fns[key] = tf.function(run, input_signature=signature, autograph=False)
        flat, a_out, b_out = fn(tf.cast(x, self.dtype), steps, a_in or [], b_in, *feed.tensors())
        return Result(None, flat, list(a_out), list(b_out))

    def generate(self, generate: Callable, x: tf.Tensor, a_in: list | None, b_in: list | None,
                 steps: tf.Tensor | None = None, key: tuple = ()):  # fmt: skip
        """`generate(x, a_in, b_in, steps)` through a graph function, traced once per `has_a`, per
        whether `steps` is given and per `key` (a decoder's)."""
        has_a, has_steps = a_in is not None, steps is not None
        key = ("generate", self.forward.options.resolved_strategy(), has_a, has_steps, key)
        fn = self._fns.get(key)
        if fn is None:
            signature = list(self.forward.specs(has_a, self.dtype))
            signature += [tf.TensorSpec([None, None], tf.int32, name="steps")] if has_steps else []
            def run(x, a, b, *s):
                with self.forward.not_xla():
                    return generate(x, a if has_a else None, b or None, *(s or [None]))

            fn = tf.function(run, input_signature=signature, autograph=False)
            self._fns[key] = fn
        return fn(x, a_in or [], b_in or [], *([steps] if has_steps else []))
