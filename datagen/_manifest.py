"""The dataset manifest: what a dataset holds, how it was made, and how to check it.

``manifest.json`` is a JSON object with ``format_version``, ``generator`` (name, version),
``params`` (every generation parameter plus ``n_samples``, ``shard_size`` and ``format``),
``law`` (the task's law in words and its state mode), ``lengths`` (the distribution's
parameters), ``x_distribution``, ``counts`` (samples, timesteps, real inner steps, shards),
``noise_floor`` (``noise ** 2``), ``truth`` (stored files with their sha256 and the law's
parameters), ``slice`` (which part of the whole it covers) and ``shards`` (file, sha256,
``start``/``stop`` sample range, real steps and bytes of each shard).

A token task's manifest differs in four places: ``params`` holds ``vocab_size``; ``noise_floor``
is null (nothing is added to the tokens); ``law`` adds the law's figures summed from the shards
(``cross_entropy_floor``, ``greedy_miss_rate`` and ``runs``, see ``datagen._tokens.summary``);
and each shard record adds ``law_stats``, what those figures sum.

An imported dataset (``datagen.IMPORTED_TASKS``, see ``datagen._import``) is a token dataset with
``lengths`` "data", a null ``noise_floor`` and no truth; its ``law`` holds the ``encoding``, and it
adds ``source`` (the files, each chorale's split and samples, the chorales skipped) and
``baselines``. Its held-out chorales must hold exactly the default held-out split.

A slice made with ``num_shards=K, shard_index=i`` writes ``manifest.slice-i-of-K.json`` instead,
covering only its shards; :func:`datagen.merge` joins the K slices into ``manifest.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from ragged_common.checks import check_choice, check_int

from . import _lengths, _storage, _tasks, _tokens
from ._errors import DatasetError
from ._params import (DEFAULTS, FORMATS, GENERATOR_VERSION, IMPORTED_TASKS, TOKEN_TARGETS, TOKEN_TASKS,
                      ParameterError, Spec)

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_SLICE = re.compile(r"^manifest\.slice-(\d{5})-of-(\d{5})\.json$")
_MAX_MANIFEST_BYTES = 256 * 2**20
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def heldout_start(n_samples: int, heldout_fraction: float) -> int:
    """The index of the first held-out sample: the last ``ceil(heldout_fraction * n)`` are held out."""
    return n_samples - math.ceil(heldout_fraction * n_samples)


def slice_manifest_name(index: int, count: int) -> str:
    """The manifest name a slice writes, e.g. ``manifest.slice-00001-of-00004.json``."""
    return f"manifest.slice-{index:05d}-of-{count:05d}.json"


def parse_slice_name(name: str) -> tuple[int, int] | None:
    """``(index, count)`` of a slice manifest's name, or None for any other name."""
    match = _SLICE.match(name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def pending_name(final: str) -> str:
    """The in-progress manifest beside ``final``, used by ``resume`` after a crash."""
    return final.replace(".json", ".pending.json")


def is_pending(path: Path) -> bool:
    """Whether ``path`` names an in-progress manifest, which lists only the shards made so far."""
    return path.name.endswith(".pending.json")


@dataclasses.dataclass(frozen=True)
class Plan:
    """How a dataset is cut into shards and which slice of them a run makes."""

    n_samples: int = DEFAULTS["n_samples"]
    shard_size: int = DEFAULTS["shard_size"]
    file_format: str = DEFAULTS["format"]
    num_shards: int = DEFAULTS["num_shards"]
    shard_index: int = DEFAULTS["shard_index"]

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_samples", check_int("n_samples", self.n_samples, 1))
        object.__setattr__(self, "shard_size", check_int("shard_size", self.shard_size, 1))
        object.__setattr__(self, "file_format", check_choice("format", self.file_format, FORMATS))
        total = self.total_shards
        count = check_int("num_shards", self.num_shards, 1)
        if count > total:
            raise ParameterError("num_shards", f"<= {total}, the number of shards of {self.n_samples} samples at "
                                 f"shard_size {self.shard_size}", count)
        object.__setattr__(self, "num_shards", count)
        object.__setattr__(self, "shard_index", check_int("shard_index", self.shard_index, 0, count - 1))

    @property
    def total_shards(self) -> int:
        """Shards in the whole dataset."""
        return math.ceil(self.n_samples / self.shard_size)

    @property
    def shards(self) -> range:
        """The shard indices this run makes: a contiguous share of ``total_shards``."""
        total, count, index = self.total_shards, self.num_shards, self.shard_index
        return range(total * index // count, total * (index + 1) // count)

    @property
    def samples_written(self) -> int:
        """The samples in this run's shards."""
        shards = self.shards
        if not shards:
            return 0
        return self.bounds(shards[-1])[1] - self.bounds(shards[0])[0]

    def bounds(self, shard: int) -> tuple[int, int]:
        """The sample range ``[start, stop)`` of a shard."""
        return shard * self.shard_size, min((shard + 1) * self.shard_size, self.n_samples)

    @property
    def manifest_name(self) -> str:
        """``manifest.json``, or the slice's own manifest name when sliced."""
        if self.num_shards == 1:
            return MANIFEST
        return slice_manifest_name(self.shard_index, self.num_shards)


def params(spec: Spec, plan: Plan) -> dict[str, Any]:
    """Every parameter that determines the dataset (not how many workers made it)."""
    return {**spec.to_dict(), "n_samples": plan.n_samples, "shard_size": plan.shard_size, "format": plan.file_format}


def build(spec: Spec, plan: Plan, shards: list[dict[str, Any]], truth_files: list[dict[str, str]]) -> dict[str, Any]:
    """The manifest of a run (or of a merged set of slices when ``plan`` is unsliced).

    Args:
        spec: the content's parameters.
        plan: the shard layout and slice.
        shards: one record per shard, sorted by ``start``.
        truth_files: ``{"name", "sha256"}`` of each truth file.

    Returns:
        A JSON-ready dict.
    """
    samples = sum(record["stop"] - record["start"] for record in shards)
    described = _law(spec, plan, shards)
    first, last = plan.shards.start, plan.shards.stop
    return {
        "format_version": FORMAT_VERSION,
        "generator": {"name": "datagen", "version": GENERATOR_VERSION},
        "params": params(spec, plan),
        "law": described,
        "lengths": _lengths.parameters(spec.lengths, spec.longest_step) | {"zero_fraction": spec.zero_fraction},
        "x_distribution": "i.i.d. uniform on [-1, 1)" + (", x[..., 0] inside its length bin" if spec.lengths == "input" else ""),
        "counts": {
            "samples": samples,
            "timesteps": spec.timesteps,
            "real_steps": sum(record["real_steps"] for record in shards),
            "shards": len(shards),
        },
        "noise_floor": noise_floor(spec),
        "truth": {"files": truth_files, "parameters": _inline_parameters(spec)},
        "slice": {"index": plan.shard_index, "count": plan.num_shards, "shards": [first, last],
                  "total_shards": plan.total_shards, "total_samples": plan.n_samples},
        "shards": shards,
    }  # fmt: skip


def noise_floor(spec: Spec) -> float | None:
    """``noise ** 2``, the MSE of the true law; None for tokens: a token law's floor is its
    cross-entropy (``law.cross_entropy_floor``), and imported data has no law."""
    return None if spec.task in TOKEN_TARGETS else spec.noise**2


def _inline_parameters(spec: Spec) -> dict[str, Any]:
    """The law's parameters as the manifest holds them: none where a truth file holds them."""
    if _tasks.truth_file(spec.task) is not None:
        return {}
    return {key: np.asarray(value).tolist() for key, value in _tasks.truth(spec).items()}


def _law(spec: Spec, plan: Plan, shards: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest's ``law``: the words and state mode, and the floors a law has besides."""
    described = _tasks.describe(spec)
    if spec.task in _tasks.AR_TASKS:
        from ._generate import no_feedback_floor

        described["no_feedback_floor"] = no_feedback_floor(spec, plan.n_samples)
    if spec.task in TOKEN_TASKS:
        described.update(_tokens.summary(shards, _tokens.HELDOUT_FRACTION))
    return described


def load(path: Path) -> dict[str, Any]:
    """Reads and checks a manifest, with no evaluation of anything in it.

    An in-progress manifest (``*.pending.json``) may list any subset of the plan's shards; every
    other manifest must list all of them.

    Raises:
        DatasetError: the file is missing, too big, not JSON, or not a valid manifest.
    """
    data = _storage.read_file(path, _MAX_MANIFEST_BYTES, "manifest")
    try:
        manifest = json.loads(data)
    except (ValueError, RecursionError) as error:
        raise DatasetError(f"{path}: manifest is not valid JSON ({error})") from None
    check(manifest, path, partial=is_pending(path))
    return manifest


def _require(condition: bool, path: Path, what: str) -> None:
    if not condition:
        raise DatasetError(f"{path}: invalid manifest: {what}")


def check(manifest: Any, path: Path, partial: bool = False) -> None:
    """Checks a manifest's structure and that its shards tile its sample range.

    With ``partial`` (an in-progress manifest), the shards need only be some of the plan's, in
    order: a run interrupted partway has made some and not others.
    """
    _require(isinstance(manifest, dict), path, "not a JSON object")
    _require(manifest.get("format_version") == FORMAT_VERSION, path, f"format_version must be {FORMAT_VERSION}")
    generator = manifest.get("generator")
    _require(isinstance(generator, dict) and generator.get("name") == "datagen", path, "not made by datagen")
    _require(isinstance(generator.get("version"), str), path, "`generator.version` must be a string")
    spec, plan = spec_and_plan(manifest, path)
    shards = manifest.get("shards")
    _require(isinstance(shards, list) and len(shards) > 0, path, "`shards` must be a non-empty list")
    for record in shards:
        _check_record(record, path)
    if partial:
        _check_subset(shards, plan, path)
    else:
        starts = [record["start"] for record in shards]
        stops = [record["stop"] for record in shards]
        _require(starts[1:] == stops[:-1], path, "shard sample ranges are not contiguous")
        _check_tiling(shards, plan, path)
    names = [record.get("file") for record in shards]
    _require(len(set(map(str, names))) == len(names), path, "a shard file is listed more than once")
    _check_counts(manifest, spec, shards, path)
    _check_slice(manifest["slice"], plan, path)
    _check_law(manifest, spec, path)
    if spec.task in TOKEN_TASKS:
        _check_token_figures(manifest, shards, path)
    if spec.task in IMPORTED_TASKS and not partial:
        _check_source(manifest, path)
    truth = manifest.get("truth")
    _require(isinstance(truth, dict) and isinstance(truth.get("files"), list), path, "`truth.files` must be a list")
    for record in truth["files"]:
        _require(isinstance(record, dict) and isinstance(record.get("sha256"), str)
                 and bool(_HEX64.match(record["sha256"])), path, "truth file without a sha256")  # fmt: skip
    _check_parameters(truth.get("parameters"), spec, path)


def _check_tiling(shards: list[dict[str, Any]], plan: Plan, path: Path) -> None:
    """The shards are exactly the plan's, in order: their ranges tile the slice's samples once."""
    expected = [plan.bounds(shard) for shard in plan.shards]
    got = [(record["start"], record["stop"]) for record in shards]
    if got != expected:
        first, last = plan.bounds(plan.shards[0])[0], plan.bounds(plan.shards[-1])[1]
        _require(False, path, f"shard ranges must tile [{first}, {last}) in {len(expected)} shard(s) of "
                              f"{plan.shard_size} samples; received {len(got)} range(s) from {got[0]} to {got[-1]}")


def _check_subset(shards: list[dict[str, Any]], plan: Plan, path: Path) -> None:
    """Each shard is one of the plan's, each at most once, in order: disjoint ranges inside the slice."""
    expected = {plan.bounds(shard) for shard in plan.shards}
    got = [(record["start"], record["stop"]) for record in shards]
    stray = next((bounds for bounds in got if bounds not in expected), None)
    if stray is not None:
        first, last = plan.bounds(plan.shards[0])[0], plan.bounds(plan.shards[-1])[1]
        _require(False, path, f"shard range {stray} is not one of the {len(expected)} shard(s) of "
                              f"{plan.shard_size} samples in [{first}, {last})")
    _require(got == sorted(set(got)), path, "shard ranges overlap or are out of order")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_counts(manifest: dict[str, Any], spec: Spec, shards: list[dict[str, Any]], path: Path) -> None:
    """``counts`` agrees with the shard records it summarises."""
    counts = manifest.get("counts")
    keys = ("samples", "timesteps", "real_steps", "shards")
    _require(isinstance(counts, dict) and all(_is_count(counts.get(key)) for key in keys), path,
             "`counts` must hold four integers >= 0")
    expected = {"samples": sum(record["stop"] - record["start"] for record in shards), "timesteps": spec.timesteps,
                "real_steps": sum(record["real_steps"] for record in shards), "shards": len(shards)}  # fmt: skip
    for key, value in expected.items():
        _require(counts[key] == value, path, f"`counts.{key}` is {counts[key]}, the shards give {value}")


def _check_slice(layout: dict[str, Any], plan: Plan, path: Path) -> None:
    expected = {"shards": [plan.shards.start, plan.shards.stop], "total_shards": plan.total_shards,
                "total_samples": plan.n_samples}  # fmt: skip
    for key, value in expected.items():
        _require(layout.get(key) == value, path, f"`slice.{key}` must be {value}; received {layout.get(key)!r}")


def _check_law(manifest: dict[str, Any], spec: Spec, path: Path) -> None:
    """``noise_floor`` is ``noise ** 2`` (null for tokens); ``law`` describes the task its parameters name."""
    floor, expected = manifest.get("noise_floor"), noise_floor(spec)
    if expected is None:
        _require(floor is None, path, f"`noise_floor` must be null for task {spec.task!r}; received {floor!r}")
    else:
        _require(isinstance(floor, (int, float)) and not isinstance(floor, bool) and math.isfinite(floor)
                 and math.isclose(floor, expected, rel_tol=1e-9, abs_tol=0.0), path,
                 f"`noise_floor` must be noise ** 2 = {expected!r}; received {floor!r}")  # fmt: skip
    law = manifest.get("law")
    _require(isinstance(law, dict) and law.get("task") == spec.task, path,
             f"`law` must be an object whose task is {spec.task!r}")
    _require(isinstance(law.get("law"), str) and isinstance(law.get("state", ""), str), path,
             "`law.law` and `law.state` must be strings")


def _check_token_figures(manifest: dict[str, Any], shards: list[dict[str, Any]], path: Path) -> None:
    """Each shard's ``law_stats`` is well formed and counts its real steps; ``law``'s figures are
    their sums."""
    for record in shards:
        stats = record.get("law_stats")
        _require(isinstance(stats, dict) and all(_is_stats(stats.get(split)) for split in _tokens.SPLITS), path,
                 f"shard {record.get('file')!r}: `law_stats` must hold train and heldout figures")
        tokens = sum(stats[split]["tokens"] for split in _tokens.SPLITS)
        _require(tokens == record["real_steps"], path, f"shard {record.get('file')!r}: `law_stats` counts "
                                                       f"{tokens} tokens, the shard {record['real_steps']}")
    expected = _tokens.summary(shards, _tokens.HELDOUT_FRACTION)
    law = manifest["law"]
    for key, value in expected.items():
        _require(law.get(key) == value, path, f"`law.{key}` is {law.get(key)!r}, the shards give {value!r}")


def _check_source(manifest: dict[str, Any], path: Path) -> None:
    """An import's ``source.chorales`` tile its samples in order, and the held-out chorales' samples
    are exactly the held-out split at the default ``heldout_fraction``: no chorale is in both."""
    source = manifest.get("source")
    records = source.get("chorales") if isinstance(source, dict) else None
    _require(isinstance(records, list) and len(records) > 0, path, "`source.chorales` must be a non-empty list")
    stop = 0
    for record in records:
        _require(isinstance(record, dict) and record.get("split") in ("train", "heldout")
                 and isinstance(record.get("samples"), list) and len(record["samples"]) == 2
                 and all(_is_count(value) for value in record["samples"]), path,
                 "each `source.chorales` entry needs a split (train or heldout) and a [start, stop) sample range")  # fmt: skip
        _require(record["samples"][0] == stop and record["samples"][1] > stop, path,
                 f"chorale {record.get('id')!r}: samples {record['samples']} do not follow on from sample {stop}")
        stop = record["samples"][1]
    samples = manifest["counts"]["samples"]
    _require(stop == samples, path, f"`source.chorales` covers {stop} samples, the shards {samples}")
    cut = heldout_start(samples, DEFAULTS["heldout_fraction"])
    wrong = [record for record in records if (record["split"] == "heldout") != (record["samples"][0] >= cut)]
    _require(not wrong, path, f"the held-out chorales must hold exactly samples [{cut}, {samples}), the held-out "
                              f"split at heldout_fraction {DEFAULTS['heldout_fraction']}; received {wrong[0]['split']} "
                              f"chorale {wrong[0].get('id')!r} at samples {wrong[0]['samples']}" if wrong else "")


def _is_stats(figures: Any) -> bool:
    """``law_stats`` of one split: counts, a finite log loss >= 0, at most as many misses as runs."""
    if not isinstance(figures, dict) or not all(_is_count(figures.get(key)) for key in ("tokens", "runs",
                                                                                        "greedy_misses")):
        return False
    loss = figures.get("log_loss")
    real = isinstance(loss, (int, float)) and not isinstance(loss, bool) and math.isfinite(loss) and loss >= 0
    return real and figures["greedy_misses"] <= figures["runs"]


def _check_parameters(parameters: Any, spec: Spec, path: Path) -> None:
    """``truth.parameters`` holds the law's closed-form parameters (none for the teacher and the
    tokens, whose laws are files); they are cheap to recompute, so they must equal the recomputed ones."""
    _require(isinstance(parameters, dict), path, "`truth.parameters` must be an object")
    arrays = {}
    for key, value in parameters.items():
        try:
            arrays[key] = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            arrays[key] = None
        _require(arrays[key] is not None and bool(np.isfinite(arrays[key]).all()), path,
                 f"`truth.parameters.{key}` must be a finite number or a nested list of them")
    expected = {} if _tasks.truth_file(spec.task) is not None else _tasks.truth(spec)
    _require(sorted(arrays) == sorted(expected), path,
             f"`truth.parameters` must hold {sorted(expected)} for task {spec.task!r}; received {sorted(arrays)}")
    for key, value in expected.items():
        _require(arrays[key].shape == value.shape and np.allclose(arrays[key], value, rtol=1e-12, atol=0.0), path,
                 f"`truth.parameters.{key}` differs from the law's {key} for these parameters")


def _check_record(record: Any, path: Path) -> None:
    _require(isinstance(record, dict), path, "a shard entry is not an object")
    for key in ("start", "stop", "real_steps"):
        value = record.get(key)
        _require(isinstance(value, int) and not isinstance(value, bool) and value >= 0, path, f"shard `{key}` must be an integer >= 0")
    _require(record["stop"] > record["start"], path, "a shard has an empty sample range")
    _require(isinstance(record.get("sha256"), str) and bool(_HEX64.match(record["sha256"])), path, "a shard has no valid sha256")


def spec_and_plan(manifest: dict[str, Any], path: Path) -> tuple[Spec, Plan]:
    """Rebuilds and validates the spec and plan a manifest records."""
    values = manifest.get("params")
    _require(isinstance(values, dict), path, "`params` must be an object")
    tokens = values.get("task") in TOKEN_TARGETS  # only their manifests record `vocab_size`
    names = [field.name for field in dataclasses.fields(Spec) if tokens or field.name != "vocab_size"]
    _require(all(name in values for name in [*names, "n_samples", "shard_size", "format"]), path, "`params` is incomplete")
    layout = manifest.get("slice")
    _require(isinstance(layout, dict), path, "`slice` must be an object")
    try:
        spec = Spec(**{name: values[name] for name in names})
        plan = Plan(values["n_samples"], values["shard_size"], values["format"], layout.get("count"), layout.get("index"))
    except ParameterError as error:
        raise DatasetError(f"{path}: invalid manifest: {error}") from None
    return spec, plan


def dumps(manifest: dict[str, Any]) -> bytes:
    """The manifest as indented UTF-8 JSON."""
    return (json.dumps(manifest, indent=1, sort_keys=False) + "\n").encode()
