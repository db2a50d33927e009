"""``read``: a stored dataset back as numpy arrays, checked against its manifest, without TensorFlow."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from ragged_common.checks import check_choice, check_flag, check_number, check_path

from . import _manifest, _storage
from ._errors import DatasetError
from ._manifest import Plan, heldout_start
from ._params import DEFAULTS, TOKEN_TARGETS, ParameterError, Spec
from ._tasks import TEACHER_KEYS, truth_file


def manifest_path(directory: Path) -> Path:
    """``DIR/manifest.json``, or a DatasetError saying what the directory holds instead."""
    path = directory / _manifest.MANIFEST
    if path.is_file():
        return path
    if path.exists():
        raise DatasetError(f"{path}: not a regular file; a manifest must be one")
    if not directory.is_dir():
        raise DatasetError(f"{directory}: no such dataset directory")
    parts = sorted(entry.name for entry in directory.iterdir() if _manifest.parse_slice_name(entry.name))
    if parts:
        raise DatasetError(f"{path}: missing; the directory holds {len(parts)} slice manifest(s), "
                           f"join them with `datagen merge {directory}`")  # fmt: skip
    raise DatasetError(f"{path}: missing; not a datagen dataset")


def vocab_size(spec: Spec) -> int | None:
    """``spec.vocab_size`` for a token task, None for the others (see ``_storage.target_layout``)."""
    return spec.vocab_size if spec.task in TOKEN_TARGETS else None


def _check_shard(arrays: dict[str, np.ndarray], record: dict[str, Any], spec: Spec, name: Path) -> None:
    """The arrays must have the shapes, dtypes, lengths and tokens the manifest promises."""
    n = record["stop"] - record["start"]
    steps = arrays["steps"]
    targets = _storage.target_layout(spec.output_size, vocab_size(spec)).items()
    expected = {
        "x": ((n, spec.timesteps, spec.input_size), np.float32),
        "steps": ((n, spec.timesteps), np.int32),
        **{key: ((record["real_steps"], *shape), dtype) for key, (dtype, shape) in targets},
        "row_lengths": ((n * spec.timesteps,), np.int64),
    }
    for key, (shape, dtype) in expected.items():
        if arrays[key].shape != shape or arrays[key].dtype != dtype:
            raise DatasetError(f"{name}: `{key}` is {arrays[key].dtype}{arrays[key].shape}, "
                               f"the manifest expects {np.dtype(dtype)}{shape}")  # fmt: skip
    if steps.min(initial=0) < 0 or steps.max(initial=0) > spec.longest_step or steps.sum() != record["real_steps"]:
        raise DatasetError(f"{name}: `steps` outside [0, {spec.longest_step}] or not summing to {record['real_steps']}")
    if not np.array_equal(arrays["row_lengths"], steps.reshape(-1)):
        raise DatasetError(f"{name}: `row_lengths` differs from `steps`")
    for key in ("y_values", "y_best_values") if spec.task in TOKEN_TARGETS else ():
        if arrays[key].size and not 0 <= arrays[key].min() <= arrays[key].max() < spec.vocab_size:
            raise DatasetError(f"{name}: `{key}` holds tokens outside [0, {spec.vocab_size})")


def read_shard(directory: Path, record: dict[str, Any], spec: Spec, plan: Plan, manifest: Path,
               verify: bool) -> dict[str, np.ndarray]:  # fmt: skip
    """One shard's arrays, checked; with ``verify`` its sha256 too."""
    path = _storage.safe_path(directory, record.get("file"), manifest)
    data = _storage.read_file(path)
    if verify and _storage.sha256(data) != record["sha256"]:
        raise DatasetError(f"{path}: sha256 does not match the manifest (corrupt or changed file)")
    sizes = (spec.timesteps, spec.input_size, spec.output_size)
    arrays = _storage.decode_shard(data, plan.file_format, str(path), sizes, vocab_size(spec))
    _check_shard(arrays, record, spec, path)
    return arrays


def read_truth(directory: Path, manifest: dict[str, Any], path: Path) -> dict[str, np.ndarray]:
    """The stored truth: the law's truth file (checked by sha256) or its parameters."""
    truth = {key: np.asarray(value, dtype=np.float64) for key, value in manifest["truth"]["parameters"].items()}
    stored = truth_file(manifest["params"]["task"])
    for record in manifest["truth"]["files"]:
        file = _storage.safe_path(directory, record.get("name"), path)
        data = _storage.read_file(file)
        if _storage.sha256(data) != record["sha256"]:
            raise DatasetError(f"{file}: sha256 does not match the manifest (corrupt or changed file)")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                truth.update({key: archive[key] for key in archive.files if stored and key in stored[1]})
        except Exception as error:  # any failure to parse means the file cannot be trusted
            raise DatasetError(f"{file}: not a readable npz truth file ({type(error).__name__})") from None
    return truth


SPLITS = (None, "train", "heldout")


def split_range(n_samples: int, split: str | None, heldout_fraction: float) -> tuple[int, int]:
    """The sample range ``[first, stop)`` of a split.

    The held-out split is the last ``ceil(heldout_fraction * n_samples)`` samples by index; the
    training split is everything before it; ``None`` is all samples. The split is deterministic
    and, because samples are i.i.d., unbiased.

    Raises:
        ValueError: unknown split, fraction outside (0, 1), or an empty split.
    """
    check_choice("split", split, SPLITS)
    heldout_fraction = check_number("heldout_fraction", heldout_fraction, 0, 1, open_low=True, open_high=True)
    cut = heldout_start(n_samples, heldout_fraction)
    if split is not None and cut <= 0:
        raise ParameterError("heldout_fraction", message=f"`heldout_fraction` {heldout_fraction} leaves no training "
                             f"samples out of {n_samples}")  # fmt: skip
    return {None: (0, n_samples), "train": (0, cut), "heldout": (cut, n_samples)}[split]


def subset(data: dict[str, Any], first: int, stop: int) -> dict[str, Any]:
    """Samples ``[first, stop)`` of :func:`read`'s arrays (truth and manifest kept)."""
    steps = data["steps"]
    offsets = np.concatenate([[0], np.cumsum(steps.sum(axis=1, dtype=np.int64))])
    low, high = offsets[first], offsets[stop]
    timesteps = steps.shape[1]
    rows = {key: value[low:high] for key, value in data.items() if key.startswith("y_")}
    return {**data, "x": data["x"][first:stop], "steps": steps[first:stop], **rows,
            "row_lengths": data["row_lengths"][first * timesteps : stop * timesteps]}  # fmt: skip


def read(directory: str | os.PathLike[str], verify: bool = False, *, split: str | None = None,
         heldout_fraction: float = DEFAULTS["heldout_fraction"]) -> dict[str, Any]:  # fmt: skip
    """Reads a dataset into numpy arrays, without TensorFlow and without unpickling.

    Args:
        directory: the dataset directory (holding ``manifest.json``).
        verify: also check every shard's sha256 against the manifest.
        split: ``None`` for all samples, ``"train"`` or ``"heldout"`` (see
            [`split_range`][datagen.split_range]: held-out is the last
            ``ceil(heldout_fraction * n)`` samples by index).
        heldout_fraction: the held-out share, in (0, 1).

    Returns:
        A dict with ``x`` float32 (n, T, input_size), ``steps`` int32 (n, T), ``y_values`` and
        ``y_clean_values`` float32 (sum(steps), output_size) in (sample, t, k) row order,
        ``row_lengths`` int64 (n * T,) (``steps`` flattened: the ragged row lengths),
        ``truth`` (dict of arrays: the teacher's weights or the law's parameters) and
        ``manifest`` (the parsed manifest). A token dataset's ``y_values`` are int32
        (sum(steps),) tokens, its ``y_clean_values`` float32 (sum(steps), vocab_size) the
        distribution each was drawn from, and its ``y_best_values`` int32 (sum(steps),) each
        run's most likely tokens given the token it follows.

    Raises:
        DatasetError: the manifest or a file is missing, corrupt, inconsistent, or names a file
            outside the directory; the message names the file.
        ValueError: ``directory`` is not a non-empty path, ``verify`` not True or False, or
            ``split`` or ``heldout_fraction`` is invalid.
    """
    root = check_path("directory", directory)
    verify = check_flag("verify", verify)
    split_range(1 << 30, split, heldout_fraction)  # validates before any file is read
    path = manifest_path(root)
    manifest = _manifest.load(path)
    spec, plan = _manifest.spec_and_plan(manifest, path)
    shards = [read_shard(root, record, spec, plan, path, verify) for record in manifest["shards"]]
    data: dict[str, Any] = {key: np.concatenate([shard[key] for shard in shards]) for key in shards[0]}
    data["truth"] = read_truth(root, manifest, path)
    data["manifest"] = manifest
    return subset(data, *split_range(len(data["x"]), split, heldout_fraction))
