"""``load``: a stored dataset as a ``tf.data.Dataset`` of ragged batches (imports TensorFlow lazily)."""

from __future__ import annotations

import os
from typing import Any

from ragged_common.bounds import INT64_MAX
from ragged_common.checks import check_flag, check_int

from ._params import DEFAULTS, ParameterError
from ._read import read


def windows_per_sample(timesteps: int, window: int) -> int:
    """The number of windows ``load(..., window=window)`` cuts each sample of ``timesteps`` into.

    That is ``ceil(timesteps / window)``: every window has ``window`` outer steps but the last,
    which has the rest.

    Raises:
        ValueError: ``timesteps`` is not a positive integer, or ``window`` is not an integer in
            ``[1, timesteps]``.

    Examples:
        >>> windows_per_sample(16, 5)
        4
    """
    timesteps = check_int("timesteps", timesteps, 1)
    window = check_int("window", window, 1, timesteps)
    return -(-timesteps // window)


def _window_splitter(timesteps: int, window: int) -> Any:
    """A ``flat_map`` function: one batch ``((x, steps), y)`` to its consecutive windows along T."""
    import tensorflow as tf

    bounds = [(start, min(start + window, timesteps)) for start in range(0, timesteps, window)]

    def one(inputs: Any, targets: Any, start: int, stop: int) -> Any:
        x, steps = inputs
        return tf.data.Dataset.from_tensors(((x[:, start:stop], steps[:, start:stop]), targets[:, start:stop]))

    def split(inputs: Any, targets: Any) -> Any:
        dataset = one(inputs, targets, *bounds[0])
        for start, stop in bounds[1:]:
            dataset = dataset.concatenate(one(inputs, targets, start, stop))
        return dataset

    return split


def load(
    directory: str | os.PathLike[str],
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int | None = None,
    verify: bool = False,
    *,
    split: str | None = None,
    heldout_fraction: float = DEFAULTS["heldout_fraction"],
    drop_remainder: bool = False,
    window: int | None = None,
) -> Any:
    """Loads a dataset as batches of ``((x, steps), y)``, whole or in windows along T.

    Shards are read and checked with [`datagen.read`][] (no TensorFlow parsing), so a
    missing or corrupt shard fails here, naming the file, before any training starts.

    With ``window=W`` (truncated backpropagation through time with state carried), each batch of
    ``batch_size`` samples (shuffled as usual when ``shuffle``) is yielded as
    ``windows_per_sample(T, W) = ceil(T / W)`` consecutive elements, its windows in order:
    element ``w`` holds outer steps ``[w * W, min((w + 1) * W, T))`` of the same samples, each in
    the same batch slot, so a stateful model carries slot ``i``'s state from one window to the
    next; reset the state after each group of windows. Windows are never shuffled. Only full
    batches are yielded (``drop_remainder`` is implied), since a stateful model needs a fixed
    batch size. Concatenating a group's windows along T gives back the unwindowed batch exactly.

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
        window: ``None`` for whole samples, or ``W`` in ``[1, T]``: yield each batch as
            consecutive windows of ``W`` outer steps (see above).

    Returns:
        A ``tf.data.Dataset`` whose elements are ``((x, steps), y)``: ``x`` float32
        (batch, T, input_size), ``steps`` int32 (batch, T) and ``y`` a ``tf.RaggedTensor``
        float32 of shape (batch, T, None, output_size), ragged_rank 2, with
        ``y.row_lengths(axis=2) == steps``; for token targets (``datagen.TOKEN_TARGETS``) ``y`` is
        int32 tokens of shape (batch, T, None). With ``window``, T is each window's length
        ``W_w`` (``W``, or less for the last window): x (batch, W_w, input_size), steps
        (batch, W_w), y (batch, W_w, None, output_size), and batch is always ``batch_size``.

    Raises:
        DatasetError: a file is missing, corrupt or hostile.
        ValueError: an argument is out of range; with ``window``, a ``window`` that is not an
            integer in ``[1, T]``, or a ``batch_size`` larger than the split's samples.

    Examples:
        >>> dataset = load("demo-data", batch_size=4)  # doctest: +SKIP
        >>> (x, steps), y = next(iter(dataset))  # doctest: +SKIP
        >>> y.shape  # doctest: +SKIP
        TensorShape([4, 16, None, 4])
        >>> windows = load("demo-data", batch_size=4, window=5)  # doctest: +SKIP
        >>> [y.shape[1] for _, y in windows.take(windows_per_sample(16, 5))]  # doctest: +SKIP
        [5, 5, 5, 1]
    """
    batch_size = check_int("batch_size", batch_size, 1)
    if window is not None:
        window = check_int("window", window, 1)
    if seed is not None:
        seed = check_int("seed", seed, 0, INT64_MAX)
    shuffle = check_flag("shuffle", shuffle)
    drop_remainder = check_flag("drop_remainder", drop_remainder)
    data = read(directory, verify, split=split, heldout_fraction=heldout_fraction)
    samples, timesteps = data["steps"].shape
    if window is not None:
        windows_per_sample(timesteps, window)
        if batch_size > samples:
            raise ParameterError("batch_size", f"<= {samples}, the samples of the split, with `window` (only full "
                                 "batches are yielded)", batch_size)
    import tensorflow as tf

    cells = tf.RaggedTensor.from_row_lengths(data["y_values"], data["row_lengths"], validate=False)
    targets = tf.RaggedTensor.from_uniform_row_length(cells, timesteps, validate=False)
    dataset = tf.data.Dataset.from_tensor_slices(((data["x"], data["steps"]), targets))
    if shuffle:
        dataset = dataset.shuffle(samples, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder or window is not None)
    if window is not None:
        dataset = dataset.flat_map(_window_splitter(timesteps, window))
    return dataset.prefetch(tf.data.AUTOTUNE)
