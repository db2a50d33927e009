"""Feedback: model B sees its own previous output, `[IR[b, t], prev]`, at every inner step.

`prev` at inner step `k` is the chain's output at the step before (after the head), or a learned
start vector where there is none yet (see `docs/semantics.md`). It comes from one of two places:

- *teacher forcing*: the target of the step before. Every step's input is then known before the
  loop, so B's whole input projection is one matmul over all real steps and any strategy, fast
  path included, runs it with per-step inputs (`per_step=True`).
- *the model's own output* (free-running generation, and scheduled sampling, which picks the
  target or the own output per step): B must run step by step on what it just produced.
  :class:`FreeRunning` wraps any step adapter for that, with one more state, `[prev, seen]`.

In carry mode `prev` flows across outer steps like B's state; in reset and init modes every
`(b, t)` run starts from the start vector. The feedback state `[prev, seen]` `(batch, D + 1)` is
the last of model B's states: `seen` is 1 once the sample has emitted an output, so zeros mean
"start from the start vector" and a reset to zeros needs no special value.
"""

from __future__ import annotations

from typing import Any, Callable

import tensorflow as tf

from ragged_common.checks import OptionError, check_number

from ._cells import StateList, StepAdapter
from ._ops import segment_ids


class FreeRunning(StepAdapter):
    """Runs model B on `[IR, prev]` with `prev` its own previous output (or the target given).

    Each step reads `[pir, target_prev (D), own (1)]`, `pir` the IR's part of B's step input
    (`StepAdapter.project_ir`, made once per run): with `own` 1, `prev` is the model's previous
    output (kept in the last state, `[prev, seen]`), else `target_prev`. The projection of a run's
    IR is `[pir, 0, 1]`: free-running.
    """

    def __init__(self, inner: StepAdapter, width: int, fed: Callable[[tf.Tensor], tf.Tensor],
                 start: Callable[[], tf.Tensor]):  # fmt: skip
        super().__init__(inner.model_b)
        self.inner = inner
        self.width = width
        self.output_size = inner.output_size
        self.bounded = inner.bounded  # `prev` is an input: B's states stay as bounded as they were
        self.fed = fed  # B's output (n, H) -> the `prev` it feeds (n, D)
        self._start = start

    @property
    def state_sizes(self) -> list[int]:
        return [*self.inner.state_sizes, self.width + 1]

    def project(self, ir: tf.Tensor) -> tf.Tensor:
        rows = tf.shape(ir)[0]
        pir = self.inner.project_ir(ir)
        return tf.concat([pir, tf.zeros(tf.stack([rows, self.width]), pir.dtype), tf.ones(tf.stack([rows, 1]), pir.dtype)], 1)

    def scheduled(self, ir: tf.Tensor, rows: tf.Tensor, prev: tf.Tensor, own: tf.Tensor) -> tf.Tensor:
        """Step inputs `(m, P)` of scheduled sampling: `ir[rows]`, the target `prev` and `own`
        `(m, 1)`, 1 where the step feeds the model's own output instead."""
        return tf.concat([tf.gather(self.inner.project_ir(ir), rows), tf.cast(prev, ir.dtype), own], 1)

    def step(self, xp: tf.Tensor, states: StateList, training: bool) -> tuple[tf.Tensor, StateList]:
        q = xp.shape[-1] - self.width - 1
        pir, target_prev, own = xp[:, :q], xp[:, q:-1], xp[:, -1:]
        *b_states, fb = states
        own_prev = first_prev(fb, self._start(), xp.dtype)
        prev = own * own_prev + (1 - own) * target_prev
        out, new = self.inner.step(self.inner.add_fed(pir, prev), b_states, training)
        return out, [*new, fed_state(tf.cast(self.fed(out), xp.dtype))]


def fed_state(prev: tf.Tensor) -> tf.Tensor:
    """The feedback state `[prev, 1]` `(n, D + 1)` after a step that fed `prev` `(n, D)` on."""
    return tf.concat([prev, tf.ones_like(prev[:, :1])], 1)


def first_prev(fb: tf.Tensor, start: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """`prev` from a feedback state `[prev, seen]` `(n, D + 1)`: `prev` once seen, else the start."""
    seen = fb[:, -1:]
    return seen * fb[:, :-1] + (1 - seen) * tf.cast(start, dtype)[None, :]


def shifted_targets(y: tf.Tensor, steps: tf.Tensor, carry: bool, fb: tf.Tensor | None, start: tf.Variable) -> tf.Tensor:
    """The teacher-forced `prev` of every real inner step, `(N, D)` in `(b, t, k)` order.

    Args:
        y: the targets' flat values `(N, D)`, `N = sum(steps)`, in `(b, t, k)` order.
        steps: `(batch, T)` int32.
        carry: `prev` flows across outer steps (carry mode); otherwise each run starts afresh.
        fb: carry mode: the feedback state `(batch, D + 1)` at the start of each sample.
        start: the learned start vector `(D,)`.
    """
    n = tf.shape(y)[0]
    shifted = tf.concat([tf.zeros_like(y[:1]), y], 0)[:n]
    if carry:
        owner = segment_ids(tf.reduce_sum(steps, 1))
        starts = tf.cumsum(tf.reduce_sum(steps, 1), exclusive=True)
        first_value = tf.gather(first_prev(fb, start, y.dtype), owner)
    else:
        flat_steps = tf.reshape(steps, [-1])
        owner = segment_ids(flat_steps)
        starts = tf.cumsum(flat_steps, exclusive=True)
        first_value = tf.broadcast_to(tf.cast(start, y.dtype)[None, :], tf.shape(y))
    first = tf.equal(tf.range(n), tf.gather(starts, owner))
    return tf.where(first[:, None], first_value, shifted)


def teacher_final(y: tf.Tensor, steps: tf.Tensor, fb: tf.Tensor) -> tf.Tensor:
    """Carry mode: each sample's feedback state after a teacher-forced call, `(batch, D + 1)`.

    `[its last target, 1]` where the sample had real steps, else `fb` unchanged.
    """
    totals = tf.reduce_sum(steps, 1)
    last = tf.maximum(tf.cumsum(totals) - 1, 0)
    padded = tf.pad(y, [[0, 1], [0, 0]])  # one row more: `last` of a batch without real steps is 0
    ended = tf.concat([tf.gather(padded, last), tf.ones_like(fb[:, :1])], 1)
    return tf.where((totals > 0)[:, None], tf.cast(ended, fb.dtype), fb)


def check_sampling(value: Any) -> None:
    """Rejects a `feedback_sampling` that is neither a probability nor a schedule.

    Raises:
        ValueError: a number outside `[0, 1]`, or something that is neither a number nor callable.
    """
    if isinstance(value, bool) or not (isinstance(value, (int, float)) or callable(value)):
        raise OptionError("feedback_sampling", "a probability in [0, 1] or a schedule (a callable of the training "
                          "step, e.g. a keras.optimizers.schedules.LearningRateSchedule)", value)
    if not callable(value):
        check_number("feedback_sampling", value, 0, 1)


def sampling_probability(value: Any, step: Any) -> tf.Tensor:
    """The probability of feeding the model's own output at training step `step`, in `[0, 1]`."""
    if callable(value):
        return tf.clip_by_value(tf.cast(value(step), tf.float32), 0.0, 1.0)
    return tf.constant(float(value), tf.float32)


def coins(n: tf.Tensor, probability: tf.Tensor, dtype: tf.DType, seed: tf.Tensor | None = None) -> tf.Tensor:
    """`(n, 1)`: 1 where a step feeds the model's own output (with `probability`), else 0.

    With `seed` (`(2,)` int64) the draws are stateless, a function of the seed alone; without,
    they come from TensorFlow's global random state.
    """
    shape = tf.stack([n, 1])
    draws = tf.random.uniform(shape) if seed is None else tf.random.stateless_uniform(shape, seed)
    return tf.cast(draws < probability, dtype)


class Feed:
    """What feeds B's `prev` in one call: `targets` `(N, D)` or None, the probability of the
    model's own output instead (scheduled sampling) or None (teacher forcing), and the seed of
    that draw `(2,)` int64, or None (TensorFlow's global random state)."""

    def __init__(self, targets: tf.Tensor | None, sampling: tf.Tensor | None, seed: tf.Tensor | None = None) -> None:
        self.targets, self.sampling, self.seed = targets, sampling, seed

    @property
    def key(self) -> tuple[bool, bool, bool]:
        return self.targets is not None, self.sampling is not None, self.seed is not None

    def specs(self, width: int | None, dtype: tf.DType, tokens: bool = False) -> list[tf.TensorSpec]:
        target = tf.TensorSpec([None], tf.int32, name="targets") if tokens else tf.TensorSpec([None, width], dtype, name="targets")
        specs = [target] if self.targets is not None else []
        specs += [tf.TensorSpec([], tf.float32, name="sampling")] if self.sampling is not None else []
        return specs + ([tf.TensorSpec([2], tf.int64, name="sampling_seed")] if self.seed is not None else [])

    def tensors(self) -> list[tf.Tensor]:
        return [t for t in (self.targets, self.sampling, self.seed) if t is not None]

    def rebuilt(self, fed: Any) -> "Feed":
        fed = list(fed)
        targets, sampling, seed = (fed.pop(0) if t is not None else None for t in (self.targets, self.sampling, self.seed))
        return Feed(targets, sampling, seed)
