"""``make`` and ``teacher_weights``: the public entry points over generation and storage."""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from ragged_common.checks import check_choice, check_path

from . import _manifest
from ._errors import DatasetError
from ._make import make_dataset
from ._manifest import Plan
from ._params import DEFAULTS, TASKS, Spec
from ._read import manifest_path, read_truth
from ._tasks import TEACHER_KEYS


def make(
    out: str | os.PathLike[str] = DEFAULTS["out"],
    *,
    n_samples: int = DEFAULTS["n_samples"],
    task: str = DEFAULTS["task"],
    timesteps: int = DEFAULTS["timesteps"],
    input_size: int = DEFAULTS["input_size"],
    output_size: int = DEFAULTS["output_size"],
    longest_step: int = DEFAULTS["longest_step"],
    lengths: str = DEFAULTS["lengths"],
    zero_fraction: float = DEFAULTS["zero_fraction"],
    noise: float = DEFAULTS["noise"],
    seed: int = DEFAULTS["seed"],
    teacher_hidden: int = DEFAULTS["teacher_hidden"],
    vocab_size: int = DEFAULTS["vocab_size"],
    format: str = DEFAULTS["format"],  # noqa: A002 - mirrors the --format option
    shard_size: int = DEFAULTS["shard_size"],
    workers: int = DEFAULTS["workers"],
    num_shards: int = DEFAULTS["num_shards"],
    shard_index: int = DEFAULTS["shard_index"],
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Generates a dataset and stores it as shards, truth files and a JSON manifest.

    The content depends only on the generation parameters and ``n_samples``: any ``shard_size``,
    ``workers`` or slicing gives the same samples. Files are written atomically (temporary file,
    then rename) and the manifest last.

    The generation parameters ``task``, ``timesteps``, ``input_size``, ``output_size``,
    ``longest_step``, ``lengths``, ``zero_fraction``, ``noise``, ``seed``, ``teacher_hidden`` and
    ``vocab_size`` are those of [`datagen.generate`][].

    Args:
        out: the dataset directory, created if needed.
        n_samples: samples in the whole dataset (``--samples``).
        format: ``npz`` (default) or ``tfrecord``.
        shard_size: samples per shard file.
        workers: processes generating shards in parallel.
        num_shards: ``K``, the number of slices the dataset is cut into (one per machine).
        shard_index: ``i`` in ``[0, K)``, the slice this run makes: a contiguous range of
            shards, described by ``manifest.slice-i-of-K.json``; see [`datagen.merge`][].
        overwrite: replace an existing dataset in ``out``.
        resume: finish an interrupted run: keep the shards whose sha256 matches the recorded
            one, make the missing or corrupt ones. The run must have had the same parameters
            and generator version.
        progress: show progress on stderr: a bar on a terminal, else a line per tenth of the
            shards made.

    Returns:
        The manifest written (a JSON-ready dict).

    Raises:
        ValueError: a parameter is invalid, ``out`` holds a dataset and neither ``overwrite``
            nor ``resume`` is set, or ``resume`` finds a run of other parameters or another
            generator version; the message names the parameter and value.
        DatasetError: ``resume`` found an unreadable manifest.
    """
    check_choice("task", task, TASKS)  # imported tasks come from `datagen import`, not from a law
    spec = Spec(task, timesteps, input_size, output_size, longest_step, lengths,
                zero_fraction, noise, seed, teacher_hidden, vocab_size)  # fmt: skip
    plan = Plan(n_samples, shard_size, format, num_shards, shard_index)
    return make_dataset(out, spec, plan, workers=workers, overwrite=overwrite, resume=resume, progress=progress)


def teacher_weights(source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, list[np.ndarray]]:
    """The teacher's weights, ready for ``layer.set_weights``.

    Args:
        source: a ``teacher`` dataset directory, or a truth dict (from ``read(...)["truth"]`` or
            ``generate(..., return_truth=True)["truth"]``).

    Returns:
        ``{"model_a": [kernel (in, 3H), recurrent_kernel (H, 3H), bias (2, 3H)],
        "model_b": [kernel (H, 3H), recurrent_kernel (H, 3H), bias (2, 3H)],
        "head": [kernel (H, output_size), bias (output_size,)]}``, for ``keras.layers.GRU(H,
        return_sequences=True)``, ``keras.layers.GRUCell(H)`` and ``keras.layers.Dense``.

    Raises:
        DatasetError: the dataset or truth is not a teacher's.
        ValueError: ``source`` is neither a mapping nor a non-empty path.
    """
    if isinstance(source, Mapping):
        truth = dict(source)
    else:
        root = check_path("source", source)
        path = manifest_path(root)
        truth = read_truth(root, _manifest.load(path), path)
    missing = [key for key in TEACHER_KEYS if key not in truth]
    if missing:
        raise DatasetError(f"{source if not isinstance(source, Mapping) else 'truth'}: no teacher weights "
                           f"(missing {', '.join(missing)}); only task 'teacher' has them")  # fmt: skip
    arrays = {key: np.asarray(truth[key], dtype=np.float32) for key in TEACHER_KEYS}
    return {
        "model_a": [arrays["a_kernel"], arrays["a_recurrent_kernel"], arrays["a_bias"]],
        "model_b": [arrays["b_kernel"], arrays["b_recurrent_kernel"], arrays["b_bias"]],
        "head": [arrays["head_kernel"], arrays["head_bias"]],
    }
