"""``import_chorales``: Bach's chorales as a token dataset in datagen's own format.

The chorales come from music21's corpus or a folder of MusicXML files; each is read by
``datagen._music`` and encoded beat by beat by ``datagen._chorales``. A sample is a window of
``T`` beats of one chorale; a chorale's windows are consecutive samples, in order, the last one
padded. The held-out chorales' windows are the last ``ceil(0.1 n)`` samples, the split the
readers' default ``heldout_fraction`` cuts, so no held-out chorale has a window in training.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ragged_common import atomic
from ragged_common import progress as _progress
from ragged_common.checks import check_choice, check_flag, check_int, check_optional, check_path

from . import _baselines, _chorales, _manifest, _music, _pool, _storage
from ._chorales import ChoraleCodec, SopranoNote
from ._errors import DatasetError
from ._make import check_out
from ._manifest import Plan, heldout_start
from ._params import DEFAULTS, FORMATS, GENERATOR_VERSION, IMPORTED_LENGTHS, ParameterError, Spec

TASK = "chorales"
DEFAULT_WINDOW = 16
HELDOUT_FRACTION = DEFAULTS["heldout_fraction"]
LAW = ("No law: the soprano of Bach's chorales, beat by beat over the lower voices. x[b, t] is a beat's "
       "features (law.encoding.features), each inner step one soprano note or rest that begins in the beat, "
       "as a token of its (pitch, duration) pair (law.encoding.vocabulary); a note held over from an "
       "earlier beat gives that beat no step. See docs/chorales.md.")  # fmt: skip


class Parsed(NamedTuple):
    """One corpus file read: its score, or why it cannot be encoded."""

    id: str
    file: str
    sha256: str
    score: _music.Score | None
    reason: str | None


def _parse(path: str) -> Parsed:
    """Reads one chorale file; runs in worker processes."""
    file = Path(path)
    digest = _music.sha256_of(file)
    try:
        return Parsed(file.stem, file.name, digest, _music.read(file), None)
    except _music.Unreadable as error:
        return Parsed(file.stem, file.name, digest, None, str(error))


def _check_out(out: Any, overwrite: bool) -> Path:
    """``out`` is new, empty, or (with ``overwrite``) holds a dataset, which the import replaces."""
    path = check_out(out)
    if not path.is_dir() or not any(path.iterdir()):
        return path
    if not (path / _manifest.MANIFEST).exists():
        raise ParameterError("out", message=f"`out` holds files that are not a dataset; choose a new or empty "
                             f"directory; received {str(path)!r}")  # fmt: skip
    if not overwrite:
        held = f"already holds a dataset ({str(path / _manifest.MANIFEST)!r})"
        raise ParameterError("out", message=f"`out` {held}; pass overwrite=True to replace it",
                             cli_message=f"{str(path)!r} {held}; pass --overwrite to replace it")  # fmt: skip
    return path


def _folder_files(corpus: Any) -> list[Path]:
    """The MusicXML files of a corpus folder, sorted by name."""
    folder = check_path("corpus", corpus)
    if not folder.is_dir():
        raise ParameterError("corpus", "an existing folder of MusicXML files", received=repr(str(folder)))
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _music.SUFFIXES and p.is_file())
    if not files:
        raise ParameterError("corpus", f"a folder holding {', '.join(_music.SUFFIXES)} files",
                             received=f"{str(folder)!r}, which holds none")  # fmt: skip
    return files


def _wanted(chorales: Any) -> list[str]:
    """The ids asked for: a comma-separated string or an iterable of strings, at least one."""
    items = chorales.split(",") if isinstance(chorales, str) else chorales
    try:
        names = [item.strip() for item in items]
    except (TypeError, AttributeError):
        names = []
    names = [name for name in names if name]
    if not names:
        raise ParameterError("chorales", "chorale ids, comma-separated or a list of strings", chorales)
    return names


def _select(files: list[Path], chorales: Any, limit: int | None) -> list[Path]:
    """The files of the chosen chorales (by id, the file's name without its suffix), the first
    ``limit`` of them."""
    if chorales is not None:
        wanted = set(_wanted(chorales))
        unknown = sorted(wanted - {path.stem for path in files})
        if unknown:
            raise ParameterError("chorales", "ids of the corpus's chorales (file names without their suffix)",
                                 received=repr(",".join(unknown)))  # fmt: skip
        files = [path for path in files if path.stem in wanted]
    return files if limit is None else files[:limit]


def _read_all(files: list[Path], workers: int, progress: bool) -> list[Parsed]:
    """Every file read, in order; a second file of an id already read is recorded as skipped."""
    found: list[Parsed] = []
    seen: set[str] = set()
    with _progress.progress(progress, len(files), "datagen import", "chorales") as bar:
        for parsed in _pool.imap(_parse, [str(path) for path in files], workers):
            if parsed.id in seen:
                parsed = parsed._replace(score=None, reason=f"another file of the corpus has the id {parsed.id!r}")
            seen.add(parsed.id)
            found.append(parsed)
            if bar is not None:
                bar.update(1)
    return found


def _hash_order(ids: list[str]) -> list[str]:
    """The ids in the order of their names' sha256: a fixed shuffle that needs no seed."""
    return sorted(ids, key=lambda name: hashlib.sha256(name.encode()).hexdigest())


def _heldout_count(total: int) -> int:
    return total - heldout_start(total, HELDOUT_FRACTION)


def _first_fit(order: list[str], windows: dict[str, int], target: int) -> list[str] | None:
    """Chorales taken in ``order``, each whole while the count allows it, making exactly ``target``
    windows; None if they do not."""
    held, count = [], 0
    for name in order:
        if count + windows[name] <= target:
            held.append(name)
            count += windows[name]
    return held if count == target else None


def hold_out(windows: dict[str, int]) -> tuple[list[str], dict[str, int]]:
    """The held-out chorales, whose windows are exactly the last ``ceil(0.1 n)`` samples.

    Chorales are taken whole in :func:`_hash_order` while the held-out count allows it. Where no
    such choice is exact, one chorale (the first in that order that makes it exact) is held out
    with its last windows dropped, and the rest are taken whole as before.

    Args:
        windows: windows per chorale.

    Returns:
        The held-out ids, and the windows dropped from the end of each (one id at most).

    Raises:
        DatasetError: no choice gives an exact split.
    """
    order, total = _hash_order(list(windows)), sum(windows.values())
    held = _first_fit(order, windows, _heldout_count(total))
    if held is not None:
        return held, {}
    for name in order:
        for dropped in range(1, windows[name]):
            rest = _heldout_count(total - dropped) - (windows[name] - dropped)
            others = None if rest < 0 else _first_fit([other for other in order if other != name], windows, rest)
            if others is not None:
                return [*others, name], {name: dropped}
    raise DatasetError(f"cannot hold out whole chorales as the last {HELDOUT_FRACTION:g} of {total} windows; "
                       "import more chorales")  # fmt: skip


def _vocabulary(scores: list[_music.Score]) -> ChoraleCodec:
    """Every (pitch, duration) pair of the soprano of ``scores``: rests first, then by pitch and duration."""
    pairs = {note for score in scores for run in _chorales.soprano_runs(score) for note in run}
    return ChoraleCodec(sorted(pairs, key=lambda note: (note.pitch is not None, note.pitch or 0, note.duration)))


class Encoded(NamedTuple):
    """One chorale's windows: x (w, T, in), steps (w, T) and tokens (sum(steps),)."""

    x: np.ndarray
    steps: np.ndarray
    tokens: np.ndarray


def encode(score: _music.Score, codec: ChoraleCodec, window: int, end_token: bool, windows: int) -> Encoded:
    """A chorale's first ``windows`` windows of ``window`` beats, padded after its last beat."""
    beats = windows * window
    x = np.zeros((beats, len(_chorales.FEATURES)), np.float32)
    features = _chorales.beat_features(score)[:beats]
    x[: len(features)] = features
    runs: list[list[SopranoNote]] = (_chorales.soprano_runs(score) + [[] for _ in range(beats)])[:beats]
    tokens = [[codec.token(*note) for note in run] + ([codec.end] if end_token else []) for run in runs]
    steps = np.array([len(run) for run in tokens], np.int32)
    flat = np.array([token for run in tokens for token in run], np.int32)
    return Encoded(x.reshape(windows, window, -1), steps.reshape(windows, window), flat)


class Dataset(NamedTuple):
    """The samples of an import, in order, and what the manifest records of their chorales."""

    x: np.ndarray
    steps: np.ndarray
    tokens: np.ndarray
    codec: ChoraleCodec
    records: list[dict[str, Any]]


def assemble(parsed: list[Parsed], window: int, end_token: bool) -> Dataset:
    """Splits the readable chorales, builds the vocabulary on the training ones and encodes them
    all: the training chorales first, then the held-out ones, each in id order.

    Raises:
        DatasetError: fewer than two chorales could be read, or no exact split exists.
    """
    readable = {entry.id: entry for entry in parsed if entry.score is not None}
    if len(readable) < 2:
        raise DatasetError(f"{len(readable)} of {len(parsed)} chorales could be read; a split by chorale needs "
                           "two or more")  # fmt: skip
    windows = {name: math.ceil(entry.score.beats / window) for name, entry in readable.items()}
    held, dropped = hold_out(windows)
    order = [*sorted(set(readable) - set(held)), *sorted(held)]
    codec = _vocabulary([readable[name].score for name in order[: len(readable) - len(held)]])
    parts, records, start = [], [], 0
    for name in order:
        entry, kept = readable[name], windows[name] - dropped.get(name, 0)
        parts.append(encode(entry.score, codec, window, end_token, kept))
        records.append({"id": name, "file": entry.file, "sha256": entry.sha256,
                        "split": "heldout" if name in held else "train", "samples": [start, start + kept],
                        "beats": entry.score.beats, "key": list(entry.score.key),
                        "dropped_windows": dropped.get(name, 0)})  # fmt: skip
        start += kept
    x, steps, tokens = (np.concatenate([getattr(part, key) for part in parts]) for key in ("x", "steps", "tokens"))
    return Dataset(x, steps, tokens, codec, records)


def _samples_of(records: list[dict[str, Any]], names: set[str]) -> np.ndarray:
    return np.concatenate([np.arange(*record["samples"]) for record in records if record["id"] in names])


def _parts(records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The samples the baselines fit on, choose their settings on, refit on and are scored on.

    ``validation`` is the last tenth of the training chorales in :func:`_hash_order` (``fit`` the
    rest); with a single training chorale both are that chorale.
    """
    train = [record["id"] for record in records if record["split"] == "train"]
    ordered = _hash_order(train)
    cut = len(ordered) - max(1, math.ceil(0.1 * len(ordered))) if len(ordered) > 1 else len(ordered)
    fit, validation = set(ordered[:cut]) or set(ordered), set(ordered[cut:]) or set(ordered)
    heldout = {record["id"] for record in records if record["split"] == "heldout"}
    return {"fit": _samples_of(records, fit), "validation": _samples_of(records, validation),
            "train": _samples_of(records, set(train)), "heldout": _samples_of(records, heldout)}  # fmt: skip


def baselines(data: Dataset, end_token: bool) -> dict[str, Any]:
    """The held-out figures of the unigram, the bigram and the two count baselines
    (``datagen._baselines``), fitted on the training chorales; end tokens are left out."""
    offsets = np.concatenate([[0], np.cumsum(data.steps.sum(axis=1, dtype=np.int64))])
    real = data.x[..., _chorales.FEATURES.index("in_chorale")] > 0.5
    size = data.codec.vocab_size
    sequences, counts = {}, {}
    for name, samples in _parts(data.records).items():
        tokens = np.concatenate([data.tokens[offsets[s] : offsets[s + 1]] for s in samples])
        sequences[name] = _baselines.sequences(data.steps[samples], tokens, size, data.codec.end)
        notes = data.steps[samples] - int(end_token)
        counts[name] = (data.x[samples][real[samples]], notes[real[samples]])
    classes = int(max(part[1].max(initial=0) for part in counts.values())) + 1
    heldout = sequences["heldout"]
    return {
        "split": "heldout",
        "fitted_on": "train",
        "settings_chosen_on": _baselines.VALIDATION,
        "heldout_notes": int(len(heldout.tokens)),
        "heldout_beats": int(len(counts["heldout"][1])),
        "unknown_share": float(np.mean(heldout.tokens == data.codec.unknown)) if len(heldout.tokens) else 0.0,
        "tokens": _baselines.token_baselines(sequences["fit"], sequences["validation"], sequences["train"],
                                             heldout, size),
        "counts": _baselines.count_baselines(counts["fit"], counts["validation"], counts["train"],
                                             counts["heldout"], classes),
    }  # fmt: skip


def _histogram(steps: np.ndarray, real: np.ndarray) -> list[int]:
    return np.bincount(steps[real], minlength=int(steps.max(initial=0)) + 1).tolist()


def _shards(data: Dataset, plan: Plan) -> list[tuple[str, bytes | memoryview, dict[str, Any]]]:
    """Each shard's name, bytes and manifest record; a shard's ``y_clean_values`` are the tokens
    one-hot (the data's own distribution) and its ``y_best_values`` the tokens."""
    offsets = np.concatenate([[0], np.cumsum(data.steps.sum(axis=1, dtype=np.int64))])
    found = []
    for shard in plan.shards:
        start, stop = plan.bounds(shard)
        tokens = data.tokens[offsets[start] : offsets[stop]]
        arrays = {"x": data.x[start:stop], "steps": data.steps[start:stop], "y_values": tokens,
                  "y_clean_values": np.eye(data.codec.vocab_size, dtype=np.float32)[tokens], "y_best_values": tokens}
        encoded = _storage.encode_shard(arrays, plan.file_format)
        name = _storage.shard_name(shard, plan.file_format)
        found.append((name, encoded, {"file": name, "sha256": _storage.sha256(encoded), "start": start, "stop": stop,
                                      "real_steps": int(arrays["steps"].sum()), "bytes": len(encoded)}))
    return found  # fmt: skip


def _law(data: Dataset, window: int, end_token: bool) -> dict[str, Any]:
    return {"task": TASK, "law": LAW, "state": "carry", "vocab_size": data.codec.vocab_size,
            "heldout_fraction": HELDOUT_FRACTION,
            "encoding": {"beat": "a quarter note", "window": window, "features": list(_chorales.FEATURES),
                         "vocabulary": data.codec.to_json(), "unknown_token": data.codec.unknown,
                         "end_token": data.codec.end, "runs_end_with_end_token": end_token}}  # fmt: skip


def build_manifest(data: Dataset, spec: Spec, plan: Plan, records: list[dict[str, Any]],
                   source: dict[str, Any], end_token: bool) -> dict[str, Any]:  # fmt: skip
    """The manifest of an import: the readers' keys as ``datagen make`` writes them, with
    ``source`` (where the chorales came from) and ``baselines`` besides."""
    real = data.x[..., _chorales.FEATURES.index("in_chorale")] > 0.5
    cut = heldout_start(len(data.x), HELDOUT_FRACTION)
    notes = data.steps - int(end_token)
    return {
        "format_version": _manifest.FORMAT_VERSION,
        "generator": {"name": "datagen", "version": GENERATOR_VERSION},
        "params": _manifest.params(spec, plan),
        "law": _law(data, spec.timesteps, end_token),
        "lengths": {"law": "the soprano's notes per beat, as Bach wrote them", "notes_per_beat": {
            "train": _histogram(notes[:cut], real[:cut]), "heldout": _histogram(notes[cut:], real[cut:])}},
        "x_distribution": "the beat features of law.encoding.features; beats after a chorale's end are all 0",
        "counts": {"samples": len(data.x), "timesteps": spec.timesteps, "real_steps": int(data.steps.sum()),
                   "shards": len(records)},
        "noise_floor": None,
        "truth": {"files": [], "parameters": {}},
        "slice": {"index": 0, "count": 1, "shards": [0, plan.total_shards], "total_shards": plan.total_shards,
                  "total_samples": plan.n_samples},
        "shards": records,
        "source": {**source, "chorales": data.records},
        "baselines": baselines(data, end_token),
    }  # fmt: skip


def _write(path: Path, shards: list[tuple[str, bytes | memoryview, dict[str, Any]]], manifest: dict[str, Any]) -> None:
    """Writes the shards and the manifest into a fresh directory that then replaces ``path``."""

    def write(directory: str) -> None:
        for name, data, _ in shards:
            _storage.atomic_write(Path(directory) / name, data)
        _storage.atomic_write(Path(directory) / _manifest.MANIFEST, _manifest.dumps(manifest))

    try:
        atomic.write_directory(path, write)
    except OSError as error:
        raise DatasetError(f"cannot write {path} ({error.strerror or error})") from None


def import_chorales(
    out: str | os.PathLike[str] = "chorales-data",
    *,
    corpus: str | os.PathLike[str] | None = None,
    chorales: str | list[str] | None = None,
    limit: int | None = None,
    window: int = DEFAULT_WINDOW,
    end_token: bool = False,
    format: str = DEFAULTS["format"],  # noqa: A002 - mirrors the --format option
    shard_size: int = DEFAULTS["shard_size"],
    workers: int = DEFAULTS["workers"],
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Imports Bach's chorales as a token dataset that datagen's readers and ``chain`` read.

    Each sample is a window of ``window`` beats (quarter notes) of one chorale: ``x[b, t]`` holds
    what the alto, tenor and bass sound at the beat's onset, its place in the bar, a fermata flag
    and the key (``datagen.ChoraleCodec`` decodes it); the inner steps of a beat are the soprano's
    notes and rests that begin in it, one (pitch, duration) token each. The held-out chorales'
    windows are the last ``ceil(0.1 n)`` samples, the split of ``datagen.read(...,
    split="heldout")`` at its default ``heldout_fraction``; the vocabulary is the training
    chorales' pairs, and a pair they lack is token 0. The manifest records each chorale's file
    and sha256, its samples and split (``datagen.chorale_windows``), the chorales skipped and
    why, and the baselines (docs/chorales.md). The same files give the same bytes; the directory
    is written whole or not at all.

    Args:
        out: the dataset directory: new, empty, or holding a dataset with ``overwrite``.
        corpus: a folder of ``.mxl``, ``.xml`` or ``.musicxml`` files; None reads music21's corpus.
        chorales: ids (file names without their suffix) to import, comma-separated or a list;
            None imports all.
        limit: import only the first ``limit`` chorales (in file name order) of those chosen.
        window: ``T``, beats per sample.
        end_token: end each beat's run with the end token (token 1), for ``chain.EndToken(1)``:
            every beat then has at least one step.
        format: ``npz`` or ``tfrecord``.
        shard_size: samples per shard file.
        workers: processes reading chorales in parallel.
        overwrite: replace the dataset in ``out`` (the whole directory).
        progress: show the chorales read on stderr.

    Returns:
        The manifest written.

    Raises:
        ValueError: a bad argument, a missing corpus folder, unknown ``chorales``, or an ``out``
            that holds other files (or a dataset, without ``overwrite``); nothing is written.
        ModuleNotFoundError: music21 is not installed (``pip install 'ragged-chain[music]'``).
        DatasetError: fewer than two chorales could be read, or ``out`` cannot be written.
    """
    window, workers = check_int("window", window, 1), check_int("workers", workers, 1)
    limit = check_optional(check_int, "limit", limit, 1)
    end_token, overwrite = check_flag("end_token", end_token), check_flag("overwrite", overwrite)
    progress, shard_size = check_flag("progress", progress), check_int("shard_size", shard_size, 1)
    file_format = check_choice("format", format, FORMATS)
    path = _check_out(out, overwrite)
    folder = None if corpus is None else _folder_files(corpus)
    version = _music.version()
    files = _select(_music.corpus_files() if folder is None else folder, chorales, limit)
    parsed = _read_all(files, workers, progress)
    data = assemble(parsed, window, end_token)
    spec = Spec(task=TASK, timesteps=window, input_size=len(_chorales.FEATURES), output_size=1,
                longest_step=max(1, int(data.steps.max())), lengths=IMPORTED_LENGTHS, zero_fraction=0.0, noise=0.0,
                vocab_size=data.codec.vocab_size)  # fmt: skip
    plan = Plan(len(data.x), shard_size, file_format)
    shards = _shards(data, plan)
    source = {"name": "Bach chorales", "corpus": "music21" if corpus is None else str(corpus), "music21": version,
              "skipped": [{"id": entry.id, "file": entry.file, "sha256": entry.sha256, "reason": entry.reason}
                          for entry in parsed if entry.score is None]}  # fmt: skip
    manifest = build_manifest(data, spec, plan, [record for _, _, record in shards], source, end_token)
    _manifest.check(manifest, path / _manifest.MANIFEST)
    _write(path, shards, manifest)
    return manifest


def report(manifest: dict[str, Any], out: str | os.PathLike[str]) -> str:
    """What ``datagen import chorales`` prints: the counts, the chorales skipped and the baselines."""
    source, figures, counts = manifest["source"], manifest["baselines"], manifest["counts"]
    held = [record for record in source["chorales"] if record["split"] == "heldout"]
    cut = heldout_start(counts["samples"], HELDOUT_FRACTION)
    tokens, lengths = figures["tokens"], figures["counts"]
    return "\n".join([
        f"imported {len(source['chorales'])} chorales, {len(held)} of them held out ({len(source['skipped'])} "
        f"skipped), into {out}: {counts['samples']} samples of {counts['timesteps']} beats, {cut} train and "
        f"{counts['samples'] - cut} held-out; vocab_size {manifest['params']['vocab_size']}",
        *(f"skipped {entry['id']}: {entry['reason']}" for entry in source["skipped"]),
        "held-out baselines (fitted on the training chorales):",
        f"  nats per note: unigram {tokens['unigram']['cross_entropy']:.4f} (k {tokens['unigram']['k']:g}), bigram "
        f"{tokens['bigram']['cross_entropy']:.4f} (k {tokens['bigram']['k']:g}); {figures['heldout_notes']} notes, "
        f"{figures['unknown_share']:.1%} unknown",
        f"  notes per beat, accuracy: most frequent ({lengths['majority']['count']}) "
        f"{lengths['majority']['accuracy']:.1%}, logistic regression on x {lengths['logistic']['accuracy']:.1%}; "
        f"{figures['heldout_beats']} beats",
    ])  # fmt: skip
