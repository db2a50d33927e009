"""`chain fit` and `chain evaluate` through click's CliRunner: files, resume, and errors."""

from __future__ import annotations

import csv
import json
import shutil

import keras
import numpy as np
import pytest
from click.testing import CliRunner

import datagen
from chain import FitOptions, fit_run
from chain_app.cli import main

SMALL = {"n_samples": 48, "timesteps": 4, "longest_step": 3, "shard_size": 24}
QUICK = ["--epochs", "2", "--hidden", "8", "--batch-size", "16"]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    made = {}
    for name, extra in {"a": {}, "b": {"seed": 1}, "wide": {"input_size": 5}}.items():
        made[name] = root / name
        datagen.make(made[name], task="teacher", **SMALL, **extra)
    return made


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_fit_writes_a_complete_run_directory(datasets, tmp_path):
    out = tmp_path / "run"
    result = run("fit", datasets["a"], "--out", out, *QUICK)
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert {"model.keras", "state.json", "history.csv", "loss.png", "report.json"} <= names
    assert not [n for n in names if n.startswith(".")]  # no temporary files left
    report = json.loads((out / "report.json").read_text())
    assert report["noise_floor"] == pytest.approx(0.05**2)
    assert report["heldout_mse_over_noise_floor"] == pytest.approx(report["heldout_mse"] / report["noise_floor"])
    assert report["heldout"]["split"] == "heldout" and report["heldout_samples"] == 5
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[1]["val_masked_mse"]) == pytest.approx(report["heldout_mse"], rel=1e-4)
    assert '"heldout_mse"' in result.output


class Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt


def test_resume_continues_to_the_same_weights_as_an_uninterrupted_run(datasets, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert run("fit", datasets["a"], "--out", whole, *QUICK, "--epochs", "3").exit_code == 0
    options = FitOptions(epochs=3, hidden=8, batch_size=16)
    with pytest.raises(KeyboardInterrupt):
        fit_run(datasets["a"], parts, options, verbose=0, callbacks=[Interrupt()])
    assert json.loads((parts / "state.json").read_text())["epochs_done"] == 1
    result = run("fit", datasets["a"], "--out", parts, *QUICK, "--epochs", "3", "--resume")
    assert result.exit_code == 0, result.output
    a = json.loads((whole / "report.json").read_text())
    b = json.loads((parts / "report.json").read_text())
    assert b["epochs"] == 3
    assert b["heldout_mse"] == pytest.approx(a["heldout_mse"], rel=1e-4)


def test_fit_with_predicted_lengths_reports_length_accuracy(datasets, tmp_path):
    out = tmp_path / "run"
    result = run("fit", datasets["a"], "--out", out, *QUICK, "--predict-lengths", "--heldout", datasets["b"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert 0 <= report["length_accuracy"] <= 1
    assert report["heldout"]["data_dir"] == str(datasets["b"]) and report["heldout_samples"] == 48


def test_evaluate_scores_a_run_on_another_dataset(datasets, tmp_path):
    out = tmp_path / "run"
    assert run("fit", datasets["a"], "--out", out, *QUICK, "--epochs", "1").exit_code == 0
    result = run("evaluate", out, datasets["b"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert scores["samples"] == 48 and scores["epochs"] == 1
    assert scores["mse_over_noise_floor"] == pytest.approx(scores["mse"] / scores["noise_floor"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "0"], "Invalid value for '--epochs': must be an integer in [1, 2147483647]; received 0"),
        (["--hidden", "-3"], "Invalid value for '--hidden': must be an integer in [1, 8192]; received -3"),
        (["--state", "sideways"], "Invalid value for '--state'"),
        (["--predict-lengths", "--stop-token"], "use one of --predict-lengths and --stop-token"),
    ],
)
def test_fit_bad_options_exit_2_with_one_line(datasets, tmp_path, args, message):
    result = run("fit", datasets["a"], "--out", tmp_path / "run", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_resume_without_a_run_exits_2(datasets, tmp_path):
    result = run("fit", datasets["a"], "--out", tmp_path / "none", "--resume")
    assert result.exit_code == 2
    assert "Invalid value for '--out'" in result.output and "holds no run to resume" in result.output


def test_fit_into_an_existing_run_exits_2(datasets, tmp_path):
    out = tmp_path / "run"
    assert run("fit", datasets["a"], "--out", out, *QUICK, "--epochs", "1").exit_code == 0
    result = run("fit", datasets["a"], "--out", out, *QUICK)
    assert result.exit_code == 2 and "holds a run already; pass --resume" in result.output


def test_a_missing_dataset_exits_1(tmp_path):
    result = run("fit", tmp_path / "nowhere", "--out", tmp_path / "run")
    assert result.exit_code == 1
    assert "nowhere: no such dataset directory" in result.output


def test_a_corrupt_dataset_exits_1(datasets, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(datasets["a"], broken)
    shard = sorted(broken.glob("*.npz"))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    result = run("fit", broken, "--out", tmp_path / "run", *QUICK)
    assert result.exit_code == 1
    assert "Error:" in result.output and shard.name in result.output


def test_a_heldout_set_of_other_sizes_exits_1_naming_both(datasets, tmp_path):
    result = run("fit", datasets["a"], "--out", tmp_path / "run", *QUICK, "--heldout", datasets["wide"])
    assert result.exit_code == 1
    assert "the dataset's input_size is 5 but the model's input_size is 4" in result.output


def test_evaluate_on_a_dataset_of_other_sizes_exits_1(datasets, tmp_path):
    out = tmp_path / "run"
    assert run("fit", datasets["a"], "--out", out, *QUICK, "--epochs", "1").exit_code == 0
    result = run("evaluate", out, datasets["wide"])
    assert result.exit_code == 1 and "input_size is 5 but the model's input_size is 4" in result.output


def test_evaluate_without_a_checkpoint_exits_2(datasets, tmp_path):
    result = run("evaluate", tmp_path, datasets["a"])
    assert result.exit_code == 2 and "holds no checkpoint" in result.output


def test_a_nan_loss_stops_and_keeps_the_last_good_checkpoint(datasets, tmp_path):
    poisoned = tmp_path / "poisoned"
    shutil.copytree(datasets["a"], poisoned)
    out = tmp_path / "run"
    assert run("fit", poisoned, "--out", out, *QUICK, "--epochs", "1").exit_code == 0
    good = (out / "model.keras").read_bytes()
    shard = sorted(poisoned.glob("*.npz"))[0]
    with np.load(shard) as archive:
        arrays = dict(archive)
    arrays["y_values"][:] = np.nan
    with open(shard, "wb") as handle:
        np.savez(handle, **arrays)
    result = run("fit", poisoned, "--out", out, *QUICK, "--epochs", "3", "--resume")
    assert result.exit_code == 1
    assert "the loss became nan at batch 1 (epoch 2)" in result.output
    assert "last good checkpoint (epoch 1) is kept" in result.output
    assert (out / "model.keras").read_bytes() == good
    assert json.loads((out / "state.json").read_text())["epochs_done"] == 1


def test_fit_with_a_stop_token_reports_length_accuracy(datasets, tmp_path):
    out = tmp_path / "run"
    result = run("fit", datasets["a"], "--out", out, *QUICK, "--stop-token")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert 0 <= report["length_accuracy"] <= 1
    scores = json.loads(run("evaluate", out, datasets["b"]).output)
    assert 0 <= scores["length_accuracy"] <= 1
