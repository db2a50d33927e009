"""Packed scans: B over runs sorted longest first, standard cells with a hand-written backward pass.

Runs are sorted longest first, so that inner step ``j`` involves only the first ``active[j]``
runs. Outputs come back in *step-major* order: all runs' outputs for step 0, then step 1, and so
on. Inputs are never laid out that way (that would copy B's projected input once per real step):
entry ``p`` reads row ``rows[p]`` of a small ``source`` (see :class:`Inputs`).

Autodiff through a ``tf.while_loop`` stores every intermediate of every iteration and adds a
weight-gradient matmul per step. The GRU backward pass below instead:

- keeps the gates of the forward pass and forms the gates' coefficients for all steps at once;
- runs only the truly sequential part, the state gradient, in the loop: one small matmul a step;
- forms the weight gradients with one large matmul per gate after the loop.

Each scan supports the cell's default activations only (tanh and sigmoid); adapters check that
before choosing a scan.

Shapes: ``P = sum(active)`` entries; ``active`` is ``(L,)`` int32, non-increasing; states are
``(R, H)`` with ``R >= active[0]``, sorted like the runs.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf


class Inputs(NamedTuple):
    """Where each entry of a step-major layout reads its input.

    Attributes:
        sources: tensors of `S` input rows each (`(S, G_i)`); a step reads the same rows of each.
        rows: `(P,)` int32, the source row that entry `p` reads.
        by_run: whether entry `(j, r)` reads row `r`, so that step `j` reads `source[:active[j]]`
            (reset and init modes, where a run's input never changes). Otherwise each step
            gathers its rows (carry mode, where a sample's input changes with `t`).
    """

    sources: tuple[tf.Tensor, ...]
    rows: tf.Tensor
    by_run: bool


def _offsets(active: tf.Tensor) -> tf.Tensor:
    return tf.cumsum(active, exclusive=True)


def _concat(ta: tf.TensorArray, width: int, dtype: tf.DType) -> tf.Tensor:
    return tf.cond(ta.size() > 0, ta.concat, lambda: tf.zeros([0, width], dtype))


def entries(active: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The step `j` and the run `r` of every entry of a step-major layout, each `(P,)`."""
    step = tf.repeat(tf.range(tf.size(active)), active)
    return step, tf.range(tf.size(step)) - tf.repeat(_offsets(active), active)


def _previous(first: tf.Tensor, outs: tf.Tensor, active: tf.Tensor) -> tf.Tensor:
    """The state each step started from, step-major `(P, H)`.

    Entry `(j, r)` is `first[r]` for `j = 0`, else the output of `(j - 1, r)`.
    """
    step, run = entries(active)
    earlier = tf.gather(tf.concat([[0], _offsets(active)], 0), step) + run
    index = tf.where(step == 0, run, tf.shape(first)[0] + earlier)
    return tf.gather(tf.concat([first, outs], 0), index)


def _pad_rows(t: tf.Tensor, n: tf.Tensor) -> tf.Tensor:
    """Pads `t` `(m, H)` with zero rows to `(n, H)`, `n >= m`."""
    return tf.pad(t, tf.stack([tf.stack([0, n - tf.shape(t)[0]]), [0, 0]]))


def forward(step_fn, inputs, active, states, widths):
    """Runs `step_fn(x_j, states_j) -> (records, states)` over the steps of a packed layout.

    Args:
        step_fn: one inner step on the `active[j]` rows still going; `x_j` is a list with the
            step's rows of each of `inputs.sources`.
        inputs: an :class:`Inputs`.
        active: `(L,)` int32.
        states: initial states `(R, s)`, sorted like the runs.
        widths: the width of each record.

    Returns:
        Each record of every step, step-major, `(P, width)`.
    """
    size = tf.size(active)
    dtype = inputs.sources[0].dtype
    rows = None
    if not inputs.by_run:
        rows = _stepwise(inputs.rows.dtype, size, None)
        if not (tf.executing_eagerly() and int(size) == 0):  # eager split cannot make 0 parts
            rows = rows.split(inputs.rows, active)
    tas = [_stepwise(dtype, size, w) for w in widths]

    def body(j, states, tas):
        rows_j = tf.stack([active[j], -1])  # leading-row slices share their input's buffer
        if rows is None:
            x = [tf.slice(source, [0, 0], rows_j) for source in inputs.sources]
        else:
            index = rows.read(j)
            x = [tf.gather(source, index) for source in inputs.sources]
        records, states = step_fn(x, [tf.slice(s, [0, 0], rows_j) for s in states])
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
    return [_concat(ta, w, dtype) for ta, w in zip(tas, widths)]


def _stepwise(dtype: tf.DType, size: tf.Tensor, width: int | None) -> tf.TensorArray:
    """A TensorArray of `size` blocks `(rows, width)` (or `(rows,)`), one per step; rows may differ."""
    shape = [None] if width is None else [None, width]
    return tf.TensorArray(dtype, size=size, infer_shape=False, element_shape=shape)


def _backward(step_fn, arrays, active, rows, width):
    """Runs the state-gradient recurrence from the last step to the first.

    Args:
        step_fn: `step_fn(rows_j, carried) -> (total, carried)` takes the rows of each of `arrays`
            for step `j` and the gradient carried from step `j + 1`, padded to the rows of step
            `j`; it returns the total state gradient at step `j` and the one carried to `j - 1`.
        arrays: `(P, W_i)` step-major values the recurrence reads.
        active: `(L,)` int32.
        rows: R, the number of initial states.
        width: H.

    Returns:
        `(totals, initial)`: the total state gradients, step-major `(P, H)`, and the gradients of
        the initial states `(R, H)`.
    """
    size = tf.size(active)
    dtype = arrays[0].dtype
    # Slice bounds and paddings per step, made once: the loop body then reads them by index.
    begins = tf.stack([_offsets(active), tf.zeros_like(active)], 1)
    sizes = tf.stack([active, -tf.ones_like(active)], 1)
    grow = active - tf.concat([active[1:], [0]], 0)
    paddings = tf.pad(grow[:, None, None], [[0, 0], [0, 1], [1, 0]])

    def body(j, carried, totals_ta):
        rows_j = [tf.slice(a, begins[j], sizes[j]) for a in arrays]
        total, carried = step_fn(rows_j, tf.pad(carried, paddings[j]))
        return j - 1, carried, totals_ta.write(j, total)

    _, carried, totals_ta = tf.while_loop(
        lambda j, *_: j >= 0,
        body,
        (size - 1, tf.zeros([0, width], dtype), _stepwise(dtype, size, width)),
        shape_invariants=(tf.TensorShape([]), tf.TensorShape([None, width]), None),
    )
    return _concat(totals_ta, width, dtype), _pad_rows(carried, rows)


# ----------------------------------------------------------------------------- GRU


def _gru_parts(source, kernel, bias, width):
    """Inputs, kernels and candidate bias of a GRU step, split by gate once, outside the loop.

    Split apart from the start, no step copies a `(n, 3H)` tensor into gates; the update and reset
    biases join their inputs here.
    """
    sources = tf.split(source + tf.concat([bias[: 2 * width], tf.zeros_like(bias[2 * width :])], 0), 3, -1)
    return tuple(sources), tf.split(kernel, 3, -1), bias[2 * width :]


def _gru_step(x, h, kernels, b_h):
    """One step on the gates' inputs `x` (3 tensors `(n, H)`); returns `(h', z, r, i_h, hh)`."""
    u_z, u_r, u_h = kernels
    z = tf.sigmoid(x[0] + tf.matmul(h, u_z))
    r = tf.sigmoid(x[1] + tf.matmul(h, u_r))
    i_h = tf.nn.bias_add(tf.matmul(h, u_h), b_h)
    hh = tf.tanh(x[2] + r * i_h)
    return hh + z * (h - hh), z, r, i_h, hh


def gru_states(inputs: Inputs, active: tf.Tensor, h0: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor,
               emit=None) -> tf.Tensor:  # fmt: skip
    """:func:`gru_scan` without the records its backward pass needs, for inference.

    With `emit` (a Dense layer), returns `emit` of each state instead, `(P, emit.units)`.
    """
    width = h0.shape[-1]
    sources, kernels, b_h = _gru_parts(inputs.sources[0], kernel, bias, width)

    def step(x, states):
        new = _gru_step(x, states[0], kernels, b_h)[0]
        return [new if emit is None else emit(new)], [new]

    out_width = width if emit is None else emit.units
    return forward(step, inputs._replace(sources=sources), active, [h0], [out_width])[0]


def gru_scan(inputs: Inputs, active: tf.Tensor, h0: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor) -> tf.Tensor:
    """GRU (``reset_after=True``) over a step-major packed layout.

    Args:
        inputs: one source, the input projections `x @ W + b_input` `(S, 3H)`; see `Inputs`.
        active: `(L,)` int32 runs still going at each step.
        h0: `(R, H)` initial states, sorted like the runs.
        kernel: `(H, 3H)` recurrent kernel; bias: `(3H,)` recurrent bias.

    Returns:
        `(P, H)`: the state after every step, step-major.
    """
    width = h0.shape[-1]

    @tf.custom_gradient
    def scan(source, h0, kernel, bias):
        sources, kernels, b_h = _gru_parts(source, kernel, bias, width)

        def step(x, states):
            records = _gru_step(x, states[0], kernels, b_h)
            return list(records), [records[0]]

        # The gates are kept so that the backward pass need not recompute them.
        hs, z, r, i_h, hh = forward(step, inputs._replace(sources=sources), active, [h0], [width] * 5)

        def grad(d_hs):
            d_hs = tf.convert_to_tensor(d_hs)
            h_prev = _previous(h0, hs, active)
            # Each gate's coefficient apart, (P, H) each: never a (P, 3H) tensor, which would be
            # the largest thing alive in the whole train step.
            c_h = (1.0 - z) * (1.0 - hh * hh)
            c_z = (h_prev - hh) * z * (1.0 - z)
            c_r = c_h * i_h * r * (1.0 - r)
            c_hr = c_h * r

            def back(rows_j, carried):
                d_out, z_j, c_z_j, c_r_j, c_hr_j = rows_j
                d_h = d_out + carried
                d_inner = tf.concat([d_h * c_z_j, d_h * c_r_j, d_h * c_hr_j], -1)
                return d_h, d_h * z_j + tf.matmul(d_inner, kernel, transpose_b=True)

            d_h, d_h0 = _backward(back, [d_hs, z, c_z, c_r, c_hr], active, tf.shape(h0)[0], width)
            # Sum into the few source rows; the bias gradient is the sum of those sums.
            n_sources = tf.shape(source)[0]
            d_x, d_kernel, d_bias = [], [], []
            for d_gate, c_x in ((d_h * c_z, None), (d_h * c_r, None), (d_h * c_hr, c_h)):
                d_sum = tf.math.unsorted_segment_sum(d_gate, inputs.rows, n_sources)
                d_kernel.append(tf.matmul(h_prev, d_gate, transpose_a=True))
                d_bias.append(tf.reduce_sum(d_sum, 0))
                # the candidate's input gradient lacks the factor r of its recurrent one
                d_x.append(d_sum if c_x is None else tf.math.unsorted_segment_sum(d_h * c_x, inputs.rows, n_sources))
            return tf.concat(d_x, -1), d_h0, tf.concat(d_kernel, -1), tf.concat(d_bias, 0)

        return hs, grad

    return scan(inputs.sources[0], h0, kernel, bias)
