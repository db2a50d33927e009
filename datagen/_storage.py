"""Shard files: encoding, decoding, checksums, atomic writes and safe names.

A shard holds consecutive samples ``[start, stop)`` as the components of a ragged tensor:
``x`` float32 (n, T, input_size), ``steps`` int32 (n, T), ``y_values`` and ``y_clean_values``
float32 (sum(steps), output_size) in (sample, t, k) row order, and ``row_lengths`` int64
(n * T,), which equals ``steps`` flattened. A token task's shard holds ``y_values`` int32
(sum(steps),), the tokens, ``y_clean_values`` float32 (sum(steps), vocab_size), and
``y_best_values`` int32 (sum(steps),) besides (see :func:`target_layout`). ``npz`` shards are
uncompressed zip files of ``.npy`` arrays with fixed timestamps (byte-identical for identical content); ``tfrecord`` shards hold one
``tf.train.Example`` per sample (see ``datagen._tfrecord``).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ragged_common import atomic, reading

from . import _tfrecord
from ._errors import DatasetError

SHARD_KEYS = ("x", "steps", "y_values", "y_clean_values", "row_lengths")
TOKEN_SHARD_KEYS = ("x", "steps", "y_values", "y_clean_values", "y_best_values", "row_lengths")
EXTENSIONS = {"npz": "npz", "tfrecord": "tfrecord"}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


def shard_name(index: int, file_format: str) -> str:
    """The file name of shard ``index``, e.g. ``shard-00003.npz``."""
    return f"shard-{index:05d}.{EXTENSIONS[file_format]}"


def sha256(data: bytes | memoryview) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def encode_npz(arrays: dict[str, np.ndarray]) -> memoryview:
    """An uncompressed ``.npz`` with fixed timestamps, so equal arrays give equal bytes.

    Returns a read-only view of the archive's buffer rather than a copy of it.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            value = np.ascontiguousarray(value)
            with archive.open(info, "w", force_zip64=True) as member:
                # what np.save writes, without its per-chunk copies of the data
                np.lib.format.write_array_header_1_0(member, np.lib.format.header_data_from_array_1_0(value))
                member.write(memoryview(value.reshape(-1)).cast("B"))
    return buffer.getbuffer().toreadonly()


def target_layout(output_size: int, vocab_size: int | None = None) -> dict[str, tuple[type, tuple[int, ...]]]:
    """A shard's target arrays: name to (dtype, shape of one real inner step's entry).

    Args:
        output_size: ``D`` of the real-valued tasks.
        vocab_size: ``V`` of a token task; None for the real-valued tasks.
    """
    if vocab_size is None:
        return {"y_values": (np.float32, (output_size,)), "y_clean_values": (np.float32, (output_size,))}
    return {"y_values": (np.int32, ()), "y_clean_values": (np.float32, (vocab_size,)), "y_best_values": (np.int32, ())}


def encode_shard(arrays: dict[str, np.ndarray], file_format: str) -> bytes | memoryview:
    """Serialises one shard's arrays: ``x``, ``steps`` and the targets (``y_values``, ...)."""
    steps = arrays["steps"]
    if file_format == "npz":
        return encode_npz({**arrays, "row_lengths": steps.reshape(-1).astype(np.int64)})
    offsets = np.concatenate([[0], np.cumsum(steps.sum(axis=1, dtype=np.int64))])
    targets = [key for key in arrays if key.startswith("y_")]
    records = [
        _tfrecord.encode_example({"x": arrays["x"][i], "steps": steps[i],
                                  **{key: arrays[key][offsets[i] : offsets[i + 1]] for key in targets}})
        for i in range(len(steps))
    ]  # fmt: skip
    return _tfrecord.frame(records)


def decode_shard(data: bytes, file_format: str, name: str, sizes: tuple[int, int, int],
                 vocab_size: int | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """Parses a shard's bytes without unpickling anything.

    Args:
        data: the file's bytes.
        file_format: ``npz`` or ``tfrecord``.
        name: the file's path, for error messages.
        sizes: ``(timesteps, input_size, output_size)`` from the manifest.
        vocab_size: ``V`` of a token task, None for the others.

    Returns:
        The arrays of :data:`SHARD_KEYS`, or of :data:`TOKEN_SHARD_KEYS` for a token task.

    Raises:
        DatasetError: the bytes are not a well-formed shard.
    """
    if file_format == "npz":
        return _decode_npz(data, name, SHARD_KEYS if vocab_size is None else TOKEN_SHARD_KEYS)
    timesteps, input_size, output_size = sizes
    samples = [_tfrecord.decode_example(record, name) for record in _tfrecord.unframe(data, name)]
    try:
        steps = _int32(np.stack([sample["steps"] for sample in samples]), name, "steps").reshape(-1, timesteps)
        arrays = {"x": np.stack([sample["x"] for sample in samples]).reshape(-1, timesteps, input_size), "steps": steps}
        for key, (dtype, shape) in target_layout(output_size, vocab_size).items():
            values = np.concatenate([sample[key] for sample in samples]).reshape(-1, *shape)
            arrays[key] = values if dtype is np.float32 else _int32(values, name, key)
    except DatasetError:
        raise
    except (KeyError, ValueError) as error:
        raise DatasetError(f"{name}: records do not match the manifest's sizes ({error})") from None
    return {**arrays, "row_lengths": steps.reshape(-1).astype(np.int64)}


def _int32(values: np.ndarray, name: str, key: str) -> np.ndarray:
    """``values`` as int32, refusing values a cast would wrap (2**32 + 3 must not read as 3)."""
    if values.size and (values.min() < 0 or values.max() > np.iinfo(np.int32).max):
        raise DatasetError(f"{name}: `{key}` holds {int(values.min()) if values.min() < 0 else int(values.max())}, "
                           f"outside [0, {np.iinfo(np.int32).max}]")  # fmt: skip
    return values.astype(np.int32)


def _decode_npz(data: bytes, name: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            missing = set(keys) - set(archive.files)
            if missing:
                raise DatasetError(f"{name}: missing arrays {sorted(missing)}")
            return {key: archive[key] for key in keys}
    except DatasetError:
        raise
    except Exception as error:  # zip, npy header and pickle refusals all mean a corrupt file
        raise DatasetError(f"{name}: not a readable npz shard ({type(error).__name__}: {error})") from None


def safe_path(root: Path, name: Any, manifest: Path) -> Path:
    """Resolves a file name from a manifest, refusing anything outside ``root``.

    Args:
        root: the dataset directory.
        name: the name the manifest gives.
        manifest: the manifest's path, for error messages.

    Returns:
        The file's path inside ``root``.

    Raises:
        DatasetError: the name is not a plain file name, or it resolves (through symlinks)
            outside ``root``.
    """
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or name in (".", ".."):
        raise DatasetError(f"{manifest}: file name {name!r} is not a plain name inside the dataset directory")
    path = root / name
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
        raise DatasetError(f"{manifest}: file {name!r} resolves outside the dataset directory")
    return path


_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def read_file(path: Path, max_bytes: int | None = None, what: str = "") -> bytes:
    """Reads a regular dataset file (`ragged_common.reading.read_regular`), in DatasetErrors.

    Raises:
        DatasetError: the file is missing, not a regular file, larger than ``max_bytes`` or unreadable.
    """
    return reading.read_regular(path, max_bytes=max_bytes, what=what, error=DatasetError)


def atomic_write(path: Path, data: bytes | memoryview | str) -> None:
    """Writes ``data`` to ``path`` atomically (`ragged_common.atomic.atomic_write`), in DatasetErrors.

    Raises:
        DatasetError: ``no space left while writing PATH`` on a full disk, quota or file size
            limit (the temporary file is removed, the target left as it was); ``cannot write
            PATH (reason)`` on any other failure.
    """
    try:
        atomic.atomic_write(path, data)
    except OSError as error:
        if error.errno in _FULL:
            raise DatasetError(f"no space left while writing {path}") from None
        raise DatasetError(f"cannot write {path} ({error.strerror or error})") from None
