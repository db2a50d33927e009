"""Generation at lengths the chain predicts: what a length part's `generate` works with.

A length part (`chain.Lengths`) gets a :class:`Generation`: model A's output for the call, the
part's own layers, and two ways to run model B free:

- :meth:`Generation.run_at` runs it at lengths the part computed, e.g. from `IR`;
- :meth:`Generation.run_until` runs every `(b, t)` until a test on B's output fires, or until
  `max_steps`, with a finished flag per run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping, NamedTuple

import keras
import tensorflow as tf

from ._cells import StateList, StepAdapter

if TYPE_CHECKING:
    from ._forward import Forward


class Generated(NamedTuple):
    """What a length part's `generate` returns.

    Attributes:
        flat: `(N, output_size)`, the outputs of every real inner step in `(b, t, k)` order.
        steps: `(batch, T)` int32, the lengths generated.
        a_states: model A's final states.
        b_states: model B's final states (carry mode; `[]` otherwise).
    """

    flat: tf.Tensor
    steps: tf.Tensor
    a_states: list
    b_states: list


class Generation:
    """One generation call, as a length part sees it.

    Attributes:
        ir: model A's output `(batch, T, ir_size)`.
        layers: the part's own layers, by the names its `layers` gave them.
        max_steps: the chain's `max_steps`, the cap on every length.
    """

    def __init__(self, forward: "Forward", x: tf.Tensor, a_in: StateList | None, b_in: StateList | None,
                 layers: Mapping[str, keras.layers.Layer]) -> None:  # fmt: skip
        self._forward = forward
        self.ir, self._a_out = forward.model_a.call(x, a_in, False)
        self._b_in = b_in
        self.layers = dict(layers)
        self.max_steps: int = forward.options.max_steps

    def run_at(self, steps: tf.Tensor) -> Generated:
        """Runs model B free at `steps` `(batch, T)` int32, each in `[0, max_steps]`."""
        forward = self._forward
        flat, b_out = forward.b_outputs(self.ir, steps, training=False, head=forward.parts.head,
                                        initial_state=self._b_in, final=True, differentiable=False)  # fmt: skip
        return Generated(flat, steps, self._a_out, b_out)

    def run_until(self, stop: Callable[[tf.Tensor], tf.Tensor], empty: tf.Tensor | None = None) -> Generated:
        """Runs every `(b, t)` until `stop` fires or it reaches `max_steps`.

        In carry mode one loop walks `t` and, inside it, the inner steps of every sample, with a
        finished flag per sample; B's state only moves for samples still running. In reset and
        init modes all `(b, t)` runs go at once.

        Args:
            stop: maps B's outputs `(n, H)` (before the head) at one inner step to `(n,)` bool,
                True where that step is the run's last.
            empty: `(batch, T)` bool, True where a run emits nothing; None for none.
        """
        forward, ir = self._forward, self.ir
        batch, big_t = tf.shape(ir)[0], tf.shape(ir)[1]
        ir_rows = tf.reshape(ir, [-1, ir.shape[-1]])
        adapter = forward.step_adapter()
        xp = adapter.project(ir_rows)
        empty = tf.zeros([batch, big_t], tf.bool) if empty is None else empty
        runner = _StopRun(adapter, stop, self.max_steps)
        b_out: list = []
        if forward.options.state == "carry":
            b_in = self._b_in if self._b_in is not None else adapter.zero_states(batch, xp.dtype)
            dense, steps, b_out = runner.carry(xp, empty, batch, big_t, b_in)
        else:
            init = forward.initial_states(ir_rows, batch, adapter)
            dense, lengths, _ = runner.run(xp, init, tf.reshape(empty, [-1]))
            dense = tf.reshape(dense, [batch, big_t, self.max_steps, adapter.output_size])
            steps = tf.reshape(lengths, [batch, big_t])
        flat = tf.boolean_mask(dense, tf.sequence_mask(steps, self.max_steps))
        head = forward.parts.head
        return Generated(flat if head is None else head(flat), steps, self._a_out, b_out)


class _StopRun:
    """Inner steps of many runs at once, each until `stop` fires, with finished flags."""

    def __init__(self, adapter: StepAdapter, stop: Callable[[tf.Tensor], tf.Tensor], cap: int) -> None:
        self.adapter, self.stop, self.cap = adapter, stop, cap

    def carry(self, xp, empty, batch, big_t, states):
        """Carry mode: B's state flows through the real steps of each sample, t by t."""
        cap = self.cap
        xp_bt = tf.reshape(xp, [batch, big_t, xp.shape[-1]])
        blocks = tf.TensorArray(xp.dtype, size=big_t, element_shape=[None, cap, None])
        lengths = tf.TensorArray(tf.int32, size=big_t, element_shape=[None])

        def outer(t, states, blocks, lengths):
            dense, n, states = self.run(xp_bt[:, t], states, empty[:, t])
            return t + 1, states, blocks.write(t, dense), lengths.write(t, n)

        invariants = [tf.TensorShape([None, s]) for s in self.adapter.state_sizes]
        _, states, blocks, lengths = tf.while_loop(
            lambda t, *_: t < big_t, outer, (0, states, blocks, lengths),
            shape_invariants=(tf.TensorShape([]), invariants, None, None),
        )  # fmt: skip
        dense = tf.transpose(blocks.stack(), [1, 0, 2, 3])
        return dense, tf.transpose(lengths.stack()), states

    def run(self, xp, states, done):
        """`(dense (rows, cap, H) zero-padded, lengths (rows,) int32, final states)` of `rows` runs.

        `xp` `(rows, P)` projected inputs; `states` `(rows, s)` each; `done` `(rows,)` bool, True
        for runs that emit nothing.
        """
        adapter, cap = self.adapter, self.cap
        lengths = tf.zeros(tf.shape(done), tf.int32)
        done = done | (cap == 0)
        outs = tf.TensorArray(xp.dtype, size=cap, element_shape=[None, adapter.output_size])

        def body(k, states, done, lengths, outs):
            out, new = adapter.step(xp, states, False)
            active = ~done
            states = [tf.where(active[:, None], n, o) for n, o in zip(new, states)]
            lengths += tf.cast(active, tf.int32)
            done = done | (active & self.stop(out)) | (lengths >= cap)
            return k + 1, states, done, lengths, outs.write(k, tf.where(active[:, None], out, 0.0))

        def running(k, states, done, *_):
            return (k < cap) & tf.reduce_any(~done)

        k, states, done, lengths, outs = tf.while_loop(running, body, (0, states, done, lengths, outs))
        outs = _fill(outs, k, cap, tf.shape(xp)[0], adapter.output_size, xp.dtype)
        return tf.transpose(outs.stack(), [1, 0, 2]), lengths, states


def _fill(outs: tf.TensorArray, k, cap: int, rows, width: int, dtype) -> tf.TensorArray:
    """Writes zero blocks into the slots `[k, cap)` that an early exit left empty."""
    zeros = tf.zeros(tf.stack([rows, width]), dtype)
    _, outs = tf.while_loop(lambda j, _: j < cap, lambda j, ta: (j + 1, ta.write(j, zeros)), (k, outs))
    return outs
