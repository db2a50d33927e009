"""The chain's computation on validated inputs: model A's IR, model B's runs, the final states.

One :class:`Forward` serves every entry point: a call, the train and test steps, generation and
the serving export. It holds what the chain is made of (:class:`Parts`) and knows nothing of
Keras' model machinery.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import keras
import tensorflow as tf

from . import _feedback
from ._cells import StateList, StepAdapter
from ._feedback import Feed
from ._model_a import ModelAState
from ._options import ChainOptions
from ._ops import segment_ids
from ._strategies import STRATEGIES


@dataclass
class Parts:
    """The layers and sizes that building a chain made (see `chain._build`)."""

    input_size: int
    ir_size: int
    feedback_size: int | None
    head: keras.layers.Layer | None
    init_layers: list[keras.layers.Layer]
    length_layers: dict[str, keras.layers.Layer]
    feedback_start: tf.Variable | None = None
    embedding: keras.layers.Layer | None = None  # a token chain's: V + 1 rows, row V the start


@dataclass
class Result:
    """One run: `ir` `(batch, T, ir_size)`, `flat` `(sum(steps), H)` in `(b, t, k)` order, and
    the final states of model A and model B, without gradient (`[]` unless asked for)."""

    ir: tf.Tensor
    flat: tf.Tensor
    a_states: list[tf.Tensor]
    b_states: list[tf.Tensor]


class Forward:
    """Runs model A, then model B under the options' strategy and state mode.

    Args:
        options: the chain's options.
        model_a: model A with its state in and out.
        generic: the adapter that calls model B as it is.
        fast: the adapter of the packed strategy (a kernel where model B has one).
    """

    def __init__(self, options: ChainOptions, model_a: ModelAState, generic: StepAdapter, fast: StepAdapter) -> None:
        self.options = options
        self.model_a = model_a
        self.generic = generic
        self.fast = fast
        self._parts: Parts | None = None
        self._not_xla = False  # tracing a graph function of the chain's own, which XLA does not compile

    @contextlib.contextmanager
    def not_xla(self):
        """Traces within run outside XLA: the loops' buffers follow `steps`, not `max_steps`."""
        self._not_xla = True
        try:
            yield
        finally:
            self._not_xla = False

    @property
    def parts(self) -> Parts:
        if self._parts is None:
            raise ValueError("the chain is not built yet: call it on data first")
        return self._parts

    def attach(self, parts: Parts) -> None:
        """Gives the forward pass the layers that building made."""
        self._parts = parts

    @property
    def built(self) -> bool:
        return self._parts is not None

    def step_adapter(self) -> StepAdapter:
        """The adapter that runs model B under the resolved strategy (see `Chain.step_adapter`)."""
        options = self.options
        inner = self.fast if options.resolved_strategy() in ("packed", "padded") else self.generic
        if not options.feedback:
            return inner
        return _feedback.FreeRunning(inner, self.parts.feedback_size, self.fed, self.start)

    def start(self) -> tf.Tensor:
        """The learned `prev` of a run's first step `(D,)`: a token chain's start row, or the start vector."""
        parts = self.parts
        if parts.embedding is not None:
            return parts.embedding.embeddings[self.options.vocab_size]
        return parts.feedback_start

    def fed(self, out: tf.Tensor) -> tf.Tensor:
        """The `prev` that B's output `out` `(n, H)` feeds on when running free: the head's output,
        or for a token chain the embedding of its most likely token (greedy)."""
        head = self.parts.head
        y = out if head is None else head(out)
        if self.parts.embedding is None:
            return y
        return self.embed(tf.argmax(y, axis=-1, output_type=tf.int32))

    def embed(self, tokens: tf.Tensor) -> tf.Tensor:
        """A token chain's `prev` of `tokens` `(n,)` int: their embedding rows `(n, D)`."""
        return self.parts.embedding(tokens)

    def b_state_sizes(self) -> list[int]:
        """The sizes of model B's carried states: carry mode only, `[]` otherwise."""
        return self.step_adapter().state_sizes if self.options.state == "carry" else []

    def zero_states(self, x: tf.Tensor, dtype: tf.DType) -> tuple[StateList, StateList]:
        """Zero states of model A and (carry mode) model B for the batch of `x`."""
        batch = tf.shape(x)[0]
        zeros = lambda sizes: [tf.zeros(tf.stack([batch, s]), dtype) for s in sizes]  # noqa: E731
        return zeros(self.model_a.state_sizes), zeros(self.b_state_sizes())

    def run(self, x: tf.Tensor, steps: tf.Tensor, a_in: StateList | None, b_in: StateList | None,
            training: bool, differentiable: bool = True, final: bool = False, head: bool = True,
            feed: Feed | None = None) -> Result:  # fmt: skip
        """Model A on `x`, then model B on its IR at `steps`.

        Args:
            x: `(batch, T, input_size)`; steps: `(batch, T)` int32 in `[0, max_steps]`.
            a_in, b_in: the states to start from; None for the defaults.
            training: passed to model A and model B.
            differentiable: False where no gradient is taken (faster, less memory for `packed`).
            final: compute the final states.
            head: apply the head (False returns B's outputs).
            feed: what feeds B's `prev` with feedback (targets, and the sampling probability).
        """
        ir, a_out = self.run_model_a(x, a_in, training, differentiable)
        feed = feed or Feed(None, None)
        out = self.b_outputs(ir, steps, training=training, head=self.parts.head if head else None,
                             initial_state=b_in, final=final, differentiable=differentiable,
                             targets=feed.targets, sampling=feed.sampling, sampling_seed=feed.seed)  # fmt: skip
        if not final:
            return Result(ir, out, [], [])
        flat, b_out = out
        return Result(ir, flat, [tf.stop_gradient(s) for s in a_out], [tf.stop_gradient(s) for s in b_out])

    def run_model_a(self, x: tf.Tensor, a_in: StateList | None, training: bool,
                    differentiable: bool = True) -> tuple[tf.Tensor, StateList]:  # fmt: skip
        """`(ir, final_states)` of model A on `x` from `a_in`; a recurrent layer with a kernel runs
        on it under `packed` and `padded` (see `Chain.model_a_fast_path`)."""
        fast = self.options.resolved_strategy() in ("packed", "padded")
        return self.model_a.call(x, a_in, training, fast=fast, differentiable=differentiable)

    def b_outputs(self, ir: tf.Tensor, steps: tf.Tensor, training: bool = False, head=None,
                  initial_state: StateList | None = None, final: bool = False, differentiable: bool = True,
                  targets: tf.Tensor | None = None, sampling: tf.Tensor | None = None,
                  sampling_seed: tf.Tensor | None = None):  # fmt: skip
        """B's outputs `(sum(steps), H)` from model A's output `ir` `(batch, T, ir_size)`.

        With `head` (a row-wise layer), `head` of them; the strategy may apply it step by step.
        With `final`, returns `(flat, final_states)`, B's carried states `(batch, s)` at the end
        (carry mode; `[]` otherwise), from `initial_state` (zeros by default). With `feedback`,
        `targets` `(sum(steps), D)` feed `prev` (teacher forcing), each step's own output instead
        with probability `sampling` (drawn statelessly from `sampling_seed` `(2,)` int64 when
        given); without `targets`, B runs free on its own outputs.
        """
        ir_rows = tf.reshape(ir, [-1, ir.shape[-1]])
        adapter = self.step_adapter()
        init = self.initial_states(ir_rows, tf.shape(steps)[0], adapter, initial_state)
        carry = self.options.state == "carry"
        if 0 in tuple(steps.shape):  # known to be empty: nothing to trace (Keras cells refuse 0 rows)
            width = head.units if head is not None else adapter.output_size
            flat = tf.zeros([0, width], ir.dtype)
            return (flat, init if carry else []) if final else flat
        run = STRATEGIES[self.options.resolved_strategy()]
        # Under XLA the buffers are sized by max_steps, not by the values of `steps`.
        cap = self.options.max_steps if self.options.xla and not self._not_xla else None
        kwargs = dict(final=final, differentiable=differentiable, cap=cap)
        if not self.options.feedback or targets is None:  # free-running B sees its own outputs
            flat, finals = run(adapter, adapter.project(ir_rows), steps, init, carry, training, head, **kwargs)
            return (flat, finals) if final else flat
        targets = tf.cast(self.embed(targets) if self.parts.embedding is not None else targets, ir.dtype)
        fb = init[-1]
        prev = _feedback.shifted_targets(targets, steps, carry, fb if carry else None, self.start())
        rows = segment_ids(tf.reshape(steps, [-1]))  # each step's (b, t)
        if sampling is None:  # teacher forcing: every step's input is known before the loop
            inner = adapter.inner
            xp = inner.project_fed(ir_rows, rows, prev)
            flat, finals = run(inner, xp, steps, init[:-1], carry, training, head, per_step=True, **kwargs)
            if final and carry:
                finals = [*finals, _feedback.teacher_final(targets, steps, fb)]
        else:
            own = _feedback.coins(tf.shape(prev)[0], sampling, ir.dtype, sampling_seed)
            xp = adapter.scheduled(ir_rows, rows, prev, own)
            flat, finals = run(adapter, xp, steps, init, carry, training, head, per_step=True, **kwargs)
        return (flat, finals) if final else flat

    def initial_states(self, ir_rows: tf.Tensor, batch: tf.Tensor, adapter: StepAdapter,
                       initial_state: StateList | None = None) -> StateList:  # fmt: skip
        """B's states at the start of each run (see `state`), from `IR` rows `(batch * T, ir_size)`."""
        state = self.options.state
        if state == "init":
            init_layers = self.parts.init_layers
            fb = adapter.zero_states(tf.shape(ir_rows)[0], ir_rows.dtype)[len(init_layers):]
            return [*(layer(ir_rows) for layer in init_layers), *fb]
        if state == "carry" and initial_state is not None:
            return [tf.cast(s, ir_rows.dtype) for s in initial_state]
        rows = batch if state == "carry" else tf.shape(ir_rows)[0]
        return adapter.zero_states(rows, ir_rows.dtype)

    def specs(self, has_a: bool, dtype: tf.DType) -> tuple[tf.TensorSpec, list, list]:
        """Input signatures of the graph functions: `x`, model A's states, model B's states."""
        return (
            tf.TensorSpec([None, None, self.parts.input_size], dtype, name="x"),
            [tf.TensorSpec([None, s], dtype) for s in self.model_a.state_sizes] if has_a else [],
            [tf.TensorSpec([None, s], dtype) for s in self.b_state_sizes()],
        )
