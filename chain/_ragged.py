"""Conversions between the ragged output and its flat or padded forms."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ragged_common.checks import check_int, check_optional

from ._ops import masked


def ragged_from_flat(flat: tf.Tensor, steps: tf.Tensor) -> tf.RaggedTensor:
    """Builds the ragged output from its flat values.

    Args:
        flat: `(sum(steps), D)`, ordered by sample, then t, then k.
        steps: `(batch, T)` int32, or `(batch, K, T)` (a beam search's K outputs per sample).

    Returns:
        RaggedTensor of shape `(batch, T, None, D)`, ragged_rank 2, row lengths `steps`; or
        `(batch, K, T, None, D)`, ragged_rank 3.
    """
    out = tf.RaggedTensor.from_row_lengths(flat, tf.reshape(steps, [-1]), validate=False)
    shape = tf.shape(steps)
    for axis in range(steps.shape.rank - 1, 0, -1):  # the uniform axes, innermost first
        size = steps.shape[axis] if steps.shape[axis] is not None else shape[axis]
        out = tf.RaggedTensor.from_uniform_row_length(out, size, nrows=tf.reduce_prod(shape[:axis]), validate=False)
    return out


def to_padded(out: tf.RaggedTensor, longest_step: int | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Pads a ragged output to a dense tensor and its mask.

    Args:
        out: RaggedTensor of shape `(batch, T, None, D)`.
        longest_step: the padded length L; `None` means the longest run in `out`.

    Returns:
        `(dense, mask)`: `dense` of shape `(batch, T, L, D)` with zeros at padded positions, and
        `mask` of shape `(batch, T, L)`, True at real positions.

    Raises:
        ValueError: `longest_step` is not an int, is negative, or is shorter than a run of `out`
            (eagerly).

    Examples:
        >>> import tensorflow as tf
        >>> out = from_padded(tf.ones([1, 2, 3, 1]), tf.constant([[1, 3]]))
        >>> dense, mask = to_padded(out)
        >>> mask.numpy().astype(int).tolist()
        [[[1, 0, 0], [1, 1, 1]]]
    """
    lengths = tf.cast(out.values.row_lengths(), tf.int32)
    longest = tf.reduce_max(tf.concat([lengths, [0]], 0))
    if longest_step is not None:
        longest_step = check_optional(check_int, "longest_step", longest_step, 0)
        if tf.executing_eagerly() and int(longest) > longest_step:
            raise ValueError(
                f"`longest_step` must be at least the longest run ({int(longest)}); "
                f"received {longest_step}"
            )
        longest = tf.constant(longest_step, tf.int32)
    steps = tf.reshape(lengths, tf.stack([tf.cast(out.nrows(), tf.int32), -1]))
    mask = tf.sequence_mask(steps, longest)
    dense = tf.scatter_nd(tf.where(mask), out.flat_values, _dense_shape(mask, out.flat_values))
    return dense, mask


def _dense_shape(mask: tf.Tensor, values: tf.Tensor) -> tf.Tensor:
    return tf.concat([tf.shape(mask, out_type=tf.int64), tf.shape(values, out_type=tf.int64)[1:]], 0)


def from_padded(dense: tf.Tensor, steps: tf.Tensor | np.ndarray) -> tf.RaggedTensor:
    """Turns a padded tensor back into the ragged output.

    Args:
        dense: `(batch, T, L, D)`.
        steps: `(batch, T)` integers in `[0, L]`.

    Returns:
        RaggedTensor of shape `(batch, T, None, D)` holding `dense[b, t, :steps[b, t]]`.

    Raises:
        ValueError: `dense` is not rank 4, `steps` does not hold integers, or `steps` does not
            fit `dense` (eagerly).
    """
    dense = tf.convert_to_tensor(dense)
    steps = tf.convert_to_tensor(steps)
    if dense.shape.rank != 4:
        raise ValueError(f"`dense` must have rank 4 (batch, T, L, D); received shape {dense.shape}")
    longest = tf.shape(dense)[2]
    eager = tf.executing_eagerly()
    if eager and tuple(steps.shape) != tuple(dense.shape[:2]):
        raise ValueError(
            f"`steps` must have shape (batch, T) = {tuple(dense.shape[:2])}; received shape {tuple(steps.shape)}"
        )
    if not steps.dtype.is_integer:
        raise ValueError(f"`steps` must hold integers; received dtype {steps.dtype.name}")
    if eager:
        bad = steps.numpy()  # in its own dtype: a cast to int32 first would wrap 2**32 + 1 to 1
        if bad.size and (bad.min() < 0 or bad.max() > int(longest)):
            raise ValueError(
                f"`steps` must be in [0, {int(longest)}] (L); received values in "
                f"[{bad.min()}, {bad.max()}]"
            )
    steps = tf.cast(steps, tf.int32)
    flat = masked(dense, tf.sequence_mask(steps, longest))
    return ragged_from_flat(flat, steps)
