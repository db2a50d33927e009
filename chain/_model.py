"""`Chain`: model A, then model B for `steps[b, t]` inner steps on each `IR[b, t]`.

The class is the Keras-facing face only. What it is made of lives in modules named for it:
options (`_options`), building (`_build`), the forward pass (`_forward`), one run with its states
(`_run`, `_state`, `_graphs`), the Keras training face (`_fit`) and its steps (`_train`), generation (`_generate`) and the
serving export (`_export`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import tensorflow as tf

from . import _build, _cells, _decoding, _export, _lengths, _model_a, _ragged, _train, _validate
from ._fit import Training
from ._forward import Forward
from ._lengths import LengthHead, Lengths, StopToken
from ._options import AUTO, STATES, ChainOptions
from ._run import Runner

__all__ = ["Chain", "STATES"]


@keras.saving.register_keras_serializable(package="chain")
class Chain(Training, keras.Model):
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
            `packed` and `padded`; True does the same or raises a ValueError naming the cell
            that has none; False calls model B as it is. `fast_path` says which runs and why.
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
        vocab_size: makes a token chain over a vocabulary of V >= 2 tokens: the head is a Dense
            layer with V units (so it excludes `output_size`, and `net.output_size` reads V), a
            call returns logits `(batch, T, None, V)`, targets are int token ids `(batch, T,
            None)` (or padded `(batch, T, L)`), the default loss is the sparse categorical
            cross-entropy from the logits, `fit` logs `token_accuracy` and `perplexity`, and
            `generate` returns tokens, picked by a decoder (`chain.Greedy`, `chain.Sampler`).
            With `feedback`, model B is fed a learned embedding of the previous token (V + 1
            rows, row V the learned start token). See `docs/tokens.md`.
        token_width: the width of that embedding, min(V, 16) by default; needs `vocab_size`
            and `feedback=True`.

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
        vocab_size: int | None = None,
        token_width: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        options = ChainOptions.checked(output_size, state, strategy, max_steps, compiled, fused, predict_lengths,
                                       stop, stateful, lengths, feedback, feedback_sampling, sampling_seed,
                                       vocab_size, token_width)  # fmt: skip
        _cells.check_model_b(model_b)
        self.model_a = model_a
        self.model_b = model_b
        self.options = options
        self.feedback_size: int | None = None
        self.input_size: int | None = None
        self.trackers = _train.Trackers(options.lengths, options.vocab_size is not None)
        self.flat_compile = _train.FlatCompile(tokens=options.vocab_size is not None)
        self.loss_tracker = self.trackers.loss
        self.masked_mse_tracker = self.trackers.mse
        if options.lengths is not None:
            setattr(self, options.lengths.tracker, self.trackers.lengths)
        if options.vocab_size is not None:
            self.accuracy_tracker, self.perplexity_tracker = self.trackers.accuracy, self.trackers.perplexity
        fast, self._fast_path = _cells.fast_adapter(model_b, fused)
        generic = _cells.generic_adapter(model_b, bounded=fast.bounded)
        self._forward = Forward(options, _model_a.ModelAState(model_a, fused), generic, fast)
        self._runner = Runner(self, self._forward, self.compute_dtype)

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
    vocab_size = property(lambda self: self.options.vocab_size)
    token_width = property(lambda self: self.options.token_width)

    @property
    def stateful(self) -> bool:
        """Whether calls start from and keep the states of the last call (see the class docstring).

        As on a Keras RNN layer it may be set: False sets the kept states aside (e.g. to score
        whole sequences between windows), True takes them up again.
        """
        return self.options.stateful

    @stateful.setter
    def stateful(self, value: bool) -> None:
        if not isinstance(value, bool) or (value and self.built and self._runner.kept_vars is None):
            raise ValueError(
                "`stateful` may be set to False, or back to True on a chain built with stateful=True; "
                f"received {value!r}"
            )
        self._set_options(dataclasses.replace(self.options, stateful=value))

    def _set_options(self, options: ChainOptions) -> None:
        self.options = self._forward.options = options

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
        if parts.embedding is not None:  # a token chain's start is the embedding's last row
            self.token_embedding = parts.embedding
        elif self.feedback:
            parts.feedback_start = self.feedback_start = self.add_weight(
                shape=(parts.feedback_size,), initializer="zeros", name="feedback_start"
            )
        self._forward.attach(parts)
        if self.stateful:
            self._runner.keep_states(shape[0])
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
        kept = self._runner.kept_vars
        return {"input_size": self.input_size, "batch": kept.batch if kept is not None else None}

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
        return self._runner.run_flat(x, steps, training, initial_state, differentiable, head, return_state, targets)

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
        if self.vocab_size is not None:
            return _validate.check_token_targets(targets, steps, self.vocab_size)
        return _validate.check_targets(targets, steps, self.feedback_size, self.compute_dtype)

    def forward_parts(self, x: tf.Tensor, steps: tf.Tensor, training: bool = False,
                      differentiable: bool = True, targets: Any = None) -> tuple[tf.Tensor, tf.Tensor]:  # fmt: skip
        """`(IR (batch, T, ir_size), B's outputs (sum(steps), H))` before the head, for the train
        and test steps; a stateful chain starts from and keeps its states, as in `call`. With
        `feedback`, `targets` feed `prev` (teacher forcing, or scheduled sampling in training)."""
        flat = self.flat_targets(targets, steps) if self.feedback else None
        result = self._runner.forward_parts(x, steps, training, differentiable, flat)
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
        if self._runner.kept_vars is not None:
            self._runner.kept_vars.reset()
        for layer in _model_a.stateful_layers(self.model_a):
            layer.reset_state()

    reset_state = reset_states

    def resolved_strategy(self) -> str:
        """The strategy that runs: `strategy`, or the one `"auto"` picks.

        `"auto"` picks `"packed"`. In `bench run` on the CPU (L = 4 to 64, uniform and zipf
        lengths, carry and reset modes, inference and training) it was the fastest in every
        case. A chain compiled with `jit_compile=True` picks among the strategies XLA compiles
        (`"packed"`'s shapes depend on the values of `steps`) the faster there, `"padded"`: in
        reset mode in every case measured, in carry mode in 15 of 20 (`loop` was up to 1.13
        times faster in the other five).
        """
        return self.options.resolved_strategy()

    @property
    def fast_path(self) -> _cells.FastPath:
        """Whether model B runs on a fast path (a kernel with a hand-written backward step), and why.

        It applies to the `packed` and `padded` strategies; `loop` calls model B as it is.

        Examples:
            >>> import keras
            >>> net = Chain(keras.layers.GRU(4, return_sequences=True), keras.layers.LSTMCell(4))
            >>> net.fast_path
            FastPath(fused=True, reason='fast path: LSTMCell')
        """
        return _cells.fast_path_under(self._fast_path, self.resolved_strategy(), self.feedback)

    @property
    def model_a_fast_path(self) -> _cells.FastPath:
        """Whether model A runs on a fast path, and why.

        A model A that is a Keras recurrent layer (`GRU`, `LSTM`, `SimpleRNN`, or `RNN` of a
        cell with a kernel, `return_sequences=True`, not stateful or backwards), or a model of
        just that layer, runs on its cell's kernel under `packed` and `padded`: the input
        projection once for every `(b, t)`, one loop forward, and the kernel's hand-written
        backward step in one loop back. Its outputs and gradients are the layer's own. `fused=False`
        and `loop` run it as it is, as does a GPU where Keras can run the layer on cuDNN.

        Examples:
            >>> import keras
            >>> net = Chain(keras.layers.GRU(4, return_sequences=True), keras.layers.LSTMCell(4))
            >>> net.model_a_fast_path
            FastPath(fused=True, reason='fast path: GRU on the kernel of GRUCell (reset_after=True)')
        """
        model_a = self._forward.model_a
        if self.resolved_strategy() not in ("packed", "padded"):
            return _cells.FastPath(False, f"strategy {self.resolved_strategy()!r} calls model A as it is")
        return _cells.FastPath(model_a.kernel is not None, model_a.fast_path_reason)

    # ------------------------------------------------------------------ generation

    def generate(self, x: Any, steps: Any = None, initial_state: Any = None, return_state: bool = False,
                 decoder: Any = None, return_scores: bool = False) -> Any:  # fmt: skip
        """Runs the chain free, at given `steps` or at lengths the model predicts.

        With `feedback=True`, every inner step is fed the model's own previous output
        (autoregressive generation), inside one graph loop. In a real-valued chain with `steps`
        given, this is `net(x, steps)` (a call without targets runs free).

        In a token chain (`vocab_size`), `decoder` picks every step's token from the head's
        logits (`chain.Greedy()` by default, or `chain.Sampler(...)`), the embedding of that
        token feeds the next step, and the tokens are returned rather than the logits.

        The `lengths` part predicts them: with `chain.LengthHead()` the length head's argmax at
        each `(b, t)`; with `chain.StopToken()` each `(b, t)` runs until its stop logit is
        positive or it reaches `max_steps` (none at all where the empty head fires); with
        `chain.EndToken(token)` until it picks `token`; with a part of one's own, its
        `generate`. States go in and out as in a call (and a stateful chain keeps them), so a
        sequence can be generated one outer step at a time: the windows give what one call on
        the whole sequence gives.

        Args:
            x: `(batch, T, input_size)` floats.
            steps: `(batch, T)` or `(T,)` lengths; None generates at predicted lengths.
            initial_state: as in a call, `{"model_a": [...], "model_b": [...]}`.
            return_state: also return the final states.
            decoder: a token chain's `chain.Decoder`; None for greedy.
            return_scores: a token chain's: also return the log probability of each chosen token
                under the model's softmax (before any temperature or cut), `(batch, T, None)`.

        Returns:
            RaggedTensor of shape `(batch, T, None, output_size)`, ragged_rank 2, whose row
            lengths are `steps` or the predicted ones `(batch, T)`, each in `[0, max_steps]`; in
            a token chain the chosen tokens, int32 `(batch, T, None)`. With `return_scores`,
            `(output, scores)`; with `return_state`, the states last: `(output[, scores], states)`.

        Raises:
            ValueError: no `steps` and the model has no lengths part, `x`, `steps` or
                `initial_state` is bad, or `decoder` / `return_scores` given to a real-valued chain.
        """
        decoder = _decoding.check_decoder(decoder, self.vocab_size)
        if return_scores and decoder is None:
            raise ValueError("`return_scores` needs a token chain (built with `vocab_size`); received return_scores=True")
        if steps is not None and decoder is None:
            return self(x, steps, initial_state=initial_state, return_state=return_state)
        if steps is None:
            _lengths.check_generates(self.lengths)
        x = tf.cast(_validate.as_x(x), self.compute_dtype)
        if not self.built:
            self.build(tuple(x.shape))
        if steps is not None:
            steps = _validate.as_array("steps", steps, "(batch, T) or (T,) array of integers") if isinstance(
                steps, (list, tuple, int)) else steps  # fmt: skip
            x, steps = _validate.check_inputs(x, steps, self.input_size, self.max_steps)
        else:
            _validate.check_inputs(x, tf.zeros(tf.shape(x)[:2], tf.int32), self.input_size, None)
        out, states, scores = self._runner.generate(x, initial_state, steps, decoder)
        made = (out, scores) if return_scores else (out,)
        made = (*made, states) if return_state else made
        return made if len(made) > 1 else out

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
        def run(x, steps):
            with self._forward.not_xla():  # the SavedModel's function is not compiled by XLA
                return self.run_flat(x, steps, differentiable=False)[0]

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
