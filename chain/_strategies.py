"""Strategies: ways to run model B over every ``(b, t)`` that compute the same thing.

Every strategy has one contract::

    run(adapter, xp, steps, init_states, carry, training) -> flat

- ``xp``: ``(batch * T, P)``, B's projected input for every ``(b, t)``, rows in ``(b, t)`` order.
- ``steps``: ``(batch, T)`` int32, the number of inner steps of each ``(b, t)``.
- ``init_states``: flat list of state tensors. In carry mode each is ``(batch, s)``: the state at
  the start of each sample. Otherwise each is ``(batch * T, s)``: the state at the start of each
  ``(b, t)`` run.
- ``carry``: whether B's state flows across outer steps.
- ``head``: optional, a row-wise map (a Dense head) applied to B's outputs. ``packed`` applies it
  inside its loop when not training, so that B's outputs are never all held at once.
- Returns ``flat``: ``(sum(steps), H)``, B's output at every real inner step (``head`` of it when
  given), ordered by sample, then ``t``, then ``k``. These are the flat values of the ragged result.

A *run* is a stretch of inner steps that B executes with one evolving state: each ``(b, t)`` in
reset and init modes, each whole sample in carry mode. Runs are described by their start
position in the flat output and their length; ``pos_row[p]`` is the ``(b, t)`` row whose input
feeds flat position ``p``.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from . import _scan
from ._cells import StateList, StepAdapter

Strategy = Callable[..., tf.Tensor]


def _runs(steps: tf.Tensor, carry: bool) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Describes the runs of a batch.

    Returns:
        `(starts (R,), lengths (R,), pos_row (sum(steps),))`, where R is batch in carry mode and
        batch * T otherwise.
    """
    flat_steps = tf.reshape(steps, [-1])
    pos_row = tf.repeat(tf.range(tf.size(flat_steps)), flat_steps)
    lengths = tf.reduce_sum(steps, axis=1) if carry else flat_steps
    starts = tf.cumsum(lengths, exclusive=True)
    return starts, lengths, pos_row


def _masked_update(valid: tf.Tensor, new: StateList, old: StateList) -> StateList:
    return [tf.where(valid[:, None], n, o) for n, o in zip(new, old)]


# ----------------------------------------------------------------------------- loop (reference)


def run_loop(adapter, xp, steps, init_states, carry, training, head=None):
    """Nested loops, one B call per inner step, every ``(b, t)`` padded to the longest run.

    This is the reference answer's algorithm, generalised to per-sample lengths (padded inner
    steps leave the state untouched) and to every state mode.
    """
    batch, big_t = tf.shape(steps)[0], tf.shape(steps)[1]
    longest = tf.reduce_max(tf.concat([tf.reshape(steps, [-1]), [0]], 0))
    xp_bt = tf.reshape(xp, [batch, big_t, xp.shape[-1]])
    starts = [] if carry else [tf.reshape(s, [batch, big_t, s.shape[-1]]) for s in init_states]
    out_ta = _outputs(adapter, xp.dtype, big_t * longest)

    def inner(t, states, out_ta):
        def body(k, states, out_ta):
            valid = k < steps[:, t]
            out, new = adapter.step(xp_bt[:, t], states, training)
            out_ta = out_ta.write(t * longest + k, tf.where(valid[:, None], out, 0.0))
            return k + 1, _masked_update(valid, new, states), out_ta

        _, states, out_ta = tf.while_loop(lambda k, *_: k < longest, body, (0, states, out_ta))
        return states, out_ta

    def outer(t, states, out_ta):
        if not carry:
            states = [s[:, t] for s in starts]
        states, out_ta = inner(t, states, out_ta)
        return t + 1, states, out_ta

    states = list(init_states) if carry else adapter.zero_states(batch, xp.dtype)
    _, _, out_ta = tf.while_loop(lambda t, *_: t < big_t, outer, (0, states, out_ta))
    dense = tf.reshape(out_ta.stack(), [big_t, longest, batch, adapter.output_size])
    dense = tf.transpose(dense, [2, 0, 1, 3])
    return _apply(head, tf.boolean_mask(dense, tf.sequence_mask(steps, longest)))


def _apply(head, flat: tf.Tensor) -> tf.Tensor:
    return flat if head is None else head(flat)


def _outputs(adapter: StepAdapter, dtype: tf.DType, size) -> tf.TensorArray:
    """A TensorArray of `size` output blocks `(rows, H)`; rows may differ between blocks."""
    return tf.TensorArray(
        dtype, size=size, infer_shape=False, element_shape=[None, adapter.output_size]
    )


# ----------------------------------------------------------------------------- padded


def run_padded(adapter, xp, steps, init_states, carry, training, head=None):
    """One vectorised masked scan over all runs, each padded to the longest run.

    Reset and init modes scan all ``batch * T`` runs at once for ``max(steps)`` steps. Carry mode
    repeats ``IR[b, t]`` ``steps[b, t]`` times into one sequence per sample and scans those.
    """
    starts, lengths, pos_row = _runs(steps, carry)
    longest = tf.reduce_max(tf.concat([lengths, [0]], 0))
    xp_ext, pos_ext = _with_sentinel(xp, pos_row)
    last = tf.size(pos_row)

    def body(j, states, out_ta):
        valid = j < lengths
        if carry:
            x_j = tf.gather(xp_ext, tf.gather(pos_ext, tf.minimum(starts + j, last)))
        else:
            x_j = xp
        out, new = adapter.step(x_j, states, training)
        out_ta = out_ta.write(j, tf.where(valid[:, None], out, 0.0))
        return j + 1, _masked_update(valid, new, states), out_ta

    out_ta = _outputs(adapter, xp.dtype, longest)
    _, _, out_ta = tf.while_loop(lambda j, *_: j < longest, body, (0, list(init_states), out_ta))
    stacked = tf.reshape(out_ta.stack(), [longest, tf.size(lengths), adapter.output_size])
    dense = tf.transpose(stacked, [1, 0, 2])
    return _apply(head, tf.boolean_mask(dense, tf.sequence_mask(lengths, longest)))


def _with_sentinel(xp: tf.Tensor, pos_row: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Appends one zero row so that clamped gathers past the end stay in bounds."""
    xp_ext = tf.concat([xp, tf.zeros_like(xp[:1])], 0)
    pos_ext = tf.concat([pos_row, [tf.shape(xp)[0]]], 0)
    return xp_ext, pos_ext


# ----------------------------------------------------------------------------- packed


def run_packed(adapter, xp, steps, init_states, carry, training, head=None):
    """Cost proportional to real inner steps.

    Runs are sorted by length, longest first, so that at inner step ``j`` the runs still going are
    the first ``n_j``. Each step computes only those rows; the state shrinks as runs end, and
    zero-length runs never enter. Each step reads its inputs from ``xp`` (a slice in reset and init
    modes, a gather in carry mode); outputs come back step-major (``(j, run)`` order) and are put
    into ``(b, t, k)`` order with one gather, after ``head``. Outside training, ``head`` maps each
    step's outputs as they come, so only the head's (narrower) outputs are kept. A ``GRUCell``
    (default activations, ``reset_after``) runs its own scan (see `_scan`): gates split once
    outside the loop and, when training, a hand-written backward pass in one loop.
    """
    starts, lengths, pos_row = _runs(steps, carry)
    order = tf.argsort(lengths, direction="DESCENDING", stable=True)
    longest = tf.reduce_max(tf.concat([lengths, [0]], 0))
    active = _active_counts(tf.gather(lengths, order), longest)
    step, run = _scan.entries(active)
    positions = tf.gather(tf.gather(starts, order), run) + step  # flat output position, step-major
    if carry:  # a sample's input changes with t: each entry reads its (b, t) row of xp
        inputs = _scan.Inputs((xp,), tf.gather(pos_row, positions), by_run=False)
    else:  # run r is (b, t) row order[r]; its input is the same at every step
        inputs = _scan.Inputs((tf.gather(xp, order),), run, by_run=True)
    states = [tf.gather(s, order) for s in init_states]
    emit = head if head is not None and not training else None  # training keeps B's outputs anyway
    scan = getattr(adapter, "packed_scan", None)
    if scan is not None:
        outs = scan(inputs, active, states, training, emit)
    else:
        width = adapter.output_size if emit is None else head.units
        (outs,) = _scan.forward(
            lambda x, s: _generic_step(adapter, x[0], s, training, emit), inputs, active, states, [width]
        )
    if emit is None:  # the head is row-wise: the permutation then moves its narrower rows
        outs = _apply(head, outs)
    return _permute(outs, positions)


@tf.custom_gradient
def _permute(values: tf.Tensor, positions: tf.Tensor) -> tf.Tensor:
    """Row `positions[p]` of the result is `values[p]`; `positions` is a permutation.

    The gradient is a dense gather, where `tf.gather`'s own would be sparse and then summed.
    """

    def grad(d_out):
        return tf.gather(tf.convert_to_tensor(d_out), positions), None

    return tf.gather(values, tf.math.invert_permutation(positions)), grad


def _generic_step(adapter, x, states, training, emit):
    out, states = adapter.step(x, states, training)
    return [out if emit is None else emit(out)], states


def _active_counts(lengths_sorted: tf.Tensor, longest: tf.Tensor) -> tf.Tensor:
    """`n[j]` = number of runs longer than `j`, for `j` in `[0, longest)`."""
    at_most = tf.cumsum(tf.math.bincount(lengths_sorted, minlength=longest + 1))
    return tf.size(lengths_sorted) - at_most[:longest]


STRATEGIES: dict[str, Strategy] = {
    "loop": run_loop,
    "padded": run_padded,
    "packed": run_packed,
}
