"""Packed scans: B over runs sorted longest first, with a hand-written backward pass per cell.

Runs are sorted longest first, so that inner step ``j`` involves only the first ``active[j]``
runs. Outputs come back in *step-major* order: all runs' outputs for step 0, then step 1, and so
on. Inputs are never laid out that way (that would copy B's projected input once per real step):
entry ``p`` reads row ``rows[p]`` of a small ``source`` (see :class:`Inputs`).

Autodiff through a ``tf.while_loop`` stores every intermediate of every iteration and adds a
weight-gradient matmul per step. :func:`scan` instead takes a *kernel* (see ``chain._kernels``):
one cell's forward step, which also returns the few tensors its backward step needs, and that
backward step. One loop runs the steps forward and one runs them back, and per step the backward
loop:

- gets the gradients of the step's input, previous states and weights from the kernel;
- carries the state gradient to the step before;
- sums the input gradient per run as it goes, so no array of input gradients per entry is made.

Shapes: ``P = sum(active)`` entries; ``active`` is ``(L,)`` int32, non-increasing; states are
``(R, s)`` with ``R >= active[0]``, sorted like the runs.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import tensorflow as tf

from ._kernels import KernelStep, forward_step
from ._ops import masked
from ._plan import entries as entries
from ._plan import offsets as _offsets


class Inputs(NamedTuple):
    """Where each entry of a step-major layout reads its input.

    Attributes:
        sources: tensors of `S` input rows each (`(S, G_i)`); a step reads the same rows of each.
        rows: `(P,)` int32, the source row that entry `p` reads.
        by_run: whether entry `(j, r)` reads row `r`, so that step `j` reads `source[:active[j]]`
            (reset and init modes, where a run's input never changes). Otherwise each step
            gathers its rows (carry mode, where a sample's input changes with `t`).
        step_major: the sources hold one row per entry, in step-major order (`rows` is then
            unused): step `j` reads its entries' rows as one slice, and the backward pass gives
            the input gradient of every entry (teacher-forced feedback, where every step's input
            differs).
    """

    sources: tuple[tf.Tensor, ...]
    rows: tf.Tensor | None
    by_run: bool
    step_major: bool = False


def _concat(ta: tf.TensorArray, width: int, dtype: tf.DType) -> tf.Tensor:
    return tf.cond(ta.size() > 0, ta.concat, lambda: tf.zeros([0, width], dtype))


def _pad_rows(t: tf.Tensor, n: tf.Tensor) -> tf.Tensor:
    """Pads `t` `(m, H)` with zero rows to `(n, H)`, `n >= m`."""
    return tf.pad(t, tf.stack([tf.stack([0, n - tf.shape(t)[0]]), [0, 0]]))


def _rows(t: tf.Tensor, start, n) -> tf.Tensor:
    """Rows `[start, start + n)` of `t` (a slice that shares its buffer), width kept static."""
    out = tf.slice(t, tf.stack([start, 0]), tf.stack([n, -1]))
    out.set_shape([None, t.shape[-1]])
    return out


def _lead(t: tf.Tensor, n: tf.Tensor) -> tf.Tensor:
    """The first `n` rows of `t`."""
    return _rows(t, 0, n)


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


class _Reader:
    """Reads step `j`'s input rows of every source."""

    def __init__(self, inputs: Inputs, active: tf.Tensor):
        self.inputs = inputs
        self.active = active
        self.rows = None if inputs.by_run or inputs.step_major else _split(inputs.rows, active)
        self.offsets = _offsets(active) if inputs.step_major else None

    def read(self, j) -> list[tf.Tensor]:
        if self.offsets is not None:
            return [_rows(source, self.offsets[j], self.active[j]) for source in self.inputs.sources]
        if self.rows is None:
            return [_lead(source, self.active[j]) for source in self.inputs.sources]
        index = self.rows.read(j)
        return [tf.gather(source, index) for source in self.inputs.sources]


# ----------------------------------------------------------------------------- forward only


def forward(step_fn, inputs, active, states, widths, final: bool = False):
    """Runs `step_fn(x_j, states_j) -> (records, states)` over the steps of a packed layout.

    Args:
        step_fn: one inner step on the `active[j]` rows still going; `x_j` is a list with the
            step's rows of each of `inputs.sources`.
        inputs: an :class:`Inputs`.
        active: `(L,)` int32.
        states: initial states `(R, s)`, sorted like the runs.
        widths: the width of each record.
        final: also return each run's last state.

    Returns:
        Each record of every step, step-major, `(P, width)`; with `final`, `(records, finals)`
        where `finals` are the states `(R, s)` after each run's last step (sorted like the runs;
        a run with no step keeps its initial state).
    """
    dtype = inputs.sources[0].dtype
    tas, ended = _records_only(step_fn, _Reader(inputs, active), active, states, widths, final)
    outs = [_concat(ta, w, dtype) for ta, w in zip(tas, widths)]
    if not final:
        return outs
    return outs, [_finals(ta, s, active) for ta, s in zip(ended, states)]


def _finals(ended: tf.TensorArray, initial: tf.Tensor, active: tf.Tensor) -> tf.Tensor:
    """Each run's last state from the blocks of runs that ended at each step.

    Step `j`'s block holds rows `[active[j + 1], active[j])`, so the blocks from the last step to
    the first hold rows `0, 1, ...` in order; runs with no step follow with their initial state.
    """
    size = tf.size(active)
    width = initial.shape[-1]
    done = tf.cond(
        size > 0,
        lambda: _reverse_concat(ended, size, width, initial.dtype),
        lambda: tf.zeros([0, width], initial.dtype),
    )
    return tf.concat([done, initial[tf.shape(done)[0]:]], 0)


def _reverse_concat(ta: tf.TensorArray, size, width: int, dtype) -> tf.Tensor:
    out = tf.TensorArray(dtype, size=size, infer_shape=False, element_shape=[None, width])
    _, out = tf.while_loop(
        lambda j, _: j < size, lambda j, o: (j + 1, o.write(j, ta.read(size - 1 - j))), (0, out)
    )
    return out.concat()


# ----------------------------------------------------------------------------- with a backward pass


def scan(kernel: Any, inputs: Inputs, active: tf.Tensor, states: list[tf.Tensor], params: list[tf.Tensor],
         final: bool = False):  # fmt: skip
    """B's outputs over a step-major packed layout, differentiable through `kernel`'s backward step.

    Args:
        kernel: a cell's fast path (see ``chain._kernels``).
        inputs: one source, B's projected inputs `(S, G)`; see :class:`Inputs`.
        active: `(L,)` int32 runs still going at each step.
        states: initial states `(R, s)`, sorted like the runs.
        params: the tensors of the weights that the steps use (already in the compute dtype).
        final: also return each run's last state (without gradient: a window edge).

    Returns:
        `outs` `(P, H)` step-major, or `(outs, finals)` with `final`.
    """
    n_states = len(states)

    @tf.custom_gradient
    def run(source, *args):
        h0, weights = list(args[:n_states]), list(args[n_states:])
        fwd = _Forward(kernel, inputs._replace(sources=(source,)), active, h0, weights, final)

        def grad(d_outs, *d_finals):
            del d_finals  # final states are a window edge: no gradient crosses it
            d_source, d_h0, d_weights = _backward(kernel, fwd, tf.convert_to_tensor(d_outs), tf.shape(source)[0])
            return (d_source, *d_h0, *d_weights)

        return (fwd.outs, *fwd.finals), grad

    results = run(inputs.sources[0], *states, *params)
    outs, finals = results[0], [tf.stop_gradient(f) for f in results[1:]]
    return (outs, finals) if final else outs


class _Forward:
    """The forward loop of :func:`scan` and what its backward loop reads.

    Attributes:
        outs: `(P, H)` every step's output, step-major.
        states: a TensorArray per state (unless the output is the only state), one block per step.
        records: a TensorArray per kernel record, one block per step.
    """

    def __init__(self, kernel, inputs: Inputs, active, h0, weights, final: bool):
        self.kernel, self.inputs, self.active, self.h0, self.weights = kernel, inputs, active, h0, weights
        dtype = inputs.sources[0].dtype
        self.reader = _Reader(inputs, active)
        widths = [kernel.width, *kernel.state_sizes[1 if kernel.out_is_state else 0:], *kernel.record_widths]

        def step(x, states):
            out, new, records = kernel.forward(x[0], states, weights)
            kept = new[1:] if kernel.out_is_state else new
            return [out, *kept, *records], new

        blocks, ended = _records_only(step, self.reader, active, h0, widths, final)
        self.outs = _concat(blocks[0], kernel.width, dtype)
        n_kept = len(kernel.state_sizes) - (1 if kernel.out_is_state else 0)
        self.state_tas = ([blocks[0]] if kernel.out_is_state else []) + blocks[1 : 1 + n_kept]
        self.record_tas = blocks[1 + n_kept :]
        self.finals = [_finals(ta, s, active) for ta, s in zip(ended, h0)] if final else []


def _records_only(step_fn, reader, active, states, widths, final):
    """The forward loop, leaving every record as a TensorArray of one block per step.

    Returns:
        `(tas, ended)`: a TensorArray per record, and with `final` one per state holding, at step
        `j`, the rows of the runs that end there.
    """
    size = tf.size(active)
    dtype = reader.inputs.sources[0].dtype
    tas = [_stepwise(dtype, size, w) for w in widths]
    ended = [_stepwise(s.dtype, size, s.shape[-1]) for s in states] if final else []
    after = tf.concat([active[1:], [0]], 0)

    def body(j, states, tas, ended):
        records, new = step_fn(reader.read(j), [_lead(s, active[j]) for s in states])
        ended = [ta.write(j, s[after[j]:]) for ta, s in zip(ended, new)]
        return j + 1, new, [ta.write(j, r) for ta, r in zip(tas, records)], ended

    _, _, tas, ended = tf.while_loop(
        lambda j, *_: j < size,
        body,
        (0, list(states), tas, ended),
        shape_invariants=(
            tf.TensorShape([]),
            [tf.TensorShape([None, s.shape[-1]]) for s in states],
            [None] * len(tas),
            [None] * len(ended),
        ),
    )
    return tas, ended


def _backward(kernel, fwd: _Forward, d_outs: tf.Tensor, n_sources):
    """The backward loop of :func:`scan`, from the last step to the first.

    Returns:
        `(d_source (S, G), d_h0 [(R, s)], d_weights)`.
    """
    active, inputs = fwd.active, fwd.inputs
    dtype = d_outs.dtype
    size = tf.size(active)
    offs = _offsets(active)
    grow = active - tf.concat([active[1:], [0]], 0)  # rows that join, going backward
    paddings = tf.pad(grow[:, None, None], [[0, 0], [0, 1], [1, 0]])
    width_x = inputs.sources[0].shape[-1]
    sizes = kernel.state_sizes
    step_major = inputs.step_major
    runs = None if inputs.by_run or step_major else _RunStarts(inputs.rows, active, dtype)
    acc_dtype = tf.float32 if dtype in (tf.bfloat16, tf.float16) else dtype

    def back(j, prev, carried, sums, d_weights):
        n = active[j]
        d_out = _rows(d_outs, offs[j], n)
        d_new = [tf.pad(c, paddings[j]) for c in carried]
        if kernel.out_is_state:
            d_new[0] = d_new[0] + d_out
            d_out = None
        out = _rows(fwd.outs, offs[j], n)
        records = [ta.read(j) for ta in fwd.record_tas]
        d_x, d_prev, d_w = kernel.backward(KernelStep(prev, out, records, fwd.weights), d_out, d_new)
        d_weights = [a + tf.cast(g, acc_dtype) for a, g in zip(d_weights, d_w)]
        return d_prev, tf.pad(sums, paddings[j]) + d_x, d_weights

    def body(j, carried, sums, d_weights, ended):
        prev = [_lead(ta.read(j - 1), active[j]) for ta in fwd.state_tas]
        carried, sums, d_weights = back(j, prev, carried, sums, d_weights)
        if step_major:  # every entry's own input gradient: kept, nothing summed
            ended = ended.write(j, sums)
            sums = tf.zeros_like(sums)
        elif runs is not None:
            ended = ended.write(j - 1, tf.gather(sums, runs.starts.read(j - 1)))
            sums = sums * runs.keep.read(j - 1)[:, None]
        return j - 1, carried, sums, d_weights, ended

    start = (
        size - 1,
        [tf.zeros([0, s], dtype) for s in sizes],
        tf.zeros([0, width_x], dtype),
        [tf.zeros(w.shape, acc_dtype) for w in fwd.weights],
        _stepwise(dtype, size if step_major else tf.maximum(size - 1, 0), width_x),
    )
    _, carried, sums, d_weights, ended = tf.while_loop(
        lambda j, *_: j > 0,
        body,
        start,
        shape_invariants=(
            tf.TensorShape([]),
            [tf.TensorShape([None, s]) for s in sizes],
            tf.TensorShape([None, width_x]),
            [w.shape for w in fwd.weights],
            None,
        ),
    )

    def first():  # step 0 starts from h0
        prev = [_lead(h, active[0]) for h in fwd.h0]
        return back(0, prev, carried, sums, d_weights)

    carried, sums, d_weights = tf.cond(size > 0, first, lambda: (carried, sums, d_weights))
    d_h0 = [_pad_rows(c, tf.shape(h)[0]) for c, h in zip(carried, fwd.h0)]
    d_weights = [tf.cast(g, w.dtype) for g, w in zip(d_weights, fwd.weights)]
    if step_major:  # step 0's gradients are `sums`; steps 1.. were written at their index
        ended = tf.cond(size > 0, lambda: ended.write(0, sums), lambda: ended)
        return _concat(ended, width_x, dtype), d_h0, d_weights
    if runs is None:  # run r reads source row r
        return _pad_rows(sums, n_sources), d_h0, d_weights
    # every run's sum, in the order of its first entry (step-major); step 0's are what is left
    ended = tf.concat([sums, _concat(ended, width_x, dtype)], 0)
    return tf.math.unsorted_segment_sum(ended, runs.rows, n_sources), d_h0, d_weights


class _RunStarts:
    """Where runs of source rows start in a carry-mode packed layout.

    A run is a sample's entries that read one source row. Entry `(j, r)` starts one if `j = 0` or
    `(j - 1, r)` read another row. For steps `j >= 1`: `starts.read(j - 1)` holds the rows `r`
    within step `j` that start a run, and `keep.read(j - 1)` is 0 for them, 1 for the others.
    `rows` is the source row of each run, ordered by first entry, step-major.
    """

    def __init__(self, rows: tf.Tensor, active: tf.Tensor, dtype: tf.DType):
        rows = tf.reshape(rows, [-1])
        step, run = entries(active)
        first = tf.reduce_sum(active[:1])  # the entries of step 0, which all start runs
        earlier = tf.gather(_offsets(active), tf.maximum(step - 1, 0)) + run  # entry (j - 1, r)
        start = tf.reshape(tf.logical_or(step == 0, tf.gather(rows, earlier) != rows), [-1])
        self.rows = masked(rows, start)
        later = start[first:]
        counts = tf.math.unsorted_segment_sum(tf.cast(later, tf.int32), step[first:] - 1, tf.size(active[1:]))
        self.starts = _split(masked(run[first:], later), counts)
        self.keep = _split(tf.cast(tf.logical_not(later), dtype), active[1:])


# ----------------------------------------------------------------------------- padded, with a backward pass


class StepRows:
    """Per-step input rows `(size, R, P)`, read one step at a time.

    Held as blocks of `block` columns (a cell's gate blocks: its width, or a kernel's
    `input_block` where its first layer's differs), each in a TensorArray of its own:
    XLA's CPU backend then reads each step's blocks as they are laid out, where slicing gates from
    one wide row per step copied it (several times slower on a GRU step).
    """

    def __init__(self, source: tf.Tensor, size, block: int | None = None):
        width = source.shape[-1]
        parts = width // block if block and width % block == 0 else 1
        self.blocks = [
            tf.TensorArray(source.dtype, size=size, element_shape=part.shape[1:]).unstack(part)
            for part in tf.split(source, parts, axis=-1)
        ]

    def read(self, j) -> tf.Tensor:
        blocks = self.read_blocks(j)
        return blocks[0] if len(blocks) == 1 else tf.concat(blocks, -1)

    def read_blocks(self, j) -> list[tf.Tensor]:
        """Step `j`'s rows as the blocks they are held in (see `chain._kernels.forward_step`)."""
        return [ta.read(j) for ta in self.blocks]


def padded_scan(kernel: Any, source: tf.Tensor, size, longest, states: list[tf.Tensor], params: list[tf.Tensor],
                lengths: tf.Tensor | None = None):  # fmt: skip
    """B over `R` rows for `longest` steps, every row at every step, differentiable through
    `kernel`'s backward step: the padded layout's counterpart of :func:`scan`.

    Its buffers hold `size` steps (`size >= longest`, a bound that XLA can read as a constant),
    and both loops run `longest` steps. Under XLA neither loop needs TensorFlow's autodiff of a
    `tf.while_loop`, whose accumulators XLA copies at every step.

    Args:
        kernel: a cell's fast path (see ``chain._kernels``).
        source: B's projected inputs: `(size, R, P)`, step `j` reading `source[j]`, or `(R, P)`,
            the same rows at every step.
        size: the steps the buffers hold.
        longest: the steps run.
        states: initial states `(R, s)`.
        params: the tensors of the weights that the steps use (in the compute dtype).
        lengths: None, or `(R,)` int32: row `r` keeps its states from step `lengths[r]` on (its
            outputs there are computed, and must be dropped: no gradient reaches them).

    Returns:
        `(outs, finals)`: every step's output `(size, R, H)` (steps from `longest` on are zeros),
        and the states after step `longest` (without gradient: a window edge).
    """
    n_states = len(states)
    per_step = source.shape.rank == 3
    out_is_state = kernel.out_is_state
    longest = tf.convert_to_tensor(longest, tf.int32)

    @tf.custom_gradient
    def run(source, *args):
        h0, weights = list(args[:n_states]), list(args[n_states:])
        dtype = source.dtype
        inputs = StepRows(source, size, getattr(kernel, "input_block", kernel.width)) if per_step else None
        # the states before step j at j (j = 0: h0), after it at j + 1
        # read twice going back (before a step and after the one before), so kept after a read
        state_tas = [tf.TensorArray(dtype, size=size + 1, element_shape=h.shape, clear_after_read=False).write(0, h)
                     for h in h0]  # fmt: skip
        # kept after a read too: an eager tape may be asked for its gradient more than once
        out_tas = [] if out_is_state else [
            tf.TensorArray(dtype, size=size, element_shape=[None, kernel.width], clear_after_read=False)]
        record_tas = [tf.TensorArray(dtype, size=size, element_shape=[None, w], clear_after_read=False)
                      for w in kernel.record_widths]  # fmt: skip

        def body(j, hs, state_tas, out_tas, record_tas):
            out, new, records = (forward_step(kernel, inputs.read_blocks(j), hs, weights) if per_step
                                 else kernel.forward(source, hs, weights))
            if lengths is not None:
                keep = (j < lengths)[:, None]
                new = [tf.where(keep, a, b) for a, b in zip(new, hs)]
            state_tas = [ta.write(j + 1, s) for ta, s in zip(state_tas, new)]
            out_tas = [ta.write(j, out) for ta in out_tas]
            return j + 1, new, state_tas, out_tas, [ta.write(j, r) for ta, r in zip(record_tas, records)]

        _, finals, state_tas, out_tas, record_tas = tf.while_loop(
            lambda j, *_: j < longest, body, (0, h0, state_tas, out_tas, record_tas)
        )
        if out_is_state:  # the states after each step, from the slot after h0
            outs = tf.gather(state_tas[0].stack(), tf.range(1, size + 1))
        else:  # no step run: nothing written, zeros
            empty = lambda: tf.zeros(tf.stack([size, tf.shape(h0[0])[0], kernel.width]), dtype)  # noqa: E731
            outs = tf.cond(longest > 0, out_tas[0].stack, empty)

        def grad(d_outs, *d_finals):
            del d_finals  # final states are a window edge: no gradient crosses it
            acc_dtype = tf.float32 if dtype in (tf.bfloat16, tf.float16) else dtype
            d_outs = tf.TensorArray(dtype, size=size, element_shape=d_outs.shape[1:]).unstack(d_outs)
            d_inputs = tf.TensorArray(dtype, size=size, element_shape=source.shape[1:]) if per_step else None

            def back(j, carried, d_weights, d_source):
                # A row past its end gets no gradient: its outputs there are dropped and its final
                # state is a window edge. Its states were kept, so its records stay finite.
                d_new = list(carried)
                d_out = d_outs.read(j)
                if out_is_state:
                    d_new[0] = d_new[0] + d_out
                    d_out = None
                prev = [ta.read(j) for ta in state_tas]
                out = state_tas[0].read(j + 1) if out_is_state else out_tas[0].read(j)
                step = KernelStep(prev, out, [ta.read(j) for ta in record_tas], weights)
                d_x, d_prev, d_w = kernel.backward(step, d_out, d_new)
                d_source = d_source.write(j, d_x) if per_step else d_source + d_x
                return j - 1, d_prev, [a + tf.cast(g, acc_dtype) for a, g in zip(d_weights, d_w)], d_source

            start = (
                longest - 1,
                [tf.zeros_like(h) for h in h0],
                [tf.zeros(w.shape, acc_dtype) for w in weights],
                d_inputs if per_step else tf.zeros_like(source),
            )
            _, d_h0, d_weights, d_source = tf.while_loop(lambda j, *_: j >= 0, back, start)
            if per_step:  # nothing written when no step ran
                d_source = tf.cond(longest > 0, d_source.stack, lambda: tf.zeros_like(source))
            return (d_source, *d_h0, *[tf.cast(g, w.dtype) for g, w in zip(d_weights, weights)])

        return (outs, *finals), grad

    results = run(source, *states, *params)
    return results[0], [tf.stop_gradient(f) for f in results[1:]]


def padded_forward(kernel: Any, source: tf.Tensor, size, states: list[tf.Tensor], params: list[tf.Tensor]):
    """:func:`padded_scan`'s forward loop alone, where no gradient is taken: nothing recorded.

    Args:
        kernel: a cell's fast path.
        source: B's projected inputs `(size, R, P)`, step `j` reading `source[j]`.
        size: the steps run.
        states: initial states `(R, s)`.
        params: the tensors of the weights that the steps use.

    Returns:
        `(outs, finals)`: every step's output `(size, R, H)` and the states after the last step.
    """
    inputs = StepRows(source, size, getattr(kernel, "input_block", kernel.width))
    outs = tf.TensorArray(source.dtype, size=size, element_shape=[None, kernel.width])

    def body(j, hs, outs):
        out, new, _ = forward_step(kernel, inputs.read_blocks(j), hs, params)
        return j + 1, new, outs.write(j, out)

    _, finals, outs = tf.while_loop(lambda j, *_: j < size, body, (0, list(states), outs))
    empty = lambda: tf.zeros(tf.stack([size, tf.shape(source)[1], kernel.width]), source.dtype)  # noqa: E731
    return tf.cond(tf.convert_to_tensor(size) > 0, outs.stack, empty), finals
