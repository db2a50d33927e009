"""The datagen command through click's CliRunner: exit codes, messages, nothing written on bad input."""

from __future__ import annotations

import re

import numpy as np
import pytest
from click.testing import CliRunner

import datagen
from datagen.cli import main


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_make_with_defaults_writes_the_demo_dataset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("make", "--samples", "300")
    assert result.exit_code == 0, result.output
    assert "wrote 300 samples" in result.output and "to demo-data" in result.output
    data = datagen.read(tmp_path / "demo-data", verify=True)
    np.testing.assert_array_equal(data["x"], datagen.generate(300)["x"])


def test_make_options_map_onto_the_api(tmp_path):
    result = run("make", "--out", str(tmp_path / "d"), "--task", "echo", "--samples", "50", "--timesteps", "5",
                 "--input-size", "2", "--output-size", "2", "--longest-step", "3", "--lengths", "poisson",
                 "--zero-fraction", "0.2", "--noise", "0.1", "--seed", "7", "--format", "tfrecord",
                 "--shard-size", "20", "--workers", "2")  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = datagen.read(tmp_path / "d")["manifest"]
    assert manifest["params"] == {"task": "echo", "timesteps": 5, "input_size": 2, "output_size": 2,
                                  "longest_step": 3, "lengths": "poisson", "zero_fraction": 0.2, "noise": 0.1,
                                  "seed": 7, "teacher_hidden": 8, "n_samples": 50, "shard_size": 20,
                                  "format": "tfrecord"}  # fmt: skip


@pytest.mark.parametrize(
    "args,message",
    [
        (["--samples", "-5"], "Invalid value for '--samples': must be an integer >= 1; received -5"),
        (["--timesteps", "-1"], "Invalid value for '--timesteps': must be an integer >= 1; received -1"),
        (["--input-size", "0"], "Invalid value for '--input-size': must be an integer >= 1; received 0"),
        (["--longest-step", "0"], "Invalid value for '--longest-step': must be an integer in [1, 2147483647]; received 0"),
        (["--task", "nope"], "Invalid value for '--task': must be one of echo, running, bursts, teacher, ar, ar-reset, "
                             "tokens, tokens-reset; received 'nope'"),  # fmt: skip
        (["--lengths", "gauss"], "Invalid value for '--lengths': must be one of"),
        (["--task", "echo", "--output-size", "3"], "Invalid value for '--output-size': `output_size` must equal "
                                                   "`input_size` for task 'echo'; received output_size=3, input_size=4"),
        (["--zero-fraction", "1.5"], "Invalid value for '--zero-fraction': must be a number in [0, 1]; "
                                     "received 1.5"),  # fmt: skip
        (["--zero-fraction", "-0.1"], "Invalid value for '--zero-fraction': must be a number in [0, 1]; received -0.1"),
        (["--noise", "-1"], "Invalid value for '--noise': must be a number in [0, 1e+18]; received -1.0"),
        (["--seed", "-2"], "Invalid value for '--seed': must be an integer in"),
        (["--teacher-hidden", "0"], "Invalid value for '--teacher-hidden': must be an integer >= 1"),
        (["--format", "csv"], "Invalid value for '--format': must be one of npz, tfrecord; received 'csv'"),
        (["--shard-size", "0"], "Invalid value for '--shard-size': must be an integer >= 1; received 0"),
        (["--workers", "0"], "Invalid value for '--workers': must be an integer >= 1; received 0"),
        (["--num-shards", "2", "--shard-index", "2", "--shard-size", "10"],
         "Invalid value for '--shard-index': must be an integer in [0, 1]; received 2"),
        (["--num-shards", "0"], "Invalid value for '--num-shards': must be an integer >= 1; received 0"),
        (["--samples", "ten"], "Invalid value for '--samples': 'ten' is not a valid integer"),
        (["--overwrite", "--resume"], "Invalid value for '--resume': use one of --resume and --overwrite, not both"),
    ],
)
def test_bad_options_exit_2_with_one_line_and_write_nothing(tmp_path, args, message):
    out = tmp_path / "d"
    result = run("make", "--out", str(out), "--samples", "20", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert sum("Error:" in line for line in result.output.splitlines()) == 1
    assert not out.exists()


def test_unwritable_out_exits_2(tmp_path):
    (tmp_path / "file").write_text("")
    result = run("make", "--out", str(tmp_path / "file" / "d"), "--samples", "5")
    assert result.exit_code == 2
    assert "Invalid value for '--out': `out` is not writable; received" in result.output


def test_existing_dataset_needs_overwrite(tmp_path):
    assert run("make", "--out", str(tmp_path), "--samples", "5").exit_code == 0
    result = run("make", "--out", str(tmp_path), "--samples", "5")
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == (  # options only: the library's message names its arguments
        f"Error: Invalid value for '--out': {str(tmp_path)!r} already holds a dataset "
        f"({str(tmp_path / 'manifest.json')!r}); pass --overwrite to replace it or --resume to finish it")
    assert run("make", "--out", str(tmp_path), "--samples", "6", "--overwrite").exit_code == 0
    assert run("make", "--out", str(tmp_path), "--samples", "6", "--resume").exit_code == 0


def test_make_reports_progress_in_lines_where_stderr_is_not_a_terminal(tmp_path):
    # CliRunner's stderr is not a terminal, as a log or a pipe: no bar, and no bar's label alone
    args = ["make", "--out", str(tmp_path / "d"), "--samples", "40", "--shard-size", "10", "--task", "running"]
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [f"datagen make: {done}/4 shards" for done in (1, 2, 3, 4)]
    assert result.stdout.splitlines() == [f"wrote 40 samples ({datagen.read(tmp_path / 'd')['steps'].sum()} real "
                                          f"inner steps) in 4 shard(s) to {tmp_path / 'd'}"]  # fmt: skip
    many = run("make", "--out", str(tmp_path / "e"), "--samples", "40", "--shard-size", "1", "--task", "running")
    assert many.exit_code == 0, many.output
    assert many.stderr.splitlines() == [f"datagen make: {done}/40 shards" for done in range(4, 41, 4)]  # tenths


def test_inspect_prints_counts_histogram_padding_and_noise_floor(small_npz):
    result = run("inspect", str(small_npz), "--verify")
    assert result.exit_code == 0, result.output
    data = datagen.read(small_npz)
    per_sample = data["steps"].sum() / 300
    assert "300 x T=6" in result.output
    assert f"= 6 * 5 / {per_sample:.2f} = {30 / per_sample:.2f}" in result.output
    assert "noise floor  0.0025" in result.output
    histogram = [line for line in result.output.splitlines() if " | " in line]
    assert len(histogram) == 6
    counts = [int(re.search(r"(\d+) \(\s*[\d.]+%\)$", line).group(1)) for line in histogram]
    np.testing.assert_array_equal(counts, np.bincount(data["steps"].ravel(), minlength=6))


def test_inspect_bins_long_histograms(tmp_path):
    datagen.make(tmp_path / "d", n_samples=50, longest_step=100, lengths="zipf", task="running")
    result = run("inspect", str(tmp_path / "d"))
    histogram = [line for line in result.output.splitlines() if " | " in line]
    assert 10 <= len(histogram) <= 20 and histogram[0].split()[0] == "0-4"


def test_inspect_plot_writes_a_png(small_npz, tmp_path):
    target = tmp_path / "sample.png"
    result = run("inspect", str(small_npz), "--plot", str(target), "--sample", "2")
    assert result.exit_code == 0, result.output
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and target.stat().st_size > 10_000


@pytest.mark.parametrize("sample", ["300", "-1"])
def test_inspect_plot_rejects_a_sample_out_of_range_before_the_summary(small_npz, tmp_path, sample):
    result = run("inspect", str(small_npz), "--plot", str(tmp_path / "p.png"), "--sample", sample)
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == f"Error: Invalid value for '--sample': must be an integer in [0, 299]; " \
                                             f"received {sample}"
    assert "samples" not in result.output  # refused before the summary, not after it
    assert not (tmp_path / "p.png").exists()


def test_inspect_of_a_broken_dataset_exits_1_naming_the_file(tmp_path):
    datagen.make(tmp_path / "d", n_samples=10)
    (tmp_path / "d" / "shard-00000.npz").write_bytes(b"junk")
    result = run("inspect", str(tmp_path / "d"))
    assert result.exit_code == 1
    assert "Error:" in result.output and "shard-00000.npz: not a readable npz shard" in result.output


def test_merge_command_joins_slices(tmp_path):
    for index in range(2):
        result = run("make", "--out", str(tmp_path / f"p{index}"), "--samples", "40", "--shard-size", "10",
                     "--num-shards", "2", "--shard-index", str(index))  # fmt: skip
        assert result.exit_code == 0, result.output
    result = run("merge", str(tmp_path / "p0"), str(tmp_path / "p1"), "--out", str(tmp_path / "all"))
    assert result.exit_code == 0 and "merged 4 shards (40 samples)" in result.output
    np.testing.assert_array_equal(datagen.read(tmp_path / "all", verify=True)["x"], datagen.generate(40)["x"])
    result = run("merge", str(tmp_path / "p0"), str(tmp_path / "p1"))
    assert result.exit_code == 2 and "Invalid value for '--out': `out` is required" in result.output
    result = run("merge", str(tmp_path / "p0"), "--out", str(tmp_path / "x"))
    assert result.exit_code == 1 and "slices [1] of 2 are missing" in result.output


def test_help_is_the_docstring():
    result = run("make", "--help")
    assert result.exit_code == 0 and "Generate a dataset" in result.output and "--teacher-hidden" in result.output


def test_merge_names_its_argument_dirs_as_its_help_text_and_errors_do():
    usage = run("merge", "--help")
    assert usage.exit_code == 0 and "merge [OPTIONS] DIRS..." in usage.output and "DIRS hold the slices" in usage.output
    missing = run("merge")
    assert missing.exit_code == 2 and "Error: Missing argument 'DIRS...'" in missing.output, missing.output
