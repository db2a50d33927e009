"""Scores of a model on stored data, the run's `report.json`, and `evaluate_run`."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from ragged_common.bounds import INT32_MAX
from ragged_common.checks import check_int

from . import data, floors, laws, runs
from .options import check_generate_option

if TYPE_CHECKING:
    from chain import Chain

def score(net: "Chain", batches: tf.data.Dataset, info: dict[str, Any]) -> dict[str, Any]:
    """Scores a model on batches of a dataset whose `data.describe` is `info`.

    Returns:
        `mse` (masked, over real inner steps), `noise_floor`, `samples`, then
        `mse_over_noise_floor` when the noise floor is > 0 (else `mse_over_noise_floor_omitted`
        with the reason), and `length_accuracy` (exact match of predicted and true `steps` per
        real `(b, t)`) when the model predicts lengths. A token run's are `cross_entropy` (nats per
        token, over real inner steps), `cross_entropy_floor` (the law's), `samples`,
        `cross_entropy_over_floor` (or `cross_entropy_over_floor_omitted`), `perplexity`,
        `perplexity_floor` (`exp` of the floor) and `token_accuracy` (of the argmax, teacher-forced),
        then `length_accuracy`. On imported data, scored on the split its baselines were scored
        on, `versus_baselines`' entries follow.
    """
    kept, net.stateful = net.stateful, False  # whole sequences: the state crosses every window edge
    try:
        logs = net.evaluate(batches, return_dict=True, verbose=0)
        lengths = length_accuracy(net, batches, info.get("real_feature")) if net.lengths is not None else None
    finally:
        net.stateful = kept
    figures = floors.of(info)
    value, floor = figures.score_in(logs), info[figures.floor]
    result: dict[str, Any] = {figures.score: value, figures.floor: floor, "samples": info["samples"]}
    ratio = figures.ratio_of(value, floor)
    if ratio is not None:
        result[figures.ratio] = ratio
    else:
        result[f"{figures.ratio}_omitted"] = floors.omitted(info)
    if figures is floors.TOKENS:
        result |= {"perplexity": float(logs["perplexity"]), "perplexity_floor": _exp(floor),
                   "token_accuracy": float(logs["token_accuracy"])}  # fmt: skip
    if lengths is not None:
        result["length_accuracy"] = lengths
    return result | versus_baselines(result, info.get("baselines"))


BASELINES = ("unigram_cross_entropy", "bigram_cross_entropy", "majority_length_accuracy", "logistic_length_accuracy")
"""The baselines' figures among `versus_baselines`' entries."""


def versus_baselines(scores: dict[str, Any], baselines: dict[str, Any] | None) -> dict[str, Any]:
    """A token run's scores on imported data beside the baselines of its manifest (`data.baselines`).

    Returns:
        `unigram_cross_entropy`, `bigram_cross_entropy` and `cross_entropy_over_bigram` (the
        chain's cross-entropy over the bigram's: below 1 the chain predicts the next token
        better) where the baselines' tokens are the chain's; with `length_accuracy`,
        `majority_length_accuracy` and `logistic_length_accuracy`. `{}` without baselines.
    """
    if baselines is None:
        return {}
    found: dict[str, Any] = {}
    bigram = baselines["bigram_cross_entropy"]
    if bigram is not None:
        found = {"unigram_cross_entropy": baselines["unigram_cross_entropy"], "bigram_cross_entropy": bigram,
                 "cross_entropy_over_bigram": scores["cross_entropy"] / bigram}  # fmt: skip
    if "length_accuracy" in scores:
        found |= {key: baselines[key] for key in BASELINES[2:]}
    return found


def _exp(value: float | None) -> float | None:
    return None if value is None else math.exp(value)


def length_accuracy(net: "Chain", batches: tf.data.Dataset, real_feature: int | None = None) -> float:
    """Share of `(b, t)` whose generated length equals the true `steps`: of the real ones, where
    `x[..., real_feature]` is 1 (padding left out), or of all with None."""
    hits = total = 0
    for (x, steps), _ in batches:
        guess = net.generate(x).row_lengths(axis=2).numpy().reshape(steps.shape)
        real = np.ones(steps.shape, bool) if real_feature is None else x.numpy()[..., real_feature] > 0.5
        hits += int(np.sum((guess == steps.numpy()) & real))
        total += int(np.sum(real))
    return hits / max(total, 1)


def write_report(net: "Chain", run_dir: Path, state: dict[str, Any], heldout: tf.data.Dataset) -> dict[str, Any]:
    """Scores the held-out batches and writes `report.json`."""
    where, split = data.sources(state)["heldout"]
    scores = score(net, heldout, state["heldout_info"])
    figures = floors.of(state["heldout_info"])
    fraction = state["options"]["heldout_fraction"]
    report = {f"heldout_{figures.score}": scores[figures.score], figures.floor: scores[figures.floor]}
    held = (figures.ratio, f"{figures.ratio}_omitted", "perplexity", "token_accuracy", "cross_entropy_over_bigram")
    report |= {f"heldout_{key}": scores[key] for key in held if key in scores}
    if "perplexity_floor" in scores:
        report["perplexity_floor"] = scores["perplexity_floor"]
    report |= {
        "heldout_samples": scores["samples"],
        "heldout": {"data_dir": str(where), "split": split, "fraction": fraction if split else None},
        "epochs": state["epochs_done"],
        "train_seconds": round(sum(row["seconds"] for row in state["history"]), 1),
        "options": state["options"],
        "data_dir": state["data_dir"],
    }
    report |= {key: scores[key] for key in ("length_accuracy", *BASELINES) if key in scores}
    runs.write_report(run_dir, report)
    return report


def evaluate_run(run_dir: str | os.PathLike[str], data_dir: str | os.PathLike[str], batch_size: int = 256,
                 allow_other_law: bool = False, split: str = "all") -> dict[str, Any]:  # fmt: skip
    """Scores the last checkpoint of a run on another dataset (all of its samples, or one split).

    The dataset must come from the law the run was trained on (see `chain_app.laws`): made by
    `datagen make` with the training set's task, seed and law options.

    Args:
        run_dir: the run directory.
        data_dir: the dataset to score.
        batch_size: samples per batch.
        allow_other_law: score a dataset of another law all the same.
        split: `"all"`, or datagen's `"heldout"` or `"train"` split at the run's
            `heldout_fraction`. Imported data's held-out split is the one its baselines were
            scored on: its scores then stand beside them.

    Returns:
        `data_dir`, `run_dir`, `epochs`, `split`, then `score`'s entries.

    Raises:
        FileNotFoundError: no checkpoint in `run_dir`.
        datagen.DatasetError: the dataset is missing or corrupt.
        chain_app.laws.OtherLaw: the dataset was made by another law (a ValueError), unless
            `allow_other_law`.
        ValueError: `batch_size` or `split` is invalid, the split is empty, the dataset does not
            fit the model, or the checkpoint is damaged.
    """
    batch_size = check_int("batch_size", batch_size, 1, INT32_MAX)
    split = check_generate_option("split", split)
    run_dir, data_dir = Path(os.fspath(run_dir)), Path(os.fspath(data_dir))
    source = (data_dir, None if split == "all" else split)
    fraction = runs.read_state(run_dir)["options"]["heldout_fraction"]
    info = data.describe(*source, fraction)
    net, state = runs.load_run(run_dir)
    if not allow_other_law:
        laws.check_same_law(state, data_dir, info["law_digest"])
    data.check_sizes(net, info, str(data_dir))
    batches = data.batches(data.read(source, fraction), batch_size)
    return {"data_dir": str(data_dir), "run_dir": str(run_dir), "epochs": state["epochs_done"], "split": split,
            **score(net, batches, info)}  # fmt: skip
