"""Checks on `x` and `steps`, made once where they enter the model.

Static problems (rank, dtype, sizes known at trace time) raise `ValueError`, also while tracing.
Value problems raise `ValueError` eagerly and `tf.errors.InvalidArgumentError` in graph mode.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def check_inputs(x, steps, input_size: int | None, max_steps: int | None):
    """Converts and validates the inputs of a call.

    Args:
        x: `(batch, T, input_size)` floats.
        steps: `(batch, T)` or `(T,)` integers in `[0, max_steps]`.
        input_size: the size the model was built for, or None before it is built.
        max_steps: the cap on `steps`, or None.

    Returns:
        `(x, steps)` as tensors, `steps` int32 of shape `(batch, T)`.

    Raises:
        ValueError: a bad rank, dtype, size, or (eagerly) value.
    """
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        x = tf.cast(x, tf.float32)
    steps = _to_int_tensor(steps)
    _check_static(x, steps, input_size)
    if steps.shape.rank == 1:
        steps = tf.broadcast_to(steps[None, :], tf.stack([tf.shape(x)[0], tf.shape(steps)[0]]))
    if tf.executing_eagerly():
        _check_values_eagerly(x, steps, max_steps)
        return x, steps
    return x, _with_graph_asserts(x, steps, max_steps)


def _to_int_tensor(steps) -> tf.Tensor:
    if isinstance(steps, tf.Tensor) or isinstance(steps, tf.Variable):
        dtype = steps.dtype
    else:
        steps = np.asarray(steps)
        dtype = tf.as_dtype(steps.dtype) if steps.dtype != object else None
    if dtype is None or not dtype.is_integer:
        raise ValueError(f"`steps` must hold integers; received dtype {getattr(dtype, 'name', dtype)}")
    return tf.cast(steps, tf.int32)


def _check_static(x: tf.Tensor, steps: tf.Tensor, input_size: int | None) -> None:
    if x.shape.rank != 3:
        raise ValueError(
            f"`x` must have rank 3 (batch, T, input_size); received shape {tuple(x.shape)}"
        )
    if steps.shape.rank not in (1, 2):
        raise ValueError(
            "`steps` must have rank 2 (batch, T) or 1 (T,); received shape "
            f"{tuple(steps.shape)}"
        )
    if input_size is not None and x.shape[-1] is not None and x.shape[-1] != input_size:
        raise ValueError(
            f"`x` must have input_size {input_size}, the size the model was built for; "
            f"received shape {tuple(x.shape)}"
        )
    want = tuple(x.shape[:2]) if steps.shape.rank == 2 else tuple(x.shape[1:2])
    for have, need in zip(tuple(steps.shape), want):
        if have is not None and need is not None and have != need:
            raise ValueError(_mismatch(x.shape, steps.shape))


def _mismatch(x_shape, steps_shape) -> str:
    return (
        "`x` and `steps` must agree on (batch, T): received x of shape "
        f"{tuple(x_shape)} and steps of shape {tuple(steps_shape)}"
    )


def _check_values_eagerly(x: tf.Tensor, steps: tf.Tensor, max_steps: int | None) -> None:
    if tuple(steps.shape) != tuple(x.shape[:2]):
        raise ValueError(_mismatch(x.shape, steps.shape))
    values = steps.numpy()
    if values.size == 0:
        return
    low = np.unravel_index(np.argmin(values), values.shape)
    if values[low] < 0:
        raise ValueError(
            f"`steps` must be >= 0; received a value of {values[low]} at "
            f"(batch={low[0]}, t={low[1]})"
        )
    high = np.unravel_index(np.argmax(values), values.shape)
    if max_steps is not None and values[high] > max_steps:
        raise ValueError(
            f"`steps` must be in [0, {max_steps}] (max_steps); received a value of "
            f"{values[high]} at (batch={high[0]}, t={high[1]})"
        )


def _with_graph_asserts(x: tf.Tensor, steps: tf.Tensor, max_steps: int | None) -> tf.Tensor:
    checks = [
        tf.debugging.assert_equal(
            tf.shape(x)[:2],
            tf.shape(steps),
            message="`x` and `steps` must agree on (batch, T)",
        ),
        tf.debugging.Assert(
            tf.reduce_all(steps >= 0),
            ["`steps` must be >= 0; received a value of", tf.reduce_min(steps)],
        ),
    ]
    if max_steps is not None:
        checks.append(
            tf.debugging.Assert(
                tf.reduce_all(steps <= max_steps),
                [
                    f"`steps` must be in [0, {max_steps}] (max_steps); received a value of",
                    tf.reduce_max(steps),
                ],
            )
        )
    with tf.control_dependencies(checks):
        return tf.identity(steps)
