"""Saved-run files, the table and the plot, from hand-made end records."""

import json

import pytest

from bench import _report, _results
from bench._workloads import Case, Sweep

PARAMS = {"strategy": "packed", "state": "reset", "phase": "train", "longest_step": 4, "lengths": "uniform",
          "device": "cpu", "cell": "gru", "hidden": 64}


def _ok(longest, strategy="packed", rate=1e5):
    params = {**PARAMS, "longest_step": longest, "strategy": strategy}
    bench = {
        "name": f"test_chain[{strategy}-{longest}]", "fullname": f"test_chain.py::test_chain[{strategy}-{longest}]",
        "params": params, "param": f"{strategy}-{longest}", "group": None, "options": {},
        "stats": {"min": 0.01, "max": 0.03, "mean": 0.02, "stddev": 0.01, "median": 0.02, "rounds": 3,
                  "iqr": 0.0, "q1": 0.01, "q3": 0.03, "iqr_outliers": 0, "stddev_outliers": 0, "outliers": "0;0",
                  "ld15iqr": 0.01, "hd15iqr": 0.03, "ops": 50.0, "total": 0.06, "iterations": 1},
        "extra_info": {"real_steps_per_s": rate * longest, "peak_rss_bytes": 2**20 * longest, "trace_s": 1.0},
    }
    return {"event": "end", "params": params, "status": "ok", "message": None, "benchmark": bench}


def _failed():
    return {"event": "end", "params": {**PARAMS, "strategy": "loop"}, "status": "error",
            "message": "timeout: still running after 5 s", "benchmark": None}


def test_run_files_are_written_per_case_and_reload(tmp_path):
    sweep = Sweep((Case(**PARAMS),))
    files = _results.RunFiles.create(tmp_path / "out", tmp_path / "storage", "t", sweep)
    assert files.run_id == "0001_t"
    files.add(_ok(1))
    saved = json.loads(files.storage_file.read_text())
    assert len(saved["benchmarks"]) == 1 and "machine_info" in saved and "commit_info" in saved
    files.add(_failed())
    second = _results.RunFiles.create(tmp_path / "out", tmp_path / "storage", "u", sweep)
    assert second.run_id == "0002_u" and second.storage_file.parent == files.storage_file.parent
    run_id, records = _results.load_records(files.storage_file)
    assert run_id == "0001_t" and [r["status"] for r in records] == ["ok", "error"]
    run_id, records = _results.load_records(files.run_dir)
    assert len(records) == 2
    csv_lines = (files.run_dir / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("strategy,state,phase,longest_step,lengths,device,cell,hidden,status")
    assert len(csv_lines) == 3 and "timeout" in csv_lines[2]
    assert not list(files.run_dir.glob(".*tmp"))


def test_load_records_rejects_other_json(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{}")
    with pytest.raises(ValueError, match="neither a bench results.json nor a pytest-benchmark"):
        _results.load_records(path)


def test_table_lists_figures_and_failures():
    rows = [_results.row(r) for r in (_ok(4), _failed())]
    text = _report.table(rows)
    assert "real steps/s" in text.splitlines()[0]
    assert "4.00e+05" in text and "error: timeout: still running after 5 s" in text


def test_plot_writes_a_png(tmp_path):
    rows = [_results.row(r) for r in (_ok(1), _ok(4), _ok(1, "padded", 5e4), _ok(4, "padded", 5e4), _failed())]
    path = _report.plot(rows, tmp_path / "plot.png", "title")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_table_shows_one_memory_figure_for_all_rows():
    """Exact tensor bytes, where some rows have them, are never mixed with RSS peaks of others."""
    tensors = _ok(4)
    tensors["benchmark"]["extra_info"]["peak_tensor_bytes"] = 3 * 2**20
    rss_only = _ok(4, "torch-packed")  # peers have no tensor figure
    rows = [_results.row(r) for r in (tensors, rss_only)]
    header, _, *lines = _report.table(rows).splitlines()
    assert "peak MiB (tensors)" in header
    memory = {line.split()[0]: line.split()[12] for line in lines}  # the 13th column, peak MiB
    assert memory == {"packed": "3", "torch-packed": "-"}
    assert "peak MiB (RSS)" in _report.table([_results.row(_ok(4))]).splitlines()[0]


def _generated(longest=4, strategy="packed", phase="generate-greedy"):
    record = _ok(longest, strategy)
    record["params"]["phase"] = phase
    record["benchmark"]["extra_info"].update(tokens=500, tokens_per_s=2.5e4, decoder="greedy")
    return record


def test_generation_rows_show_tokens_per_second_in_the_table_plot_and_progress():
    rows = [_results.row(r) for r in (_generated(), _generated(strategy="per-sample"), _ok(4))]
    header, _, *lines = _report.table(rows).splitlines()
    start = header.index("tokens/s")  # the columns are aligned under their headers
    tokens = {(line.split()[0], line.split()[4]): line[start:].split()[0] for line in lines}
    assert tokens == {("packed", "generate-greedy"): "2.50e+04", ("per-sample", "generate-greedy"): "2.50e+04",
                      ("packed", "train"): "-"}
    _, panels, _, series = _report.layout(rows)
    assert [(metric, phase) for metric, _, _, phase in panels[:2]] == [
        ("real_steps_per_s", "train"), ("tokens_per_s", "generate-greedy")]
    assert series[("reset", 1)] == {"packed": [(4, 2.5e4)], "per-sample": [(4, 2.5e4)]}
    assert "2.50e+04 tokens/s" in _report.progress_line(1, 3, rows[0])
    assert "4.00e+05 real steps/s" in _report.progress_line(3, 3, rows[2])


def test_runs_share_pytest_benchmarks_own_numbering(tmp_path):
    """A run saved by plain `pytest --benchmark-save` and bench's runs number one sequence."""
    import subprocess
    import sys

    from bench._runner import child_environ

    storage = tmp_path / "storage"
    (tmp_path / "test_tiny.py").write_text("def test_tiny(benchmark):\n    benchmark(sum, [1, 2])\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(tmp_path / "test_tiny.py"), "-q", "-p", "no:cacheprovider",
         "-o", "addopts=", f"--benchmark-storage={storage}", "--benchmark-save=plain"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=child_environ(),  # a run of its own
    )
    assert done.returncode == 0, done.stdout + done.stderr
    files = _results.RunFiles.create(tmp_path / "out", storage, "after", Sweep((Case(**PARAMS),)))
    assert files.run_id == "0002_after"
    assert {p.name for p in files.storage_file.parent.iterdir()} == {"0001_plain.json", "0002_after.json"}
    files.add(_ok(1))
    run_id, records = _results.load_records(files.storage_file)
    assert run_id == "0002_after" and records[0]["params"]["cell"] == "gru"


def _visit(data, longest=4, peak=2**20, trace=1.0, load=1.0):
    record = _ok(longest)
    stats = record["benchmark"]["stats"]
    stats.update(data=list(data), median=sorted(data)[len(data) // 2], rounds=len(data))
    extra = record["benchmark"]["extra_info"]
    extra.update(batch=16, real_steps=800, padded_steps=1024, real_gflop=0.5,
                 peak_rss_bytes=peak, trace_s=trace, load_avg_1m=load)
    return record


def test_visits_pool_their_rounds_and_take_the_rates_at_the_pooled_median():
    first, second = _visit([0.010, 0.011, 0.030], peak=5, trace=2.0), _visit([0.020, 0.021, 0.022], peak=9, trace=4.0)
    merged = _results.merge_visits([first, second])
    stats = merged["benchmark"]["stats"]
    assert stats["rounds"] == 6 and stats["passes"] == 2
    assert stats["data"] == [0.010, 0.011, 0.030, 0.020, 0.021, 0.022]
    assert stats["median"] == pytest.approx(0.0205) and stats["min"] == 0.010 and stats["max"] == 0.030
    extra = merged["benchmark"]["extra_info"]
    assert extra["real_steps_per_s"] == pytest.approx(800 / 0.0205)
    assert extra["samples_per_s"] == pytest.approx(16 / 0.0205)
    assert extra["gflop_per_s"] == pytest.approx(0.5 / 0.0205)
    assert extra["peak_rss_bytes"] == 9 and extra["trace_s"] == 4.0
    assert extra["visit_medians_s"] == [0.011, 0.021]
    row = _results.row(merged)
    assert row["rounds"] == 6 and row["passes"] == 2 and row["median_s"] == pytest.approx(0.0205)
    assert first["benchmark"]["stats"]["rounds"] == 3  # the visits themselves are left as they were


def test_visits_of_a_generation_case_take_tokens_per_second_at_the_pooled_median():
    first, second = _visit([0.010, 0.011, 0.030]), _visit([0.020, 0.021, 0.022])
    for visit in (first, second):
        visit["benchmark"]["extra_info"].update(tokens=800, tokens_per_s=1.0)
    extra = _results.merge_visits([first, second])["benchmark"]["extra_info"]
    assert extra["tokens_per_s"] == pytest.approx(800 / 0.0205)
    assert extra["real_steps_per_s"] == pytest.approx(800 / 0.0205)
    # a record without a token count (another phase, or an older run) still gets its other rates
    plain = _results.merge_visits([_visit([0.010, 0.012]), _visit([0.020, 0.022])])["benchmark"]["extra_info"]
    assert plain["real_steps_per_s"] == pytest.approx(800 / 0.016) and "tokens_per_s" not in plain


def test_visits_pool_the_partners_rounds_too():
    first, second = _visit([0.010, 0.012]), _visit([0.020, 0.022])
    first["benchmark"]["extra_info"].update(versus="phase=train", versus_data_s=[0.005, 0.006])
    second["benchmark"]["extra_info"].update(versus="phase=train", versus_data_s=[0.010, 0.011])
    extra = _results.merge_visits([first, second])["benchmark"]["extra_info"]
    assert extra["versus_data_s"] == [0.005, 0.006, 0.010, 0.011]
    assert extra["versus_median_s"] == pytest.approx(0.008)
    assert extra["versus_ratio"] == pytest.approx(0.016 / 0.008)
    row = _results.row(_results.merge_visits([first, second]))
    assert row["versus"] == "phase=train" and row["versus_ratio"] == pytest.approx(2.0)
    assert "2 x phase=train" in _report.table([row])


def test_a_failed_visit_becomes_the_cases_record():
    failed = {**_failed(), "params": _ok(4)["params"]}
    merged = _results.merge_visits([_visit([0.01, 0.02]), failed])
    assert merged["status"] == "error" and merged["message"] == "visit 2 of 2: timeout: still running after 5 s"
    with pytest.raises(ValueError, match="no `data`"):
        _results.merge_visits([_ok(4), _ok(4)])
    with pytest.raises(ValueError, match="at least one visit; received none"):
        _results.merge_visits([])


def test_run_files_keep_one_record_per_case_across_visits(tmp_path):
    files = _results.RunFiles.create(tmp_path / "out", tmp_path / "storage", "p", Sweep((Case(**PARAMS),), passes=2))
    files.add(_visit([0.01, 0.02], longest=1))
    files.add(_visit([0.03], longest=4))
    saved = files.add(_visit([0.05, 0.06], longest=1))
    assert saved["benchmark"]["stats"]["rounds"] == 4
    assert [r["params"]["longest_step"] for r in files.records] == [1, 4]
    stored = json.loads(files.storage_file.read_text())["benchmarks"]
    assert [b["stats"]["rounds"] for b in stored] == [4, 1]


def test_the_compare_command_runs_from_the_project_root_without_hypothesis(tmp_path):
    """What `bench run` prints works after `pip install -e .` alone, without the `test` extra.

    pytest-benchmark's compare builds a pytest config, which loads `tests/conftest.py` from the
    project root. A `hypothesis` package first on the path that fails to import stands for the
    missing test-only dependency.
    """
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    missing = tmp_path / "missing" / "hypothesis"
    missing.mkdir(parents=True)
    failing = 'raise ModuleNotFoundError("No module named \'hypothesis\'", name="hypothesis")\n'
    (missing / "__init__.py").write_text(failing)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(missing.parent), str(root)])}
    blocked = subprocess.run([sys.executable, "-c", "import hypothesis"], env=env, capture_output=True, text=True)
    assert "No module named 'hypothesis'" in blocked.stderr
    files = _results.RunFiles.create(tmp_path / "out", tmp_path / "storage", "t", Sweep((Case(**PARAMS),)))
    files.add(_ok(4))
    command = [sys.executable, "-m", "pytest_benchmark", "--storage", str(tmp_path / "storage"), "compare", "0001",
               "--group-by", "param:longest_step"]  # fmt: skip
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "test_chain[packed-4]" in done.stdout + done.stderr and "longest_step=4" in done.stdout + done.stderr


# ----------------------------------------------------------------------------- hand-edited runs


def _edits(document):
    """`(name, edited document)`: each key the report reads deleted, and its value of each other type."""
    records = document["records"]
    places = [("", document), ("records[0].", records[0]), ("records[1].", records[1]),
              ("params.", records[0]["params"]), ("benchmark.", records[0]["benchmark"]),
              ("stats.", records[0]["benchmark"]["stats"]), ("extra_info.", records[0]["benchmark"]["extra_info"])]
    others = {"null": None, "text": "x", "number": -1.5, "integer": 3, "bool": True, "list": [1], "dict": {"a": 1}}
    for prefix, holder in places:
        for key in list(holder):
            kept = holder[key]
            del holder[key]
            yield f"{prefix}{key} deleted", json.dumps(document)
            for kind, value in others.items():
                if type(value) is not type(kept):
                    holder[key] = value
                    yield f"{prefix}{key} = {kind}", json.dumps(document)
            holder[key] = kept
    for kind, value in {**others, "nested": "[" * 100_000 + "]" * 100_000}.items():
        yield f"document = {kind}", value if kind == "nested" else json.dumps(value)


def _edited_report_is_one_line_or_a_table(tmp_path, name, text):
    from click.testing import CliRunner

    from bench.cli import main

    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    (run_dir / "results.json").write_text(text)
    result = CliRunner().invoke(main, ["report", str(run_dir), "--out", str(tmp_path / "out")])
    assert isinstance(result.exception, (SystemExit, type(None))), (name, result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    if result.exit_code == 0:
        assert "real steps/s" in result.output and not errors, (name, result.output)
        assert (tmp_path / "out" / "plot.png").is_file(), name
    else:
        assert result.exit_code in (1, 2) and len(errors) == 1, (name, result.output)
        assert result.output.rstrip().endswith(errors[0]), (name, result.output)
    return result.exit_code


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A results.json as `bench run` writes it: an ok case with a partner, and a failed case."""
    root = tmp_path_factory.mktemp("saved")
    files = _results.RunFiles.create(root / "made", root / "storage", "t", Sweep((Case(**PARAMS),)))
    ok = _ok(4)
    ok["benchmark"]["extra_info"].update(versus="phase=train", versus_ratio=1.5, peak_tensor_bytes=2**20)
    files.add(ok)
    files.add(_failed())
    return json.loads((files.run_dir / "results.json").read_text())


def _drawn_without_matplotlib(rows, path, title):
    """`_report.plot` less the drawing (a quarter of a second each): what it reads of the rows."""
    _report.layout(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_a_hand_edited_results_json_gives_one_error_line_or_a_report(saved_run, tmp_path, monkeypatch):
    monkeypatch.setattr(_report, "plot", _drawn_without_matplotlib)
    codes = [_edited_report_is_one_line_or_a_table(tmp_path, name, text) for name, text in _edits(saved_run)]
    assert len(codes) > 300 and codes.count(0) > 30 and codes.count(2) > 100  # both outcomes are exercised


@pytest.mark.slow  # a minute: each report that passes draws its plot
def test_a_hand_edited_results_json_gives_one_error_line_or_a_plotted_report(saved_run, tmp_path):
    codes = [_edited_report_is_one_line_or_a_table(tmp_path, name, text) for name, text in _edits(saved_run)]
    assert len(codes) > 300 and codes.count(0) > 30


def test_machine_info_is_gathered_once_per_process_and_handed_out_as_copies(monkeypatch):
    first = _results.machine_info()
    assert first["cpu"] and first["python_version"]
    calls = []
    monkeypatch.setattr(_results, "pytest_benchmark_generate_machine_info", lambda: calls.append(1) or {})
    first["cpu"]["brand_raw"] = "changed by one run's header"
    again = _results.machine_info()
    assert calls == [] and again["cpu"].get("brand_raw") != "changed by one run's header"
    assert again["python_version"] == first["python_version"]
