"""`bench run` end to end, through child processes, into pytest-benchmark storage and back."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from bench._results import FIGURE_COLUMNS
from bench.cli import main

TF_FIGURES = {
    "samples_per_s", "real_steps_per_s", "padded_steps_per_s", "real_steps", "padded_steps", "trace_s",
    "peak_rss_bytes", "build_rss_bytes", "real_gflop", "gflop_per_s", "matmul_batch_gflop_per_s", "matmul_peak_gflop_per_s",
    "tensorflow_version", "keras_version",
}
PEER_FIGURES = TF_FIGURES - {"matmul_batch_gflop_per_s", "matmul_peak_gflop_per_s"}
TORCH_FIGURES = PEER_FIGURES | {"torch_version"}
JAX_FIGURES = PEER_FIGURES | {"jax_version", "optax_version"}
SKIPS = {"torch": "torch cannot be imported", "jax": "cannot be imported"}  # jax, or optax


def _invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A --quick run cut down to a few cases (the same code path as `bench run --quick`), counting
    host tensors (`--tensor-memory`), with chain's and JAX's greedy generation next to the forward
    and train phases. The one run of the suite that measures TensorFlow; the runner's other tests measure the
    fake framework of fake_cases.py."""
    root = tmp_path_factory.mktemp("run")
    result = _invoke(
        "run", "--quick", "--longest-steps", "1,3", "--strategies", "packed,reference", "--states", "reset",
        "--phases", "forward,train,generate-greedy", "--tensor-memory",
        "--out", str(root / "out"), "--storage", str(root / "storage"), "--save", "e2e",
    )
    return root, result


def test_run_measures_every_case(small_run):
    root, result = small_run
    assert result.exit_code == 0, result.output
    data = json.loads((root / "out" / "0001_e2e" / "results.json").read_text())
    records = data["records"]
    strategies = {r["params"]["strategy"] for r in records}
    assert {"packed", "reference", "torch-packed", "torch-padded", "jax"} == strategies
    assert len(records) == (5 * 2 + 2) * 2  # (strategies x forward, train; packed's and jax's generation) x L
    assert data["sweep"]["sizes"]["batch"] == 16  # --quick's stated batch
    for record in records:
        framework = record["params"]["strategy"].partition("-")[0]
        if framework in SKIPS and record["status"] == "skipped":
            assert SKIPS[framework] in record["message"] and "`peers` extra" in record["message"]
            continue
        assert record["status"] == "ok", record
        extra = record["benchmark"]["extra_info"]
        wanted = {"torch": TORCH_FIGURES, "jax": JAX_FIGURES}.get(framework, TF_FIGURES)
        if record["params"]["phase"] == "generate-greedy":
            wanted = wanted | {"tokens", "tokens_per_s", "decoder"}
            assert extra["tokens_per_s"] == pytest.approx(extra["tokens"] / record["benchmark"]["stats"]["median"])
        missing = {k for k in wanted if extra.get(k) is None}
        assert not missing, (record["params"], missing)
        assert extra["padded_steps"] == 16 * 8 * record["params"]["longest_step"]
        assert 0 < extra["real_steps"] <= extra["padded_steps"]
        assert extra["peak_device_bytes"] is None  # CPU run
        assert record["benchmark"]["stats"]["rounds"] == 2  # --quick's stated rounds


def test_saved_run_loads_in_pytest_benchmark_compare(small_run):
    root, result = small_run
    assert result.exit_code == 0, result.output
    compare = subprocess.run(
        [sys.executable, "-m", "pytest_benchmark", "--storage", str(root / "storage"), "compare", "0001",
         "--group-by", "param:longest_step", "--columns", "min,median,rounds"],
        capture_output=True, text=True, timeout=120,
    )
    assert compare.returncode == 0, compare.stderr
    out = compare.stdout + compare.stderr
    assert "test_chain[packed-reset-train-L3-uniform-cpu-gru-H64]" in out
    assert "test_reference[reference-reset-forward-L1-uniform-cpu-gru-H64]" in out
    assert "longest_step=1" in out and "longest_step=3" in out
    by_cell = subprocess.run(
        [sys.executable, "-m", "pytest_benchmark", "--storage", str(root / "storage"), "compare", "0001",
         "--group-by", "param:cell", "--columns", "median"],
        capture_output=True, text=True, timeout=120,
    )
    assert by_cell.returncode == 0 and "cell=gru" in by_cell.stdout + by_cell.stderr


def test_outputs_and_report_round_trip(small_run):
    root, result = small_run
    run_dir = root / "out" / "0001_e2e"
    assert "real steps/s" in result.output and "tokens/s" in result.output and "[24/24]" in result.output
    assert (run_dir / "plot.png").stat().st_size > 10_000
    header = (run_dir / "results.csv").read_text().splitlines()[0].split(",")
    assert set(FIGURE_COLUMNS) <= set(header)
    again = _invoke("report", "0001", "--storage", str(root / "storage"), "--out", str(root / "again"))
    assert again.exit_code == 0, again.output
    before = (run_dir / "results.csv").read_text().splitlines()
    after = (root / "again" / "results.csv").read_text().splitlines()
    assert sorted(before) == sorted(after)
    assert (root / "again" / "plot.png").exists()


def test_tensor_memory_records_the_allocator_peak(small_run):
    """`--tensor-memory` counts host tensors exactly: more inner steps hold more bytes (a generation
    call's few tokens weigh little beside its fixed buffers: it has a peak, not one that grows)."""
    root, result = small_run
    assert result.exit_code == 0, result.output
    records = json.loads((root / "out" / "0001_e2e" / "results.json").read_text())["records"]
    peaks = {}
    for record in records:
        if record["status"] == "ok" and record["params"]["strategy"] in ("packed", "reference"):  # TensorFlow's
            params = record["params"]
            peaks.setdefault((params["strategy"], params["phase"]), {})[params["longest_step"]] = (
                record["benchmark"]["extra_info"]["peak_tensor_bytes"])
    generation = peaks.pop(("packed", "generate-greedy"))
    assert set(peaks) == {(s, p) for s in ("packed", "reference") for p in ("forward", "train")}
    assert min(generation.values()) > 0
    for case, by_l in peaks.items():
        assert 0 < by_l[1] < by_l[3], (case, by_l)
