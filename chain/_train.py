"""Training on ragged targets: the loss, metrics, the train and test steps, and generation.

Every loss and metric compares the flat values of the ragged output with the flat values of the
ragged target, `(sum(steps), output_size)` each: real inner steps only, never padding.

Under `tf.distribute`, each replica divides its loss *sum* by the number of real steps in the
*global* batch, and the optimizer sums gradients over replicas. The gradient is then that of the
global mean, whatever the split of real steps between replicas, so one device and many give the
same trajectory.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from . import _ragged, _validate

STOP_MODES = (None, "token")


def flat_values(y: Any) -> tf.Tensor:
    """The flat values of a ragged `(batch, T, None, D)` tensor; a dense tensor is returned as is."""
    if isinstance(y, tf.RaggedTensor):
        return y.flat_values
    return tf.convert_to_tensor(y)


def target_values(y: Any, steps: tf.Tensor) -> tf.Tensor:
    """Flat values `(sum(steps), D)` of targets given ragged, or padded `(batch, T, L, D)`."""
    if isinstance(y, tf.RaggedTensor):
        return y.flat_values
    y = tf.convert_to_tensor(y)
    if y.shape.rank == 4:
        return tf.boolean_mask(y, tf.sequence_mask(steps, tf.shape(y)[2]))
    return y


def pad_targets(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Maps `((x, steps), y)` with ragged `y` to padded `y` `(batch, T, L, D)`, L the batch's longest.

    `tf.distribute` cannot split ragged batches between replicas; padded targets plus `steps`
    split like any tensor, and each replica's step takes back the real steps only. `Chain.fit`
    and `Chain.evaluate` apply this by themselves under a strategy with several replicas.
    """
    def pad(inputs, y):
        return inputs, y.to_tensor() if isinstance(y, tf.RaggedTensor) else y

    return dataset.map(pad)


def ragged_mse(y_true: Any, y_pred: Any) -> tf.Tensor:
    """Mean squared error over the real inner steps of two ragged outputs.

    Args:
        y_true: RaggedTensor of shape `(batch, T, None, D)`, or its flat values `(N, D)`.
        y_pred: the same structure as `y_true` (same row lengths), e.g. `net(x, steps)`.

    Returns:
        Scalar: the mean of `(y_true - y_pred)^2` over every real inner step and channel.

    Raises:
        ValueError: the last dimensions (output sizes) differ.

    >>> import tensorflow as tf
    >>> y = tf.ragged.constant([[[[1.0], [3.0]], []]], ragged_rank=2)
    >>> float(ragged_mse(y, y * 0))
    5.0
    """
    true, pred = flat_values(y_true), flat_values(y_pred)
    check_output_size(true, pred)
    true = tf.cast(true, pred.dtype)
    return tf.reduce_mean(tf.square(true - pred))


def check_output_size(true: tf.Tensor, pred: tf.Tensor) -> None:
    """Raises a ValueError naming both sizes when the targets' and outputs' widths differ."""
    have, want = true.shape[-1], pred.shape[-1]
    if have is not None and want is not None and have != want:
        raise ValueError(
            f"the dataset's output_size is {have} but the model's output_size is {want}: "
            "build the model with output_size equal to the targets' last dimension"
        )


@keras.saving.register_keras_serializable(package="chain")
class NoiseFloorRatio(keras.metrics.Mean):
    """Masked MSE divided by a dataset's noise floor (`noise^2`): 1.0 is a perfect fit.

    Fed flat values by `Chain`'s train and test steps, so it counts real inner steps only.

    Args:
        noise_floor: the MSE of the true law against the noisy targets, e.g. the
            `noise_floor` entry of a datagen manifest.
        name: the metric's name in logs.

    >>> m = NoiseFloorRatio(0.5)
    >>> m.update_state([[1.0, 1.0]], [[0.0, 0.0]])
    >>> float(m.result())
    2.0
    """

    def __init__(self, noise_floor: float, name: str = "mse_over_noise_floor", **kwargs: Any):
        super().__init__(name=name, **kwargs)
        if not noise_floor > 0:
            raise ValueError(f"`noise_floor` must be > 0; received {noise_floor!r}")
        self.noise_floor = float(noise_floor)

    def update_state(self, y_true, y_pred, sample_weight=None):
        true, pred = flat_values(y_true), flat_values(y_pred)
        errors = tf.reduce_mean(tf.square(tf.cast(true, pred.dtype) - pred), axis=-1)
        return super().update_state(errors, sample_weight=sample_weight)

    def result(self):
        return super().result() / self.noise_floor

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "noise_floor": self.noise_floor}


class Trackers:
    """The metrics a `Chain` reports from `fit` and `evaluate`, besides compiled ones."""

    def __init__(self, predict_lengths: bool, stop: str | None) -> None:
        self.loss = keras.metrics.Mean(name="loss")
        self.mse = keras.metrics.Mean(name="masked_mse")
        self.length = keras.metrics.Mean(name="length_accuracy") if predict_lengths else None
        self.stop = keras.metrics.Mean(name="stop_accuracy") if stop else None

    def all(self) -> list[keras.metrics.Metric]:
        return [m for m in (self.loss, self.mse, self.length, self.stop) if m is not None]


class FlatCompile:
    """The loss and metrics given to `Chain.compile`, applied to flat values.

    Kept out of Keras' own compiled loss and metrics, which expect dense outputs, and out of
    Keras' attribute tracking (a plain object).
    """

    def __init__(self, loss: Any = None, metrics: Any = None) -> None:
        self.loss = loss
        self.metrics = [_metric(m) for m in (metrics or [])]
        self.config = {"loss": loss, "metrics": metrics} if loss is not None or metrics else None


def _metric(spec: Any) -> keras.metrics.Metric:
    if isinstance(spec, keras.metrics.Metric):
        return spec
    found = keras.metrics.get(spec)
    if isinstance(found, keras.metrics.Metric):
        return found
    name = spec if isinstance(spec, str) else getattr(found, "__name__", "metric")
    return keras.metrics.MeanMetricWrapper(found, name=name)


# ----------------------------------------------------------------------------- steps


def unpack(data: Any) -> tuple[tf.Tensor, tf.Tensor, Any]:
    """`((x, steps), y)` -> `(x, steps, y)`, with a clear error for other layouts."""
    if not isinstance(data, (tuple, list)) or len(data) < 2:
        raise ValueError(
            "Chain.fit/evaluate expect a dataset of ((x, steps), y) as `datagen.load` gives; "
            f"received an element of type {type(data).__name__}"
        )
    inputs, y = data[0], data[1]
    if not isinstance(inputs, (tuple, list)) or len(inputs) != 2:
        raise ValueError(
            "Chain.fit/evaluate expect inputs (x, steps); received "
            f"{type(inputs).__name__} {getattr(inputs, 'shape', '')}"
        )
    return inputs[0], inputs[1], y


def forward(net: Any, x: tf.Tensor, steps: tf.Tensor, training: bool) -> dict[str, tf.Tensor]:
    """Runs the chain once and every configured head.

    Returns:
        A dict with `flat` `(N, output_size)`, and when configured `length_logits`
        `(batch, T, max_steps + 1)`, `stop_logits` `(N,)` and `empty_logits` `(batch, T)`.
    """
    ir = net.model_a(x, training=training)
    b_flat = net.b_outputs_from_ir(ir, steps, training=training)
    parts = {"flat": b_flat if net.head is None else net.head(b_flat)}
    if net.predict_lengths:
        parts["length_logits"] = net.length_head(ir)
    if net.stop == "token":
        parts["stop_logits"] = net.stop_head(b_flat)[:, 0]
        parts["empty_logits"] = net.empty_head(ir)[..., 0]
    return parts


def _global_count(n: tf.Tensor) -> tf.Tensor:
    """`n` summed over the replicas in sync (itself without a distribution strategy)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return n
    return context.all_reduce(tf.distribute.ReduceOp.SUM, n)


def _row_losses(loss: Any, true: tf.Tensor, pred: tf.Tensor) -> tf.Tensor:
    """Per-row losses `(N,)` of the compiled loss, or `(N,)` filled with its mean."""
    if loss is None:
        loss = ragged_mse
    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    values = loss.call(true, pred) if isinstance(loss, keras.losses.Loss) else loss(true, pred)
    values = tf.cast(values, pred.dtype)
    if values.shape.rank == 0:
        return tf.fill(tf.shape(pred)[:1], values)
    return tf.reshape(values, [tf.shape(pred)[0], -1])[:, 0] if values.shape.rank > 1 else values


def _mean_over_replicas(values: tf.Tensor) -> tf.Tensor:
    """This replica's share of the global mean of `values`: sum / global count."""
    count = _global_count(tf.cast(tf.size(values), values.dtype))
    return tf.math.divide_no_nan(tf.reduce_sum(values), count)


def objective(net: Any, parts: dict[str, tf.Tensor], y: Any, steps: tf.Tensor) -> tf.Tensor:
    """The loss to differentiate on one replica: output loss plus the length or stop heads'.

    Args:
        net: the Chain.
        parts: `forward`'s dict.
        y: RaggedTensor `(batch, T, None, output_size)`.
        steps: `(batch, T)` int32.

    Returns:
        Scalar. Summed over replicas, it is the global-batch objective.
    """
    true, pred = target_values(y, steps), parts["flat"]
    check_output_size(true, pred)
    true = tf.cast(true, pred.dtype)
    total = _mean_over_replicas(_row_losses(net.flat_compile.loss, true, pred))
    if "length_logits" in parts:
        total += _mean_over_replicas(
            keras.losses.sparse_categorical_crossentropy(
                steps, parts["length_logits"], from_logits=True
            )
        )
    if "stop_logits" in parts:
        stop_labels, empty_labels = stop_targets(steps)
        total += _mean_over_replicas(_bce(stop_labels, parts["stop_logits"]))
        total += _mean_over_replicas(_bce(empty_labels, parts["empty_logits"]))
    if net.losses:
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        total += tf.add_n(net.losses) / replicas
    return total


def _bce(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    return tf.nn.sigmoid_cross_entropy_with_logits(tf.cast(labels, logits.dtype), logits)


def stop_targets(steps: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Labels of the stop head.

    Args:
        steps: `(batch, T)` int32.

    Returns:
        `(last (N,), empty (batch, T))`: `last` is True at the last inner step of each `(b, t)`
        (in flat order), `empty` is True where `steps == 0`.
    """
    flat_steps = tf.reshape(steps, [-1])
    k = tf.ragged.range(flat_steps).flat_values
    n = tf.repeat(flat_steps, flat_steps)
    return tf.equal(k, n - 1), tf.equal(steps, 0)


def update_trackers(net: Any, parts: dict[str, tf.Tensor], y: Any, steps: tf.Tensor,
                    total: tf.Tensor) -> dict[str, tf.Tensor]:  # fmt: skip
    """Updates the built-in and compiled metrics; returns the logs `fit` shows."""
    trackers: Trackers = net.trackers
    true, pred = target_values(y, steps), parts["flat"]
    true = tf.cast(true, pred.dtype)
    rows = tf.cast(tf.shape(pred)[0], pred.dtype)
    # `total` is this replica's share (sum / global rows); weighted by local rows, the tracker
    # sums to the global objective weighted by the batch's real steps.
    local_mean = total * _global_count(rows) / tf.maximum(rows, 1.0)
    trackers.loss.update_state(local_mean, sample_weight=rows)
    errors = tf.reduce_mean(tf.square(true - pred), axis=-1)
    trackers.mse.update_state(errors)
    if trackers.length is not None:
        guess = tf.argmax(parts["length_logits"], axis=-1, output_type=tf.int32)
        trackers.length.update_state(tf.cast(tf.equal(guess, steps), pred.dtype))
    if trackers.stop is not None:
        last, empty = stop_targets(steps)
        hits = tf.concat([tf.equal(parts["stop_logits"] > 0, last),
                          tf.reshape(tf.equal(parts["empty_logits"] > 0, empty), [-1])], 0)  # fmt: skip
        trackers.stop.update_state(tf.cast(hits, pred.dtype))
    return _logs(net, trackers, true, pred)


def _logs(net: Any, trackers: Trackers, true: tf.Tensor, pred: tf.Tensor) -> dict[str, tf.Tensor]:
    compiled = net.flat_compile.metrics
    for metric in compiled:
        metric.update_state(true, pred)
    return {m.name: m.result() for m in [*trackers.all(), *compiled]}


def _ensure_built(net: Any, x: Any) -> None:
    """Builds the model from the first batch, as a Keras call would (while tracing `fit`)."""
    if not net.built:
        net.build(tuple(x.shape))


def train_step(net: Any, data: Any) -> dict[str, tf.Tensor]:
    """One optimisation step on `((x, steps), y)`; see `Chain.train_step`."""
    x, steps, y = unpack(data)
    _ensure_built(net, x)
    x, steps = _validate.check_inputs(x, steps, net.input_size, net.max_steps)
    with tf.GradientTape() as tape:
        parts = forward(net, x, steps, training=True)
        total = objective(net, parts, y, steps)
    variables = net.trainable_variables
    gradients = tape.gradient(total, variables)
    net.optimizer.apply_gradients(zip(gradients, variables))
    return update_trackers(net, parts, y, steps, total)


def test_step(net: Any, data: Any) -> dict[str, tf.Tensor]:
    """One evaluation step on `((x, steps), y)`; see `Chain.test_step`."""
    x, steps, y = unpack(data)
    _ensure_built(net, x)
    x, steps = _validate.check_inputs(x, steps, net.input_size, net.max_steps)
    parts = forward(net, x, steps, training=False)
    total = objective(net, parts, y, steps)
    return update_trackers(net, parts, y, steps, total)


# ----------------------------------------------------------------------------- generation


def generate_with_length_head(net: Any, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Outputs at the lengths the length head predicts.

    Returns:
        `(flat (N, output_size), steps (batch, T) int32)`.
    """
    ir = net.model_a(x, training=False)
    steps = tf.argmax(net.length_head(ir), axis=-1, output_type=tf.int32)
    return net.b_outputs_from_ir(ir, steps, training=False, head=net.head), steps


def generate_with_stop(net: Any, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Runs B at every `(b, t)` until its stop logit fires or `max_steps` is reached.

    In carry mode one loop walks `t` and, inside it, the inner steps of every sample, with a
    finished flag per sample; B's state only moves for samples still running. In reset and init
    modes all `(b, t)` runs go at once.

    Returns:
        `(flat (N, output_size), steps (batch, T) int32)`.
    """
    ir = net.model_a(x, training=False)
    batch, big_t = tf.shape(ir)[0], tf.shape(ir)[1]
    ir_rows = tf.reshape(ir, [-1, ir.shape[-1]])
    adapter = net.step_adapter()
    xp = adapter.project(ir_rows)
    empty = net.empty_head(ir)[..., 0] > 0
    if net.state == "carry":
        dense, steps = _carry_stop_loop(net, adapter, xp, empty, batch, big_t)
    else:
        init = net.initial_states(ir_rows, batch, adapter)
        dense, lengths, _ = _stop_run(net, adapter, xp, init, tf.reshape(empty, [-1]))
        dense = tf.reshape(dense, [batch, big_t, net.max_steps, adapter.output_size])
        steps = tf.reshape(lengths, [batch, big_t])
    flat = tf.boolean_mask(dense, tf.sequence_mask(steps, net.max_steps))
    return (flat if net.head is None else net.head(flat)), steps


def _carry_stop_loop(net, adapter, xp, empty, batch, big_t):
    """Carry mode: B's state flows through the real steps of each sample, t by t."""
    xp_bt = tf.reshape(xp, [batch, big_t, xp.shape[-1]])
    blocks = tf.TensorArray(xp.dtype, size=big_t, element_shape=[None, net.max_steps, None])
    lengths = tf.TensorArray(tf.int32, size=big_t, element_shape=[None])

    def outer(t, states, blocks, lengths):
        dense, n, states = _stop_run(net, adapter, xp_bt[:, t], states, empty[:, t])
        return t + 1, states, blocks.write(t, dense), lengths.write(t, n)

    states = adapter.zero_states(batch, xp.dtype)
    invariants = [tf.TensorShape([None, s]) for s in adapter.state_sizes]
    _, _, blocks, lengths = tf.while_loop(
        lambda t, *_: t < big_t, outer, (0, states, blocks, lengths),
        shape_invariants=(tf.TensorShape([]), invariants, None, None),
    )  # fmt: skip
    dense = tf.transpose(blocks.stack(), [1, 0, 2, 3])
    return dense, tf.transpose(lengths.stack())


def _stop_run(net, adapter, xp, states, done):
    """Inner steps of `rows` runs with per-row finished flags.

    Args:
        xp: `(rows, P)` projected inputs; states: list of `(rows, s)`; done: `(rows,)` bool,
            True for runs that emit nothing.

    Returns:
        `(dense (rows, max_steps, H) zero-padded, lengths (rows,) int32, final states)`.
    """
    cap = net.max_steps
    lengths = tf.zeros(tf.shape(done), tf.int32)
    done = done | (cap == 0)
    outs = tf.TensorArray(xp.dtype, size=cap, element_shape=[None, adapter.output_size])

    def body(k, states, done, lengths, outs):
        out, new = adapter.step(xp, states, False)
        active = ~done
        states = [tf.where(active[:, None], n, o) for n, o in zip(new, states)]
        lengths += tf.cast(active, tf.int32)
        stop = net.stop_head(out)[:, 0] > 0
        done = done | (active & stop) | (lengths >= cap)
        return k + 1, states, done, lengths, outs.write(k, tf.where(active[:, None], out, 0.0))

    def running(k, states, done, *_):
        return (k < cap) & tf.reduce_any(~done)

    k, states, done, lengths, outs = tf.while_loop(running, body, (0, states, done, lengths, outs))
    outs = _fill(outs, k, cap, tf.shape(xp)[0], adapter.output_size, xp.dtype)
    return tf.transpose(outs.stack(), [1, 0, 2]), lengths, states


def _fill(outs: tf.TensorArray, k, cap: int, rows, width: int, dtype) -> tf.TensorArray:
    """Writes zero blocks into the slots `[k, cap)` that an early exit left empty."""
    zeros = tf.zeros(tf.stack([rows, width]), dtype)
    _, outs = tf.while_loop(lambda j, _: j < cap, lambda j, ta: (j + 1, ta.write(j, zeros)), (k, outs))
    return outs


def ragged_generation(flat: tf.Tensor, steps: tf.Tensor) -> tf.RaggedTensor:
    """`(flat, steps)` -> RaggedTensor `(batch, T, None, output_size)`."""
    return _ragged.ragged_from_flat(flat, steps)
