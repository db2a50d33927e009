"""``load``: a stored dataset as a ``tf.data.Dataset`` of ragged batches (imports TensorFlow lazily)."""

from __future__ import annotations

import os
from typing import Any

from ._params import ParameterError, validate_count
from ._read import read


def load(
    directory: str | os.PathLike[str],
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int | None = None,
    verify: bool = False,
    *,
    split: str | None = None,
    heldout_fraction: float = 0.1,
    drop_remainder: bool = False,
) -> Any:
    """Loads a dataset as batches of ``((x, steps), y)``.

    Shards are read and checked with :func:`datagen.read` (no TensorFlow parsing), so a missing
    or corrupt shard fails here, naming the file, before any training starts.

    Args:
        directory: the dataset directory.
        batch_size: samples per batch, >= 1.
        shuffle: shuffle samples (all of them, not within a window) on every pass.
        seed: the shuffle's seed, for a reproducible order.
        verify: check every shard's sha256 first.
        split: ``None``, ``"train"`` or ``"heldout"``; held-out is the last
            ``ceil(heldout_fraction * n)`` samples by index, training is the rest.
        heldout_fraction: the held-out share, in (0, 1).
        drop_remainder: drop a last, smaller batch (gives a static batch dimension).

    Returns:
        A ``tf.data.Dataset`` whose elements are ``((x, steps), y)``: ``x`` float32
        (batch, T, input_size), ``steps`` int32 (batch, T) and ``y`` a ``tf.RaggedTensor``
        float32 of shape (batch, T, None, output_size), ragged_rank 2, with
        ``y.row_lengths(axis=2) == steps``.

    Raises:
        DatasetError: a file is missing, corrupt or hostile.
        ValueError: an argument is out of range.

    >>> dataset = load("demo-data", batch_size=4)  # doctest: +SKIP
    >>> (x, steps), y = next(iter(dataset))  # doctest: +SKIP
    >>> y.shape  # doctest: +SKIP
    TensorShape([4, 16, None, 4])
    """
    batch_size = validate_count("batch_size", batch_size, 1)
    if seed is not None:
        seed = validate_count("seed", seed, 0, 2**63 - 1)
    if not isinstance(shuffle, bool):
        raise ParameterError("shuffle", f"`shuffle` must be True or False; received {shuffle!r}")
    data = read(directory, verify, split=split, heldout_fraction=heldout_fraction)
    import tensorflow as tf

    timesteps = data["steps"].shape[1]
    cells = tf.RaggedTensor.from_row_lengths(data["y_values"], data["row_lengths"], validate=False)
    targets = tf.RaggedTensor.from_uniform_row_length(cells, timesteps, validate=False)
    dataset = tf.data.Dataset.from_tensor_slices(((data["x"], data["steps"]), targets))
    if shuffle:
        dataset = dataset.shuffle(len(data["x"]), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
