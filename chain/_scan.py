"""Packed scans of standard cells with a hand-written backward pass.

The packed strategy lays B's inputs out in *step-major* order: all runs' inputs for inner step 0,
then for step 1, and so on, with runs sorted longest first so that step ``j`` involves only the
first ``active[j]`` runs. A scan here takes that layout and returns B's outputs in the same
order.

Autodiff through a ``tf.while_loop`` stores every intermediate of every iteration and adds a
weight-gradient matmul per step. The backward passes below instead:

- recompute the gates for all steps at once from the saved states (a few large matmuls);
- run only the truly sequential part, the state gradient, in the loop: one small matmul a step;
- form the weight gradients with one large matmul after the loop.

Each scan supports the cell's default activations only (tanh and sigmoid); adapters check that
before choosing a scan.

Shapes: ``xs`` is ``(P, G)`` with ``P = sum(active)``; ``active`` is ``(L,)`` int32,
non-increasing; states are ``(R, H)`` with ``R >= active[0]``, sorted like the runs.
"""

from __future__ import annotations

import tensorflow as tf


def _offsets(active: tf.Tensor) -> tf.Tensor:
    return tf.cumsum(active, exclusive=True)


def _rows(t: tf.Tensor, start: tf.Tensor, n: tf.Tensor) -> tf.Tensor:
    """`t[start:start + n]` for a 2-D `t`."""
    return tf.slice(t, tf.stack([start, 0]), tf.stack([n, -1]))


def _concat(ta: tf.TensorArray, width: int, dtype: tf.DType) -> tf.Tensor:
    return tf.cond(ta.size() > 0, ta.concat, lambda: tf.zeros([0, width], dtype))


def _previous(first: tf.Tensor, outs: tf.Tensor, active: tf.Tensor) -> tf.Tensor:
    """The state each step started from, step-major `(P, H)`.

    Entry `(j, r)` is `first[r]` for `j = 0`, else the output of `(j - 1, r)`.
    """
    offsets = _offsets(active)
    step = tf.repeat(tf.range(tf.size(active)), active)
    run = tf.range(tf.size(step)) - tf.repeat(offsets, active)
    earlier = tf.gather(tf.concat([[0], offsets], 0), step) + run
    index = tf.where(step == 0, run, tf.shape(first)[0] + earlier)
    return tf.gather(tf.concat([first, outs], 0), index)


def _pad_rows(t: tf.Tensor, n: tf.Tensor) -> tf.Tensor:
    """Pads `t` `(m, H)` with zero rows to `(n, H)`, `n >= m`."""
    return tf.pad(t, tf.stack([tf.stack([0, n - tf.shape(t)[0]]), [0, 0]]))


def forward(step_fn, xs, active, states, widths):
    """Runs `step_fn(x_j, states_j) -> (records, states)` over the steps of a packed layout.

    Args:
        step_fn: one inner step on the `active[j]` rows still going.
        xs: `(P, G)` inputs, step-major.
        active: `(L,)` int32.
        states: initial states `(R, s)`, sorted like the runs.
        widths: the width of each record.

    Returns:
        Each record of every step, step-major, `(P, width)`.
    """
    size = tf.size(active)
    inputs = tf.TensorArray(xs.dtype, size=size, infer_shape=False, element_shape=[None, xs.shape[-1]])
    if not (tf.executing_eagerly() and int(size) == 0):  # eager split cannot make 0 parts
        inputs = inputs.split(xs, active)
    tas = [tf.TensorArray(xs.dtype, size=size, infer_shape=False, element_shape=[None, w]) for w in widths]

    def body(j, states, tas):
        n = active[j]
        records, states = step_fn(inputs.read(j), [s[:n] for s in states])
        return j + 1, states, [ta.write(j, r) for ta, r in zip(tas, records)]

    _, _, tas = tf.while_loop(
        lambda j, *_: j < size,
        body,
        (0, list(states), tas),
        shape_invariants=(
            tf.TensorShape([]),
            [tf.TensorShape([None, s.shape[-1]]) for s in states],
            [None] * len(tas),
        ),
    )
    return [_concat(ta, w, xs.dtype) for ta, w in zip(tas, widths)]


def _backward(step_fn, grads, active, rows, widths):
    """Runs the state-gradient recurrence from the last step to the first.

    `step_fn(j, rows_j, carried) -> (totals, carried)` takes the gradients carried from step
    `j + 1` (padded to the rows of step `j`) and returns the total gradients at step `j` and those
    carried to step `j - 1`.

    Returns:
        `(totals, initial)`: the total gradients of every step, step-major, and the gradients of
        the initial states `(rows, H)`.
    """
    offsets = _offsets(active)
    tas = [
        tf.TensorArray(grads[0].dtype, size=tf.size(active), infer_shape=False, element_shape=[None, w])
        for w in widths
    ]
    carried = [tf.zeros([0, w], grads[0].dtype) for w in widths]

    def body(j, carried, tas):
        n = active[j]
        padded = [_pad_rows(c, n) for c in carried]
        totals, carried = step_fn(j, offsets[j], n, padded)
        return j - 1, carried, [ta.write(j, t) for ta, t in zip(tas, totals)]

    _, carried, tas = tf.while_loop(
        lambda j, *_: j >= 0,
        body,
        (tf.size(active) - 1, carried, tas),
        shape_invariants=(
            tf.TensorShape([]),
            [tf.TensorShape([None, w]) for w in widths],
            [None] * len(tas),
        ),
    )
    totals = [_concat(ta, w, grads[0].dtype) for ta, w in zip(tas, widths)]
    return totals, [_pad_rows(c, rows) for c in carried]


# ----------------------------------------------------------------------------- GRU


def _gru_gates(xs, h_prev, kernel, bias):
    x_z, x_r, x_h = tf.split(xs, 3, axis=-1)
    i_z, i_r, i_h = tf.split(tf.matmul(h_prev, kernel) + bias, 3, axis=-1)
    z = tf.sigmoid(x_z + i_z)
    r = tf.sigmoid(x_r + i_r)
    return z, r, i_h, tf.tanh(x_h + r * i_h)


@tf.custom_gradient
def gru_scan(xs, active, h0, kernel, bias):
    """GRU (``reset_after=True``) over a step-major packed layout.

    Args:
        xs: `(P, 3H)` input projections `x @ W + b_input`, step-major.
        active: `(L,)` int32 runs still going at each step.
        h0: `(R, H)` initial states, sorted like the runs.
        kernel: `(H, 3H)` recurrent kernel; bias: `(3H,)` recurrent bias.

    Returns:
        `(P, H)`: the state after every step, step-major.
    """
    width = h0.shape[-1]

    def step(x, states):
        z, r, i_h, hh = _gru_gates(x, states[0], kernel, bias)
        h = z * states[0] + (1.0 - z) * hh
        return [h, z, r, i_h, hh], [h]

    # The gates are kept so that the backward pass need not recompute them.
    hs, z, r, i_h, hh = forward(step, xs, active, [h0], [width] * 5)

    def grad(d_hs):
        d_hs = tf.convert_to_tensor(d_hs)  # may arrive as IndexedSlices from the final gather
        h_prev = _previous(h0, hs, active)
        c_h = (1.0 - z) * (1.0 - hh * hh)
        c_z = (h_prev - hh) * z * (1.0 - z)
        c_r = c_h * i_h * r * (1.0 - r)
        coef_inner = tf.concat([c_z, c_r, c_h * r], -1)

        def back(j, start, n, carried):
            d_h = _rows(d_hs, start, n) + carried[0]
            d_inner = tf.tile(d_h, [1, 3]) * _rows(coef_inner, start, n)
            return [d_h], [d_h * _rows(z, start, n) + tf.matmul(d_inner, kernel, transpose_b=True)]

        (d_h,), (d_h0,) = _backward(back, [d_hs], active, tf.shape(h0)[0], [width])
        d_inner = tf.tile(d_h, [1, 3]) * coef_inner
        d_xs = tf.concat([d_inner[:, : 2 * width], d_h * c_h], -1)
        d_kernel = tf.matmul(h_prev, d_inner, transpose_a=True)
        return d_xs, None, d_h0, d_kernel, tf.reduce_sum(d_inner, 0)

    return hs, grad

