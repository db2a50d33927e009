"""The datasets of a run: facts from `datagen.info` (no shard decoded), samples read once per source."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import datagen
import tensorflow as tf

Source = tuple[Path, "str | None"]


def sources(state: dict[str, Any]) -> dict[str, Source]:
    """Where a run's training and held-out samples come from: `(directory, split)` each.

    Without a separate held-out dataset both come from `data_dir`, split by index.
    """
    data_dir = Path(state["data_dir"])
    if state.get("heldout"):
        return {"train": (data_dir, None), "heldout": (Path(state["heldout"]), None)}
    return {"train": (data_dir, "train"), "heldout": (data_dir, "heldout")}


def describe(directory: Path, split: str | None, fraction: float) -> dict[str, Any]:
    """Sizes, noise floor and sample count of a dataset's split, from its manifest alone.

    Raises:
        datagen.DatasetError: the directory is missing, not a dataset, or its manifest invalid.
        ValueError: the split is empty.
    """
    facts = datagen.info(directory, split=split, heldout_fraction=fraction)
    keys = ("input_size", "output_size", "longest_step", "noise_floor", "samples", "task")
    return {key: facts[key] for key in keys}


def check_sizes(net: Any, info: dict[str, Any], where: str) -> None:
    """Raises a ValueError naming both sizes when a dataset does not fit the model.

    Args:
        net: a built Chain.
        info: `describe` of the dataset.
        where: the dataset's path, for the message.
    """
    model = {"input_size": net.input_size, "output_size": net.output_size}
    for key, size in model.items():
        if size is not None and info[key] != size:
            raise ValueError(f"{where}: the dataset's {key} is {info[key]} but the model's {key} is {size}")
    if net.max_steps is not None and info["longest_step"] > net.max_steps:
        raise ValueError(f"{where}: the dataset's longest_step is {info['longest_step']} but the model's "
                         f"max_steps is {net.max_steps}")  # fmt: skip


def read(source: Source, fraction: float) -> dict[str, Any]:
    """A split's samples as arrays: the one `datagen.read` of this source in a run."""
    directory, split = source
    return datagen.read(directory, split=split, heldout_fraction=fraction)


def batches(data: dict[str, Any], batch_size: int) -> tf.data.Dataset:
    """`((x, steps), y)` batches in sample order, `y` ragged `(batch, T, None, output_size)`."""
    return tf.data.Dataset.from_tensor_slices(_tensors(data)).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _tensors(data: dict[str, Any]) -> tuple[tuple[tf.Tensor, tf.Tensor], tf.RaggedTensor]:
    cells = tf.RaggedTensor.from_row_lengths(data["y_values"], data["row_lengths"], validate=False)
    y = tf.RaggedTensor.from_uniform_row_length(cells, data["steps"].shape[1], validate=False)
    return (tf.constant(data["x"]), tf.constant(data["steps"])), y


def epoch_batches(data: dict[str, Any], batch_size: int, seed: int, first: int,
                  last: int) -> tuple[tf.data.Dataset, int]:  # fmt: skip
    """Training batches for epochs `[first, last)`, each epoch in its own seeded order.

    The order of epoch `e` depends only on `(seed, e)`, so a resumed run sees the batches the
    uninterrupted run would have seen.

    Returns:
        `(dataset of ((x, steps), y), steps per epoch)`.
    """
    (x, steps), y = _tensors(data)
    n = int(data["x"].shape[0])

    def one_epoch(epoch: tf.Tensor) -> tf.data.Dataset:
        order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=tf.stack([seed, epoch]))
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    def gather(index: tf.Tensor):
        return (tf.gather(x, index), tf.gather(steps, index)), tf.gather(y, index)

    epochs = tf.data.Dataset.range(first, last).flat_map(one_epoch)
    return epochs.map(gather).prefetch(tf.data.AUTOTUNE), math.ceil(n / batch_size)
