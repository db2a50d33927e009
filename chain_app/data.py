"""The datasets of a run: facts from `datagen.info` (no shard decoded), samples read once per source."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datagen
import numpy as np
import tensorflow as tf

from . import laws

if TYPE_CHECKING:
    from chain import Chain

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
    """Sizes, floor, sample count and law digest (`laws.law_digest`) of a dataset's split, from its
    manifest alone.

    Returns:
        `input_size`, `output_size`, `longest_step`, `noise_floor` (None for tokens), `samples`,
        `task`, `timesteps`, `vocab_size` (a token dataset's `V`, else None), `law_digest` and
        `real_feature` (see `real_feature`); a token dataset's `cross_entropy_floor` (see
        `cross_entropy_floor`) and `baselines` (see `baselines`) besides.

    Raises:
        datagen.DatasetError: the directory is missing, not a dataset, or its manifest invalid.
        ValueError: the split is empty.
    """
    facts = datagen.info(directory, split=split, heldout_fraction=fraction)
    manifest = facts["manifest"]
    keys = ("input_size", "output_size", "longest_step", "noise_floor", "samples", "task", "timesteps", "vocab_size")
    described = {**{key: facts[key] for key in keys}, "law_digest": laws.law_digest(manifest),
                 "real_feature": real_feature(manifest)}  # fmt: skip
    if facts["vocab_size"] is not None:
        described["cross_entropy_floor"] = cross_entropy_floor(directory, split, fraction, manifest["law"])
        described["baselines"] = baselines(manifest, split, fraction)
    return described


def real_feature(manifest: dict[str, Any]) -> int | None:
    """The feature of `x` that is 1 on real outer steps and 0 on padding: imported chorales'
    `in_chorale` (a chorale's last window is padded after its end); None where every outer step
    is real (made data)."""
    return datagen.CHORALE_FEATURES.index("in_chorale") if manifest["params"]["task"] == "chorales" else None


def baselines(manifest: dict[str, Any], split: str | None, fraction: float) -> dict[str, float | None] | None:
    """The baselines an imported dataset's manifest holds (`datagen import chorales`), for the
    split they were scored on: its held-out split at the manifest's `heldout_fraction`. None for
    another split or fraction, and for made data.

    Returns:
        `unigram_cross_entropy` and `bigram_cross_entropy` (nats per token, end tokens left out:
        None where the dataset's runs end with end tokens, which a chain's score counts), and
        `majority_length_accuracy` and `logistic_length_accuracy` (of the count of tokens per
        real outer step).
    """
    figures, law = manifest.get("baselines"), manifest["law"]
    if not isinstance(figures, dict) or split != figures["split"] or fraction != law["heldout_fraction"]:
        return None
    tokens, counts = figures["tokens"], figures["counts"]
    ends = law["encoding"]["runs_end_with_end_token"]
    return {"unigram_cross_entropy": None if ends else tokens["unigram"]["cross_entropy"],
            "bigram_cross_entropy": None if ends else tokens["bigram"]["cross_entropy"],
            "majority_length_accuracy": counts["majority"]["accuracy"],
            "logistic_length_accuracy": counts["logistic"]["accuracy"]}  # fmt: skip


def cross_entropy_floor(directory: Path, split: str | None, fraction: float, law: dict[str, Any]) -> float | None:
    """The law's cross-entropy (nats per token) on a token dataset's split; None without tokens,
    and for imported data, which no law made.

    The manifest gives it for the whole dataset and for the splits at its `heldout_fraction`;
    at another fraction it is computed from the split's samples (`law_cross_entropy`).
    """
    if "cross_entropy_floor" not in law:
        return None
    if split is None or law["heldout_fraction"] == fraction:
        return law["cross_entropy_floor"][split or "all"]
    return law_cross_entropy(datagen.read(directory, split=split, heldout_fraction=fraction))


def law_cross_entropy(samples: dict[str, Any]) -> float | None:
    """The mean of `-log p` over a token dataset's samples, `p` the probability the law gave each
    sampled token (`y_clean_values` is the distribution each was drawn from); None without tokens."""
    tokens = samples["y_values"]
    if not tokens.size:
        return None
    chosen = np.take_along_axis(samples["y_clean_values"], tokens[:, None].astype(np.int64), axis=1)[:, 0]
    return float(-np.mean(np.log(chosen.astype(np.float64))))


def check_sizes(net: "Chain", info: dict[str, Any], where: str) -> None:
    """Raises a ValueError naming both sizes when a dataset does not fit the model.

    A token dataset fits a token chain of its vocabulary, real-valued data a chain of its
    output size; both need the model's input size and at most its `max_steps`.

    Args:
        net: a built Chain.
        info: `describe` of the dataset.
        where: the dataset's path, for the message.
    """
    vocab, theirs = net.vocab_size, info.get("vocab_size")
    if theirs != vocab:
        shown = {None: "None (real-valued targets)"}
        raise ValueError(f"{where}: the dataset's vocab_size is {shown.get(theirs, theirs)} but the model's "
                         f"vocab_size is {shown.get(vocab, vocab)}")  # fmt: skip
    model = {"input_size": net.input_size, "output_size": None if vocab is not None else net.output_size}
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
    return tf.data.Dataset.from_tensor_slices(tensors(data)).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def first_samples(data: dict[str, Any], count: int | None) -> dict[str, Any]:
    """The first `count` samples of `read`'s arrays (all of them for None or more than there are)."""
    steps = data["steps"]
    if count is None or count >= len(steps):
        return data
    real = int(steps[:count].sum())
    rows = {key: value[:real] for key, value in data.items() if key.startswith("y_")}
    return {**data, "x": data["x"][:count], "steps": steps[:count], **rows,
            "row_lengths": data["row_lengths"][: count * steps.shape[1]]}  # fmt: skip


def tensors(data: dict[str, Any]) -> tuple[tuple[tf.Tensor, tf.Tensor], tf.RaggedTensor]:
    """`((x, steps), y)` of `read`'s arrays, `y` ragged `(n, T, None, output_size)` (tokens: `(n, T, None)`)."""
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
    (x, steps), y = tensors(data)
    n = int(data["x"].shape[0])

    def one_epoch(epoch: tf.Tensor) -> tf.data.Dataset:
        order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=tf.stack([seed, epoch]))
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    def gather(index: tf.Tensor):
        return (tf.gather(x, index), tf.gather(steps, index)), tf.gather(y, index)

    epochs = tf.data.Dataset.range(first, last).flat_map(one_epoch)
    return epochs.map(gather).prefetch(tf.data.AUTOTUNE), math.ceil(n / batch_size)


def window_batches(data: dict[str, Any], batch_size: int, seed: int, first: int, last: int,
                   window: int) -> tuple[tf.data.Dataset, int, int]:  # fmt: skip
    """`epoch_batches` cut into windows: each full batch of samples, then its windows in order.

    Batch `i` of an epoch yields `ceil(T / window)` consecutive elements `((x, steps), y)` of
    `window` outer steps (the last may be shorter), batch slot `b` holding the same sample in
    each. Only full batches are made, since a stateful chain keeps a state per batch slot.

    Returns:
        `(dataset, elements per epoch, windows per batch)`.
    """
    (x, steps), y = tensors(data)
    n, big_t = int(data["x"].shape[0]), int(data["x"].shape[1])
    per_batch = math.ceil(big_t / window)

    def one_epoch(epoch: tf.Tensor) -> tf.data.Dataset:
        order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=tf.stack([seed, epoch]))
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=True)

    def windows(index: tf.Tensor) -> tf.data.Dataset:
        return tf.data.Dataset.range(per_batch).map(lambda w: cut(index, tf.cast(w, tf.int32)))

    def cut(index, w):
        start, stop = w * window, tf.minimum((w + 1) * window, big_t)
        y_b = tf.gather(y, index)
        return (tf.gather(x, index)[:, start:stop], tf.gather(steps, index)[:, start:stop]), y_b[:, start:stop]

    epochs = tf.data.Dataset.range(first, last).flat_map(one_epoch).flat_map(windows)
    return epochs.prefetch(tf.data.AUTOTUNE), (n // batch_size) * per_batch, per_batch
