"""The Keras training face of a `Chain`: compile, fit, evaluate, predict and their steps.

`Chain` inherits it. The steps themselves are functions of `chain._train`; what is here adapts
Keras' entry points to ragged targets and to the chain's options.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import tensorflow as tf

from . import _train


class Training:
    """`keras.Model`'s training methods for a chain (a mixin of `Chain`, before `keras.Model`)."""

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
                `jit_compile` defaults to False rather than Keras' "auto" (XLA on a GPU), which
                needs `max_steps`. `True` compiles `fit`, `evaluate` and `predict` with XLA, and
                needs `max_steps`, which sizes the loops' buffers.

        Raises:
            ValueError: `jit_compile=True` with the `packed` strategy or without `max_steps`, or
                `loss_weights` that is not one number.
        """
        kwargs, weighted, loss_weights = _train.compile_arguments(kwargs, self.options)
        super().compile(optimizer=optimizer, **kwargs)
        self._set_options(dataclasses.replace(self.options, xla=bool(self.jit_compile)))  # as Keras settled it
        self.flat_compile = _train.FlatCompile(loss, metrics, weighted, loss_weights, tokens=self.vocab_size is not None)

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

        Compiled with `jit_compile=True`, the train step is one XLA program per batch shape: ragged
        targets are padded to `max_steps`, `steps` are checked against `max_steps` before the
        step (XLA drops its checks), and the `padded` strategy trains (`auto` picks it).

        Raises:
            ValueError: `class_weight` is given, or the model was compiled with
                `jit_compile=True` and runs the `loop` strategy.
        """
        _train.check_fit_arguments(kwargs, self.options)
        if isinstance(x, tf.data.Dataset):
            kwargs.setdefault("shuffle", False)  # a dataset shuffles itself; Keras only warns
        x = self._checked_for_xla(self._for_replicas(x))
        args, kwargs = self._y_for_xla(x, args, kwargs)
        if kwargs.get("validation_data") is not None:
            kwargs["validation_data"] = self._checked_for_xla(self._for_replicas(kwargs["validation_data"]))
        self._build_before_tracing(x, optimizer=True)
        return super().fit(x, *args, **kwargs)

    def _build_before_tracing(self, data: Any, optimizer: bool = False) -> None:
        """Creates the chain's weights (from the input size of `data`), and with `optimizer` the
        optimizer's, before `fit` or `evaluate` traces its step.

        Variables created while a `tf.function` first traces make it trace a second time, and
        tracing is most of a first `fit`'s or `evaluate`'s time: made here, the step is traced
        once. A stateful chain, or data whose input size cannot be read, is built by the first
        call as before.
        """
        with self.distribute_strategy.scope():  # where Keras would create them in the step
            if not self.built and not self.stateful:
                size = _train.input_size_of(data)
                if size is not None:
                    self.build((None, None, size))
            chosen = getattr(self, "optimizer", None)  # none before `compile`, which Keras then asks for
            if optimizer and self.built and chosen is not None and not chosen.built:
                chosen.build(self.trainable_variables)

    def evaluate(self, x: Any = None, *args: Any, **kwargs: Any) -> Any:
        """`keras.Model.evaluate` on `((x, steps), y[, sample_weight])` batches; see `test_step`."""
        x = self._checked_for_xla(self._for_replicas(x))
        args, kwargs = self._y_for_xla(x, args, kwargs)
        self._build_before_tracing(x)
        return super().evaluate(x, *args, **kwargs)

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
        out = super().predict(self._checked_for_xla(x), *args, **kwargs)
        return _train.uniform_t(out) if isinstance(out, tf.RaggedTensor) else out

    def _checked_for_xla(self, data: Any) -> Any:
        """`data` with its `steps` checked against `max_steps` before a step compiled by XLA,
        which drops a call's checks, reads them (see `_train.steps_checked`)."""
        if not self.options.xla:
            return data
        return _train.steps_checked(data, self.input_size, self.max_steps)

    def _for_replicas(self, data: Any) -> Any:
        """Ragged targets padded where batches are split between replicas, and under XLA, which
        compiles a program per input shape, to `max_steps` once their rows are checked against
        `steps` (see `_train.pad_targets`)."""
        if isinstance(data, tf.data.Dataset) and self.options.xla:
            return _train.pad_targets(data, self.max_steps)
        if isinstance(data, tf.data.Dataset) and self.distribute_strategy.num_replicas_in_sync > 1:
            return _train.pad_targets(data)
        if self.options.xla and isinstance(data, (tuple, list)) and len(data) in (2, 3) and isinstance(data[0], (tuple, list)):
            steps = data[0][1]  # ((x, steps), y[, w])
            return (data[0], _train.padded(data[1], self.max_steps, steps), *data[2:])
        return data

    def _y_for_xla(self, x: Any, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
        """`fit`'s or `evaluate`'s `y` (first of `args`, or keyword) beside inputs `x` = `(x, steps)`,
        checked against `steps` and padded to `max_steps` under XLA."""
        if not self.options.xla or not isinstance(x, (tuple, list)) or len(x) != 2:
            return args, kwargs
        if args:
            return (_train.padded(args[0], self.max_steps, x[1]), *args[1:]), kwargs
        if kwargs.get("y") is not None:
            kwargs = {**kwargs, "y": _train.padded(kwargs["y"], self.max_steps, x[1])}
        return args, kwargs

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
            >>> net = chain.Chain(keras.layers.GRU(4, return_sequences=True), keras.layers.GRUCell(4),
            ...                   output_size=2, max_steps=3, lengths=chain.LengthHead())
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

