"""``make``: writes a dataset (or one slice of it) as shards plus a manifest; ``merge`` joins slices."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ragged_common import progress as _progress
from ragged_common.checks import check_flag, check_int, check_path

from . import _manifest, _memory, _pool, _rng, _storage, _tokens
from ._errors import DatasetError
from ._generate import generate_spec, law_truth
from ._lock import locked
from ._manifest import Plan
from ._params import GENERATOR_VERSION, TOKEN_TASKS, ParameterError, Spec
from ._read import heldout_start
from ._tasks import TEACHER_KEYS, truth_file

_FLUSH_SECONDS = 1.0


def check_out(out: Any) -> Path:
    """``out`` must be a directory, or creatable as one, that this process may write."""
    path = check_path("out", out)
    if path.exists() and not path.is_dir():
        raise ParameterError("out", "a directory", path, received=f"{str(path)!r}, an existing file")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ParameterError("out", message=f"`out` is not writable; received {str(path)!r}")
    return path


def _check_fresh(out: Path, plan: Plan, overwrite: bool, resume: bool) -> None:
    """Refuses to write over an existing dataset unless asked to overwrite or resume."""
    if overwrite or resume or not out.exists():
        return
    ours = [_manifest.MANIFEST, plan.manifest_name, _manifest.pending_name(plan.manifest_name)]
    ours += [_storage.shard_name(shard, plan.file_format) for shard in plan.shards]
    clash = next((name for name in ours if (out / name).exists()), None)
    if clash is not None:
        held = f"already holds a dataset ({str(out / clash)!r})"
        raise ParameterError("out", message=f"`out` {held}; pass overwrite=True to replace it or resume=True to "
                             "finish it", cli_message=f"{str(out)!r} {held}; pass --overwrite to replace it or "
                             "--resume to finish it")  # fmt: skip


def _write_shard(job: tuple[Spec, Plan, int, str]) -> dict[str, Any]:
    """Generates and writes one shard; returns its manifest record. Runs in worker processes."""
    spec, plan, shard, out = job
    start, stop = plan.bounds(shard)
    arrays = generate_spec(spec, start, stop - start)
    data = _storage.encode_shard(arrays, plan.file_format)
    name = _storage.shard_name(shard, plan.file_format)
    _storage.atomic_write(Path(out) / name, data)
    record = {"file": name, "sha256": _storage.sha256(data), "start": start, "stop": stop,
              "real_steps": int(arrays["steps"].sum()), "bytes": len(data)}  # fmt: skip
    if spec.task in TOKEN_TASKS:
        cut = heldout_start(plan.n_samples, _tokens.HELDOUT_FRACTION)
        record["law_stats"] = _tokens.shard_statistics(arrays, law_truth(spec), spec.task == "tokens", start, cut)
    return record


def _write_truth(spec: Spec, out: Path) -> list[dict[str, str]]:
    """Writes the law's truth file, if it has one: the teacher's weights (Keras order) to
    ``teacher.npz``, a token law to ``tokens.npz``; other laws live in the manifest."""
    stored = truth_file(spec.task)
    if stored is None:
        return []
    name, keys = stored
    law = law_truth(spec)
    data = _storage.encode_npz({key: law[key] for key in keys})
    path = out / name
    if not path.is_file() or _storage.sha256(_storage.read_file(path)) != _storage.sha256(data):
        _storage.atomic_write(path, data)
    return [{"name": name, "sha256": _storage.sha256(data)}]


def _verified(out: Path, spec: Spec, plan: Plan) -> dict[int, dict[str, Any]]:
    """Shards that a previous run recorded and whose files still match their sha256."""
    for name in (plan.manifest_name, _manifest.pending_name(plan.manifest_name)):
        path = out / name
        if path.exists():
            break
    else:
        return {}
    previous = _manifest.load(path)
    version = previous["generator"]["version"]
    if version != GENERATOR_VERSION:
        raise ParameterError("resume", message=f"`resume` needs the generator version that wrote {str(path)!r}: it "
                             f"was written by version {version!r}, this is version {GENERATOR_VERSION!r}")
    if previous["params"] != _manifest.params(spec, plan):
        raise ParameterError("resume", message=f"`resume` needs the same parameters as the run that wrote "
                             f"{str(path)!r}")
    good = {}
    for record in previous["shards"]:
        file = _storage.safe_path(out, record.get("file"), path)
        if file.is_file() and _storage.sha256(_storage.read_file(file)) == record["sha256"]:
            good[record["start"] // plan.shard_size] = record
    return good


def _generate_missing(out: Path, spec: Spec, plan: Plan, done: dict[int, dict[str, Any]], workers: int,
                      progress: bool, truth_files: list[dict[str, str]]) -> None:  # fmt: skip
    """Makes every shard of the plan not in ``done``, recording progress for ``resume``."""
    jobs = [(spec, plan, shard, str(out)) for shard in plan.shards if shard not in done]
    pending = out / _manifest.pending_name(plan.manifest_name)
    flushed = time.monotonic()
    with _progress.progress(progress, len(plan.shards), "datagen make", "shards") as bar:
        if bar is not None:
            bar.update(len(done))
        for record in _pool.imap(_write_shard, jobs, workers):
            done[record["start"] // plan.shard_size] = record
            if bar is not None:
                bar.update(1)
            if time.monotonic() - flushed > _FLUSH_SECONDS:
                records = [done[shard] for shard in sorted(done)]
                _storage.atomic_write(pending, _manifest.dumps(_manifest.build(spec, plan, records, truth_files)))
                flushed = time.monotonic()


def make_dataset(out: Any, spec: Spec, plan: Plan, *, workers: int = 1, overwrite: bool = False,
                 resume: bool = False, progress: bool = False) -> dict[str, Any]:  # fmt: skip
    """Writes the plan's shards, truth files and manifest; see :func:`datagen.make`."""
    workers = check_int("workers", workers, 1)
    overwrite, resume = check_flag("overwrite", overwrite), check_flag("resume", resume)
    progress = check_flag("progress", progress)
    if overwrite and resume:
        raise ParameterError("resume", message="`resume` and `overwrite` exclude each other; received both",
                             cli_message="use one of --resume and --overwrite, not both")
    path = check_out(out)
    _memory.check_fits(spec, _rng.BLOCK + min(plan.shard_size, plan.n_samples), min(workers, len(plan.shards)))
    _memory.check_disk(spec, plan.samples_written, path, _bytes_in(path) if overwrite or resume else 0.0)
    slice_name = None if plan.num_shards == 1 else plan.manifest_name[len("manifest.") : -len(".json")]
    with locked(path, slice_name):
        _check_fresh(path, plan, overwrite, resume)
        if overwrite and plan.num_shards == 1:
            _clear_stale(path, plan)
        done = _verified(path, spec, plan) if resume else {}
        if resume:
            _clear_temporaries(path)
        truth_files = _write_truth(spec, path)
        _generate_missing(path, spec, plan, done, workers, progress, truth_files)
        manifest = _manifest.build(spec, plan, [done[shard] for shard in plan.shards], truth_files)
        _storage.atomic_write(path / plan.manifest_name, _manifest.dumps(manifest))
        (path / _manifest.pending_name(plan.manifest_name)).unlink(missing_ok=True)
    return manifest


def _bytes_in(path: Path) -> float:
    """Bytes of the files directly in `path` (0 if it does not exist)."""
    if not path.is_dir():
        return 0.0
    return float(sum(entry.stat().st_size for entry in os.scandir(path) if entry.is_file(follow_symlinks=False)))


def _slice_manifests(directories: list[Path]) -> dict[int, tuple[Path, dict[str, Any]]]:
    """Every slice manifest found in ``directories``, keyed by slice index."""
    found: dict[int, tuple[Path, dict[str, Any]]] = {}
    for directory in directories:
        if not directory.is_dir():
            raise DatasetError(f"{directory}: not a directory")
        for entry in sorted(directory.iterdir()):
            if _manifest.parse_slice_name(entry.name) is None:
                continue
            manifest = _manifest.load(entry)
            index = manifest["slice"]["index"]
            if index in found and found[index][1]["shards"] != manifest["shards"]:
                raise DatasetError(f"{entry}: slice {index} also found in {found[index][0]}")
            found[index] = (entry, manifest)
    if not found:
        raise DatasetError(f"{', '.join(map(str, directories))}: no slice manifests (manifest.slice-*-of-*.json)")
    return found


def _check_complete(found: dict[int, tuple[Path, dict[str, Any]]]) -> tuple[Spec, Plan]:
    """All slices must share parameters and together cover every slice index once."""
    path, first = found[min(found)]
    spec, plan = _manifest.spec_and_plan(first, path)
    for entry, manifest in found.values():
        version = manifest["generator"]["version"]
        if version != GENERATOR_VERSION:
            raise ParameterError("directories", message=f"{entry}: made by generator version {version!r}, this is "
                                 f"version {GENERATOR_VERSION!r}; merge with the version that made the slices")
        if manifest["params"] != first["params"] or manifest["slice"]["count"] != plan.num_shards:
            raise DatasetError(f"{entry}: parameters differ from {path}")
    missing = sorted(set(range(plan.num_shards)) - set(found))
    if missing:
        raise DatasetError(f"{path.parent}: slices {missing} of {plan.num_shards} are missing")
    return spec, Plan(plan.n_samples, plan.shard_size, plan.file_format)


def _bring(source: Path, out: Path, record: dict[str, Any], manifest: Path) -> None:
    """Checks one file against its sha256 and copies it into ``out`` if it lives elsewhere."""
    name = record.get("file", record.get("name"))
    origin = _storage.safe_path(source, name, manifest)
    data = _storage.read_file(origin)
    if _storage.sha256(data) != record["sha256"]:
        raise DatasetError(f"{origin}: sha256 does not match {manifest}")
    target = out / name
    if os.path.realpath(origin) != os.path.realpath(target):
        _storage.atomic_write(target, data)


def merge(*directories: Any, out: Any = None) -> dict[str, Any]:
    """Joins the slices of a dataset into one directory with one ``manifest.json``.

    Slices are made by ``make(..., num_shards=K, shard_index=i)`` for ``i`` in ``0..K-1``, on any
    machines, into one shared directory or separate ones. Each writes its shards and
    ``manifest.slice-i-of-K.json``. ``merge`` checks that all K slices are present with equal
    parameters and this generator version, verifies every shard and truth file by sha256, copies
    them into ``out`` when they live elsewhere, and writes ``manifest.json`` atomically.

    Args:
        *directories: directories holding the slices (each may hold several).
        out: the merged dataset's directory; defaults to the only directory given.

    Returns:
        The merged manifest.

    Raises:
        DatasetError: a slice is missing, differs, or a file fails its checksum.
        ValueError: no directory given, a directory or ``out`` that is not a non-empty path,
            ``out`` missing with several directories, or a slice made by another generator version.
    """
    if not directories:
        raise ParameterError("directories", message="`merge` needs at least one directory; received none")
    if out is None and len(directories) > 1:
        raise ParameterError("out", message=f"`out` is required when merging {len(directories)} directories; "
                             "received None")
    sources = [check_path("directories", directory) for directory in directories]
    target = check_out(sources[0] if out is None else out)
    found = _slice_manifests(sources)
    spec, plan = _check_complete(found)
    with locked(target):
        shards, truth_files = [], []
        for index in sorted(found):
            entry, manifest = found[index]
            for record in manifest["shards"]:
                _bring(entry.parent, target, record, entry)
            shards += manifest["shards"]
            truth_files = manifest["truth"]["files"]
            for record in truth_files:
                _bring(entry.parent, target, record, entry)
        merged = _manifest.build(spec, plan, shards, truth_files)
        _storage.atomic_write(target / _manifest.MANIFEST, _manifest.dumps(merged))
    return merged


def _clear_stale(out: Path, plan: Plan) -> None:
    """With ``overwrite``, removes shards and slice manifests an earlier, different run left."""
    keep = {_storage.shard_name(shard, plan.file_format) for shard in plan.shards}
    for entry in out.iterdir():
        is_shard = entry.name.startswith("shard-") and entry.suffix in (".npz", ".tfrecord")
        if (is_shard and entry.name not in keep) or _manifest.parse_slice_name(entry.name) is not None:
            entry.unlink()


def _clear_temporaries(out: Path) -> None:
    """Removes temporary files that a crashed run left behind (``.NAME.PID-TOKEN.tmp``)."""
    for entry in out.glob(".*.tmp"):
        if entry.is_file():
            entry.unlink()
