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

import csv
import dataclasses
import datetime
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
from datagen._atomic import atomic_write

STAT_COLUMNS = ("median_s", "mean_s", "min_s", "max_s", "stddev_s", "rounds", "passes")
FIGURE_COLUMNS = (
    "samples_per_s", "real_steps_per_s", "padded_steps_per_s", "real_steps", "padded_steps",
    "trace_s", "peak_rss_bytes", "build_rss_bytes", "peak_tensor_bytes", "peak_device_bytes",
    "peak_rss_method", "real_gflop", "gflop_per_s", "matmul_batch_gflop_per_s", "matmul_peak_gflop_per_s",
    "batch", "timesteps", "threads", "load_avg_1m", "tensorflow_version", "keras_version", "torch_version",
    "versus", "versus_median_s", "versus_ratio",
)
COLUMNS = (*PARAM_NAMES, "status", "message", *STAT_COLUMNS, *FIGURE_COLUMNS)


def write_atomic(path: Path, text: str) -> None:
    """Writes `text` to `path` through a temporary file and a rename, making its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)


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
    store.save({**header, "benchmarks": [], "bench": {"token": token}}, name)
    for path in store.query(f"[0-9][0-9][0-9][0-9]_{name}"):
        if path not in before and json.loads(path.read_text()).get("bench", {}).get("token") == token:
            return path
    raise RuntimeError(f"pytest-benchmark saved run {name!r} in {storage} but it cannot be found")


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
    if all(count in extra for count in RATES.values()):
        extra.update(rates(extra, stats.median))
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
            "machine_info": pytest_benchmark_generate_machine_info(),
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
        write_atomic(self.storage_file, json.dumps(storage_json, indent=2, default=str))
        results = {
            "run_id": self.run_id, "storage_file": str(self.storage_file),
            "sweep": json.loads(self.sweep.to_json()), **self.header, "records": self.records,
        }
        write_atomic(self.run_dir / "results.json", json.dumps(results, indent=2, default=str))
        write_atomic(self.run_dir / "results.csv", to_csv([row(r) for r in self.records]))


def load_records(path: Path) -> tuple[str, list[dict[str, Any]]]:
    """Reads a saved run: a run directory, its ``results.json``, or a pytest-benchmark file.

    Returns:
        The run id and the end records (failures included when the file lists them).

    Raises:
        ValueError: When the file is neither format, or a record lacks its params or status.
    """
    if path.is_dir():
        path = path / "results.json"
    try:
        data = json.loads(path.read_text())
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not JSON text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(data, dict) and isinstance(data.get("records"), list):
        return str(data.get("run_id", path.parent.name)), _checked(data["records"], path)
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ValueError(f"{path} is neither a bench results.json nor a pytest-benchmark saved run")
    records = [
        {"params": b.get("params") if isinstance(b, dict) else None, "status": "ok", "message": None, "benchmark": b}
        for b in data["benchmarks"]
    ]
    extra = data.get("bench") if isinstance(data.get("bench"), dict) else {}
    failures = extra.get("failures", [])
    failures = failures if isinstance(failures, list) else [failures]
    return str(extra.get("run_id", path.stem)), _checked(records + failures, path)


def _checked(records: list[Any], path: Path) -> list[dict[str, Any]]:
    """The records, each a dict with a ``params`` dict and a ``status`` of `STATUSES`."""
    for i, record in enumerate(records):
        if not isinstance(record, dict) or not isinstance(record.get("params"), dict):
            raise ValueError(f"record {i} of {path} has no `params` dict; received {_short(record)}")
        if record.get("status") not in STATUSES:
            raise ValueError(
                f"record {i} of {path} needs a `status` of {', '.join(STATUSES)}; received {record.get('status')!r}"
            )
        if record["status"] == "ok" and not isinstance(record.get("benchmark"), dict):
            raise ValueError(f"record {i} of {path} has status 'ok' but no `benchmark` dict")
    return records


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
