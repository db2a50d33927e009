"""`chain.fit_run` and its run directory through the Python API: checks, reads, checkpoint pairs."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

import chain
from chain import FitOptions, fit_run
from chain_app import options as app_options
from chain_app import runs
from chain_app.data import check_sizes
from chain_app.runs import load_run
from datagen import _storage
from ragged_common import atomic

from ..chain.conftest import make_chain
from .conftest import OPTIONS

INFO = {"input_size": 4, "output_size": 2, "longest_step": 3, "noise_floor": 0.01, "samples": 8}


def test_check_sizes_names_both_sizes():
    net = make_chain(strategy="packed", max_steps=3)
    check_sizes(net, INFO, "d")
    with pytest.raises(ValueError, match="d: the dataset's output_size is 5 but the model's output_size is 2"):
        check_sizes(net, {**INFO, "output_size": 5}, "d")
    with pytest.raises(ValueError, match="longest_step is 4 but the model's max_steps is 3"):
        check_sizes(net, {**INFO, "longest_step": 4}, "d")


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("epochs", 0, r"`epochs` must be an integer in \[1, 2147483647\]; received 0"),
        ("epochs", 2.0, r"`epochs` must be an integer in \[1, 2147483647\]; received 2.0"),
        ("batch_size", True, r"`batch_size` must be an integer in \[1, 2147483647\]; received True"),
        ("hidden", 8193, r"`hidden` must be an integer in \[1, 8192\]; received 8193"),
        ("seed", -1, r"`seed` must be an integer in \[0, 2147483647\]; received -1"),
        ("seed", 2**31, r"`seed` must be an integer in \[0, 2147483647\]; received 2147483648"),
        ("lr", math.nan, r"`lr` must be a finite number > 0 \(at most 3.403e\+38, float32's largest\); received nan"),
        ("lr", math.inf, "`lr` must be a finite number > 0 .*; received inf"),
        ("lr", 1e39, "`lr` must be a finite number > 0 .*; received 1e\\+39"),
        ("lr", 0.0, "`lr` must be a finite number > 0 .*; received 0.0"),
        ("heldout_fraction", 1.0, r"`heldout_fraction` must be a number in \(0, 1\); received 1.0"),
        ("heldout_fraction", math.nan, r"`heldout_fraction` must be a number in \(0, 1\); received nan"),
        ("state", "sideways", "`state` must be one of carry, reset, init; received 'sideways'"),
        ("strategy", "fast", "`strategy` must be one of packed, padded, loop, auto; received 'fast'"),
        ("predict_lengths", 1, "`predict_lengths` must be True or False; received 1"),
        ("stop_token", "yes", "`stop_token` must be True or False; received 'yes'"),
    ],
)
def test_fit_options_name_the_bad_field(field, value, message):
    with pytest.raises(ValueError, match=message) as caught:
        FitOptions(**{field: value})
    assert caught.value.name == field


def test_options_changed_after_construction_are_checked_again(tmp_path):
    options = FitOptions()
    options.lr = math.nan
    with pytest.raises(ValueError, match="`lr` must be a finite number > 0"):
        fit_run(tmp_path / "data", tmp_path / "run", options)
    assert not (tmp_path / "run").exists()


def test_fit_options_refuse_both_length_heads():
    with pytest.raises(ValueError, match="use one of `predict_lengths` and `stop_token`, not both"):
        FitOptions(predict_lengths=True, stop_token=True)


def test_the_option_choices_mirror_the_library():
    assert app_options.STATES == chain.STATES
    assert set(app_options.STRATEGIES) == set(chain.STRATEGIES) | {"auto"}


def test_public_names():
    for name in ("fit_run", "evaluate_run", "FitOptions", "TrainingDiverged", "ragged_mse",
                 "NoiseFloorRatio", "pad_targets"):  # fmt: skip
        assert name in chain.__all__ and hasattr(chain, name) and name in dir(chain)
    with pytest.raises(AttributeError, match="module 'chain' has no attribute 'fit'"):
        chain.fit  # noqa: B018


def test_import_chain_leaves_out_the_application_and_datagen():
    code = "import sys, chain; print(sorted(m for m in sys.modules if m.split('.')[0] in ('chain_app', 'datagen')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- the run directory


def test_fit_run_refuses_a_run_directory_in_use(tmp_path):
    (tmp_path / "state.json").write_text("{}")
    with pytest.raises(ValueError, match="holds a run already; pass resume=True to continue it, overwrite=True"):
        fit_run(tmp_path / "data", tmp_path, FitOptions())
    (tmp_path / "state.json").unlink()
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not empty; pass overwrite=True to write a run into it"):
        fit_run(tmp_path / "data", tmp_path, FitOptions())
    with pytest.raises(ValueError, match="use one of resume=True and overwrite=True, not both"):
        fit_run(tmp_path / "data", tmp_path, FitOptions(), resume=True, overwrite=True)
    with pytest.raises(ValueError, match="notes.txt is a file, not a directory; pass another run directory"):
        fit_run(tmp_path / "data", tmp_path / "notes.txt" / "run", FitOptions())
    with pytest.raises(ValueError, match="holds no run to resume"):
        fit_run(tmp_path / "data", tmp_path / "none", FitOptions(), resume=True)


def test_prepare_names_the_directory_it_cannot_make(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(runs.RunDirError, match="file/run: cannot prepare the run directory"):
        runs.prepare(tmp_path / "file" / "run", overwrite=False)


def test_load_run_without_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_run(tmp_path)
    shutil.copy(__file__, tmp_path / "state.json")
    with pytest.raises(ValueError, match="state.json: unreadable run state"):
        load_run(tmp_path)


@pytest.fixture
def damaged(copy_of):
    """A copy of the finished run, and a function that rewrites fields of its state.json."""

    def change(**fields):
        state = json.loads((copy_of / "state.json").read_text())
        state.update(fields)
        (copy_of / "state.json").write_text(json.dumps(state))
        return copy_of

    return change


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"epochs_done": "3"}, "`epochs_done` must be an integer >= 0; received '3'"),
        ({"epochs_done": -1}, "`epochs_done` must be an integer >= 0; received -1"),
        ({"epochs_done": 1}, "`history` must be a list of 1 rows, one per epoch done"),
        ({"history": "none"}, "`history` must be a list of 2 rows"),
        ({"options": [1]}, r"`options` must be an object; received \[1\]"),
        ({"options": {"lr": "fast"}}, "state.json: `lr` must be a finite number > 0"),
        ({"options": {"depth": 3}}, r"`options` has unknown keys \['depth'\]"),
        ({"data_dir": 7}, "`data_dir` must be a string; received 7"),
        ({"model_sha256": 1}, "`model_sha256` must be a string; received 1"),
    ],
)
def test_a_damaged_state_names_the_field(damaged, fields, message):
    with pytest.raises(ValueError, match=message):
        load_run(damaged(**fields))


def test_an_empty_state_is_not_a_run(damaged, tmp_path):
    run = damaged()
    (run / "state.json").write_text("{}")
    with pytest.raises(ValueError, match="not a run state, missing `options`, `data_dir`, `epochs_done`, `history`"):
        load_run(run)
    (run / "state.json").write_text("[]")
    with pytest.raises(ValueError, match="a run state must be a JSON object; received list"):
        load_run(run)


def test_a_garbage_model_is_named_as_such_not_as_missing(damaged):
    run = damaged(model_sha256=None)  # a state from before checksums: the archive itself is checked
    (run / "model.keras").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="model.keras: not a Keras .keras archive \\(not a zip file\\)") as caught:
        load_run(run)
    assert "File not found" not in str(caught.value)


def test_a_replaced_model_does_not_match_its_state(damaged, tmp_path):
    run = damaged()
    net, _ = load_run(run)
    net.save(tmp_path / "other.keras")  # the same weights, saved again: another file
    shutil.copy(tmp_path / "other.keras", run / "model.keras")
    with pytest.raises(ValueError, match=r"model.keras: does not match state.json \(epoch 2, sha256 "):
        load_run(run)


def test_an_old_run_directory_without_a_checksum_still_loads(damaged):
    net, state = load_run(damaged(model_sha256=None))
    assert state["epochs_done"] == 2 and net.built


def test_a_truncated_archive_gives_keras_reason(damaged):
    run = damaged(model_sha256=None)
    import zipfile

    with zipfile.ZipFile(run / "model.keras", "w") as archive:
        archive.writestr("config.json", "{not json")
    with pytest.raises(ValueError, match="model.keras: cannot load the checkpoint"):
        load_run(run)
    (run / "model.keras").unlink()
    with zipfile.ZipFile(run / "model.keras", "w") as archive:
        archive.writestr("other.txt", "")
    with pytest.raises(ValueError, match=r"not a Keras .keras archive \(no config.json\)"):
        load_run(run)


# ----------------------------------------------------------------------------- crashes mid-checkpoint


class Crash(BaseException):
    pass


class Recorder(keras.callbacks.Callback):
    """`weights[e]`: the weights after epoch e, for the epochs whose checkpoint was written,
    then the weights after the last batch run."""

    def __init__(self):
        super().__init__()
        self.weights, self.latest = [], None

    def on_train_begin(self, logs=None):
        self.weights.append(self.model.get_weights())

    def on_train_batch_end(self, batch, logs=None):
        self.latest = self.model.get_weights()

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())


def _crashing_run(datasets, run):
    recorder = Recorder()
    with pytest.raises(Crash):
        fit_run(datasets["a"], run, FitOptions(epochs=3, **OPTIONS), verbose=0, callbacks=[recorder])
    assert len(recorder.weights) == 2  # epochs 0 and 1; the crash came in epoch 2's checkpoint
    return [*recorder.weights, recorder.latest]


def _assert_pair_of_epoch(run, epoch, weights):
    net, state = load_run(run)
    assert state["epochs_done"] == epoch
    for loaded, saved in zip(net.get_weights(), weights[epoch], strict=True):
        np.testing.assert_array_equal(loaded, saved)


@pytest.mark.usefixtures("stand_in_training")
def test_a_crash_while_writing_the_state_keeps_a_matching_pair(datasets, tmp_path, monkeypatch):
    real = atomic.atomic_write

    def crash_at_epoch_2(path, data):
        if str(path).endswith("state.json") and '"epochs_done": 2' in str(data):
            raise Crash
        return real(path, data)

    monkeypatch.setattr(atomic, "atomic_write", crash_at_epoch_2)
    weights = _crashing_run(datasets, tmp_path / "run")
    monkeypatch.setattr(atomic, "atomic_write", real)
    _assert_pair_of_epoch(tmp_path / "run", 1, weights)


@pytest.mark.usefixtures("stand_in_training")
def test_a_crash_between_state_and_rename_is_finished_on_load(datasets, tmp_path, monkeypatch):
    real, calls = runs._commit_model, []

    def crash_on_third(run_dir):
        calls.append(run_dir)
        if len(calls) == 3:  # epochs 0 and 1 committed; epoch 2's state written, its model staged
            raise Crash
        real(run_dir)

    monkeypatch.setattr(runs, "_commit_model", crash_on_third)
    weights = _crashing_run(datasets, tmp_path / "run")
    monkeypatch.setattr(runs, "_commit_model", real)
    assert (tmp_path / "run" / "model.next.keras").is_file()
    _assert_pair_of_epoch(tmp_path / "run", 2, weights)  # the load finished the rename
    assert not (tmp_path / "run" / "model.next.keras").exists()


# ----------------------------------------------------------------------------- reads


@pytest.fixture
def decodes(monkeypatch):
    names = []
    real = _storage.decode_shard

    def counting(data, file_format, name, sizes, *args, **kwargs):
        names.append(name)
        return real(data, file_format, name, sizes, *args, **kwargs)

    monkeypatch.setattr(_storage, "decode_shard", counting)
    return names


@pytest.mark.usefixtures("stand_in_training")
def test_a_run_reads_each_source_once(datasets, tmp_path, decodes):
    fit_run(datasets["a"], tmp_path / "split", FitOptions(epochs=2, **OPTIONS), verbose=0)
    assert len(decodes) == 2 * 2  # training and held-out splits, 2 shards each
    decodes.clear()
    fit_run(datasets["a"], tmp_path / "split", FitOptions(epochs=2), resume=True, verbose=0)
    assert len(decodes) == 2  # nothing left to train: the held-out split only
    decodes.clear()
    chain.evaluate_run(tmp_path / "split", datasets["same"])
    assert sorted(decodes) == sorted(str(p) for p in datasets["same"].glob("shard-*"))


@pytest.mark.usefixtures("stand_in_training")
def test_a_run_with_a_separate_heldout_set_reads_each_once(datasets, tmp_path, decodes):
    fit_run(datasets["a"], tmp_path / "apart", FitOptions(epochs=1, **OPTIONS), heldout=datasets["b"], verbose=0)
    assert sorted(decodes) == sorted(str(p) for d in ("a", "b") for p in datasets[d].glob("shard-*"))


def test_an_overflowing_noise_floor_ratio_is_no_divergence():
    from chain_app.fit import divergence

    net = make_chain(strategy="packed", max_steps=3)
    net.compile(optimizer="adam", loss="mse")
    logs = {"loss": 0.5, "masked_mse": 0.5, "mse_over_noise_floor": math.inf, "val_mse_over_noise_floor": math.inf}
    assert divergence(net, logs) is None
    assert divergence(net, {**logs, "val_masked_mse": math.nan}) == "the held-out `val_masked_mse` became nan"


# ----------------------------------------------------------------------------- interrupted and resumed


class _StopAfterFirstEpoch(keras.callbacks.Callback):
    """Stops the run like Ctrl-C once epoch 1's checkpoint is written (callbacks run after it)."""

    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt


RESUMED = {  # each option family; tiny models and data, 3 epochs
    "feedback": {"feedback": True},
    "feedback-sampling": {"feedback": True, "feedback_sampling": 0.5},
    "windows": {"window": 2},
    "lengths": {"predict_lengths": True},
}


@pytest.mark.slow  # 10 to 25 s each on 2 cores; test_feedback checks the sampling draws' seeds quickly
@pytest.mark.parametrize("family", RESUMED)
def test_a_run_stopped_after_epoch_1_and_resumed_ends_with_the_uninterrupted_weights(datasets, tmp_path, family):
    options = FitOptions(epochs=3, hidden=4, batch_size=16, **RESUMED[family])
    fit_run(datasets["a"], tmp_path / "whole", options, verbose=0)
    with pytest.raises(KeyboardInterrupt):
        fit_run(datasets["a"], tmp_path / "parts", options, verbose=0, callbacks=[_StopAfterFirstEpoch()])
    assert json.loads((tmp_path / "parts" / "state.json").read_text())["epochs_done"] == 1
    fit_run(datasets["a"], tmp_path / "parts", options, resume=True, verbose=0)
    (whole, _), (parts, state) = load_run(tmp_path / "whole"), load_run(tmp_path / "parts")
    assert state["epochs_done"] == 3
    for a, b in zip(whole.get_weights(), parts.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
