"""`Chain`: model A, then model B for `steps[b, t]` inner steps on each `IR[b, t]`.

The class is the Keras-facing face only. What it is made of lives in modules named for it:
options (`_options`), building (`_build`), the forward pass (`_forward`), traced graph functions
(`_graphs`), state across calls (`_state`), the train steps (`_train`), generation
(`_generate`) and the serving export (`_export`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import tensorflow as tf

from . import _build, _cells, _export, _feedback, _model_a, _ragged, _state, _train, _validate
from ._feedback import Feed
from ._forward import Forward
from ._generate import Generated, Generation
from ._graphs import Graphs
from ._lengths import LengthHead, Lengths, StopToken
from ._options import AUTO, STATES, ChainOptions
from ._state import StateVariables

__all__ = ["Chain", "STATES"]


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
        sampling_seed: seeds scheduled sampling's draws, an integer >= 0. With an optimizer (in
            `fit`) a step's draws are a function of `(sampling_seed, optimizer.iterations)`, so a
            run resumed from a checkpoint draws what the uninterrupted run draws; without one
            they come from TensorFlow's global random state.

    Call it as `net(x, steps)`: `Chain.call` lists the arguments and what it returns.

    Examples:
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
        strategy: str = AUTO,
        max_steps: int | None = None,
        compiled: bool = True,
        fused: bool | str = AUTO,
        predict_lengths: bool = False,
        stop: str | None = None,
        stateful: bool = False,
        lengths: Lengths | None = None,
        feedback: bool = False,
        feedback_sampling: Any = 0.0,
        sampling_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        options = ChainOptions.checked(output_size, state, strategy, max_steps, compiled, fused, predict_lengths,
                                       stop, stateful, lengths, feedback, feedback_sampling, sampling_seed)  # fmt: skip
        _cells.check_model_b(model_b)
        self.model_a = model_a
        self.model_b = model_b
        self.options = options
        self.feedback_size: int | None = None
        self.input_size: int | None = None
        self.trackers = _train.Trackers(options.lengths)
        self.flat_compile = _train.FlatCompile()
        self.loss_tracker = self.trackers.loss
        self.masked_mse_tracker = self.trackers.mse
        if options.lengths is not None:
            setattr(self, options.lengths.tracker, self.trackers.lengths)
        fast, self._fast_path = _cells.fast_adapter(model_b, fused)
        self._forward = Forward(options, _model_a.ModelAState(model_a), _cells.generic_adapter(model_b), fast)
        self._graphs = Graphs(self._forward, self.compute_dtype)
        self._kept_vars: StateVariables | None = None

    # The options, read-only (see the class docstring). Not `compiled`: Keras uses that name.
    output_size = property(lambda self: self.options.output_size)
    state = property(lambda self: self.options.state)
    strategy = property(lambda self: self.options.strategy)
    max_steps = property(lambda self: self.options.max_steps)
    graph_calls = property(lambda self: self.options.compiled)
    fused = property(lambda self: self.options.fused)
    lengths = property(lambda self: self.options.lengths)
    feedback = property(lambda self: self.options.feedback)
    feedback_sampling = property(lambda self: self.options.feedback_sampling)
    sampling_seed = property(lambda self: self.options.sampling_seed)

    @property
    def stateful(self) -> bool:
        """Whether calls start from and keep the states of the last call (see the class docstring).

        As on a Keras RNN layer it may be set: False sets the kept states aside (e.g. to score
        whole sequences between windows), True takes them up again.
        """
        return self.options.stateful

    @stateful.setter
    def stateful(self, value: bool) -> None:
        if not isinstance(value, bool) or (value and self.built and self._kept_vars is None):
            raise ValueError(
                "`stateful` may be set to False, or back to True on a chain built with stateful=True; "
                f"received {value!r}"
            )
        self.options = dataclasses.replace(self.options, stateful=value)

    @property
    def _kept(self) -> StateVariables | None:
        return self._kept_vars if self.options.stateful else None

    # ------------------------------------------------------------------ building

    def build(self, input_shape: Any) -> None:
        """Creates every weight from the shape of `x` `(batch, T, input_size)`.

        Model A and model B are only called on symbolic tensors of the shapes the call gives (or
        model A declares), never on made-up numbers.

        Raises:
            ValueError: `x`'s shape conflicts with model A's declared input, model A does not
                return `(batch, T, ir_size)`, or model B does not return `[outputs, *states]`.
        """
        shape = _build.x_shape(input_shape, self.model_a)
        parts = _build.build_parts(self._forward, self.model_b, shape, self.compute_dtype)
        self.input_size, self.feedback_size = parts.input_size, parts.feedback_size
        self.init_layers = parts.init_layers
        self.head = parts.head
        self.length_head = self.stop_head = self.empty_head = None
        for name, layer in parts.length_layers.items():  # attributes: saved files keep their paths
            setattr(self, name, layer)
        if self.feedback:
            parts.feedback_start = self.feedback_start = self.add_weight(
                shape=(parts.feedback_size,), initializer="zeros", name="feedback_start"
            )
        self._forward.attach(parts)
        self._kept_vars = StateVariables(self._forward, shape[0], self.compute_dtype) if self.stateful else None
        self.built = True

    @property
    def predict_lengths(self) -> bool:
        """Whether the lengths part is a `chain.LengthHead`."""
        return isinstance(self.lengths, LengthHead)

    @property
    def stop(self) -> str | None:
        """`"token"` when the lengths part is a `chain.StopToken`, else None."""
        return "token" if isinstance(self.lengths, StopToken) else None

    @property
    def length_layers(self) -> dict[str, keras.layers.Layer]:
        """The layers of the lengths part, by the names it gave them (`{}` for none)."""
        return dict(self._forward.parts.length_layers) if self.built else {}

    def get_build_config(self) -> dict[str, Any]:
        return {"input_size": self.input_size, "batch": self._kept_vars.batch if self._kept_vars is not None else None}

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
        """Runs the chain.

        Args:
            x: `(batch, T, input_size)` floats, or a tuple `(x, steps)` as `fit` passes it.
            steps: `(batch, T)` integers in `[0, max_steps]`, or `(T,)` shared by the batch (a
                rank-1 `steps` is always `(T,)`).
            training: Keras' training flag; `fit` passes True.
            initial_state: `{"model_a": [...], "model_b": [...]}` of `(batch, s)` tensors (either
                key may be left out; a list stands for model B's), as `return_state` gives them.
            return_state: also return the final states, without gradient (a window edge).
            targets: with `feedback=True`, the targets `(batch, T, None, D)` (ragged, or padded
                `(batch, T, L, D)`) whose previous step feeds each inner step (teacher forcing).

        Returns:
            RaggedTensor of shape `(batch, T, None, output_size)` with ragged_rank 2 and row
            lengths equal to `steps`; with `return_state`,
            `(output, {"model_a": [...], "model_b": [...]})`.
        """
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
            return self._no_outputs(), self._states_out(*self._defaults(a_in, b_in, x))
        feed = self._feed(targets, training)
        if tf.executing_eagerly() and self.graph_calls:
            b_in = b_in if b_in is not None else self._defaults(None, None, x)[1]
            result = self._graphs.run(x, steps, a_in, b_in, training, differentiable, final, head, feed)
        else:
            result = self._forward.run(x, steps, a_in, b_in, training, differentiable, final, head, feed)
        return result.flat, self._states_out(result.a_states, result.b_states)

    def _no_outputs(self) -> tf.Tensor:
        """The flat output `(0, output_size)` of a call with no outer step."""
        return tf.zeros([0, self.output_size or self._forward.generic.output_size], self.compute_dtype)

    def _defaults(self, a_in, b_in, x) -> tuple[list, list]:
        a_zero, b_zero = self._forward.zero_states(x, self.compute_dtype)
        return (list(a_in) if a_in is not None else a_zero), (list(b_in) if b_in is not None else b_zero)

    def _states_out(self, a_out: list, b_out: list) -> dict[str, list]:
        if self._kept is not None:
            self._kept.assign(a_out, b_out)
        return {"model_a": list(a_out), "model_b": list(b_out)}

    def _states_in(self, initial_state: Any, x: tf.Tensor) -> tuple[list | None, list | None]:
        """Builds the chain on the first call; on every later one, checks `x` against the input
        that model A declares."""
        if not self.built:
            self.build(tuple(x.shape))
        else:
            _build.model_a_shape(self.model_a, tuple(x.shape))
        return _state.states_in(self._forward, self._kept, initial_state, x, self.compute_dtype)

    def _feed(self, targets: tf.Tensor | None, training: bool) -> Feed:
        """What feeds B's `prev` in this call: nothing, targets, or targets mixed with own outputs."""
        if targets is None or not self.feedback:
            return Feed(None, None)
        if not training or self.feedback_sampling == 0.0:
            return Feed(targets, None)
        if getattr(self, "optimizer", None) is None:
            return Feed(targets, _feedback.sampling_probability(self.feedback_sampling, 0))
        step = self.optimizer.iterations
        seed = tf.stack([tf.constant(self.sampling_seed, tf.int64), tf.cast(step, tf.int64)])
        return Feed(targets, _feedback.sampling_probability(self.feedback_sampling, step), seed)

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

    def forward_parts(self, x: tf.Tensor, steps: tf.Tensor, training: bool = False,
                      differentiable: bool = True, targets: Any = None) -> tuple[tf.Tensor, tf.Tensor]:  # fmt: skip
        """`(IR (batch, T, ir_size), B's outputs (sum(steps), H))` before the head, for the train
        and test steps; a stateful chain starts from and keeps its states, as in `call`. With
        `feedback`, `targets` feed `prev` (teacher forcing, or scheduled sampling in training)."""
        a_in, b_in = self._states_in(None, x)
        feed = self._feed(self.flat_targets(targets, steps) if self.feedback else None, training)
        result = self._forward.run(x, steps, a_in, b_in, training, differentiable, self.stateful, False, feed)
        if self.stateful:
            self._states_out(result.a_states, result.b_states)
        return result.ir, result.flat

    def flat_outputs(self, x: tf.Tensor, steps: tf.Tensor, training: bool = False) -> tf.Tensor:
        """The flat values `(sum(steps), output_size)` of the output, in `(b, t, k)` order.

        Args:
            x: `(batch, T, input_size)`.
            steps: `(batch, T)` int32, values in `[0, max_steps]`.
            training: passed to model A and model B.
        """
        return self.run_flat(x, steps, training)[0]

    def step_adapter(self) -> _cells.StepAdapter:
        """The step adapter that runs model B under the resolved strategy.

        With `feedback`, one that feeds B's own previous output back (free-running); its
        `inner` adapter runs the teacher-forced steps.
        """
        return self._forward.step_adapter()

    def reset_states(self) -> None:
        """Sets the kept states of a `stateful=True` chain to zeros, like a Keras RNN layer's.

        Also resets every Keras layer inside model A that has `stateful=True` itself.
        """
        if self._kept_vars is not None:
            self._kept_vars.reset()
        for layer in _model_a.stateful_layers(self.model_a):
            layer.reset_state()

    reset_state = reset_states

    def resolved_strategy(self) -> str:
        """The strategy that runs: `strategy`, or the one `"auto"` picks.

        `"auto"` picks `"packed"`. In `bench run` on the CPU (L = 4 to 64, uniform and zipf
        lengths, carry and reset modes, inference and training) it was the fastest in every
        case. Under `jit_compile=True`, choose `"padded"` explicitly.
        """
        return self.options.resolved_strategy()

    @property
    def fast_path(self) -> _cells.FastPath:
        """Whether model B runs on a fast path (a kernel with a hand-written backward step), and why.

        It applies to the `packed` strategy; `loop` and `padded` call model B as it is.

        Examples:
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
        kwargs, weighted, loss_weights = _train.compile_arguments(kwargs, self.options)
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
        _train.check_fit_arguments(kwargs, bool(self.compiled and self.jit_compile))
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

        Examples:
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

    # ------------------------------------------------------------------ generation

    def generate(self, x: Any, steps: Any = None, initial_state: Any = None, return_state: bool = False) -> Any:
        """Runs the chain free, at given `steps` or at lengths the model predicts.

        With `feedback=True`, every inner step is fed the model's own previous output
        (autoregressive generation), inside one graph loop. `steps` given, this is
        `net(x, steps)` (a call without targets runs free).

        The `lengths` part predicts them: with `chain.LengthHead()` the length head's argmax at
        each `(b, t)`; with `chain.StopToken()` each `(b, t)` runs until its stop logit is
        positive or it reaches `max_steps` (none at all where the empty head fires); with a
        part of one's own, its `generate`. States go in and out as in a call (and a stateful
        chain keeps them), so a sequence can be generated one outer step at a time: the windows
        give what one call on the whole sequence gives.

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
            ValueError: no `steps` and the model has no lengths part, or `x`, `steps` or
                `initial_state` is bad.
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
            b_in = self._defaults(None, None, x)[1]
        if x.shape[1] == 0:  # no outer step, as in a call: nothing runs, and the states pass through
            a_out, b_out = self._defaults(a_in, b_in, x)
            made = Generated(self._no_outputs(), tf.zeros(tf.stack([tf.shape(x)[0], 0]), tf.int32), a_out, b_out)
        elif tf.executing_eagerly() and self.graph_calls:
            made = self._graphs.generate(self._generate_flat, x, a_in, b_in)
        else:
            made = self._generate_flat(x, a_in, b_in)
        a_out, b_out = [tf.stop_gradient(s) for s in made.a_states], [tf.stop_gradient(s) for s in made.b_states]
        states = self._states_out(a_out, b_out)
        out = _ragged.ragged_from_flat(made.flat, made.steps)
        return (out, states) if return_state else out

    def _generate_flat(self, x: tf.Tensor, a_in: list | None, b_in: list | None) -> Generated:
        parts = self._forward.parts
        return self.lengths.generate(Generation(self._forward, x, a_in, b_in or None, parts.length_layers))

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
        run = lambda x, steps: self.run_flat(x, steps, differentiable=False)[0]  # noqa: E731
        _export.export_serving(run, self.input_size, self.max_steps, self.weights, path)

    # ------------------------------------------------------------------ config

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "model_a": keras.saving.serialize_keras_object(self.model_a),
            "model_b": keras.saving.serialize_keras_object(self.model_b),
            **self.options.config(),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Chain":
        config = dict(config)
        for key in ("model_a", "model_b"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
