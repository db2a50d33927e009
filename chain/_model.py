"""`Chain`: model A, then model B for `steps[b, t]` inner steps on each `IR[b, t]`."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from . import _cells, _feedback, _lengths, _losses, _model_a, _ragged, _train, _validate
from ._strategies import STRATEGIES

STATES = ("carry", "reset", "init")
_AUTO = "auto"


class _Compiled:
    """Holds the graph functions that eager calls run through (kept out of Keras tracking)."""

    def __init__(self) -> None:
        self.fns: dict[bool, Any] = {}


@keras.saving.register_keras_serializable(package="chain")
class Chain(keras.Model):
    """Chains model A and model B into a ragged sequence of sequences.

    Model A maps `x` `(batch, T, input_size)` to `IR` `(batch, T, ir_size)`. For every `(b, t)`,
    model B then runs `steps[b, t]` inner steps (possibly 0), fed `IR[b, t]` at each one, and an
    optional Dense head maps its outputs to `output_size`.

    Args:
        model_a: a Keras layer or model, `(batch, T, input_size) -> (batch, T, ir_size)`.
        model_b: a Keras RNN cell (`GRUCell`, `LSTMCell`, `SimpleRNNCell`, `StackedRNNCells`, or
            a custom cell with `state_size`), or a Keras model called as
            `model_b([inputs, *states])` that returns `[outputs, *new_states]`; new states
            nested as a cell returns them (`[out, [h, c]]`) are flattened, as Keras does.
        output_size: adds a Dense head with this many units on B's outputs; None returns B's
            outputs.
        state: where B's state comes from. `"carry"`: zeros at the start of each sample, then
            through every real inner step in order. `"reset"`: zeros at every outer step.
            `"init"`: a learned function (Dense + tanh) of `IR[b, t]` at every outer step.
        strategy: `"loop"` (nested loops, one B call per inner step, the reference algorithm),
            `"padded"` (one vectorised masked scan), `"packed"` (cost follows real inner steps),
            or `"auto"`.
        max_steps: the largest allowed value of `steps`; None means no cap.
        compiled: when called eagerly, run the strategy as a graph function (traced once for any
            batch, T and steps). False runs it op by op, the way the reference answer ran.
        fused: `"auto"` runs standard cells on their kernel (hand-written backward step) under
            `packed`; True does the same or raises a ValueError naming the cell that has none;
            False calls model B as it is. `fast_path` says which runs and why.
        lengths: a length-prediction part (see `chain.Lengths`) for `generate` without `steps`:
            `chain.LengthHead()`, a Dense layer over `IR` with `max_steps + 1` logits trained on
            `steps` with cross-entropy next to the output loss, `generate(x)` running at its
            argmax; or `chain.StopToken()`, a stop logit on B's outputs per inner step ("this is
            the last step") and an empty logit on `IR` ("no step at this t"), trained with
            binary cross-entropy, `generate(x)` running each `(b, t)` until it stops or reaches
            `max_steps`. Needs `max_steps`. None (default) adds nothing.
        predict_lengths: shorthand for `lengths=chain.LengthHead()`.
        stop: `"token"` is shorthand for `lengths=chain.StopToken()`.
        stateful: keep model A's and (carry mode) model B's final states between calls, like
            `keras.layers.GRU(stateful=True)`; the batch size is fixed by the first call, and
            `reset_states()` sets them to zeros.
        feedback: feed model B `[IR[b, t], prev]` at every inner step, `prev` the previous
            inner output (after the head; a learned start vector where there is none). Given
            `targets` (as `fit` and `evaluate` do), `prev` is the previous target (teacher
            forcing, on the fast path); without, the model's own output (free-running). In carry
            mode `prev` flows across outer steps, and model B's states end with the feedback
            state `[prev, seen]` `(batch, D + 1)`. See `docs/semantics.md`.
        feedback_sampling: scheduled sampling: the probability, per inner step, of feeding the
            model's own output instead of the target while training with targets. A float in
            `[0, 1]`, or a schedule called with the optimizer's step (e.g. a
            `keras.optimizers.schedules.LearningRateSchedule`). Needs `feedback=True`.

    Call args:
        x: `(batch, T, input_size)` floats, or a tuple `(x, steps)` as `fit` passes it.
        steps: `(batch, T)` integers in `[0, max_steps]`, or `(T,)` shared by the batch (a
            rank-1 `steps` is always `(T,)`).
        initial_state: `{"model_a": [...], "model_b": [...]}` of `(batch, s)` tensors (either key
            may be left out; a list stands for model B's), as `return_state` gives them.
        return_state: also return the final states, without gradient (a window edge).
        targets: with `feedback=True`, the targets `(batch, T, None, D)` (ragged, or padded
            `(batch, T, L, D)`) whose previous step feeds each inner step (teacher forcing).

    Returns:
        RaggedTensor of shape `(batch, T, None, output_size)` with ragged_rank 2 and row lengths
        equal to `steps`; with `return_state`, `(output, {"model_a": [...], "model_b": [...]})`.

    >>> import keras, numpy as np
    >>> net = Chain(keras.layers.GRU(8, return_sequences=True), keras.layers.GRUCell(8),
    ...             output_size=2)
    >>> out = net(np.zeros((3, 5, 4), "float32"), np.full((3, 5), 2))
    >>> out.shape.as_list()
    [3, 5, None, 2]
    """

    def __init__(
        self,
        model_a: keras.layers.Layer,
        model_b: keras.layers.Layer,
        output_size: int | None = None,
        state: str = "carry",
        strategy: str = _AUTO,
        max_steps: int | None = None,
        compiled: bool = True,
        fused: bool | str = _AUTO,
        predict_lengths: bool = False,
        stop: str | None = None,
        stateful: bool = False,
        lengths: Any = None,
        feedback: bool = False,
        feedback_sampling: Any = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _check_options(output_size, state, strategy, max_steps)
        part = _lengths.from_options(lengths, predict_lengths, stop, max_steps)
        if not (isinstance(fused, bool) or (isinstance(fused, str) and fused == _AUTO)):
            raise ValueError(f"`fused` must be 'auto', True or False; received {fused!r}")
        if not isinstance(stateful, bool):
            raise ValueError(f"`stateful` must be True or False; received {stateful!r}")
        if not isinstance(feedback, bool):
            raise ValueError(f"`feedback` must be True or False; received {feedback!r}")
        if not isinstance(compiled, bool):
            raise ValueError(f"`compiled` must be True or False; received {compiled!r}")
        if isinstance(feedback_sampling, dict):  # a schedule, as get_config wrote it
            feedback_sampling = keras.saving.deserialize_keras_object(feedback_sampling)
        _feedback.check_sampling(feedback_sampling)
        if feedback_sampling != 0.0 and not feedback:
            raise ValueError(
                "`feedback_sampling` picks between targets and the model's own outputs fed back "
                f"to model B, so it needs feedback=True; received feedback_sampling={feedback_sampling!r}"
            )
        _cells.check_model_b(model_b)
        self.model_a = model_a
        self.model_b = model_b
        self.output_size = output_size
        self.state = state
        self.strategy = strategy
        self.max_steps = max_steps
        # Not `self.compiled`: Keras uses that name for "compile() was called".
        self.graph_calls = compiled
        self.fused = fused
        self.lengths = part
        self.stateful = stateful
        self.feedback = feedback
        self.feedback_sampling = feedback_sampling
        self.feedback_size: int | None = None
        self.trackers = _train.Trackers(part)
        self.flat_compile = _train.FlatCompile()
        self.loss_tracker = self.trackers.loss
        self.masked_mse_tracker = self.trackers.mse
        if part is not None:
            setattr(self, part.tracker, self.trackers.lengths)
        self._generic = _cells.generic_adapter(model_b)
        self._fast, self._fast_path = _cells.fast_adapter(model_b, fused)
        self._a = _model_a.ModelAState(model_a)
        self._graphs = _Compiled()
        self.input_size: int | None = None

    # ------------------------------------------------------------------ building

    def build(self, input_shape: Any) -> None:
        """Creates every weight from the shape of `x` `(batch, T, input_size)`.

        Model A and model B are only called on symbolic tensors of the shapes the call gives (or
        model A declares), never on made-up numbers.

        Raises:
            ValueError: `x`'s shape conflicts with model A's declared input, model A does not
                return `(batch, T, ir_size)`, or model B does not return `[outputs, *states]`.
        """
        if input_shape and isinstance(input_shape[0], (list, tuple, tf.TensorShape)):
            input_shape = input_shape[0]
        shape = _model_a_shape(self.model_a, tuple(tf.TensorShape(input_shape).as_list()))
        self.input_size = int(shape[-1])
        ir = self._a.symbolic(shape)
        if len(ir.shape) != 3:
            raise ValueError(
                "model A must return IR of shape (batch, T, ir_size), one vector per outer step; "
                f"received an output of shape {tuple(ir.shape)} for x of shape {shape}. For a "
                "Keras recurrent layer, set `return_sequences=True`"
            )
        ir_size = int(ir.shape[-1])
        if self.feedback:
            self.feedback_size = self._feedback_width()
        b_size = self._build_b(shape[0], ir_size)
        for adapter in (self._generic, self._fast):
            adapter.output_size = b_size
        self.init_layers = [
            keras.layers.Dense(s, activation="tanh", name=f"init_{i}")
            for i, s in enumerate(self._generic.state_sizes)
        ] if self.state == "init" else []
        for layer in self.init_layers:
            layer.build((None, ir_size))
        self.head = keras.layers.Dense(self.output_size, name="head") if self.output_size else None
        if self.head is not None:
            self.head.build((None, b_size))
        self._build_length_heads(ir_size, b_size)
        if self.feedback:
            self.feedback_start = self.add_weight(
                shape=(self.feedback_size,), initializer="zeros", name="feedback_start"
            )
        self._state_vars = _StateVariables(self, shape[0]) if self.stateful else None
        self.built = True

    def _feedback_width(self) -> int:
        """D, the width of `prev`: `output_size`, or B's output width without a head."""
        if self.output_size:
            return self.output_size
        outputs = getattr(self.model_b, "outputs", None)
        width = outputs[0].shape[-1] if outputs else getattr(self.model_b, "output_size", None)
        if not isinstance(width, int):
            raise ValueError(
                "feedback=True feeds model B its previous output, whose width is not known before "
                f"model B is built (received a {type(self.model_b).__name__} with output_size "
                f"{width!r}): give the Chain an `output_size`"
            )
        return width

    def _build_b(self, batch, ir_size: int) -> int:
        """Builds model B on symbolic `(batch, ir_size [+ D])` inputs; returns its output width."""
        sizes = self._generic.state_sizes
        width = ir_size + (self.feedback_size or 0)
        fed = (f"`[IR, prev]`, inputs of size ir_size + D = {ir_size} + {self.feedback_size} = {width}" if self.feedback
               else f"IR rows, inputs of size ir_size = {width} (model A's output size)")  # fmt: skip
        declared = _cells.declared_input_size(self.model_b)
        if declared is not None and declared != width:
            raise ValueError(
                f"`model_b` is fed {fed}; received a model B ({_cells.describe(self.model_b)}) whose input has "
                f"size {declared}. Build it for inputs of size {width}: a model on `keras.Input(shape=({width},))`, a new cell"
            )
        x = keras.KerasTensor((batch, width))
        states = [keras.KerasTensor((batch, s)) for s in sizes]
        try:
            out, new = self._generic.step(x, states, False)
        except TypeError as error:
            raise ValueError(
                "model B must return `[outputs, *new_states]` with one new state per state input "
                f"({len(sizes)} of sizes {sizes}); calling it on IR rows of size {ir_size} failed: "
                f"{error}. A functional model B is `keras.Model([x, *states], [out, *new_states])`"
            ) from None
        except ValueError as error:  # Keras' own, e.g. a shape its layers refuse
            raise ValueError(
                f"`model_b` ({_cells.describe(self.model_b)}) failed when fed {fed} and states of sizes "
                f"{sizes}: {_cells.keras_reason(error)}"
            ) from error
        got = [int(t.shape[-1]) for t in new]
        if got != sizes or len(out.shape) != 2:
            raise ValueError(
                "model B must return `[outputs (batch, H), *new_states]` with new states of sizes "
                f"{sizes}; received outputs of shape {tuple(out.shape)} and new states of sizes {got}"
            )
        dtypes = [keras.backend.standardize_dtype(t.dtype) for t in new]
        if any(d != self.compute_dtype for d in dtypes):
            raise ValueError(
                f"`model_b` must return new states of dtype {self.compute_dtype}, the chain's compute dtype, "
                f"as it feeds them back in; received new states of dtypes {dtypes} from "
                f"{type(self.model_b).__name__} {self.model_b.name!r}. Cast them, or build model B under the "
                "chain's dtype policy"
            )
        return int(out.shape[-1])

    def _build_length_heads(self, ir_size: int, b_size: int) -> None:
        self.length_head = self.stop_head = self.empty_head = None
        if self.lengths is not None:
            for name, layer in self.lengths.layers(self.max_steps, ir_size, b_size).items():
                setattr(self, name, layer)

    @property
    def predict_lengths(self) -> bool:
        """Whether the lengths part is a `chain.LengthHead`."""
        return isinstance(self.lengths, _lengths.LengthHead)

    @property
    def stop(self) -> str | None:
        """`"token"` when the lengths part is a `chain.StopToken`, else None."""
        return "token" if isinstance(self.lengths, _lengths.StopToken) else None

    def get_build_config(self) -> dict[str, Any]:
        batch = self._state_vars.batch if getattr(self, "_state_vars", None) is not None else None
        return {"input_size": self.input_size, "batch": batch}

    def build_from_config(self, config: dict[str, Any]) -> None:
        if config and config.get("input_size") is not None:
            self.build((config.get("batch"), None, config["input_size"]))

    # ------------------------------------------------------------------ calling

    def __call__(self, x: Any, steps: Any = None, **kwargs: Any) -> tf.RaggedTensor:
        # Keras accepts only tensors as positional inputs; let `steps` be a plain list too. `x` and
        # `steps` are checked before Keras converts them, which would name neither.
        if steps is None and isinstance(x, (tuple, list)) and len(x) == 2:
            x, steps = x
        if steps is None:
            return super().__call__(x, **kwargs)
        _validate.check_x(x)
        if isinstance(steps, (list, tuple, int)):
            steps = _validate.as_array("steps", steps, "(batch, T) or (T,) array of integers")
        return super().__call__(x, steps, **kwargs)

    def call(self, x: Any, steps: Any = None, training: bool | None = None, initial_state: Any = None,
             return_state: bool = False, targets: Any = None) -> Any:  # fmt: skip
        """Runs the chain; see the class docstring for the arguments and what it returns."""
        if steps is None:
            if not isinstance(x, (tuple, list)) or len(x) != 2:
                raise ValueError(
                    "`steps` is required: call the model as `net(x, steps)` or `net((x, steps))`"
                )
            x, steps = x
        x, steps = _validate.check_inputs(x, steps, self.input_size, self.max_steps)
        if targets is not None:
            if not self.built:
                self.build(tuple(x.shape))
            targets = self.flat_targets(targets, steps)
        flat, states = self.run_flat(x, steps, bool(training), initial_state=initial_state,
                                     return_state=return_state, targets=targets)  # fmt: skip
        out = _ragged.ragged_from_flat(flat, steps)
        return (out, states) if return_state else out

    def run_flat(self, x: tf.Tensor, steps: tf.Tensor, training: bool = False, initial_state: Any = None,
                 differentiable: bool = True, head: bool = True, return_state: bool = False,
                 targets: tf.Tensor | None = None) -> tuple[tf.Tensor, dict[str, list]]:  # fmt: skip
        """Runs the chain on validated inputs, states in and out; the stateful chain keeps them.

        Args:
            x: `(batch, T, input_size)`; steps: `(batch, T)` int32 in `[0, max_steps]`.
            training: passed to model A and model B.
            initial_state: see the class docstring.
            differentiable: False where no gradient is taken (faster, less memory for `packed`).
            head: apply the head (False returns B's outputs).
            return_state: compute the final states (always done when `stateful`).
            targets: with `feedback`, flat targets `(sum(steps), D)` (see `flat_targets`).

        Returns:
            `(flat, states)`: flat `(sum(steps), output_size)` in `(b, t, k)` order, and the
            final states `{"model_a": [...], "model_b": [...]}`, without gradient (empty lists
            unless `return_state` or `stateful`).
        """
        a_in, b_in = self._states_in(initial_state, x)
        final = bool(return_state or self.stateful)
        if x.shape[1] == 0:  # no outer step: nothing runs, and the states pass through
            return self._no_outputs(), self._unchanged(a_in, b_in, x)
        feed = self._feed(targets, training)
        if tf.executing_eagerly() and self.graph_calls:
            fn = self._graph_forward(training, differentiable, a_in is not None, head, final, feed)
            if b_in is None:
                b_in = self._unchanged(None, None, x)["model_b"]
            flat, a_out, b_out = fn(tf.cast(x, self.compute_dtype), steps, a_in or [], b_in, *feed.tensors())
        else:
            flat, a_out, b_out = self._forward(x, steps, a_in, b_in, training, differentiable, final, head, feed)
        if self.stateful:
            self._state_vars.assign(a_out, b_out)
        return flat, {"model_a": list(a_out), "model_b": list(b_out)}

    def _no_outputs(self) -> tf.Tensor:
        """The flat output `(0, output_size)` of a call with no outer step."""
        return tf.zeros([0, self.output_size or self._generic.output_size], self.compute_dtype)

    def _unchanged(self, a_in, b_in, x) -> dict[str, list]:
        batch = tf.shape(x)[0]
        zeros = lambda sizes: [tf.zeros(tf.stack([batch, s]), self.compute_dtype) for s in sizes]  # noqa: E731
        a = list(a_in) if a_in is not None else zeros(self._a.state_sizes)
        b = list(b_in) if b_in is not None else zeros(self._b_state_sizes())
        return {"model_a": a, "model_b": b}

    def _graph_forward(self, training: bool, differentiable: bool, has_a: bool, head: bool, final: bool,
                       feed: "_Feed"):  # fmt: skip
        key = (training, differentiable, has_a, head, final, feed.key)
        fn = self._graphs.fns.get(key)
        if fn is None:
            x_spec, a_specs, b_specs = self._specs(has_a)
            signature = [x_spec, tf.TensorSpec([None, None], tf.int32, name="steps"), a_specs, b_specs,
                         *feed.specs(self.feedback_size, self.compute_dtype)]  # fmt: skip

            def run(x, steps, a_in, b_in, *fed):
                return self._forward(x, steps, a_in if has_a else None, b_in or None, training,
                                     differentiable, final, head, feed.rebuilt(fed))  # fmt: skip

            fn = tf.function(run, input_signature=signature, autograph=False)
            self._graphs.fns[key] = fn
        return fn

    def _specs(self, has_a: bool) -> tuple[tf.TensorSpec, list, list]:
        """Input signatures of the graph functions: `x`, model A's states, model B's states."""
        dtype = self.compute_dtype
        return (
            tf.TensorSpec([None, None, self.input_size], dtype, name="x"),
            [tf.TensorSpec([None, s], dtype) for s in self._a.state_sizes] if has_a else [],
            [tf.TensorSpec([None, s], dtype) for s in self._b_state_sizes()],
        )

    def _b_state_sizes(self) -> list[int]:
        return self.step_adapter().state_sizes if self.state == "carry" else []

    def _feed(self, targets: tf.Tensor | None, training: bool) -> "_Feed":
        """What feeds B's `prev` in this call: nothing, targets, or targets mixed with own outputs."""
        if targets is None or not self.feedback:
            return _Feed(None, None)
        if not training or self.feedback_sampling == 0.0:
            return _Feed(targets, None)
        step = self.optimizer.iterations if getattr(self, "optimizer", None) is not None else 0
        return _Feed(targets, _feedback.sampling_probability(self.feedback_sampling, step))

    def flat_targets(self, targets: Any, steps: tf.Tensor) -> tf.Tensor:
        """The flat values `(sum(steps), D)` of `targets` that feed B's `prev` (teacher forcing).

        Args:
            targets: ragged `(batch, T, None, D)` or padded `(batch, T, L, D)`, or flat values.
            steps: `(batch, T)` int32, validated.

        Raises:
            ValueError: the Chain has no feedback, or `targets` does not match `steps` or D.
        """
        if not self.feedback:
            raise ValueError(
                "`targets` feed model B's previous output back to it, which needs a Chain built "
                "with feedback=True; received targets with feedback=False"
            )
        return _validate.check_targets(targets, steps, self.feedback_size, self.compute_dtype)

    def _forward(self, x, steps, a_in, b_in, training, differentiable, final, head, feed=None):
        return self._parts(x, steps, a_in, b_in, training, differentiable, final, head, feed)[1:]

    def _parts(self, x, steps, a_in, b_in, training, differentiable, final, head, feed=None):
        """`(ir, flat, a_out, b_out)`; the final states without gradient, `[]` unless `final`."""
        ir, a_out = self._a.call(x, a_in, training)
        feed = feed or _Feed(None, None)
        result = self.b_outputs_from_ir(
            ir, steps, training=training, head=self.head if head else None, initial_state=b_in,
            final=final, differentiable=differentiable, targets=feed.targets, sampling=feed.sampling,
        )  # fmt: skip
        if not final:
            return ir, result, [], []
        flat, b_out = result
        return ir, flat, [tf.stop_gradient(s) for s in a_out], [tf.stop_gradient(s) for s in b_out]

    def forward_parts(self, x: tf.Tensor, steps: tf.Tensor, training: bool = False,
                      differentiable: bool = True, targets: Any = None) -> tuple[tf.Tensor, tf.Tensor]:  # fmt: skip
        """`(IR (batch, T, ir_size), B's outputs (sum(steps), H))` before the head, for the train
        and test steps; a stateful chain starts from and keeps its states, as in `call`. With
        `feedback`, `targets` feed `prev` (teacher forcing, or scheduled sampling in training)."""
        a_in, b_in = self._states_in(None, x)
        feed = self._feed(self.flat_targets(targets, steps) if self.feedback else None, training)
        ir, flat, a_out, b_out = self._parts(x, steps, a_in, b_in, training, differentiable, self.stateful, False, feed)
        if self.stateful:
            self._state_vars.assign(a_out, b_out)
        return ir, flat

    def flat_outputs(self, x: tf.Tensor, steps: tf.Tensor, training: bool = False) -> tf.Tensor:
        """The flat values `(sum(steps), output_size)` of the output, in `(b, t, k)` order.

        Args:
            x: `(batch, T, input_size)`.
            steps: `(batch, T)` int32, values in `[0, max_steps]`.
            training: passed to model A and model B.
        """
        return self.run_flat(x, steps, training)[0]

    def b_outputs_from_ir(self, ir: tf.Tensor, steps: tf.Tensor, training: bool = False, head=None,
                          initial_state=None, final: bool = False, differentiable: bool = True,
                          targets: tf.Tensor | None = None, sampling: tf.Tensor | None = None):  # fmt: skip
        """B's outputs `(sum(steps), H)` from model A's output `ir` `(batch, T, ir_size)`.

        With `head` (a row-wise layer), `head` of them; the strategy may apply it step by step.
        With `final`, returns `(flat, final_states)`, B's carried states `(batch, s)` at the end
        (carry mode; `[]` otherwise), from `initial_state` (zeros by default). With `feedback`,
        `targets` `(sum(steps), D)` feed `prev` (teacher forcing), each step's own output instead
        with probability `sampling`; without `targets`, B runs free on its own outputs.
        """
        ir_rows = tf.reshape(ir, [-1, ir.shape[-1]])
        adapter = self.step_adapter()
        init = self.initial_states(ir_rows, tf.shape(steps)[0], adapter, initial_state)
        if 0 in tuple(steps.shape):  # known to be empty: nothing to trace (Keras cells refuse 0 rows)
            width = head.units if head is not None else adapter.output_size
            flat = tf.zeros([0, width], ir.dtype)
            return (flat, init if self.state == "carry" else []) if final else flat
        run = STRATEGIES[self.resolved_strategy()]
        carry = self.state == "carry"
        if not self.feedback or targets is None:  # free-running B sees its own outputs
            flat, finals = run(adapter, adapter.project(ir_rows), steps, init, carry, training, head,
                               final=final, differentiable=differentiable)  # fmt: skip
            return (flat, finals) if final else flat
        targets = tf.cast(targets, ir.dtype)
        fb = init[-1]
        prev = _feedback.shifted_targets(targets, steps, carry, fb if carry else None, self.feedback_start)
        rows = tf.repeat(tf.range(tf.shape(ir_rows)[0]), tf.reshape(steps, [-1]))  # each step's (b, t)
        if sampling is None:  # teacher forcing: every step's input is known before the loop
            inner = adapter.inner
            xp = inner.project_fed(ir_rows, rows, prev)
            flat, finals = run(inner, xp, steps, init[:-1], carry, training, head, final=final,
                               differentiable=differentiable, per_step=True)  # fmt: skip
            if final and carry:
                finals = [*finals, _feedback.teacher_final(targets, steps, fb)]
        else:
            own = _feedback.coins(tf.shape(prev)[0], sampling, ir.dtype)
            flat, finals = run(adapter, tf.concat([tf.gather(ir_rows, rows), prev, own], 1), steps, init, carry, training,
                               head, final=final, differentiable=differentiable, per_step=True)  # fmt: skip
        return (flat, finals) if final else flat

    def initial_states(self, ir_rows: tf.Tensor, batch: tf.Tensor, adapter, initial_state=None) -> list[tf.Tensor]:
        """B's states at the start of each run (see `state`), from `IR` rows `(batch * T, ir_size)`."""
        if self.state == "init":
            fb = adapter.zero_states(tf.shape(ir_rows)[0], ir_rows.dtype)[len(self.init_layers):]
            return [*(layer(ir_rows) for layer in self.init_layers), *fb]
        if self.state == "carry" and initial_state is not None:
            return [tf.cast(s, ir_rows.dtype) for s in initial_state]
        rows = batch if self.state == "carry" else tf.shape(ir_rows)[0]
        return adapter.zero_states(rows, ir_rows.dtype)

    def _states_in(self, initial_state: Any, x: tf.Tensor) -> tuple[list | None, list | None]:
        """`(model A's, model B's)` starting states: given, kept (stateful) or None (defaults).

        Builds the chain on the first call; on every later one, checks `x` against the input
        that model A declares (see `_model_a_shape`)."""
        if not self.built:
            self.build(tuple(x.shape))
        else:
            _model_a_shape(self.model_a, tuple(x.shape))
        a_in, b_in = _validate.check_initial_state(
            initial_state, x, self._a.state_sizes, self._b_state_sizes(), self.state, self.compute_dtype
        )
        if self.stateful:
            self._state_vars.check_batch(x)
            a_kept, b_kept = self._state_vars.values()
            a_in = a_kept if a_in is None and self._a.state_sizes else a_in
            b_in = b_kept if b_in is None and self.state == "carry" else b_in
        return a_in, b_in

    def reset_states(self) -> None:
        """Sets the kept states of a `stateful=True` chain to zeros, like a Keras RNN layer's.

        Also resets every Keras layer inside model A that has `stateful=True` itself.
        """
        if getattr(self, "_state_vars", None) is not None:
            self._state_vars.reset()
        for layer in _model_a.stateful_layers(self.model_a):
            layer.reset_state()

    reset_state = reset_states

    def resolved_strategy(self) -> str:
        """The strategy that runs: `strategy`, or the one `"auto"` picks.

        `"auto"` picks `"packed"`. In `bench run` on the CPU (L = 4 to 64, uniform and zipf
        lengths, carry and reset modes, inference and training) it was the fastest in every
        case. Under `jit_compile=True`, choose `"padded"` explicitly.
        """
        if self.strategy != _AUTO:
            return self.strategy
        return "packed"

    @property
    def fast_path(self) -> _cells.FastPath:
        """Whether model B runs on a fast path (a kernel with a hand-written backward step), and why.

        It applies to the `packed` strategy; `loop` and `padded` call model B as it is.

        >>> import keras
        >>> net = Chain(keras.layers.GRU(4, return_sequences=True), keras.layers.LSTMCell(4))
        >>> net.fast_path
        FastPath(fused=True, reason='fast path: LSTMCell')
        """
        if self.resolved_strategy() != "packed":
            return _cells.FastPath(False, f"strategy {self.resolved_strategy()!r} calls model B as it is")
        if self.feedback and self._fast_path.fused:
            return self._fast_path._replace(
                reason=self._fast_path.reason + " (teacher-forced; with its own outputs fed back, "
                "model B runs step by step on the kernel's forward step)"
            )
        return self._fast_path

    # ------------------------------------------------------------------ training

    def compile(self, optimizer: Any = "rmsprop", loss: Any = None, metrics: Any = None,
                **kwargs: Any) -> None:  # fmt: skip
        """`keras.Model.compile`, with `loss` and `metrics` applied to flat values.

        Args:
            optimizer: as in Keras.
            loss: a Keras loss (name, function or `keras.losses.Loss`, whose `reduction` is
                honoured) or `chain.ragged_mse` (the default), computed on `(sum(steps),
                output_size)` flat values of the output and target: real inner steps only.
            metrics: Keras metrics (names, functions or `keras.metrics.Metric`s, e.g.
                `chain.NoiseFloorRatio(noise_floor)`), fed the same flat values, unweighted.
            **kwargs: other arguments of `keras.Model.compile`. `weighted_metrics` are fed
                the sample weights; `loss_weights` is one number that scales the output loss.
                `jit_compile` defaults to False: gradients of the dynamic loops do not compile
                under XLA, so Keras' "auto" (XLA on a GPU) would fail in `fit`.

        Raises:
            ValueError: `jit_compile=True` with the `packed` strategy, or `loss_weights` that is
                not one number.
        """
        weighted = kwargs.pop("weighted_metrics", None)
        loss_weights = _one_loss_weight(kwargs.pop("loss_weights", None))
        jit = kwargs.get("jit_compile", "auto")
        if jit == "auto":
            kwargs["jit_compile"] = False
        elif jit and self.resolved_strategy() == "packed":
            raise ValueError(
                "`jit_compile=True` cannot compile the 'packed' strategy"
                + (" (strategy='auto' resolves to 'packed')" if self.strategy == _AUTO else "")
                + ": its shapes depend on the values of `steps`. Build the Chain with "
                "strategy='padded' or 'loop' for XLA inference, or compile with jit_compile=False"
            )
        super().compile(optimizer=optimizer, **kwargs)
        self.flat_compile = _train.FlatCompile(loss, metrics, weighted, loss_weights)

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        # Keras' own loss tracker stays empty (the train step updates `loss_tracker`); left
        # in, `evaluate` would list "loss" twice.
        ours = self.trackers.all()
        names = {m.name for m in ours}
        keras_own = [m for m in super().metrics if m.name not in names or any(m is o for o in ours)]
        return [*keras_own, *self.flat_compile.all_metrics()]

    def get_compile_config(self) -> dict[str, Any]:
        config = super().get_compile_config()
        if config and self.flat_compile.config is not None:
            config.update(keras.saving.serialize_keras_object(self.flat_compile.config))
        return config

    def compile_from_config(self, config: dict[str, Any]) -> None:
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def fit(self, x: Any = None, *args: Any, **kwargs: Any) -> keras.callbacks.History:
        """`keras.Model.fit` on `((x, steps), y[, sample_weight])` batches; see `train_step`.

        `x` is a dataset of such batches, or inputs `(x, steps)` with `y` beside them (numpy
        arrays, `y` ragged or padded `(batch, T, L, D)`), which also allows `validation_split`
        and `sample_weight`: `(batch,)` per sample or `(batch, T)` per outer step.

        Under a `tf.distribute` strategy with several replicas, ragged targets are padded
        (`chain.pad_targets`) so that batches can be split; each replica then uses its real
        steps only, and the loss is normalised by the global count of real steps.

        Raises:
            ValueError: `class_weight` is given, or the model was compiled with
                `jit_compile=True`.
        """
        if kwargs.get("class_weight") is not None:
            raise ValueError(
                "`class_weight` does not apply to a Chain: its targets are ragged real-valued "
                "sequences, not class labels. Weight samples or outer steps with "
                "`sample_weight` of shape (batch,) or (batch, T) instead; received class_weight="
                f"{kwargs['class_weight']!r}"
            )
        if self.compiled and self.jit_compile:
            raise ValueError(
                "`fit` cannot run under `jit_compile=True`: gradients of the dynamic loops over "
                "T and the inner steps do not compile under XLA, whatever the strategy. Compile "
                "with jit_compile=False to train; jit_compile=True serves `evaluate` and "
                "`predict` with strategy='padded' or 'loop'"
            )
        if isinstance(x, tf.data.Dataset):
            kwargs.setdefault("shuffle", False)  # a dataset shuffles itself; Keras only warns
        x = self._for_replicas(x)
        if kwargs.get("validation_data") is not None:
            kwargs["validation_data"] = self._for_replicas(kwargs["validation_data"])
        return super().fit(x, *args, **kwargs)

    def evaluate(self, x: Any = None, *args: Any, **kwargs: Any) -> Any:
        """`keras.Model.evaluate` on `((x, steps), y[, sample_weight])` batches; see `test_step`."""
        return super().evaluate(self._for_replicas(x), *args, **kwargs)

    def predict(self, x: Any = None, *args: Any, **kwargs: Any) -> tf.RaggedTensor:
        """`keras.Model.predict` on `(x, steps)`, or a dataset of `(x, steps)` or `((x, steps), y)`.

        `x` alone (an array, `(x,)` or a dataset of x) runs at the lengths the chain predicts,
        as `generate(x)` does.

        Returns:
            RaggedTensor of shape `(n, T, None, output_size)`; T is `None` only when the
            batches had different T.

        Raises:
            ValueError: `x` alone and the chain has no `lengths` part.
        """
        if not isinstance(x, tf.data.Dataset):
            given, steps = _train.predict_inputs(x)
            if steps is None:
                _train.check_predict_lengths(self, given)
        out = super().predict(x, *args, **kwargs)
        return _train.uniform_t(out) if isinstance(out, tf.RaggedTensor) else out

    def _for_replicas(self, data: Any) -> Any:
        if isinstance(data, tf.data.Dataset) and self.distribute_strategy.num_replicas_in_sync > 1:
            return _train.pad_targets(data)
        return data

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        """One step of `fit` on `((x, steps), y[, sample_weight])`, `y` `(batch, T, None, D)`.

        The compiled loss (default `chain.ragged_mse`) and compiled metrics see the flat values
        of the output and of `y`, `(sum(steps), D)`: real inner steps only. `sample_weight`,
        `(batch,)` or `(batch, T)`, weighs every real inner step of its sample or outer step.
        The length and stop heads add their cross-entropies. Logs hold `loss`, `masked_mse`
        (unweighted) and, when configured, `length_accuracy` or `stop_accuracy`.
        """
        return _train.train_step(self, data)

    def compute_loss(self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None,
                     training: bool = True) -> tf.Tensor:  # fmt: skip
        """The loss of one batch, as `fit` minimises it: for a custom training loop.

        The compiled output loss (default `chain.ragged_mse`, times `loss_weights`) plus the
        lengths part's terms (`LengthHead`'s cross-entropy, `StopToken`'s binary cross-entropies)
        and the layers' `losses`: what `train_step` differentiates. Without `y_pred` the chain
        runs on `x` here, as in `fit` (with `feedback`, teacher-forced on `y`); the lengths part
        needs IR and B's outputs, which a call does not return.

        >>> import chain, keras, numpy as np, tensorflow as tf
        >>> net = Chain(keras.layers.GRU(4, return_sequences=True), keras.layers.GRUCell(4),
        ...             output_size=2, max_steps=3, lengths=chain.LengthHead())
        >>> x, steps = np.zeros((2, 5, 3), "float32"), np.ones((2, 5), "int32")
        >>> with tf.GradientTape() as tape:
        ...     loss = net.compute_loss(x=(x, steps), y=net(x, steps))
        >>> grads = tape.gradient(loss, net.trainable_variables)

        Args:
            x: `(x, steps)`, as `fit` takes them.
            y: the targets `(batch, T, None, output_size)`, ragged or padded `(batch, T, L, D)`.
            y_pred: None (the chain runs here), or `net(x, steps)` of a chain without a lengths
                part, whose output loss is then taken from it.
            sample_weight: `(batch,)` per sample or `(batch, T)` per outer step, or None.
            training: passed to model A and model B.

        Returns:
            Scalar float32. Under a `tf.distribute` strategy with several replicas, this
            replica's share of the batch's loss, as in `fit` (their sum is the loss).

        Raises:
            ValueError: `x` is not `(x, steps)`, `y` is missing, `y_pred` is given to a chain
                with a lengths part, or an input is bad.
        """
        return _train.compute_loss(self, x, y, y_pred, sample_weight, training)

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        """One step of `evaluate` on `((x, steps), y)`; the same losses and logs as `train_step`."""
        return _train.test_step(self, data)

    def predict_step(self, data: Any) -> tf.RaggedTensor:
        """One step of `predict`: the ragged output of `(x, steps)`, `y` ignored if present."""
        return _train.predict_step(self, data)

    def step_adapter(self) -> _cells.StepAdapter:
        """The step adapter that runs model B under the resolved strategy.

        With `feedback`, one that feeds B's own previous output back (free-running); its
        `inner` adapter runs the teacher-forced steps.
        """
        inner = self._fast if self.resolved_strategy() == "packed" else self._generic
        if not self.feedback:
            return inner
        return _feedback.FreeRunning(inner, self.feedback_size, lambda: self.head, lambda: self.feedback_start)

    # ------------------------------------------------------------------ generation

    def generate(self, x: Any, steps: Any = None, initial_state: Any = None, return_state: bool = False) -> Any:
        """Runs the chain free, at given `steps` or at lengths the model predicts.

        With `feedback=True`, every inner step is fed the model's own previous output
        (autoregressive generation), inside one graph loop. `steps` given, this is
        `net(x, steps)` (a call without targets runs free).

        The `lengths` part predicts them: with `chain.LengthHead()` the length head's argmax at
        each `(b, t)`; with `chain.StopToken()` each `(b, t)` runs until its stop logit is
        positive or it reaches `max_steps` (none at all where the empty head fires). States go in and out as in a call
        (and a stateful chain keeps them), so a sequence can be generated one outer step at a
        time: the windows give what one call on the whole sequence gives.

        Args:
            x: `(batch, T, input_size)` floats.
            steps: `(batch, T)` or `(T,)` lengths; None generates at predicted lengths.
            initial_state: as in a call, `{"model_a": [...], "model_b": [...]}`.
            return_state: also return the final states.

        Returns:
            RaggedTensor of shape `(batch, T, None, output_size)`, ragged_rank 2, whose row
            lengths are `steps` or the predicted ones `(batch, T)`, each in `[0, max_steps]`;
            with `return_state`, `(output, states)`.

        Raises:
            ValueError: no `steps` and the model has neither a length head nor a stop head, or
                `x`, `steps` or `initial_state` is bad.
        """
        if steps is not None:
            return self(x, steps, initial_state=initial_state, return_state=return_state)
        if self.lengths is None:
            raise ValueError(
                "`generate` without `steps` needs predicted lengths: build the Chain with "
                "`lengths=chain.LengthHead()` (or `predict_lengths=True`) or `lengths=chain.StopToken()` "
                "(or `stop='token'`), or pass `steps`; received lengths=None"
            )
        x = tf.cast(_validate.as_x(x), self.compute_dtype)
        if not self.built:
            self.build(tuple(x.shape))
        _validate.check_inputs(x, tf.zeros(tf.shape(x)[:2], tf.int32), self.input_size, None)
        a_in, b_in = self._states_in(initial_state, x)
        if self.state == "carry" and b_in is None:
            b_in = self._unchanged(None, None, x)["model_b"]
        if x.shape[1] == 0:  # no outer step, as in a call: nothing runs, and the states pass through
            flat, steps = self._no_outputs(), tf.zeros(tf.stack([tf.shape(x)[0], 0]), tf.int32)
            a_out, b_out = self._unchanged(a_in, b_in, x).values()
        elif tf.executing_eagerly() and self.graph_calls:
            flat, steps, a_out, b_out = self._graph_generate(a_in is not None)(x, a_in or [], b_in or [])
        else:
            flat, steps, a_out, b_out = self._generate_flat(x, a_in, b_in)
        a_out, b_out = [tf.stop_gradient(s) for s in a_out], [tf.stop_gradient(s) for s in b_out]
        if self.stateful:
            self._state_vars.assign(a_out, b_out)
        out = _ragged.ragged_from_flat(flat, steps)
        return (out, {"model_a": list(a_out), "model_b": list(b_out)}) if return_state else out

    def _generate_flat(self, x: tf.Tensor, a_in=None, b_in=None):
        return self.lengths.generate(self, x, a_in, b_in or None)

    def _graph_generate(self, has_a: bool):
        key = ("generate", has_a)
        fn = self._graphs.fns.get(key)
        if fn is None:
            signature = list(self._specs(has_a))
            fn = tf.function(lambda x, a, b: self._generate_flat(x, a if has_a else None, b),
                             input_signature=signature, autograph=False)  # fmt: skip
            self._graphs.fns[key] = fn
        return fn

    # ------------------------------------------------------------------ serving

    def export_serving(self, path: str) -> None:
        """Writes a SavedModel with one endpoint, `serve(x, steps)`.

        The endpoint takes `x` `(batch, T, input_size)` float32 and `steps` `(batch, T)` int32,
        and returns a dict with `flat_values` `(sum(steps), output_size)` and `row_lengths`
        `(batch, T)`: the components of the ragged output.

        The SavedModel is written beside `path` and then renamed into place, so a failure leaves
        `path` as it was: absent, or the export that was there before.

        Args:
            path: directory to write; an existing export there is replaced.

        Raises:
            ValueError: the model is not built, or `path` is a file.
        """
        if not self.built:
            raise ValueError("`export_serving` needs a built model: call it on data first")
        if os.path.isfile(path):
            raise ValueError(f"`path` must be a directory to write the SavedModel into; received {path!r}, a file")
        signature = [
            tf.TensorSpec([None, None, self.input_size], tf.float32, name="x"),
            tf.TensorSpec([None, None], tf.int32, name="steps"),
        ]
        module = tf.Module()
        module.weights = [v.value for v in self.weights]
        module.serve = tf.function(self._serve, input_signature=signature)
        _write_directory(path, lambda into: tf.saved_model.save(module, into, signatures={"serving_default": module.serve}))

    def _serve(self, x: tf.Tensor, steps: tf.Tensor) -> dict[str, tf.Tensor]:
        x, steps = _validate.check_inputs(x, steps, self.input_size, self.max_steps)
        flat = self.run_flat(x, steps, differentiable=False)[0]
        return {"flat_values": flat, "row_lengths": steps}

    # ------------------------------------------------------------------ config

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "model_a": keras.saving.serialize_keras_object(self.model_a),
            "model_b": keras.saving.serialize_keras_object(self.model_b),
            "output_size": self.output_size,
            "state": self.state,
            "strategy": self.strategy,
            "max_steps": self.max_steps,
            "compiled": self.graph_calls,
            "fused": self.fused,
            "lengths": None if self.lengths is None else keras.saving.serialize_keras_object(self.lengths),
            "stateful": self.stateful,
            "feedback": self.feedback,
            "feedback_sampling": self.feedback_sampling if not callable(self.feedback_sampling)
            else keras.saving.serialize_keras_object(self.feedback_sampling),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Chain":
        config = dict(config)
        for key in ("model_a", "model_b"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def _one_loss_weight(loss_weights: Any) -> float | None:
    if loss_weights is None or isinstance(loss_weights, (int, float)):
        return loss_weights
    raise ValueError(
        "`loss_weights` must be one number (a Chain has one output loss) or None; "
        f"received {loss_weights!r}"
    )


def _check_options(output_size, state, strategy, max_steps) -> None:
    if state not in STATES:
        raise ValueError(f"`state` must be one of {STATES}; received {state!r}")
    allowed = (*STRATEGIES, _AUTO)
    if strategy not in allowed:
        raise ValueError(f"`strategy` must be one of {allowed}; received {strategy!r}")
    if output_size is not None and (not _is_int(output_size) or output_size <= 0):
        raise ValueError(f"`output_size` must be a positive int or None; received {output_size!r}")
    if max_steps is not None and (not _is_int(max_steps) or max_steps < 0):
        raise ValueError(f"`max_steps` must be a non-negative int or None; received {max_steps!r}")
    if max_steps is not None and max_steps > _validate.INT32_MAX:
        raise ValueError(
            f"`max_steps` must be a non-negative int of at most {_validate.INT32_MAX} (steps are int32) or None; "
            f"received {max_steps!r}"
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True would be a size of 1


def _model_a_shape(model_a: Any, shape: tuple) -> tuple:
    """`x`'s shape, with the sizes that a functional model A declares filled in.

    Raises:
        ValueError: a size of `x` differs from the one model A declares.
    """
    declared = _model_a.declared_input_shape(model_a)
    if declared is None:
        return shape
    if len(declared) != len(shape) or any(
        d is not None and s is not None and d != s for d, s in zip(declared[1:], shape[1:])
    ):
        raise ValueError(
            f"`x` has shape {shape} but model A declares its input as {declared}: pass x of that "
            "shape, or build model A with `keras.Input(shape=(None, input_size))` for any T"
        )
    return tuple(s if s is not None else d for s, d in zip(shape, declared))


class _StateVariables:
    """The states a `stateful=True` chain keeps between calls (kept out of Keras tracking).

    Model A's state (where it has one, see `chain._model_a`) and, in carry mode, model B's, each
    `(batch, s)`; `batch` is fixed by the first call, as in a stateful Keras RNN layer.
    """

    def __init__(self, net: Chain, batch: int | None) -> None:
        if batch is None:
            raise ValueError(
                "`stateful=True` needs a fixed batch size: call the chain on a batch of known size "
                "first, or build model A with `keras.Input(batch_shape=(batch, T, input_size))`; "
                "received a batch of unknown size"
            )
        self.batch = int(batch)
        dtype = net.compute_dtype
        with tf.init_scope():
            self.a = [tf.Variable(tf.zeros([self.batch, s], dtype), trainable=False) for s in net._a.state_sizes]
            self.b = [tf.Variable(tf.zeros([self.batch, s], dtype), trainable=False) for s in net._b_state_sizes()]

    def check_batch(self, x: tf.Tensor) -> None:
        batch = x.shape[0]
        if batch is not None and batch != self.batch:
            raise ValueError(
                f"a stateful chain keeps states for a batch of {self.batch}; received x of shape "
                f"{tuple(x.shape)}. Keep the batch size fixed (drop the remainder), or use "
                "`initial_state`/`return_state` instead of `stateful=True`"
            )

    def values(self) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
        return [tf.convert_to_tensor(v) for v in self.a], [tf.convert_to_tensor(v) for v in self.b]

    def assign(self, a_out, b_out) -> None:
        for v, s in zip(self.a, a_out):
            v.assign(tf.cast(s, v.dtype))
        for v, s in zip(self.b, b_out):
            v.assign(tf.cast(s, v.dtype))

    def reset(self) -> None:
        for v in [*self.a, *self.b]:
            v.assign(tf.zeros_like(v))


class _Feed:
    """What feeds B's `prev` in one call: `targets` `(N, D)` or None, and the probability of the
    model's own output instead (scheduled sampling) or None (teacher forcing)."""

    def __init__(self, targets: tf.Tensor | None, sampling: tf.Tensor | None) -> None:
        self.targets, self.sampling = targets, sampling

    @property
    def key(self) -> tuple[bool, bool]:
        return self.targets is not None, self.sampling is not None

    def specs(self, width: int | None, dtype) -> list[tf.TensorSpec]:
        specs = [tf.TensorSpec([None, width], dtype, name="targets")] if self.targets is not None else []
        return specs + ([tf.TensorSpec([], tf.float32, name="sampling")] if self.sampling is not None else [])

    def tensors(self) -> list[tf.Tensor]:
        return [t for t in (self.targets, self.sampling) if t is not None]

    def rebuilt(self, fed) -> "_Feed":
        fed = list(fed)
        targets = fed.pop(0) if self.targets is not None else None
        return _Feed(targets, fed.pop(0) if self.sampling is not None else None)


def _write_directory(path: str, write) -> None:
    """Runs `write(directory)` on a fresh directory beside `path`, then puts that one at `path`.

    A failure removes the new directory and leaves `path` as it was. A remote path
    (`scheme://...`) is written in place: renaming a directory there is not atomic.
    """
    path = os.fspath(path)
    if "://" in path:
        write(path)
        return
    target = os.path.abspath(path)
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    fresh = tempfile.mkdtemp(prefix=f".{name}.", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(fresh, 0o777 & ~umask)  # as a plain mkdir would make it, not mkdtemp's 0o700
    try:
        write(fresh)
        if os.path.isdir(target):
            old = fresh + ".old"
            os.rename(target, old)
            os.rename(fresh, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(fresh, target)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
