"""Losses and metrics on real inner steps only, with sample weights and replica-wise sums.

Every loss and metric compares the flat values of the ragged output with the flat values of the
ragged target, `(sum(steps), output_size)` each: real inner steps only, never padding.

Under `tf.distribute`, each replica returns its share of the global objective: its weighted
loss *sum* divided by a *global* count (of real steps, or of loss values), and the optimizer
sums gradients over replicas. The gradient is then that of the global objective, whatever the
split of real steps between replicas, so one device and many give the same trajectory.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import keras
import tensorflow as tf

from ._ops import masked, repeat_rows
from ._validate import check_width

#: Reductions of `keras.losses.Loss` that `FlatLoss` honours, `None` meaning "none".
REDUCTIONS = (None, "none", "sum", "sum_over_batch_size", "mean", "mean_with_sample_weight")
_MEANS = ("sum_over_batch_size", "mean")


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
        return masked(y, tf.sequence_mask(steps, tf.shape(y)[2]))
    return y


def ragged_mse(y_true: Any, y_pred: Any) -> tf.Tensor:
    """Mean squared error over the real inner steps of two ragged outputs.

    Args:
        y_true: RaggedTensor of shape `(batch, T, None, D)`, or its flat values `(N, D)`.
        y_pred: the same structure as `y_true` (same row lengths), e.g. `net(x, steps)`.

    Returns:
        Scalar: the mean of `(y_true - y_pred)^2` over every real inner step and channel.

    Raises:
        ValueError: the last dimensions (output sizes) differ.

    Examples:
        >>> import tensorflow as tf
        >>> y = tf.ragged.constant([[[[1.0], [3.0]], []]], ragged_rank=2)
        >>> float(ragged_mse(y, y * 0))
        5.0
    """
    true, pred = flat_values(y_true), flat_values(y_pred)
    check_output_size(true, pred, "y_true", y_true.shape)
    true = tf.cast(true, pred.dtype)
    return tf.reduce_mean(tf.square(true - pred))


def check_output_size(true: tf.Tensor, pred: tf.Tensor, name: str = "y", shape: Any = None) -> None:
    """Raises a ValueError naming the targets `name` (of `shape`) when their width differs from the
    outputs'."""
    check_width(name, true.shape if shape is None else shape, pred.shape[-1])


@keras.saving.register_keras_serializable(package="chain")
class NoiseFloorRatio(keras.metrics.Mean):
    """Masked MSE divided by a dataset's noise floor (`noise^2`): 1.0 is a perfect fit.

    Fed flat values by `Chain`'s train and test steps, so it counts real inner steps only.

    Args:
        noise_floor: the MSE of the true law against the noisy targets, e.g. the
            `noise_floor` entry of a datagen manifest; a finite number > 0.
        name: the metric's name in logs.

    Raises:
        ValueError: `noise_floor` is not a finite number > 0.

    Examples:
        >>> m = NoiseFloorRatio(0.5)
        >>> m.update_state([[1.0, 1.0]], [[0.0, 0.0]])
        >>> float(m.result())
        2.0
    """

    def __init__(self, noise_floor: float, name: str = "mse_over_noise_floor", **kwargs: Any):
        super().__init__(name=name, **kwargs)
        real = isinstance(noise_floor, numbers.Real) and not isinstance(noise_floor, bool)
        if not (real and math.isfinite(noise_floor) and noise_floor > 0):  # inf would make every ratio 0
            raise ValueError(f"`noise_floor` must be a finite number > 0; received {noise_floor!r}")
        self.noise_floor = float(noise_floor)

    def update_state(self, y_true, y_pred, sample_weight=None):
        true, pred = flat_values(y_true), flat_values(y_pred)
        errors = tf.reduce_mean(tf.square(tf.cast(true, pred.dtype) - pred), axis=-1)
        return super().update_state(errors, sample_weight=sample_weight)

    def result(self):
        return super().result() / self.noise_floor

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "noise_floor": self.noise_floor}


# ----------------------------------------------------------------------------- weights


def sample_weights(sample_weight: Any, steps: tf.Tensor) -> tuple[tf.Tensor | None, tf.Tensor | None]:
    """Weights per outer step `(batch, T)` and per real inner step `(sum(steps),)`.

    Args:
        sample_weight: None; `(batch,)` or `(batch, 1)` per sample; or `(batch, T)` per outer
            step, broadcast over that step's inner outputs.
        steps: `(batch, T)` int32.

    Returns:
        `(outer (batch, T), inner (sum(steps),))` float32 in `(b, t, k)` order, or
        `(None, None)` without weights.

    Raises:
        ValueError: `sample_weight` has another rank, or a shape that `steps` cannot take.

    Examples:
        >>> import tensorflow as tf
        >>> outer, inner = sample_weights(tf.constant([2.0, 0.0]), tf.constant([[1, 2], [1, 0]]))
        >>> inner.numpy().tolist()
        [2.0, 2.0, 2.0, 0.0]
    """
    if sample_weight is None:
        return None, None
    if isinstance(sample_weight, tf.RaggedTensor):
        raise ValueError(
            "`sample_weight` must be dense, (batch,) per sample or (batch, T) per outer step; "
            f"received a RaggedTensor of shape {tuple(sample_weight.shape)}"
        )
    w = tf.cast(tf.convert_to_tensor(sample_weight), tf.float32)
    if w.shape.rank is None:  # a graph retraced with relaxed shapes: (batch,), (batch, 1) or (batch, T)
        w = tf.reshape(w, tf.stack([tf.shape(steps)[0], -1]))
    if w.shape.rank == 1:
        w = w[:, None]
    if w.shape.rank != 2 or not _broadcasts(w.shape, steps.shape):
        raise ValueError(
            "`sample_weight` must have shape (batch,) per sample or (batch, T) per outer step, "
            f"like `steps` {tuple(steps.shape)}; received shape {tuple(w.shape)}"
        )
    outer = tf.broadcast_to(w, tf.shape(steps))
    return outer, repeat_rows(tf.reshape(outer, [-1]), tf.reshape(steps, [-1]))


def _broadcasts(w_shape: tf.TensorShape, steps_shape: tf.TensorShape) -> bool:
    for have, want in zip(w_shape, steps_shape):
        if have is not None and want is not None and have not in (1, want):
            return False
    return True


# ----------------------------------------------------------------------------- replicas


def global_count(n: tf.Tensor) -> tf.Tensor:
    """`n` summed over the replicas in sync (itself without a distribution strategy)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return n
    return context.all_reduce(tf.distribute.ReduceOp.SUM, n)


def replica_mean(values: tf.Tensor, weights: tf.Tensor | None = None) -> tf.Tensor:
    """This replica's share of the global mean of `weights * values`: sum / global count.

    Args:
        values: any shape; `weights`, when given, broadcasts to it from the left.
    """
    total = tf.reduce_sum(_weighted(values, weights))
    count = global_count(tf.cast(tf.size(values), values.dtype))
    return tf.math.divide_no_nan(total, count)


def _weighted(values: tf.Tensor, weights: tf.Tensor | None) -> tf.Tensor:
    if weights is None:
        return values
    weights = tf.cast(weights, values.dtype)
    while weights.shape.rank < values.shape.rank:
        weights = weights[..., None]
    return values * weights


# ----------------------------------------------------------------------------- the loss


def squared_error(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Elementwise `(y_true - y_pred)^2`, `(N, D)`: its mean is `ragged_mse`."""
    return tf.square(y_true - y_pred)


def token_cross_entropy(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Sparse categorical cross-entropy `(N,)` of token ids `y_true` `(N,)` from logits `(N, V)`:
    a token chain's default loss."""
    labels = tf.cast(y_true, tf.int32)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=tf.cast(y_pred, tf.float32))


class FlatLoss:
    """The compiled loss on flat values, split into per-element values and a reduction.

    Keras reduces a loss over the batch it is given; here the values stay unreduced so that
    sample weights reach every real inner step, and the mean divides by the *global* count.

    Args:
        spec: None or `chain.ragged_mse` (the mean squared error); a Keras loss name; a
            `keras.losses.Loss`, whose `call` gives the values and whose `reduction` is
            honoured; or a function `(y_true (N, D), y_pred (N, D)) -> (N,) or (N, D)`,
            reduced as Keras reduces plain functions (`"sum_over_batch_size"`). A function that
            returns a scalar is taken as the mean over the rows it was given.

    Reductions: `"sum_over_batch_size"` and `"mean"` divide the weighted sum by the global
    number of loss values; `"mean_with_sample_weight"` by the global sum of their weights;
    `"sum"`, `None` and `"none"` keep the weighted sum (the gradient Keras takes of an unreduced
    loss is that of its sum).
    """

    def __init__(self, spec: Any = None) -> None:
        self.fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
        self.reduction: str | None = "sum_over_batch_size"
        self.dtype = "float32"
        if spec is None or spec is ragged_mse:
            self.fn = squared_error
        elif isinstance(spec, keras.losses.Loss):
            self.fn, self.reduction = spec.call, spec.reduction
            self.dtype = getattr(spec, "dtype", None) or "float32"
        elif isinstance(spec, str) or callable(spec):
            self.fn = keras.losses.get(spec) if isinstance(spec, str) else spec
        else:
            raise ValueError(
                "`loss` must be a Keras loss name, a `keras.losses.Loss` or a function "
                f"(y_true, y_pred) -> values; received {spec!r}"
            )
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"`loss.reduction` must be one of {REDUCTIONS}; received {self.reduction!r}")

    def __call__(self, true: tf.Tensor, pred: tf.Tensor, weights: tf.Tensor | None) -> tf.Tensor:
        """This replica's share of the loss on flat values `(N, D)`, weights `(N,)` or None."""
        true, pred = tf.cast(true, self.dtype), tf.cast(pred, self.dtype)
        values = tf.cast(self.fn(true, pred), self.dtype)
        if values.shape.rank == 0:
            return self._scalar(values, tf.shape(pred)[0], weights)
        weighted = tf.reduce_sum(_weighted(values, weights))
        if self.reduction in _MEANS:
            return tf.math.divide_no_nan(weighted, global_count(tf.cast(tf.size(values), values.dtype)))
        if self.reduction == "mean_with_sample_weight":
            ones = tf.ones_like(values)
            return tf.math.divide_no_nan(weighted, global_count(tf.reduce_sum(_weighted(ones, weights))))
        return weighted

    def _scalar(self, value: tf.Tensor, rows: tf.Tensor, weights: tf.Tensor | None) -> tf.Tensor:
        if weights is not None:
            raise ValueError(
                "the compiled loss returns one scalar per batch, so `sample_weight` cannot "
                "weight its inner steps: return one value per row (N,) or per element (N, D)"
            )
        rows = tf.cast(rows, value.dtype)
        return tf.math.divide_no_nan(value * rows, global_count(rows))
