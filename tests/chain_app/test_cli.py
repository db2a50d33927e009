"""`chain fit` and `chain evaluate` through click's CliRunner: files, resume, and errors."""

from __future__ import annotations

import csv
import re
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

import chain
import datagen
from chain import FitOptions, fit_run
from chain_app.cli import main
from chain_app.runs import load_run

from .conftest import OPTIONS, QUICK, SMALL, run


def test_fit_writes_a_complete_run_directory(fitted):
    """The suite's one end-to-end `chain fit` (shared as the `finished` run)."""
    out, output = fitted
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
    assert '"heldout_mse"' in output


class Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt


def test_resume_continues_to_the_same_weights_as_an_uninterrupted_run(datasets, finished, tmp_path):
    parts = tmp_path / "parts"  # the finished run's options, stopped after epoch 1 and resumed
    with pytest.raises(KeyboardInterrupt):
        fit_run(datasets["a"], parts, FitOptions(epochs=2, **OPTIONS), verbose=0, callbacks=[Interrupt()])
    assert json.loads((parts / "state.json").read_text())["epochs_done"] == 1
    result = run("fit", datasets["a"], "--out", parts, *QUICK, "--resume")
    assert result.exit_code == 0, result.output
    a = json.loads((finished / "report.json").read_text())
    b = json.loads((parts / "report.json").read_text())
    assert a["epochs"] == b["epochs"] == 2
    assert b["heldout_mse"] == pytest.approx(a["heldout_mse"], rel=1e-4)
    for whole, resumed in zip(load_run(finished)[0].get_weights(), load_run(parts)[0].get_weights(), strict=True):
        np.testing.assert_array_equal(resumed, whole)


@pytest.mark.slow  # a fit; the stop token's test below reports length accuracy in the default tier
@pytest.mark.usefixtures("stand_in_training")
def test_fit_with_predicted_lengths_reports_length_accuracy(datasets, tmp_path):
    out = tmp_path / "run"
    result = run("fit", datasets["a"], "--out", out, *QUICK, "--predict-lengths", "--heldout", datasets["b"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert 0 <= report["length_accuracy"] <= 1
    assert report["heldout"]["data_dir"] == str(datasets["b"]) and report["heldout_samples"] == 48


def test_evaluate_scores_a_run_on_another_dataset(datasets, finished):
    result = run("evaluate", finished, datasets["same"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert scores["samples"] == 40 and scores["epochs"] == 2
    assert scores["mse_over_noise_floor"] == pytest.approx(scores["mse"] / scores["noise_floor"])


def test_evaluate_on_data_of_another_law_exits_2_naming_both_digests(datasets, finished):
    from chain_app import laws

    digest = {name: laws.law_digest(datagen.info(datasets[name])["manifest"]) for name in ("a", "same", "b")}
    assert digest["a"] == digest["same"] != digest["b"]
    result = run("evaluate", finished, datasets["b"])
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert line == (f"Error: Invalid value for 'DATA_DIR': {datasets['b']} was made by another law (law digest "
                    f"{digest['b'][:12]}) than the run's training data (law digest {digest['a'][:12]}): its scores "
                    "say nothing of the fit; pass --allow-other-law to score it anyway")  # fmt: skip
    with pytest.raises(laws.OtherLaw, match=f"law digest {digest['b'][:12]}"):
        chain.evaluate_run(finished, datasets["b"])
    result = CliRunner().invoke(main, ["evaluate", str(finished), str(datasets["b"]), "--allow-other-law"])
    assert result.exit_code == 0, result.output
    assert "WARNING: " in result.stderr and "scored anyway (--allow-other-law)" in result.stderr
    assert json.loads(result.stdout)["samples"] == 48


def test_evaluate_help_says_how_to_make_comparable_data():
    text = " ".join(run("evaluate", "--help").output.split())
    assert "made by `datagen make` with the training set's --task, --seed and law options" in text
    assert "--allow-other-law" in text and "held-out split" in text


def test_a_run_from_before_law_digests_is_checked_against_its_training_data(datasets, copy_of):
    state = json.loads((copy_of / "state.json").read_text())
    del state["train_info"]["law_digest"]
    (copy_of / "state.json").write_text(json.dumps(state))
    result = run("evaluate", copy_of, datasets["b"])
    assert result.exit_code == 2 and "was made by another law" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "0"], "Invalid value for '--epochs': must be an integer in [1, 2147483647]; received 0"),
        (["--hidden", "-3"], "Invalid value for '--hidden': must be an integer in [1, 8192]; received -3"),
        (["--state", "sideways"], "Invalid value for '--state'"),
        (["--lr", "nan"], "Invalid value for '--lr': must be a finite number > 0 (at most 3.403e+38, float32's largest); received nan"),
        (["--lr", "inf"], "Invalid value for '--lr': must be a finite number > 0 (at most 3.403e+38, float32's largest); received inf"),
        (["--lr", "-1e-3"], "Invalid value for '--lr': must be a finite number > 0"),
        (["--seed", "-1"], "Invalid value for '--seed': must be an integer in [0, 2147483647]; received -1"),
        (["--seed", str(2**31)], "Invalid value for '--seed': must be an integer in [0, 2147483647]; received 2147483648"),
        (["--batch-size", str(2**31)], "Invalid value for '--batch-size': must be an integer in [1, 2147483647]"),
        (["--hidden", "100000"], "Invalid value for '--hidden': must be an integer in [1, 8192]; received 100000"),
        (["--resume", "--overwrite"], "use one of --resume and --overwrite, not both"),
        (["--predict-lengths", "--stop-token"], "use one of --predict-lengths and --stop-token"),
        (["--feedback", "--feedback-sampling", "1.5"],
         "Invalid value for '--feedback-sampling': must be a number in [0, 1]; received 1.5"),
        (["--feedback-sampling", "0.5"], "--feedback-sampling needs --feedback"),
    ],
)
def test_fit_bad_options_exit_2_with_one_line(datasets, tmp_path, args, message):
    result = run("fit", datasets["a"], "--out", tmp_path / "run", *args)
    assert result.exit_code == 2
    assert message in result.output
    lines = result.output.strip().splitlines()  # usage, hint, blank, then one line of error
    assert len(lines) == 4 and lines[-1].startswith("Error: ") and message in lines[-1]
    assert not (tmp_path / "run").exists()


def test_resume_without_a_run_exits_2(datasets, tmp_path):
    result = run("fit", datasets["a"], "--out", tmp_path / "none", "--resume")
    assert result.exit_code == 2
    assert "Invalid value for '--out'" in result.output and "holds no run to resume" in result.output


def test_fit_into_an_existing_run_exits_2(datasets, copy_of):
    before = {p.name: p.read_bytes() for p in copy_of.iterdir() if p.is_file()}
    result = run("fit", datasets["a"], "--out", copy_of, *QUICK)
    assert result.exit_code == 2
    assert "holds a run already; pass --resume to continue it, --overwrite to replace it, or another --out" in result.output
    assert {p.name: p.read_bytes() for p in copy_of.iterdir() if p.is_file()} == before


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


def test_evaluate_on_a_dataset_of_other_sizes_exits_1(datasets, finished):
    result = run("evaluate", finished, datasets["wide"])  # other sizes: another teacher, another law
    assert result.exit_code == 2 and "was made by another law" in result.output
    result = run("evaluate", finished, datasets["wide"], "--allow-other-law")
    assert result.exit_code == 1 and "input_size is 5 but the model's input_size is 4" in result.output


def test_evaluate_without_a_checkpoint_exits_2(datasets, tmp_path):
    result = run("evaluate", tmp_path, datasets["a"])
    assert result.exit_code == 2 and "holds no checkpoint" in result.output


@pytest.mark.usefixtures("stand_in_training")
def test_a_nan_loss_stops_and_keeps_the_last_good_checkpoint(datasets, copy_of, tmp_path):
    poisoned = tmp_path / "poisoned"  # dataset "a", on which the run trained 2 epochs, then poisoned
    shutil.copytree(datasets["a"], poisoned)
    out = copy_of
    good = (out / "model.keras").read_bytes()
    shard = sorted(poisoned.glob("*.npz"))[0]
    with np.load(shard) as archive:
        arrays = dict(archive)
    arrays["y_values"][:] = np.nan
    with open(shard, "wb") as handle:
        np.savez(handle, **arrays)
    result = run("fit", poisoned, "--out", out, *QUICK, "--epochs", "3", "--resume")
    assert result.exit_code == 1
    assert "the loss became nan at batch 1 (epoch 3)" in result.output
    assert "last good checkpoint (epoch 2) is kept" in result.output
    assert (out / "model.keras").read_bytes() == good
    assert json.loads((out / "state.json").read_text())["epochs_done"] == 2


@pytest.mark.usefixtures("stand_in_training")
def test_fit_with_a_stop_token_reports_length_accuracy(datasets, tmp_path):
    out = tmp_path / "run"
    result = run("fit", datasets["a"], "--out", out, *QUICK, "--stop-token")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert 0 <= report["length_accuracy"] <= 1
    scores = json.loads(run("evaluate", out, datasets["same"]).output)
    assert 0 <= scores["length_accuracy"] <= 1


# ----------------------------------------------------------------------------- run directories


@pytest.mark.usefixtures("stand_in_training")
def test_overwrite_replaces_only_the_runs_own_files(datasets, copy_of):
    (copy_of / "notes.txt").write_text("mine")
    (copy_of / ".report.json.123-abcd.tmp").write_text("left by a crash")
    before = json.loads((copy_of / "state.json").read_text())
    result = run("fit", datasets["a"], "--out", copy_of, *QUICK, "--epochs", "1", "--overwrite")
    assert result.exit_code == 0, result.output
    assert (copy_of / "notes.txt").read_text() == "mine"
    assert not list(copy_of.glob(".*"))
    state = json.loads((copy_of / "state.json").read_text())
    assert state["epochs_done"] == 1 and before["epochs_done"] == 2
    events = sorted(p.parent.name for p in (copy_of / "tensorboard").glob("*/events.*"))
    assert events == ["train", "validation"]  # the old run's logs went with it


def test_a_non_empty_directory_needs_overwrite(datasets, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = run("fit", datasets["a"], "--out", tmp_path, *QUICK)
    assert result.exit_code == 2
    assert "is not empty; pass --overwrite to write a run into it" in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_out_pointing_at_a_file_exits_2(datasets, tmp_path):
    (tmp_path / "file").write_text("x")
    result = run("fit", datasets["a"], "--out", tmp_path / "file", *QUICK)
    assert result.exit_code == 2 and "Invalid value for '--out'" in result.output and "is a file" in result.output
    result = run("fit", datasets["a"], "--out", tmp_path / "file" / "run", *QUICK)
    assert result.exit_code == 2 and "file is a file, not a directory; pass another --out" in result.output
    result = run("evaluate", tmp_path / "file", datasets["a"])
    assert result.exit_code == 2 and "is a file" in result.output


def test_an_unwritable_out_exits_2_before_anything_starts(datasets, tmp_path):
    result = run("fit", datasets["a"], "--out", "/proc/chain-run", *QUICK)
    assert result.exit_code == 2, result.output
    assert ("Invalid value for '--out': /proc/chain-run cannot be written (/proc: No such file or directory); "
            "pass another --out") in result.output  # fmt: skip
    assert result.output.strip().splitlines()[-1].startswith("Error: ")
    with pytest.raises(ValueError, match="cannot be written .*; pass another run directory"):
        fit_run(datasets["a"], "/proc/chain-run/deeper", FitOptions(epochs=1))


@pytest.mark.parametrize(
    "damage, message",
    [
        ("{}", "not a run state, missing `options`, `data_dir`, `epochs_done`, `history`"),
        ('{"epochs_done": "two"}', "`epochs_done` must be an integer >= 0; received 'two'"),
        ("not json", "state.json: unreadable run state (JSONDecodeError"),
        ("[" * 100_000 + "]" * 100_000, "state.json: corrupt run state (its JSON is nested too deeply)"),
    ],
    ids=["empty", "epochs", "not-json", "nested"],
)
def test_a_damaged_state_exits_1_with_one_line(datasets, copy_of, damage, message):
    state = json.loads((copy_of / "state.json").read_text())
    text = json.dumps({**state, **json.loads(damage)}) if damage.startswith('{"') else damage
    (copy_of / "state.json").write_text(text)
    for args in (["fit", datasets["a"], "--out", copy_of, *QUICK, "--resume"], ["evaluate", copy_of, datasets["a"]]):
        result = run(*args)
        assert result.exit_code == 1, result.output
        assert message in result.output and result.output.count("\n") == 1


def test_a_garbage_model_is_not_reported_missing(datasets, copy_of):
    (copy_of / "model.keras").write_bytes(b"garbage")
    result = run("evaluate", copy_of, datasets["a"])
    assert result.exit_code == 1
    assert "model.keras: does not match state.json (epoch 2" in result.output
    assert "File not found" not in result.output


@pytest.mark.slow  # a fit run until it diverges
def test_a_diverging_learning_rate_keeps_a_finite_checkpoint(datasets, tmp_path):
    out = tmp_path / "run"
    # one batch per epoch: its loss is finite, the weights after it are not usable
    result = run("fit", datasets["a"], "--out", out, "--hidden", "8", "--batch-size", "64", "--epochs", "2",
                 "--lr", "1e38")  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "became nan (epoch 1): training stopped; the last good checkpoint (epoch 0) is kept" in result.output
    net, state = load_run(out)
    assert state["epochs_done"] == 0 and state["history"] == []
    assert all(np.isfinite(w).all() for w in net.get_weights())
    assert not (out / "report.json").exists()


@pytest.mark.usefixtures("stand_in_training")
def test_a_noise_free_dataset_reports_the_mse_without_a_ratio(noiseless, finished, tmp_path):
    result = run("evaluate", finished, noiseless)
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert scores["noise_floor"] == 0.0 and scores["mse"] > 0 and "mse_over_noise_floor" not in scores
    assert "the noise floor is 0" in scores["mse_over_noise_floor_omitted"]
    result = run("fit", noiseless, "--out", tmp_path / "run", *QUICK, "--epochs", "1")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert "heldout_mse_over_noise_floor" not in report and report["heldout_mse_over_noise_floor_omitted"]


def _scalars(directory):
    values = {}
    for path in directory.glob("events.*"):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                values[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
    return values


def test_fit_logs_scalars_per_epoch_to_tensorboard(finished):
    history = list(csv.DictReader(open(finished / "history.csv")))
    train = _scalars(finished / "tensorboard" / "train")
    held = _scalars(finished / "tensorboard" / "validation")
    floor = json.loads((finished / "report.json").read_text())["noise_floor"]
    for step, row in enumerate(history):
        assert train[("epoch_masked_mse", step)] == pytest.approx(float(row["masked_mse"]))
        assert held[("epoch_masked_mse", step)] == pytest.approx(float(row["val_masked_mse"]))
        assert held[("epoch_mse_over_noise_floor", step)] == pytest.approx(float(row["val_masked_mse"]) / floor)
    assert ("epoch_learning_rate", 1) in train


@pytest.mark.usefixtures("stand_in_training")
def test_a_tiny_noise_floor_is_fitted_with_its_ratios_in_float64(tmp_path):
    datagen.make(tmp_path / "data", task="teacher", **SMALL, noise=1e-30)  # a floor of 1e-60: 0 in float32
    out = tmp_path / "run"
    result = run("fit", tmp_path / "data", "--out", out, *QUICK)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["noise_floor"] == pytest.approx(1e-60, rel=1e-12)
    assert report["heldout_mse_over_noise_floor"] == pytest.approx(report["heldout_mse"] / 1e-60)
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [int(row["epoch"]) for row in rows] == [1, 2]
    for row in rows:
        for prefix in ("", "val_"):
            ratio = float(row[f"{prefix}mse_over_noise_floor"])
            assert ratio == pytest.approx(float(row[f"{prefix}masked_mse"]) / 1e-60, rel=1e-5) and ratio > 1e50
    held = _scalars(out / "tensorboard" / "validation")  # what fits float32 is logged, the ratio is not
    assert ("epoch_masked_mse", 1) in held and not any(tag == "epoch_mse_over_noise_floor" for tag, _ in held)


def test_a_full_disk_while_tensorboard_opens_its_file_exits_1_in_one_line(datasets, tmp_path, monkeypatch):
    out = tmp_path / "run"

    def full(logdir, *args, **kwargs):  # as TensorFlow fails: an empty event file, then the error
        (Path(logdir) / "events.out.tfevents.1.host.0.v2").parent.mkdir(parents=True, exist_ok=True)
        (Path(logdir) / "events.out.tfevents.1.host.0.v2").touch()
        raise tf.errors.ResourceExhaustedError(None, None, "{{function_node __wrapped__CreateSummaryFileWriter}} "
                                               f"{logdir}/events.out.tfevents.1.host.0.v2; No space left on device\n"
                                               "\tFailed to flush 1 events")  # fmt: skip

    import tensorflow.summary  # the module Keras' TensorBoard callback writes through (not always tf.summary)

    monkeypatch.setattr(tensorflow.summary, "create_file_writer", full)
    result = run("fit", datasets["a"], "--out", out, *QUICK)
    assert result.exit_code == 1, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"Error: {out / 'tensorboard'}: cannot write TensorBoard logs (")
    assert "Traceback" not in result.output
    assert line.endswith(f"events.out.tfevents.1.host.0.v2; No space left on device); the last good checkpoint "
                         f"(epoch 0) is kept in {out}")  # fmt: skip
    assert not list(out.rglob("events.*")) and not list(out.glob(".*"))  # nothing half-written
    assert load_run(out)[1]["epochs_done"] == 0


@pytest.mark.usefixtures("stand_in_training")
def test_a_full_disk_while_checkpointing_exits_1_naming_the_file(datasets, tmp_path, monkeypatch):
    import errno

    from ragged_common import atomic

    real = atomic.atomic_write

    def full(path, data):
        if str(path).endswith("state.json") and '"epochs_done": 1' in str(data):
            with atomic.atomic_path(path) as temporary:
                temporary.write_text(str(data)[:10])  # half of it, then the disk is full
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(atomic, "atomic_write", full)
    out = tmp_path / "run"
    result = run("fit", datasets["a"], "--out", out, *QUICK)
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == f"Error: {out / 'state.json'}: No space left on device"
    assert sorted(p.name for p in out.iterdir()) == ["model.keras", "state.json", "tensorboard"]  # epoch 0's pair
    assert load_run(out)[1]["epochs_done"] == 0


def test_fit_without_tensorboard_says_which_package(datasets, copy_of, tmp_path, monkeypatch):
    import chain_app.fit

    monkeypatch.setattr(chain_app.fit, "tensorboard_available", lambda: False)
    result = CliRunner().invoke(main, ["fit", str(datasets["a"]), "--out", str(copy_of), *QUICK, "--resume"])
    assert result.exit_code == 0, result.output
    assert "no TensorBoard logs, the tensorboard package is missing (pip install tensorboard)" in result.stderr
    with pytest.raises(ModuleNotFoundError, match="tensorboard=True needs the tensorboard package"):
        fit_run(datasets["a"], tmp_path / "other", FitOptions(epochs=1), tensorboard=True)
    assert not (tmp_path / "other").exists()


# ----------------------------------------------------------------------------- --window


@pytest.mark.parametrize("value, match", [("0", r"\[1, 2147483647\]"), ("-3", r"\[1, 2147483647\]"), ("x", "is not a valid integer")])
def test_window_must_be_a_positive_integer(tmp_path, value, match):
    result = CliRunner().invoke(main, ["fit", str(tmp_path / "missing"), "--out", str(tmp_path / "run"), "--window", value])
    assert result.exit_code == 2
    assert "--window" in result.output and re.search(match, result.output)
    assert not (tmp_path / "run").exists()


def test_window_larger_than_t_is_refused_before_anything_is_written(tmp_path):
    import datagen

    datagen.make(tmp_path / "data", n_samples=40, timesteps=6)
    result = CliRunner().invoke(main, ["fit", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--window", "7"])
    assert result.exit_code == 2
    assert "Invalid value for '--window': must be at most T = 6, the dataset's outer steps; received 7" in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("heldout, samples", [(False, 36), (True, 40)])
def test_window_with_a_batch_larger_than_the_training_samples_exits_2_before_anything_is_written(
        tmp_path, heldout, samples):  # fmt: skip
    import datagen

    datagen.make(tmp_path / "data", n_samples=40, timesteps=6)
    extra = ["--heldout", str(tmp_path / "data")] if heldout else []
    args = ["fit", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--window", "2", *extra]
    result = CliRunner().invoke(main, [*args, "--batch-size", str(samples + 1)])
    assert result.exit_code == 2
    assert (f"Invalid value for '--batch-size': `--window` needs full batches: must be at most the {samples} "
            f"training samples; received {samples + 1}") in result.output  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_fit_in_windows_trains_a_stateful_chain_and_reports(tmp_path):
    import datagen
    from chain_app import fit as app_fit

    datagen.make(tmp_path / "data", task="running", n_samples=80, timesteps=6)
    report = app_fit.fit_run(tmp_path / "data", tmp_path / "run",
                             app_fit.FitOptions(window=4, epochs=1, batch_size=16, hidden=8), verbose=0)  # fmt: skip
    assert report["epochs"] == 1 and report["options"]["window"] == 4
    assert report["heldout_mse"] > 0
    net, state = app_fit.runs.load_run(tmp_path / "run")
    assert net.stateful and state["history"][0]["epoch"] == 1
    with pytest.raises(ValueError, match=r"`window` must be at most T = 6, the dataset's outer steps; received 9"):
        app_fit.fit_run(tmp_path / "data", tmp_path / "run2", app_fit.FitOptions(window=9))
    with pytest.raises(ValueError, match=r"`batch_size` must be at most the 72 training samples; received 100"):
        app_fit.fit_run(tmp_path / "data", tmp_path / "run3", app_fit.FitOptions(window=2, batch_size=100))


@pytest.mark.usefixtures("stand_in_training")
def test_fit_with_feedback_trains_a_teacher_forced_chain(datasets, tmp_path):
    result = run("fit", datasets["a"], "--out", tmp_path / "run", "--epochs", "1", "--hidden", "8",
                 "--feedback", "--feedback-sampling", "0.25")  # fmt: skip
    assert result.exit_code == 0, result.output
    from chain_app import runs

    net, state = runs.load_run(tmp_path / "run")
    assert net.feedback and net.feedback_sampling == 0.25
    assert state["options"]["feedback"] is True
    assert json.loads((tmp_path / "run" / "report.json").read_text())["heldout_mse"] > 0
