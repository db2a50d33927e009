"""Packed scans: B over runs sorted longest first, standard cells with a hand-written backward pass.

Runs are sorted longest first, so that inner step ``j`` involves only the first ``active[j]``
runs. Outputs come back in *step-major* order: all runs' outputs for step 0, then step 1, and so
on. Inputs are never laid out that way (that would copy B's projected input once per real step):
entry ``p`` reads row ``rows[p]`` of a small ``source`` (see :class:`Inputs`).

Autodiff through a ``tf.while_loop`` stores every intermediate of every iteration and adds a
weight-gradient matmul per step. The GRU backward pass below instead runs one loop from the last
step to the first, and per step:

- forms the gates' gradients from what the forward pass kept: the gates' coefficients (reset and
  init modes), or just ``z``, ``r`` and the candidate (carry mode, whose narrow steps cost the same
  either way, so it keeps less);
- carries the state gradient back and adds to the kernel's gradient, one matmul each;
- sums the gates' gradients per run as it goes, so no array of ``P`` rows is made.

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
    tas = _records(step_fn, inputs, active, states, widths)
    return [_concat(ta, w, inputs.sources[0].dtype) for ta, w in zip(tas, widths)]


def _records(step_fn, inputs, active, states, widths):
    """:func:`forward`, with each record left as a TensorArray of one block per step."""
    size = tf.size(active)
    dtype = inputs.sources[0].dtype
    rows = None
    if not inputs.by_run:
        rows = _split(inputs.rows, active)
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
    return tas


def _split(values: tf.Tensor, counts: tf.Tensor) -> tf.TensorArray:
    """`values` `(sum(counts),)` as a TensorArray of `counts[j]` values per step."""
    ta = _stepwise(values.dtype, tf.size(counts), None)
    if tf.executing_eagerly() and int(tf.size(counts)) == 0:  # eager split cannot make 0 parts
        return ta
    return ta.split(values, counts)


def _stepwise(dtype: tf.DType, size: tf.Tensor, width: int | None) -> tf.TensorArray:
    """A TensorArray of `size` blocks `(rows, width)` (or `(rows,)`), one per step; rows may differ."""
    shape = [None] if width is None else [None, width]
    return tf.TensorArray(dtype, size=size, infer_shape=False, element_shape=shape)


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

        # Carry mode's steps are narrow (a row per sample), so they cost about the same with fewer
        # records kept: the backward pass then forms the gates' coefficients itself.
        lean = not inputs.by_run

        def step(x, states):
            new, z, r, i_h, hh = _gru_step(x, states[0], kernels, b_h)
            return [new, z, *_gate_records(states[0], z, r, i_h, hh, lean)], [new]

        # Gates stay one block per step, as the backward pass reads them; only the states are
        # joined, as they are the output.
        widths = [width, width] + ([width, width] if lean else [4 * width])
        hs, z, *gates = _records(step, inputs._replace(sources=sources), active, [h0], widths)
        hs = _concat(hs, width, source.dtype)

        def grad(d_hs):
            records = _GruRecords(tf.convert_to_tensor(d_hs), hs, h0, z, tuple(gates))
            d_source, d_h0, d_kernel = _gru_backward(
                records, inputs, active, kernel, bias[2 * width :], tf.shape(source)[0]
            )
            # The columns of `d_source`: see `_gate_gradients`. The first three are those of the
            # recurrent matmul's outputs (and biases); the candidate's input gets the fourth.
            d_bias = tf.reduce_sum(d_source[:, : 3 * width], 0)
            d_x = tf.concat([d_source[:, : 2 * width], d_source[:, 3 * width :]], -1)
            return d_x, d_h0, d_kernel[:, : 3 * width], d_bias

        return hs, grad

    return scan(inputs.sources[0], h0, kernel, bias)


class _GruRecords(NamedTuple):
    d_hs: tf.Tensor  # (P, H) gradient at each output, step-major
    hs: tf.Tensor  # (P, H) the outputs
    h0: tf.Tensor  # (R, H)
    z: tf.TensorArray  # the update gate, (active[j], H) per step
    gates: tuple[tf.TensorArray, ...]  # what `_gate_records` kept, per step


def _gate_records(h, z, r, i_h, hh, lean: bool) -> list[tf.Tensor]:
    """What the backward pass keeps of a step besides the state and `z`.

    Lean: `r` and the candidate `h~`; the backward pass recomputes `i_h = h @ U_h + b_h`. Else the
    gates' coefficients `(n, 4H)`: a state gradient `g` at the step's output becomes `g *
    coefficients`, the four columns of :func:`_gate_gradients`.
    """
    if lean:
        return [r, hh]
    kept = 1.0 - z
    c_h = kept * (1.0 - hh * hh)
    c_hr = c_h * r
    return [tf.concat([(h - hh) * (z * kept), c_hr * i_h * (1.0 - r), c_hr, c_h], -1)]


def _gate_gradients(d_h, h_prev, z, gates, u_h, b_h) -> tf.Tensor:
    """The gradients `(n, 4H)` of the pre-activations of `z` and `r`, of `i_h`, and of the
    pre-activation of `h~`, from the state gradient `d_h` and what `_gate_records` kept."""
    width = u_h.shape[0]
    if len(gates) == 1:
        shape = tf.stack([tf.shape(d_h)[0], 4, width])
        return tf.reshape(d_h[:, None, :] * tf.reshape(gates[0], shape), [-1, 4 * width])
    r, hh = gates
    i_h = tf.nn.bias_add(tf.matmul(h_prev, u_h), b_h)
    kept = 1.0 - z
    d_hh = d_h * kept * (1.0 - hh * hh)
    d_hr = d_hh * r
    return tf.concat([d_h * (h_prev - hh) * (z * kept), d_hr * i_h * (1.0 - r), d_hr, d_hh], -1)


def _gru_backward(records: _GruRecords, inputs: Inputs, active: tf.Tensor, kernel: tf.Tensor, b_h, n_sources):
    """The GRU's backward pass, one loop from the last step to the first.

    Per step, the gates' gradients `g` `(n, 4H)` come from the step's records (one product, or in
    carry mode a few and one small matmul), and one matmul each carries the state gradient back and
    adds to the kernel's gradient. `g` is summed per run as the loop goes, so nothing of `P` rows
    is made. In carry mode, where a sample's input row changes between its runs, each run's sum is
    taken where the run starts and that row's sum starts again from zero.

    Returns:
        `(d_source (S, 4H), d_h0 (R, H), d_kernel (H, 4H))`, columns as `g`'s.
    """
    width = records.hs.shape[-1]
    dtype = records.hs.dtype
    size = tf.size(active)
    offsets = _offsets(active)
    grow = active - tf.concat([active[1:], [0]], 0)  # rows that join, going backward
    paddings = tf.pad(grow[:, None, None], [[0, 0], [0, 1], [1, 0]])
    # [U_z; U_r; U_h; 0]: carries all four columns of g back at once, the last adding nothing
    kernel_t = tf.concat([tf.transpose(kernel), tf.zeros([width, width], dtype)], 0)
    runs = None if inputs.by_run else _RunStarts(inputs.rows, active, dtype)

    u_h = kernel[:, 2 * width :]

    def back(j, h_prev, carried, sums, d_kernel):
        d_out = tf.slice(records.d_hs, tf.stack([offsets[j], 0]), tf.stack([active[j], -1]))
        d_h = d_out + tf.pad(carried, paddings[j])
        z = records.z.read(j)
        g = _gate_gradients(d_h, h_prev, z, [ta.read(j) for ta in records.gates], u_h, b_h)
        carried = d_h * z + tf.matmul(g, kernel_t)
        d_kernel = d_kernel + tf.matmul(h_prev, g, transpose_a=True)
        return carried, tf.pad(sums, paddings[j]) + g, d_kernel

    def body(j, carried, sums, d_kernel, ended):
        h_prev = tf.slice(records.hs, tf.stack([offsets[j - 1], 0]), tf.stack([active[j], -1]))
        carried, sums, d_kernel = back(j, h_prev, carried, sums, d_kernel)
        if runs is not None:
            ended = ended.write(j - 1, tf.gather(sums, runs.starts.read(j - 1)))
            sums = sums * runs.keep.read(j - 1)[:, None]
        return j - 1, carried, sums, d_kernel, ended

    _, carried, sums, d_kernel, ended = tf.while_loop(
        lambda j, *_: j > 0,
        body,
        (size - 1, tf.zeros([0, width], dtype), tf.zeros([0, 4 * width], dtype),
         tf.zeros([width, 4 * width], dtype), _stepwise(dtype, tf.maximum(size - 1, 0), 4 * width)),
        shape_invariants=(tf.TensorShape([]), tf.TensorShape([None, width]), tf.TensorShape([None, 4 * width]),
                          tf.TensorShape([width, 4 * width]), None),
    )  # fmt: skip

    def first():  # step 0 starts from h0
        h_prev = tf.slice(records.h0, [0, 0], tf.stack([active[0], -1]))
        return back(0, h_prev, carried, sums, d_kernel)

    carried, sums, d_kernel = tf.cond(size > 0, first, lambda: (carried, sums, d_kernel))
    d_h0 = _pad_rows(carried, tf.shape(records.h0)[0])
    if runs is None:  # run r reads source row r
        return _pad_rows(sums, n_sources), d_h0, d_kernel
    # every run's sum, in the order of its first entry (step-major); step 0's are what is left
    ended = tf.concat([sums, _concat(ended, 4 * width, dtype)], 0)
    return tf.math.unsorted_segment_sum(ended, runs.rows, n_sources), d_h0, d_kernel


class _RunStarts:
    """Where runs of source rows start in a carry-mode packed layout.

    A run is a sample's entries that read one source row. Entry `(j, r)` starts one if `j = 0` or
    `(j - 1, r)` read another row. For steps `j >= 1`: `starts.read(j - 1)` holds the rows `r`
    within step `j` that start a run, and `keep.read(j - 1)` is 0 for them, 1 for the others.
    `rows` is the source row of each run, ordered by first entry, step-major.
    """

    def __init__(self, rows: tf.Tensor, active: tf.Tensor, dtype: tf.DType):
        step, run = entries(active)
        first = tf.reduce_sum(active[:1])  # the entries of step 0, which all start runs
        earlier = tf.gather(_offsets(active), tf.maximum(step - 1, 0)) + run  # entry (j - 1, r)
        start = tf.logical_or(step == 0, tf.gather(rows, earlier) != rows)
        self.rows = tf.boolean_mask(rows, start)
        later = start[first:]
        counts = tf.math.unsorted_segment_sum(tf.cast(later, tf.int32), step[first:] - 1, tf.size(active[1:]))
        self.starts = _split(tf.boolean_mask(run[first:], later), counts)
        self.keep = _split(tf.cast(tf.logical_not(later), dtype), active[1:])
