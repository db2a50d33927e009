"""Saving a run: pytest-benchmark storage, ``results.json`` and ``results.csv``, written per case.

Every time a case ends, the run's files are rewritten atomically (a temporary file, then a
rename), so an interrupted run keeps every case that finished.

- ``<storage>/<machine-id>/<NNNN>_<name>.json``: pytest-benchmark's saved-run format, read by
  ``pytest-benchmark compare``. It holds the measured cases under ``benchmarks``; cases that
  failed or were skipped are listed under the extra top-level key ``bench``. The file is created,
  and its number ``NNNN`` picked, by pytest-benchmark's own storage
  (``pytest_benchmark.storage.file.FileStorage.save``, what ``--benchmark-save`` runs), so bench's
  runs and plain ``pytest --benchmark-save`` runs share one numbering.
- ``<out>/<NNNN>_<name>/results.json``: the sweep and every case's end record.
- ``<out>/<NNNN>_<name>/results.csv``: one flat row per case.

With ``bench run --passes P`` a case is visited P times (see `bench._runner.run_sweep`); its
saved record pools the timed rounds of every visit so far (`merge_visits`), so the files always
hold one record per case.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import datetime
import functools
import io
import json
import secrets
import statistics
from pathlib import Path
from typing import Any

from pytest_benchmark import __version__ as pytest_benchmark_version
from pytest_benchmark.plugin import pytest_benchmark_generate_machine_info
from pytest_benchmark.stats import Stats
from pytest_benchmark.storage.file import FileStorage
from pytest_benchmark.utils import get_commit_info, get_machine_id

from bench._measure import RATES, rates, versus_figures
from bench._workloads import PARAM_NAMES, Sweep
from ragged_common import atomic, reading

STAT_COLUMNS = ("median_s", "mean_s", "min_s", "max_s", "stddev_s", "rounds", "passes")
FIGURE_COLUMNS = (
    "samples_per_s", "real_steps_per_s", "padded_steps_per_s", "real_steps", "padded_steps",
    "tokens_per_s", "tokens", "decoder",
    "trace_s", "peak_rss_bytes", "build_rss_bytes", "peak_tensor_bytes", "peak_device_bytes",
    "peak_rss_method", "real_gflop", "gflop_per_s", "matmul_batch_gflop_per_s", "matmul_peak_gflop_per_s",
    "batch", "timesteps", "threads", "load_avg_1m", "tensorflow_version", "keras_version", "torch_version",
    "jax_version", "optax_version",
    "versus", "versus_median_s", "versus_ratio",
)
COLUMNS = (*PARAM_NAMES, "status", "message", *STAT_COLUMNS, *FIGURE_COLUMNS)


STATUSES = ("ok", "error", "skipped")


class _Quiet:
    """The logger `FileStorage` writes to; bench prints its own summary."""

    def info(self, text: str, **kwargs: Any) -> None:
        """Drops the message."""

    def warning(self, text: str, *args: Any, **kwargs: Any) -> None:
        """Drops the message."""


def reserve_run(storage: Path, name: str, header: dict[str, Any]) -> Path:
    """Creates this run's saved-run file through pytest-benchmark's storage, with no benchmark yet.

    pytest-benchmark picks the number (the next after this machine's highest); the new file is
    told apart from any other run saved at the same moment by a random token in it.

    Returns:
        The file, ``<storage>/<machine-id>/NNNN_<name>.json``.
    """
    store = FileStorage(storage, logger=_Quiet(), default_machine_id=get_machine_id())
    token = secrets.token_hex(8)
    before = set(store.query())
    try:
        store.save({**header, "benchmarks": [], "bench": {"token": token}}, name)
    except OSError:
        _remove_half_written(set(store.query(f"[0-9][0-9][0-9][0-9]_{name}")) - before)
        raise
    for path in store.query(f"[0-9][0-9][0-9][0-9]_{name}"):
        if path not in before and json.loads(path.read_text()).get("bench", {}).get("token") == token:
            return path
    raise RuntimeError(f"pytest-benchmark saved run {name!r} in {storage} but it cannot be found")


def _remove_half_written(paths: set[Path]) -> None:
    """Removes the files among `paths` that are not whole JSON: what a failed save left behind.

    pytest-benchmark writes its file in place; another run's, saved at the same moment, is whole.
    """
    for path in paths:
        try:
            json.loads(path.read_bytes())
        except ValueError:
            path.unlink(missing_ok=True)
        except OSError:
            pass


def row(record: dict[str, Any]) -> dict[str, Any]:
    """One flat row (the `COLUMNS`) from a case's end record."""
    out: dict[str, Any] = {name: (record.get("params") or {}).get(name) for name in PARAM_NAMES}
    out.update(status=record.get("status"), message=record.get("message"))
    bench = record.get("benchmark") or {}
    stats = bench.get("stats") or {}
    for column in STAT_COLUMNS:
        out[column] = stats.get(column.removesuffix("_s"))
    if bench:
        out["passes"] = stats.get("passes", 1)
    extra = bench.get("extra_info") or {}
    out.update({column: extra.get(column) for column in FIGURE_COLUMNS})
    return out


def to_csv(rows: list[dict[str, Any]]) -> str:
    """CSV text with a header of `COLUMNS`."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def case_key(record: dict[str, Any]) -> tuple[Any, ...]:
    """The case a record belongs to: its params, in `PARAM_NAMES` order."""
    params = record.get("params") or {}
    return tuple(params.get(name) for name in PARAM_NAMES)


def merge_visits(visits: list[dict[str, Any]]) -> dict[str, Any]:
    """One case's record from its visits' end records, in visit order (``bench run --passes``).

    A visit that did not end ``ok`` (an error, a timeout, a skip) makes the case's record that
    visit's, its message saying which visit. Otherwise the timed rounds of all visits are pooled:
    the stats are pytest-benchmark's own (`pytest_benchmark.stats.Stats`) over every round, the rate
    figures are taken at the pooled median, ``trace_s`` is the visits' median, the memory peaks
    are the largest of any visit, ``visit_medians_s`` lists each visit's median, and with a
    partner (``versus``) its rounds are pooled and the ratio taken again.

    Raises:
        ValueError: When `visits` is empty, or an ``ok`` visit's stats carry no ``data``.
    """
    if not visits:
        raise ValueError("merge_visits needs at least one visit; received none")
    if len(visits) == 1:
        return visits[0]
    for number, visit in enumerate(visits, 1):
        if visit["status"] != "ok":
            return {**visit, "message": f"visit {number} of {len(visits)}: {visit.get('message')}"}
    stats = Stats()
    for visit in visits:
        data = visit["benchmark"]["stats"].get("data")
        if not data:
            raise ValueError(f"cannot pool the visits of {case_key(visit)}: a visit's stats have no `data`")
        for duration in data:
            stats.update(duration)
    first = visits[0]["benchmark"]
    extras = [v["benchmark"].get("extra_info") or {} for v in visits]
    extra = dict(first.get("extra_info") or {})
    extra.update({rate: value for rate, value in rates(extra, stats.median).items() if RATES[rate] in extra})
    traces = [e["trace_s"] for e in extras if e.get("trace_s") is not None]
    if traces:
        extra["trace_s"] = float(statistics.median_high(traces))
    for name in ("peak_rss_bytes", "build_rss_bytes", "peak_tensor_bytes", "peak_device_bytes"):
        peaks = [e[name] for e in extras if e.get(name) is not None]
        if peaks:
            extra[name] = max(peaks)
    loads = [e["load_avg_1m"] for e in extras if e.get("load_avg_1m") is not None]
    if loads:
        extra["load_avg_1m"] = sum(loads) / len(loads)
    extra["visit_medians_s"] = [v["benchmark"]["stats"]["median"] for v in visits]
    if extra.get("versus"):  # the partner's rounds, pooled the same way
        partner = [d for e in extras for d in e.get("versus_data_s") or []]
        extra.update(versus_figures(tuple(extra["versus"].split("=", 1)), stats.median, partner))
    pooled = {**stats.as_dict(), "data": stats.data, "iterations": first["stats"].get("iterations", 1)}
    pooled["passes"] = len(visits)
    return {**visits[-1], "benchmark": {**first, "stats": pooled, "extra_info": extra}}


def machine_info() -> dict[str, Any]:
    """pytest-benchmark's machine information, gathered once per process (a copy each time).

    Gathering it runs py-cpuinfo in a child process, about a second each time; the machine does
    not change while a process lives.
    """
    return copy.deepcopy(_machine_info())


@functools.cache
def _machine_info() -> dict[str, Any]:
    return pytest_benchmark_generate_machine_info()


@dataclasses.dataclass
class RunFiles:
    """The files of one run, rewritten as each case ends.

    Attributes:
        run_id: ``NNNN_name``.
        run_dir: Directory of ``results.json``, ``results.csv``, the plot and the child logs.
        storage_file: The pytest-benchmark saved-run file.
        sweep: The sweep.
        records: One record per case that ended at least once, in the order cases first ended;
            with several visits per case, the `merge_visits` of its visits so far.
        visits: Every end record received, per case (`case_key`).
    """

    run_id: str
    run_dir: Path
    storage_file: Path
    sweep: Sweep
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    header: dict[str, Any] = dataclasses.field(default_factory=dict)
    visits: dict[tuple[Any, ...], list[dict[str, Any]]] = dataclasses.field(default_factory=dict)

    @classmethod
    def create(cls, out: Path, storage: Path, name: str, sweep: Sweep) -> RunFiles:
        """Gathers machine and commit information and reserves the run's number in `storage`."""
        header = {
            "machine_info": machine_info(),
            "commit_info": get_commit_info(),
            "datetime": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "version": pytest_benchmark_version,
        }
        storage_file = reserve_run(storage, name, header)
        run_id = storage_file.stem
        return cls(run_id, out / run_id, storage_file, sweep, header=header)

    def add(self, record: dict[str, Any]) -> dict[str, Any]:
        """Adds a case's end record (of one visit) and rewrites the run's files.

        Returns:
            The case's record as saved now: `record` itself on its first visit, else the merge
            of its visits so far.
        """
        key = case_key(record)
        visits = self.visits.setdefault(key, [])
        visits.append(record)
        merged = merge_visits(visits)
        if len(visits) == 1:
            self.records.append(merged)
        else:
            index = next(i for i, r in enumerate(self.records) if case_key(r) == key)
            self.records[index] = merged
        self.save()
        return merged

    def save(self) -> None:
        """Rewrites the storage file, ``results.json`` and ``results.csv``."""
        failures = [r for r in self.records if r["status"] != "ok"]
        storage_json = {
            **self.header,
            "benchmarks": [r["benchmark"] for r in self.records if r["status"] == "ok"],
            "bench": {"run_id": self.run_id, "sweep": json.loads(self.sweep.to_json()), "failures": failures},
        }
        atomic.atomic_write(self.storage_file, json.dumps(storage_json, indent=2, default=str))
        results = {
            "run_id": self.run_id, "storage_file": str(self.storage_file),
            "sweep": json.loads(self.sweep.to_json()), **self.header, "records": self.records,
        }
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic.atomic_write(self.run_dir / "results.json", json.dumps(results, indent=2, default=str))
        atomic.atomic_write(self.run_dir / "results.csv", to_csv([row(r) for r in self.records]))


MAX_RUN_BYTES = 256 * 2**20  # far above any sweep's results.json; /dev/zero and the like are refused


def load_records(path: Path) -> tuple[str, list[dict[str, Any]]]:
    """Reads a saved run: a run directory, its ``results.json``, or a pytest-benchmark file.

    Only a regular file of at most `MAX_RUN_BYTES` is read (a FIFO or a device is refused
    before any read), and its records are checked against the schema the table and plot read
    (`check_record`).

    Returns:
        The run id and the end records (failures included when the file lists them).

    Raises:
        ValueError: When the file is not a regular file, too large, not JSON, neither format,
            its run id is not a plain name, or a record does not fit the schema.
    """
    if path.is_dir():
        path = path / "results.json"
    data = _read_json(path)
    if isinstance(data, dict) and isinstance(data.get("records"), list):
        return _run_id(data.get("run_id", path.parent.name), path), _checked(data["records"], path)
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ValueError(f"{path} is neither a bench results.json nor a pytest-benchmark saved run")
    records = [
        {"params": b.get("params") if isinstance(b, dict) else None, "status": "ok", "message": None, "benchmark": b}
        for b in data["benchmarks"]
    ]
    extra = data.get("bench") if isinstance(data.get("bench"), dict) else {}
    failures = extra.get("failures", [])
    failures = failures if isinstance(failures, list) else [failures]
    return _run_id(extra.get("run_id", path.stem), path), _checked(records + failures, path)


def _read_json(path: Path) -> Any:
    raw = reading.read_regular(path, max_bytes=MAX_RUN_BYTES, what="run file")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not JSON text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise ValueError(f"{path} is not a run: its JSON is nested too deeply") from None


def _run_id(value: Any, path: Path) -> str:
    """A run id that can name a folder: letters, digits, '-', '_' and '.', not '.' or '..'."""
    if not isinstance(value, str) or value in ("", ".", "..") or not all(ch.isalnum() or ch in "-_." for ch in value):
        raise ValueError(f"{path}: `run_id` must be letters, digits, '-', '_' or '.'; received {_short(value)}")
    return value


# The schema of an end record, as far as the table, the CSV and the plot read it.
TEXT_PARAMS = ("strategy", "state", "phase", "lengths", "device", "cell")
TEXT_FIGURES = (
    "peak_rss_method", "tensorflow_version", "keras_version", "torch_version", "jax_version", "optax_version", "versus",
    "decoder",
)


def _checked(records: list[Any], path: Path) -> list[dict[str, Any]]:
    """The records, each checked by `check_record`; a ValueError names the record and its field."""
    for i, record in enumerate(records):
        try:
            check_record(record)
        except ValueError as exc:
            raise ValueError(f"record {i} of {path} {exc}") from None
    return records


def check_record(record: Any) -> None:
    """Raises a ValueError (``has ...``, ``needs ...``) when an end record does not fit the schema.

    A record is a dict with a ``params`` dict (``strategy``, ``state``, ``phase``, ``lengths``,
    ``device`` and ``cell`` strings, ``longest_step`` and ``hidden`` integers, each where given),
    a ``status`` of `STATUSES`, and a ``benchmark`` dict (an ``ok`` record) or null
    whose ``stats`` and ``extra_info`` are dicts or null, holding numbers (or null) where the
    table reads numbers.
    """
    if not isinstance(record, dict) or not isinstance(record.get("params"), dict):
        raise ValueError(f"has no `params` dict; received {_short(record)}")
    if record.get("status") not in STATUSES:
        raise ValueError(f"needs a `status` of {', '.join(STATUSES)}; received {_short(record.get('status'))}")
    bench = record.get("benchmark")
    if record["status"] == "ok" and not isinstance(bench, dict):
        raise ValueError("has status 'ok' but no `benchmark` dict")
    for name in PARAM_NAMES:  # any may be missing (older runs lack cell and hidden)
        _check_value(record["params"].get(name), f"params.{name}", str if name in TEXT_PARAMS else int)
    if bench is None:
        return
    if not isinstance(bench, dict):
        raise ValueError(f"needs a `benchmark` dict or null; received {_short(bench)}")
    for part, names in (("stats", [c.removesuffix("_s") for c in STAT_COLUMNS]), ("extra_info", FIGURE_COLUMNS)):
        values = bench.get(part)
        if values is not None and not isinstance(values, dict):
            raise ValueError(f"needs `benchmark.{part}` to be a dict or null; received {_short(values)}")
        for name in names:
            kind = str if name in TEXT_FIGURES else float
            _check_value((values or {}).get(name), f"benchmark.{part}.{name}", kind)


def _check_value(value: Any, where: str, kind: type) -> None:
    """`value` is null or of `kind` (`str`, `int`, or `float`: any number); booleans are no numbers."""
    numbers = (int,) if kind is int else (int, float)
    ok = isinstance(value, str) if kind is str else isinstance(value, numbers) and not isinstance(value, bool)
    if value is not None and not ok:
        expected = {str: "a string", int: "an integer", float: "a number"}[kind]
        raise ValueError(f"needs `{where}` to be {expected} or null; received {_short(value)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
