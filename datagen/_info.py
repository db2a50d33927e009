"""``info``: what a stored dataset holds, from its manifest alone (no shard is opened)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ragged_common.checks import check_path

from . import _manifest
from ._errors import DatasetError
from ._params import DEFAULTS, TOKEN_TARGETS
from ._read import manifest_path, split_range


def _noise_floor(manifest: dict[str, Any], path: Path) -> float | None:
    value = manifest.get("noise_floor")
    if value is None and manifest["params"]["task"] in TOKEN_TARGETS:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise DatasetError(f"{path}: invalid manifest: `noise_floor` must be a finite number >= 0; received {value!r}")
    return float(value)


def info(directory: str | os.PathLike[str], *, split: str | None = None,
         heldout_fraction: float = DEFAULTS["heldout_fraction"]) -> dict[str, Any]:  # fmt: skip
    """The manifest's facts about a dataset, checked, without reading or decoding any shard.

    Use it where only sizes and counts are needed; [`datagen.read`][] reads the samples.

    Args:
        directory: the dataset directory (holding ``manifest.json``).
        split: ``None``, ``"train"`` or ``"heldout"``: which split ``samples`` counts (see
            [`datagen.split_range`][]).
        heldout_fraction: the held-out share, in (0, 1).

    Returns:
        A dict with ``task``, ``format``, ``input_size``, ``output_size``, ``timesteps`` (T),
        ``longest_step``, ``noise`` and ``noise_floor`` (``noise ** 2``, the MSE of the true law;
        None for a token task, whose floor is ``manifest["law"]["cross_entropy_floor"]``),
        ``vocab_size`` (a token task's ``V``, None for the others),
        ``counts`` (``samples``, ``timesteps``, ``real_steps``, ``shards`` of the whole dataset,
        from its shard records), ``splits`` (samples in ``"train"`` and ``"heldout"`` at
        ``heldout_fraction``), ``split`` and ``samples`` (samples in ``split``), and
        ``manifest`` (the parsed manifest).

    Raises:
        DatasetError: the directory is missing, not a dataset, or its manifest is invalid.
        ValueError: ``directory`` is not a non-empty path, ``split`` or ``heldout_fraction`` is
            invalid, or ``split`` is empty.

    Examples:
        >>> import datagen, tempfile
        >>> out = tempfile.mkdtemp()
        >>> _ = datagen.make(out, n_samples=20, timesteps=3, shard_size=10)
        >>> facts = datagen.info(out, split="heldout")
        >>> facts["timesteps"], facts["counts"]["shards"], facts["splits"], facts["samples"]
        (3, 2, {'train': 18, 'heldout': 2}, 2)
    """
    root = check_path("directory", directory)
    split_range(1 << 30, split, heldout_fraction)  # validates before any file is read
    path = manifest_path(root)
    manifest = _manifest.load(path)
    spec, plan = _manifest.spec_and_plan(manifest, path)
    shards = manifest["shards"]
    n = sum(record["stop"] - record["start"] for record in shards)
    heldout = math.ceil(heldout_fraction * n)
    first, stop = split_range(n, split, heldout_fraction)
    return {
        "task": spec.task,
        "format": plan.file_format,
        "input_size": spec.input_size,
        "output_size": spec.output_size,
        "timesteps": spec.timesteps,
        "longest_step": spec.longest_step,
        "noise": float(spec.noise),
        "noise_floor": _noise_floor(manifest, path),
        "vocab_size": spec.vocab_size if spec.task in TOKEN_TARGETS else None,
        "counts": {"samples": n, "timesteps": spec.timesteps, "shards": len(shards),
                   "real_steps": sum(record["real_steps"] for record in shards)},  # fmt: skip
        "splits": {"train": n - heldout, "heldout": heldout},
        "split": split,
        "samples": stop - first,
        "manifest": manifest,
    }
