"""The train, test and predict steps of `Chain` on ragged targets, and what `compile` holds.

The loss and metrics see the flat values of the output and of the target, `(sum(steps), D)`:
real inner steps only (`chain._losses`). Sample weights, `(batch,)` per sample or `(batch, T)`
per outer step, reach every real inner step of their sample or step. Under `tf.distribute` each
replica returns its share of the global objective (see `chain._losses`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import keras
import tensorflow as tf

from . import _validate
from ._losses import FlatLoss, global_count, replica_mean, sample_weights, target_values, token_cross_entropy
from ._options import ChainOptions, one_loss_weight
from ._losses import NoiseFloorRatio as NoiseFloorRatio
from ._losses import flat_values as flat_values
from ._losses import ragged_mse as ragged_mse
from ._lengths import stop_targets as stop_targets

if TYPE_CHECKING:
    from ._model import Chain


def pad_targets(dataset: tf.data.Dataset, length: int | None = None) -> tf.data.Dataset:
    """Maps `((x, steps), y)` with ragged `y` to padded `y` `(batch, T, L, D)`, L the batch's
    longest, or `length`.

    `tf.distribute` cannot split ragged batches between replicas; padded targets plus `steps`
    split like any tensor, and each replica's step takes back the real steps only. `Chain.fit`
    and `Chain.evaluate` apply this by themselves under a strategy with several replicas, and
    under `jit_compile=True` with `length` = `max_steps`, so that XLA compiles one program per
    batch shape rather than one per count of real steps. A third element (sample weights)
    passes through.
    """
    def pad(inputs, y, *weights):
        return (inputs, padded(y, length, steps=inputs[1] if length is not None else None), *weights)

    return dataset.map(pad)


def padded(y: Any, length: int | None = None, steps: Any = None) -> Any:
    """Ragged targets `y` `(batch, T, None, D)` (or a token chain's `(batch, T, None)`) as a tensor
    `(batch, T, L, D)` (`(batch, T, L)`), L their longest or `length`; other targets as they are.

    With `steps`, `y` is first checked to have `steps[b, t]` rows at every `(b, t)`
    (`_validate.check_target_rows`): padded, rows of other lengths could no longer be told apart.
    """
    if not isinstance(y, tf.RaggedTensor):
        return y
    if steps is not None:
        y = _validate.check_target_rows(y, tf.cast(steps, tf.int32))
    if length is None:
        return y.to_tensor()
    return y.to_tensor(shape=[None, None, length] + [None] * (y.shape.rank - 3))


class Trackers:
    """The metrics a `Chain` reports from `fit` and `evaluate`, besides compiled ones."""

    def __init__(self, lengths: Any = None, tokens: bool = False) -> None:
        self.loss = keras.metrics.Mean(name="loss")
        self.mse = None if tokens else keras.metrics.Mean(name="masked_mse")
        self.accuracy = keras.metrics.Mean(name="token_accuracy") if tokens else None
        self.perplexity = Perplexity(name="perplexity") if tokens else None
        self.lengths = keras.metrics.Mean(name=lengths.metric) if lengths is not None else None

    def all(self) -> list[keras.metrics.Metric]:
        return [m for m in (self.loss, self.mse, self.accuracy, self.perplexity, self.lengths) if m is not None]

    def update_outputs(self, true: tf.Tensor, pred: tf.Tensor) -> None:
        """The unweighted metrics of flat targets and outputs: `masked_mse`, or a token chain's
        `token_accuracy` and `perplexity`."""
        if self.mse is not None:
            self.mse.update_state(tf.reduce_mean(tf.square(tf.cast(true, tf.float32) - pred), axis=-1))
            return
        labels = tf.cast(true, tf.int32)
        self.accuracy.update_state(tf.cast(tf.equal(tf.argmax(pred, -1, output_type=tf.int32), labels), tf.float32))
        self.perplexity.update_state(token_cross_entropy(labels, pred))


@keras.saving.register_keras_serializable(package="chain")
class Perplexity(keras.metrics.Mean):
    """`exp` of the mean cross-entropy (in nats) it is fed: a token chain's perplexity over real tokens."""

    def result(self):
        return tf.exp(super().result())


class FlatCompile:
    """The loss and metrics given to `Chain.compile`, applied to flat values.

    Kept out of Keras' own compiled loss and metrics, which expect dense outputs, and out of
    Keras' attribute tracking (a plain object). `metrics` ignore sample weights and
    `weighted_metrics` use them, as in Keras.
    """

    def __init__(self, loss: Any = None, metrics: Any = None, weighted_metrics: Any = None,
                 loss_weights: float | None = None, tokens: bool = False) -> None:  # fmt: skip
        self.loss = FlatLoss(token_cross_entropy if tokens and loss is None else loss)
        self.metrics = [_metric(m) for m in (metrics or [])]
        taken = {m.name for m in self.metrics}
        self.weighted_metrics = [_metric(m, taken) for m in (weighted_metrics or [])]
        self.loss_weight = 1.0 if loss_weights is None else float(loss_weights)
        given = {"loss": loss, "metrics": metrics, "weighted_metrics": weighted_metrics,
                 "loss_weights": loss_weights}  # fmt: skip
        self.config = {k: v for k, v in given.items() if v is not None and v != []} or None

    def all_metrics(self) -> list[keras.metrics.Metric]:
        return [*self.metrics, *self.weighted_metrics]


def _metric(spec: Any, taken: set[str] = frozenset()) -> keras.metrics.Metric:
    """A metric from its spec; named `weighted_<name>` when `<name>` is `taken` (as in Keras)."""
    if isinstance(spec, keras.metrics.Metric):
        return spec
    found = keras.metrics.get(spec)
    if isinstance(found, keras.metrics.Metric):
        if found.name not in taken:
            return found
        found = type(found).from_config({**found.get_config(), "name": f"weighted_{found.name}"})
        return found
    name = spec if isinstance(spec, str) else getattr(found, "__name__", "metric")
    return keras.metrics.MeanMetricWrapper(found, name=f"weighted_{name}" if name in taken else name)


# ----------------------------------------------------------------------------- compile and fit


def compile_arguments(kwargs: dict[str, Any], options: ChainOptions) -> tuple[dict[str, Any], Any, float | None]:
    """`(kwargs for keras.Model.compile, weighted_metrics, loss_weights)` of `Chain.compile`.

    Raises:
        ValueError: `jit_compile=True` with the `packed` strategy or without `max_steps`, or
            `loss_weights` that is not one number.
    """
    kwargs = dict(kwargs)
    weighted = kwargs.pop("weighted_metrics", None)
    loss_weights = one_loss_weight(kwargs.pop("loss_weights", None))
    jit = kwargs.get("jit_compile", "auto")
    kwargs["jit_compile"] = False if jit == "auto" else jit
    if kwargs["jit_compile"] and options.strategy == "packed":
        raise ValueError(
            "`jit_compile=True` cannot compile the 'packed' strategy: its shapes depend on the "
            "values of `steps`. Build the Chain with strategy='auto' (which runs 'padded' under XLA), "
            "'padded' or 'loop' for XLA inference, or compile with jit_compile=False"
        )
    if kwargs["jit_compile"] and options.max_steps is None:
        raise ValueError(
            "`jit_compile=True` needs the chain's `max_steps`, the largest value `steps` takes: "
            "XLA compiles a program for each shape of its buffers, and without that bound they "
            "are sized by the values of `steps`, one compilation per batch; received max_steps=None"
        )
    return kwargs, weighted, loss_weights


def check_fit_arguments(kwargs: dict[str, Any], options: ChainOptions) -> None:
    """Refuses what `Chain.fit` cannot do: `class_weight`, and the `loop` strategy under XLA.

    Raises:
        ValueError: `class_weight` is given, or the model was compiled with `jit_compile=True`
            and runs the `loop` strategy.
    """
    if kwargs.get("class_weight") is not None:
        raise ValueError(
            "`class_weight` does not apply to a Chain: its targets are ragged real-valued "
            "sequences, not class labels. Weight samples or outer steps with "
            "`sample_weight` of shape (batch,) or (batch, T) instead; received class_weight="
            f"{kwargs['class_weight']!r}"
        )
    if options.xla and options.resolved_strategy() == "loop":
        raise ValueError(
            "`fit` under `jit_compile=True` trains the 'padded' strategy: the gradient of the "
            "'loop' strategy's loop over T and its inner loops does not compile under XLA. Build "
            "the Chain with strategy='auto' or 'padded' to train with XLA, or compile with "
            "jit_compile=False; received strategy='loop'"
        )


# ----------------------------------------------------------------------------- data


def unpack(data: Any) -> tuple[tf.Tensor, tf.Tensor, Any, Any]:
    """`((x, steps), y)` or `((x, steps), y, sample_weight)` -> `(x, steps, y, sample_weight)`."""
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
        raise ValueError(
            "Chain.fit/evaluate expect a dataset of ((x, steps), y) as `datagen.load` gives, or "
            f"((x, steps), y, sample_weight); received an element of type {type(data).__name__}"
            + (f" with {len(data)} parts" if isinstance(data, (tuple, list)) else "")
        )
    inputs, y = data[0], data[1]
    if not isinstance(inputs, (tuple, list)) or len(inputs) != 2:
        raise ValueError(
            "Chain.fit/evaluate expect inputs (x, steps); received "
            f"{type(inputs).__name__} {getattr(inputs, 'shape', '')}"
        )
    return inputs[0], inputs[1], y, data[2] if len(data) == 3 else None


def input_size_of(data: Any) -> int | None:
    """The last dimension of `x` in `fit`'s data: a dataset of `((x, steps), y[, w])` or the
    inputs `(x, steps)`; None where it cannot be read without drawing a batch."""
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        while isinstance(spec, (tuple, list)) and spec:
            spec = spec[0]
        shape = getattr(spec, "shape", None)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        shape = getattr(data[0], "shape", None)
    else:
        shape = None
    if shape is None or len(shape) != 3 or shape[-1] is None:
        return None
    return int(shape[-1])


def predict_inputs(data: Any) -> tuple[Any, Any]:
    """`(x, steps)` from a predict batch: `(x, steps)`, `((x, steps),)` or `((x, steps), y[, w])`.

    `x` alone (a tensor, `(x,)` or `[x]`) gives `steps` None: the lengths are to be predicted.
    """
    while isinstance(data, (tuple, list)) and len(data) == 1:
        data = data[0]
    if not isinstance(data, (tuple, list)):
        return data, None
    if data and isinstance(data[0], (tuple, list)):
        data = data[0]
    if len(data) != 2:
        raise ValueError(
            "Chain.predict expects inputs (x, steps), x alone (with predicted lengths), or a dataset of "
            f"those or of ((x, steps), y); received {_describe(data)}"
        )
    return data[0], data[1]


def steps_checked(data: Any, input_size: int | None, max_steps: int) -> Any:
    """`data` of `fit`, `predict` or `evaluate` with its `steps` checked against `max_steps` here, where
    a step compiled by XLA would not: XLA drops the checks of a call, and a value above
    `max_steps` would overrun the buffers it sizes.

    Arrays are checked now (a `ValueError`); a dataset's batches as they are read (a
    `tf.errors.InvalidArgumentError` that says the same). Other data (a generator, a
    `keras.utils.PyDataset`) cannot be checked before XLA reads it, and is refused with a
    `ValueError`.
    """
    if isinstance(data, tf.data.Dataset):
        return data.map(lambda *batch: _with_steps_checked(batch if len(batch) > 1 else batch[0], input_size, max_steps))
    try:
        x, steps = predict_inputs(data)
    except ValueError:
        return data
    if steps is None and getattr(x, "shape", None) is None:
        raise ValueError(
            "Under jit_compile=True, `fit`, `predict` and `evaluate` take arrays or a tf.data.Dataset, whose "
            "`steps` they check against `max_steps` before the compiled step (XLA drops the checks); "
            f"received {_describe(data)}. Pass tf.data.Dataset.from_generator(...) or compile with "
            "jit_compile=False"
        )
    if steps is not None:
        _validate.check_inputs(x, steps, input_size, max_steps)
    return data


def _with_steps_checked(batch: Any, input_size: int | None, max_steps: int) -> Any:
    """A dataset batch `(x, steps)` or `((x, steps), ...)` with its `steps` checked in graph asserts."""
    if not isinstance(batch, (tuple, list)):
        return batch  # x alone: lengths are predicted, within max_steps
    if batch and isinstance(batch[0], (tuple, list)) and len(batch[0]) == 2:
        return ((batch[0][0], _checked(*batch[0], input_size, max_steps)), *batch[1:])
    if len(batch) == 2:
        return batch[0], _checked(*batch, input_size, max_steps)
    return batch


def _checked(x: Any, steps: Any, input_size: int | None, max_steps: int) -> tf.Tensor:
    """`steps` as they are, once `check_inputs` has passed them."""
    with tf.control_dependencies([_validate.check_inputs(x, steps, input_size, max_steps)[1]]):
        return tf.identity(steps)


def _describe(data: Any) -> str:
    if isinstance(data, (tuple, list)):
        return f"a {type(data).__name__} of {len(data)} parts"
    return f"a {type(data).__name__}{_of_shape(data)}"


def _of_shape(data: Any) -> str:
    shape = getattr(data, "shape", None)
    return "" if shape is None else f" of shape {tuple(shape)}"


def check_predict_lengths(net: "Chain", x: Any) -> None:
    """Raises the ValueError of a predict without `steps` on a chain that cannot predict them."""
    if net.lengths is None:
        raise ValueError(
            "`Chain.predict` without `steps` needs predicted lengths: build the Chain with "
            "`lengths=chain.LengthHead()` or `lengths=chain.StopToken()`, or pass `(x, steps)`; "
            f"received x{_of_shape(x)} and lengths=None"
        )


# ----------------------------------------------------------------------------- steps


def forward(net: "Chain", x: tf.Tensor, steps: tf.Tensor, training: bool, y: Any = None) -> dict[str, tf.Tensor]:
    """Runs the chain once and every configured head; with `feedback`, `y` feeds `prev`.

    Returns:
        A dict with `flat` `(N, output_size)` and the length part's logits (see `chain.Lengths`).
    """
    targets = y if getattr(net, "feedback", False) else None
    ir, b_flat = net.forward_parts(x, steps, training=training, differentiable=training, targets=targets)
    parts = {"flat": b_flat if net.head is None else net.head(b_flat)}
    if net.lengths is not None:
        parts.update(net.lengths.logits(net.length_layers, ir, b_flat))
    return parts


def objective(net: "Chain", parts: dict[str, tf.Tensor], y: Any, steps: tf.Tensor,
              weights: tuple[Any, Any] = (None, None)) -> tf.Tensor:  # fmt: skip
    """The float32 loss to differentiate on one replica: output loss plus the heads' losses.

    Args:
        net: the Chain.
        parts: `forward`'s dict.
        y: RaggedTensor `(batch, T, None, output_size)`, or padded `(batch, T, L, output_size)`.
        steps: `(batch, T)` int32.
        weights: `sample_weights`' `(outer (batch, T), inner (N,))`, or `(None, None)`.

    Returns:
        Scalar float32. Summed over replicas, it is the global-batch objective.
    """
    outer, inner = weights
    true, pred = target_values(y, steps), parts["flat"]  # widths checked where y enters (`_prepare`)
    compiled: FlatCompile = net.flat_compile
    total = compiled.loss_weight * compiled.loss(true, pred, inner)
    if net.lengths is not None:
        total += net.lengths.loss(parts, steps, outer, inner)
    if net.losses:
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        total += tf.add_n([tf.cast(v, tf.float32) for v in net.losses]) / replicas
    return total


def update_trackers(net: "Chain", parts: dict[str, tf.Tensor], y: Any, steps: tf.Tensor,
                    total: tf.Tensor, inner: tf.Tensor | None = None) -> dict[str, tf.Tensor]:  # fmt: skip
    """Updates the built-in and compiled metrics; returns the logs `fit` shows.

    `masked_mse` and compiled `metrics` are unweighted; `weighted_metrics` get `inner` `(N,)`.
    """
    trackers: Trackers = net.trackers
    true = target_values(y, steps)
    pred = tf.cast(parts["flat"], tf.float32)
    rows = tf.cast(tf.shape(pred)[0], tf.float32)
    # `total` is this replica's share of the batch objective; weighted by local rows, the
    # tracker sums to the global objective weighted by the batch's real steps.
    trackers.loss.update_state(total * global_count(rows) / tf.maximum(rows, 1.0), sample_weight=rows)
    trackers.update_outputs(true, pred)
    true = tf.cast(true, tf.float32)
    if trackers.lengths is not None:
        trackers.lengths.update_state(net.lengths.hits(parts, steps))
    compiled: FlatCompile = net.flat_compile
    for metric in compiled.metrics:
        metric.update_state(true, pred)
    for metric in compiled.weighted_metrics:
        metric.update_state(true, pred, sample_weight=inner)
    return {m.name: m.result() for m in [*trackers.all(), *compiled.all_metrics()]}


def _ensure_built(net: "Chain", x: Any) -> None:
    """Builds the model from the first batch, as a Keras call would (while tracing `fit`)."""
    if not net.built:
        net.build(tuple(x.shape))


def _prepare(net: "Chain", data: Any) -> tuple[tf.Tensor, tf.Tensor, Any, tuple[Any, Any]]:
    x, steps, y, sample_weight = unpack(data)
    _ensure_built(net, x)
    x, steps = _validate.check_inputs(x, steps, net.input_size, net.max_steps)
    if net.vocab_size is not None:  # flat token ids from here on
        return x, steps, _validate.check_token_targets(y, steps, net.vocab_size, "y"), sample_weights(sample_weight, steps)
    _validate.check_width("y", getattr(y, "shape", None), net.output_size or net.step_adapter().output_size)
    y = _validate.check_target_rows(y, steps)
    return x, steps, y, sample_weights(sample_weight, steps)


def train_step(net: "Chain", data: Any) -> dict[str, tf.Tensor]:
    """One optimisation step on `((x, steps), y[, sample_weight])`; see `Chain.train_step`."""
    x, steps, y, weights = _prepare(net, data)
    with tf.GradientTape() as tape:
        parts = forward(net, x, steps, training=True, y=y)
        total = objective(net, parts, y, steps, weights)
        scaled = net.optimizer.scale_loss(total)  # a no-op unless a LossScaleOptimizer
    variables = net.trainable_variables
    gradients = tape.gradient(scaled, variables)
    net.optimizer.apply_gradients(zip(gradients, variables))
    return update_trackers(net, parts, y, steps, total, weights[1])


def compute_loss(net: "Chain", x: Any, y: Any, y_pred: Any, sample_weight: Any, training: bool) -> tf.Tensor:
    """The loss of one batch, as `train_step` computes it; see `Chain.compute_loss`."""
    if not isinstance(x, (tuple, list)) or len(x) != 2:
        raise ValueError(f"`x` must be the inputs (x, steps), as fit takes them; received {_describe(x)}")
    if y is None:
        raise ValueError("`y` must be the targets (batch, T, None, output_size); received None")
    if y_pred is not None and net.lengths is not None:
        raise ValueError(
            f"`y_pred` holds no logits for the lengths part {net.lengths!r}, whose loss reads IR and "
            "B's outputs: pass y_pred=None, and compute_loss runs the chain on x; received a y_pred"
        )
    data = (x, y) if sample_weight is None else (x, y, sample_weight)
    x, steps, y, weights = _prepare(net, data)
    parts = forward(net, x, steps, training, y) if y_pred is None else {"flat": flat_values(y_pred)}
    return objective(net, parts, y, steps, weights)


def test_step(net: "Chain", data: Any) -> dict[str, tf.Tensor]:
    """One evaluation step on `((x, steps), y[, sample_weight])`; see `Chain.test_step`."""
    x, steps, y, weights = _prepare(net, data)
    parts = forward(net, x, steps, training=False, y=y)
    total = objective(net, parts, y, steps, weights)
    return update_trackers(net, parts, y, steps, total, weights[1])


def predict_step(net: "Chain", data: Any) -> tf.RaggedTensor:
    """The ragged output `(batch, T, None, output_size)` of one predict batch."""
    x, steps = predict_inputs(data)
    if steps is None:
        check_predict_lengths(net, x)
        return net.generate(x)
    return net(x, steps, training=False)


def uniform_t(out: tf.RaggedTensor) -> tf.RaggedTensor:
    """`out` `(n, None, None, D)` as `(n, T, None, D)` when every row has the same T.

    Keras' `predict` joins batches with `tf.concat`, which forgets that T is uniform.

    >>> import tensorflow as tf
    >>> out = tf.concat([tf.ragged.constant([[[[1.0]], []]], ragged_rank=2)] * 2, axis=0)
    >>> uniform_t(out).shape.as_list()
    [2, 2, None, 1]
    """
    if out.ragged_rank < 2 or out.uniform_row_length is not None:
        return out
    lengths = out.row_lengths()
    if out.nrows() == 0 or not bool(tf.reduce_all(lengths == lengths[0])):
        return out
    return tf.RaggedTensor.from_uniform_row_length(out.values, int(lengths[0]), nrows=out.nrows())
