"""Generation until a stop token fires (see `chain._lengths.StopToken`)."""

from __future__ import annotations

from typing import Any

import tensorflow as tf


def generate_with_stop(net: Any, x: tf.Tensor, a_in=None, b_in=None):
    """Runs B at every `(b, t)` until its stop logit fires or `max_steps` is reached.

    In carry mode one loop walks `t` and, inside it, the inner steps of every sample, with a
    finished flag per sample; B's state only moves for samples still running. In reset and init
    modes all `(b, t)` runs go at once.

    Returns:
        `(flat (N, output_size), steps (batch, T) int32, model A's and B's final states)`.
    """
    ir, a_out = net._a.call(x, a_in, False)
    batch, big_t = tf.shape(ir)[0], tf.shape(ir)[1]
    ir_rows = tf.reshape(ir, [-1, ir.shape[-1]])
    adapter = net.step_adapter()
    xp = adapter.project(ir_rows)
    empty = net.empty_head(ir)[..., 0] > 0
    b_out = []
    if net.state == "carry":
        b_in = b_in if b_in is not None else adapter.zero_states(batch, xp.dtype)
        dense, steps, b_out = _carry_stop_loop(net, adapter, xp, empty, batch, big_t, b_in)
    else:
        init = net.initial_states(ir_rows, batch, adapter)
        dense, lengths, _ = _stop_run(net, adapter, xp, init, tf.reshape(empty, [-1]))
        dense = tf.reshape(dense, [batch, big_t, net.max_steps, adapter.output_size])
        steps = tf.reshape(lengths, [batch, big_t])
    flat = tf.boolean_mask(dense, tf.sequence_mask(steps, net.max_steps))
    return (flat if net.head is None else net.head(flat)), steps, a_out, b_out


def _carry_stop_loop(net, adapter, xp, empty, batch, big_t, states):
    """Carry mode: B's state flows through the real steps of each sample, t by t."""
    xp_bt = tf.reshape(xp, [batch, big_t, xp.shape[-1]])
    blocks = tf.TensorArray(xp.dtype, size=big_t, element_shape=[None, net.max_steps, None])
    lengths = tf.TensorArray(tf.int32, size=big_t, element_shape=[None])

    def outer(t, states, blocks, lengths):
        dense, n, states = _stop_run(net, adapter, xp_bt[:, t], states, empty[:, t])
        return t + 1, states, blocks.write(t, dense), lengths.write(t, n)

    invariants = [tf.TensorShape([None, s]) for s in adapter.state_sizes]
    _, states, blocks, lengths = tf.while_loop(
        lambda t, *_: t < big_t, outer, (0, states, blocks, lengths),
        shape_invariants=(tf.TensorShape([]), invariants, None, None),
    )  # fmt: skip
    dense = tf.transpose(blocks.stack(), [1, 0, 2, 3])
    return dense, tf.transpose(lengths.stack()), states


def _stop_run(net, adapter, xp, states, done):
    """Inner steps of `rows` runs with per-row finished flags.

    Args:
        xp: `(rows, P)` projected inputs; states: list of `(rows, s)`; done: `(rows,)` bool,
            True for runs that emit nothing.

    Returns:
        `(dense (rows, max_steps, H) zero-padded, lengths (rows,) int32, final states)`.
    """
    cap = net.max_steps
    lengths = tf.zeros(tf.shape(done), tf.int32)
    done = done | (cap == 0)
    outs = tf.TensorArray(xp.dtype, size=cap, element_shape=[None, adapter.output_size])

    def body(k, states, done, lengths, outs):
        out, new = adapter.step(xp, states, False)
        active = ~done
        states = [tf.where(active[:, None], n, o) for n, o in zip(new, states)]
        lengths += tf.cast(active, tf.int32)
        stop = net.stop_head(out)[:, 0] > 0
        done = done | (active & stop) | (lengths >= cap)
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
