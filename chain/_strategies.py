"""Strategies: ways to run model B over every ``(b, t)`` that compute the same thing.

Every strategy has one contract::

    run(adapter, xp, steps, init_states, carry, training, head=None, final=False,
        differentiable=True, per_step=False, cap=None) -> (flat, finals)

- ``xp``: ``(batch * T, P)``, B's projected input for every ``(b, t)``, rows in ``(b, t)`` order;
  with ``per_step``, ``(sum(steps), P)``, one row for every real inner step in ``(b, t, k)``
  order (B's input then changes from step to step, as with teacher-forced feedback).
- ``steps``: ``(batch, T)`` int32, the number of inner steps of each ``(b, t)``.
- ``init_states``: flat list of state tensors. In carry mode each is ``(batch, s)``: the state at
  the start of each sample. Otherwise each is ``(batch * T, s)``: the state at the start of each
  ``(b, t)`` run.
- ``carry``: whether B's state flows across outer steps.
- ``head``: optional, a row-wise map (a Dense head) applied to B's outputs.
- ``final``: in carry mode, also return each sample's state after its last real step.
- ``differentiable``: False where no gradient will be taken (predict, evaluate, generate,
  serving); ``packed`` then keeps no records for a backward pass and applies ``head`` to each
  step's outputs as they come. It never depends on ``training``, which only reaches model B.
- ``cap``: None, or a bound on every value of ``steps`` (under XLA, ``max_steps``): the loops'
  buffers are then sized by it and ``T`` rather than by the values of ``steps``, so that XLA
  compiles one program per input shape. ``packed``, whose shapes follow the values, has none.
- Returns ``flat``: ``(sum(steps), H)``, B's output at every real inner step (``head`` of it when
  given), ordered by sample, then ``t``, then ``k``: the flat values of the ragged result; and
  ``finals``: with ``final`` in carry mode, the states ``(batch, s)`` after each sample's last
  real step (its initial state where it has none), else ``[]``.

The runs of a batch are described once by a :class:`chain._plan.RunPlan`.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from . import _scan
from ._cells import StateList, StepAdapter
from ._ops import masked
from ._plan import make_plan, runs

Strategy = Callable[..., tuple[tf.Tensor, StateList]]


def _masked_update(valid: tf.Tensor, new: StateList, old: StateList) -> StateList:
    return [tf.where(valid[:, None], n, o) for n, o in zip(new, old)]


def _apply(head, flat: tf.Tensor) -> tf.Tensor:
    return flat if head is None else head(flat)


def _blocks(adapter: StepAdapter, dtype: tf.DType, size) -> tf.TensorArray:
    """A TensorArray of `size` output blocks `(rows, H)`; rows may differ between blocks."""
    return tf.TensorArray(dtype, size=size, infer_shape=False, element_shape=[None, adapter.output_size])


def _stack(ta: tf.TensorArray, rows, width: int, dtype: tf.DType, written=None) -> tf.Tensor:
    """The blocks `(rows, width)` of `ta` stacked, `(size, rows, width)`, also when it has none, or
    when none of them was `written` (the count of blocks written, where it may be below `size`)."""
    written = ta.size() if written is None else written
    return tf.cond(written > 0, ta.stack, lambda: tf.zeros(tf.stack([ta.size(), rows, width]), dtype))


def _longest(lengths: tf.Tensor, axis=None) -> tf.Tensor:
    """The largest of `lengths` (0 when empty), along `axis` if given."""
    if axis is None:
        return tf.reduce_max(tf.concat([tf.reshape(lengths, [-1]), [0]], 0))
    zeros = tf.zeros(tf.stack([1, tf.shape(lengths)[1]]), lengths.dtype)  # also for an empty batch
    return tf.reduce_max(tf.concat([lengths, zeros], 0), axis=0)


# ----------------------------------------------------------------------------- loop (reference)


def run_loop(adapter, xp, steps, init_states, carry, training, head=None, final=False, differentiable=True,
             per_step=False, cap=None):
    """Nested loops, one B call per inner step: the reference answer's algorithm.

    An outer loop walks `t`; at each `t` an inner loop runs as many steps as the longest run *at
    that t*, `max_b steps[b, t]`, calling B on the whole batch (samples with fewer steps keep
    their state). This generalises the reference answer to per-sample lengths and every state
    mode, and costs what it does: `sum_t max_b steps[b, t]` sequential steps.
    """
    del differentiable
    batch, big_t = tf.shape(steps)[0], tf.shape(steps)[1]
    longest_t = _longest(steps, axis=0)  # (T,)
    block_start = tf.cumsum(longest_t, exclusive=True)
    if per_step:  # row of (b, t, k): the run's first flat position plus k; a zero row when idle
        xp_ext = tf.concat([xp, tf.zeros_like(xp[:1])], 0)
        first = tf.reshape(tf.cumsum(tf.reshape(steps, [-1]), exclusive=True), tf.stack([batch, big_t]))
    else:
        xp_bt = tf.reshape(xp, tf.stack([batch, big_t, xp.shape[-1]]))
    starts = [] if carry else [tf.reshape(s, tf.stack([batch, big_t, s.shape[-1]])) for s in init_states]

    def inner(t, states, out_ta):
        def body(k, states, out_ta):
            valid = k < steps[:, t]
            if per_step:
                x_t = tf.gather(xp_ext, tf.where(valid, first[:, t] + k, tf.shape(xp)[0]))
            else:
                x_t = xp_bt[:, t]
            out, new = adapter.step(x_t, states, training)
            return k + 1, _masked_update(valid, new, states), out_ta.write(block_start[t] + k, out)

        _, states, out_ta = tf.while_loop(lambda k, *_: k < longest_t[t], body, (0, states, out_ta))
        return states, out_ta

    def outer(t, states, out_ta):
        if not carry:
            states = [s[:, t] for s in starts]
        states, out_ta = inner(t, states, out_ta)
        return t + 1, states, out_ta

    states = list(init_states) if carry else adapter.zero_states(batch, xp.dtype)
    total = tf.reduce_sum(longest_t) if cap is None else big_t * cap  # blocks written, or a bound on them
    out_ta = _blocks(adapter, xp.dtype, total)
    _, states, out_ta = tf.while_loop(lambda t, *_: t < big_t, outer, (0, states, out_ta))
    written = tf.reduce_sum(longest_t)
    dense = tf.transpose(_stack(out_ta, batch, adapter.output_size, xp.dtype, written), [1, 0, 2])  # (batch, total, H)
    # block q holds step k = q - block_start[t] of the t whose blocks contain q (none: t_of = T)
    q = tf.range(total)
    t_of = tf.reduce_sum(tf.cast(q[:, None] >= (block_start + longest_t)[None, :], tf.int32), 1)
    t_in = tf.minimum(t_of, tf.maximum(big_t - 1, 0))
    k_of = q - tf.gather(block_start, t_in)
    mask = (k_of[None, :] < tf.gather(steps, t_in, axis=1)) & (t_of < big_t)[None, :]  # (batch, total), (b, t, k) order
    return _apply(head, masked(dense, mask)), (states if carry and final else [])


# ----------------------------------------------------------------------------- padded


def run_padded(adapter, xp, steps, init_states, carry, training, head=None, final=False, differentiable=True,
               per_step=False, cap=None):
    """One vectorised scan over all runs, each padded to the longest run.

    Reset and init modes scan all ``batch * T`` runs at once for ``max(steps)`` steps, each run
    reading its own row of ``xp`` at every step. Carry mode lays each sample's inputs out as one
    sequence, ``IR[b, t]`` repeated ``steps[b, t]`` times, and scans those; each step's rows are
    gathered once, before the loop, into a TensorArray that the loop reads (and autodiff writes
    back to, one block per step). A run's steps past its end are computed and dropped; their
    states are masked where a carried final state is returned, or where model B may not keep
    them finite (no kernel that says it is ``bounded``). The real outputs are read from the
    step-major blocks with one gather, after ``head`` where no gradient is taken.
    """
    lengths = tf.reduce_sum(steps, axis=1) if carry else tf.reshape(steps, [-1])
    longest = _longest(lengths)
    size = longest if cap is None else cap * (tf.shape(steps)[1] if carry else 1)  # the steps the buffers hold
    n_runs = tf.size(lengths)
    reads = carry or per_step  # every step reads other rows of xp: which, (size, runs)
    if per_step:  # run r's step j reads row starts[r] + j (clamped to the zero row); past its end, dropped
        xp = tf.concat([xp, tf.zeros_like(xp[:1])], 0)
        last = tf.shape(xp)[0] - 1
        index = tf.minimum(tf.cumsum(lengths, exclusive=True)[None, :] + tf.range(size)[:, None], last)
    elif carry:  # sample b's step j reads row (b, t) for the first t whose steps end after j
        big_t = tf.shape(steps)[1]
        ends = tf.cumsum(steps, axis=1)
        positions = tf.broadcast_to(tf.range(size)[None, :], tf.stack([n_runs, size]))
        t_of = tf.cond(  # (size, runs); searchsorted refuses an empty batch
            n_runs > 0,
            lambda: tf.transpose(tf.searchsorted(ends, positions, side="right", out_type=tf.int32)),
            lambda: tf.zeros(tf.stack([size, n_runs]), tf.int32),
        )
        index = tf.minimum(t_of, big_t - 1) + tf.range(n_runs)[None, :] * big_t
    # A carried final state stops at its run's end. Otherwise the steps past it are dropped, and
    # need no mask where model B keeps its states finite (its kernel says it is `bounded`).
    masks = (carry and final) or not adapter.bounded
    if adapter.kernel is not None and differentiable:  # the kernel's backward step, no autodiff of the loop
        kernel = adapter.kernel
        source = tf.gather(xp, index) if reads else xp
        outs, states = _scan.padded_scan(kernel, source, size, longest, list(init_states), kernel.params(xp.dtype),
                                         lengths if masks else None)  # fmt: skip
        return _real_outputs(tf.reshape(outs, [-1, adapter.output_size]), lengths, size, head, emit=False), (
            states if carry and final else []
        )
    if reads:  # step j's rows (runs, P), from one gather
        block = getattr(adapter.kernel, "input_block", adapter.output_size) if adapter.kernel is not None else None
        rows = _scan.StepRows(tf.gather(xp, index), size, block)

    def body(j, states, out_ta):
        out, new = adapter.step_blocks(rows.read_blocks(j), states, training) if reads else adapter.step(xp, states, training)
        if masks:
            new = _masked_update(j < lengths, new, states)
        return j + 1, new, out_ta.write(j, out)

    out_ta = _blocks(adapter, xp.dtype, size)
    # Under XLA (a `cap`), autodiff of the loop needs a static bound on its trip count.
    bound = {} if cap is None else {"maximum_iterations": size}
    _, states, out_ta = tf.while_loop(lambda j, *_: j < longest, body, (0, list(init_states), out_ta), **bound)
    dense = tf.reshape(_stack(out_ta, n_runs, adapter.output_size, xp.dtype, longest), [-1, adapter.output_size])
    # The head's rows are narrower: mapped before the gather where no gradient is taken and the
    # buffers hold just the steps run.
    emit = head is not None and not differentiable and cap is None
    return _real_outputs(dense, lengths, size, head, emit), (states if carry and final else [])


def _real_outputs(dense: tf.Tensor, lengths: tf.Tensor, size, head, emit: bool) -> tf.Tensor:
    """The real outputs of step-major blocks `dense` `(size * runs, H)`, in `(b, t, k)` order,
    `head` applied before the gather where `emit`, else after it."""
    if emit:
        dense = head(dense)
    run_step = tf.where(tf.sequence_mask(lengths, size))  # (run, k) of each real output, in (b, t, k) order
    n_runs = tf.size(lengths)
    flat = tf.gather(dense, tf.cast(run_step[:, 1], tf.int32) * n_runs + tf.cast(run_step[:, 0], tf.int32))
    return flat if emit else _apply(head, flat)


# ----------------------------------------------------------------------------- packed


def run_packed(adapter, xp, steps, init_states, carry, training, head=None, final=False, differentiable=True,
               per_step=False, cap=None):
    """Cost proportional to real inner steps.

    Runs are sorted by length, longest first, so that at inner step ``j`` the runs still going are
    the first ``n_j``. Each step computes only those rows; the state shrinks as runs end, and
    zero-length runs never enter. Each step reads its inputs from ``xp`` (a slice in reset and init
    modes, a gather in carry mode); outputs come back step-major (``(j, run)`` order) and are put
    into ``(b, t, k)`` order with one gather, after ``head``. A model B with a fast path (a
    kernel, see ``chain._kernels``) is differentiated by the kernel's hand-written backward
    step; others by autodiff. Where no gradient is taken, ``head`` maps each step's outputs as
    they come, so only the head's (narrower) outputs are kept.
    """
    del cap  # no bound helps: the shapes follow the values of `steps`
    plan = make_plan(steps, carry)
    if per_step:  # every entry has a row of its own: laid out step-major once, read as slices
        inputs = _scan.Inputs((_permute(xp, plan.positions, inverse=True),), None, by_run=False, step_major=True)
    elif carry:  # a sample's input changes with t: each entry reads its (b, t) row of xp
        inputs = _scan.Inputs((xp,), tf.gather(plan.pos_row, plan.positions), by_run=False)
    else:  # run r is (b, t) row order[r]; its input is the same at every step
        inputs = _scan.Inputs((tf.gather(xp, plan.order),), plan.run, by_run=True)
    states = [tf.gather(s, plan.order) for s in init_states]
    final = final and carry
    kernel = adapter.kernel
    emit = head if head is not None and not differentiable else None
    if kernel is not None and differentiable:
        result = _scan.scan(kernel, inputs, plan.active, states, kernel.params(xp.dtype), final=final)
    else:
        width = adapter.output_size if emit is None else head.units
        step = _step_of(adapter, training, emit)
        result = _scan.forward(step, inputs, plan.active, states, [width], final=final)
    outs, finals = result if final else (result, [])
    if isinstance(outs, list):
        (outs,) = outs
    if emit is None:  # the head is row-wise: the permutation then moves its narrower rows
        outs = _apply(head, outs)
    finals = [tf.gather(f, tf.math.invert_permutation(plan.order)) for f in finals]
    return _permute(outs, plan.positions), finals


def _step_of(adapter, training, emit):
    def step(x, states):
        out, states = adapter.step(x[0], states, training)
        return [out if emit is None else emit(out)], states

    return step


def _permute(values: tf.Tensor, positions: tf.Tensor, inverse: bool = False) -> tf.Tensor:
    """Row `positions[p]` of the result is `values[p]`; `positions` is a permutation.

    With `inverse`, row `p` of the result is `values[positions[p]]`. The gradient is a dense
    gather either way, where `tf.gather`'s own would be sparse and then summed.
    """
    if inverse:
        return _gather_rows(values, positions)
    return _gather_rows(values, tf.math.invert_permutation(positions))


@tf.custom_gradient
def _gather_rows(values: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    """`values[index]` for a permutation `index`, with a dense gradient."""

    def grad(d_out):
        return tf.gather(tf.convert_to_tensor(d_out), tf.math.invert_permutation(index)), None

    return tf.gather(values, index), grad


STRATEGIES: dict[str, Strategy] = {
    "loop": run_loop,
    "padded": run_padded,
    "packed": run_packed,
}
