"""The run plan: where every run of model B starts, how long it is, and in what order it is scanned.

A *run* is a stretch of inner steps that B executes with one evolving state: each ``(b, t)`` in
reset and init modes, each whole sample in carry mode. The plan is computed once per call from
``steps`` and shared by the strategies, so that each strategy only decides how to execute it.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from ._ops import segment_ids


class RunPlan(NamedTuple):
    """The runs of one batch.

    Attributes:
        starts: `(R,)` each run's first position in the flat output; R is batch in carry mode
            and batch * T otherwise.
        lengths: `(R,)` each run's number of inner steps.
        pos_row: `(N,)` the `(b, t)` row (`b * T + t`) whose input feeds flat position `p`,
            `N = sum(steps)`.
        order: `(R,)` runs sorted longest first (stable): the packed scan's run order.
        active: `(L,)` `active[j]` = runs longer than `j`, L the longest run; non-increasing.
        step: `(P,)` the inner step `j` of every entry of the step-major packed layout, `P = N`.
        run: `(P,)` the sorted run index of every entry.
        positions: `(P,)` the flat output position of every entry (a permutation of `[0, N)`).
    """

    starts: tf.Tensor
    lengths: tf.Tensor
    pos_row: tf.Tensor
    order: tf.Tensor
    active: tf.Tensor
    step: tf.Tensor
    run: tf.Tensor
    positions: tf.Tensor

    @property
    def longest(self) -> tf.Tensor:
        return tf.size(self.active)


def offsets(active: tf.Tensor) -> tf.Tensor:
    """Where each step's entries start in a step-major layout."""
    return tf.cumsum(active, exclusive=True)


def entries(active: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The step `j` and the run `r` of every entry of a step-major layout, each `(P,)`."""
    step = segment_ids(active)
    return step, tf.range(tf.size(step)) - tf.gather(offsets(active), step)


def active_counts(lengths_sorted: tf.Tensor) -> tf.Tensor:
    """`n[j]` = number of runs longer than `j`, for `j` in `[0, max(lengths))`."""
    longest = tf.reduce_max(tf.concat([lengths_sorted, [0]], 0))
    # runs longer than j, in lengths sorted longest first: those before the first of length <= j
    rising, below = tf.reshape(-lengths_sorted, [1, -1]), tf.reshape(-tf.range(longest), [1, -1])
    return tf.reshape(tf.raw_ops.LowerBound(sorted_inputs=rising, values=below, out_type=tf.int32), [-1])


def runs(steps: tf.Tensor, carry: bool) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """`(starts, lengths, pos_row)` of :class:`RunPlan` alone (the part XLA can compile)."""
    flat_steps = tf.reshape(steps, [-1])
    pos_row = segment_ids(flat_steps)
    lengths = tf.reduce_sum(steps, axis=1) if carry else flat_steps
    return tf.cumsum(lengths, exclusive=True), lengths, pos_row


def make_plan(steps: tf.Tensor, carry: bool) -> RunPlan:
    """The run plan of `steps` `(batch, T)` int32 in carry mode or not."""
    starts, lengths, pos_row = runs(steps, carry)
    order = tf.argsort(lengths, direction="DESCENDING", stable=True)
    active = active_counts(tf.gather(lengths, order))
    step, run = entries(active)
    positions = tf.gather(tf.gather(starts, order), run) + step
    return RunPlan(starts, lengths, pos_row, order, active, step, run, positions)
