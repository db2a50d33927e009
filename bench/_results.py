"""Saving a run: pytest-benchmark storage, ``results.json`` and ``results.csv``, written per case.

Every time a case ends, the run's files are rewritten atomically (a temporary file, then a
rename), so an interrupted run keeps every case that finished.

- ``<storage>/<machine-id>/<NNNN>_<name>.json``: pytest-benchmark's saved-run format, read by
  ``pytest-benchmark compare``. It holds the measured cases under ``benchmarks``; cases that
  failed or were skipped are listed under the extra top-level key ``bench``.
- ``<out>/<NNNN>_<name>/results.json``: the sweep and every case's end record.
- ``<out>/<NNNN>_<name>/results.csv``: one flat row per case.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import json
import os
from pathlib import Path
from typing import Any

from pytest_benchmark import __version__ as pytest_benchmark_version
from pytest_benchmark.plugin import pytest_benchmark_generate_machine_info
from pytest_benchmark.utils import get_commit_info, get_machine_id

from bench._workloads import PARAM_NAMES, Sweep
from datagen._atomic import atomic_write

STAT_COLUMNS = ("median_s", "mean_s", "min_s", "max_s", "stddev_s", "rounds")
FIGURE_COLUMNS = (
    "samples_per_s", "real_steps_per_s", "padded_steps_per_s", "real_steps", "padded_steps",
    "trace_s", "peak_rss_bytes", "build_rss_bytes", "peak_tensor_bytes", "peak_device_bytes",
    "peak_rss_method", "real_gflop", "gflop_per_s", "matmul_batch_gflop_per_s", "matmul_peak_gflop_per_s",
    "batch", "timesteps", "hidden", "threads", "load_avg_1m", "tensorflow_version", "keras_version", "torch_version",
)
COLUMNS = (*PARAM_NAMES, "status", "message", *STAT_COLUMNS, *FIGURE_COLUMNS)


def write_atomic(path: Path, text: str) -> None:
    """Writes `text` to `path` through a temporary file and a rename, making its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)


def next_run_id(storage: Path, name: str) -> str:
    """``NNNN_name`` with the next free number in `storage` (pytest-benchmark's numbering)."""
    numbers = [
        int(p.name[:4]) for p in storage.glob("*/[0-9][0-9][0-9][0-9]_*.json") if p.name[:4].isdigit()
    ]
    return f"{max(numbers, default=0) + 1:04d}_{name}"


def row(record: dict[str, Any]) -> dict[str, Any]:
    """One flat row (the `COLUMNS`) from a case's end record."""
    out: dict[str, Any] = {name: (record.get("params") or {}).get(name) for name in PARAM_NAMES}
    out.update(status=record["status"], message=record.get("message"))
    bench = record.get("benchmark") or {}
    stats = bench.get("stats") or {}
    for column in STAT_COLUMNS:
        out[column] = stats.get(column.removesuffix("_s"))
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


@dataclasses.dataclass
class RunFiles:
    """The files of one run, rewritten as each case ends.

    Attributes:
        run_id: ``NNNN_name``.
        run_dir: Directory of ``results.json``, ``results.csv``, the plot and the child logs.
        storage_file: The pytest-benchmark saved-run file.
        sweep: The sweep.
        records: End records received so far.
    """

    run_id: str
    run_dir: Path
    storage_file: Path
    sweep: Sweep
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    header: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def create(cls, out: Path, storage: Path, name: str, sweep: Sweep) -> RunFiles:
        """Picks the run id and gathers machine and commit information."""
        run_id = next_run_id(storage, name)
        files = cls(run_id, out / run_id, storage / get_machine_id() / f"{run_id}.json", sweep)
        files.header = {
            "machine_info": pytest_benchmark_generate_machine_info(),
            "commit_info": get_commit_info(),
            "datetime": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "version": pytest_benchmark_version,
        }
        return files

    def add(self, record: dict[str, Any]) -> None:
        """Adds a case's end record and rewrites the run's files."""
        self.records.append(record)
        self.save()

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
        ValueError: When the file is neither format.
    """
    if path.is_dir():
        path = path / "results.json"
    data = json.loads(path.read_text())
    if "records" in data:
        return data["run_id"], data["records"]
    if "benchmarks" not in data:
        raise ValueError(f"{path} is neither a bench results.json nor a pytest-benchmark saved run")
    records = [
        {"params": b["params"], "status": "ok", "message": None, "benchmark": b}
        for b in data["benchmarks"]
    ]
    extra = data.get("bench") or {}
    return extra.get("run_id", path.stem), records + list(extra.get("failures", []))
