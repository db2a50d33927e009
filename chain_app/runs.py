"""Run directories: their files, the checkpoint pair, and the checks on a hand-made or damaged one.

A run directory holds:

- `model.keras`: the last good checkpoint (model and optimizer state);
- `state.json`: the options, the datasets, the epochs done, the history and the sha256 of the
  `model.keras` it goes with;
- `history.csv`: one row of metrics per epoch;
- `loss.png`: training and held-out masked MSE per epoch, with the noise floor (on token data,
  the cross-entropy with the law's floor);
- `report.json`: the held-out scores at the end;
- `generated.json`: what `chain generate` wrote last, by default (see `chain_app.generate`);
- `tensorboard/`: TensorBoard logs (`train/` and `validation/`, scalars per epoch).

Every file but the TensorBoard logs (append-only event files written by TensorFlow) is written
to a temporary file and renamed into place (`ragged_common.atomic`). A checkpoint is a pair: the new
model is written complete to `model.next.keras`, then `state.json` names its sha256, then the
model is renamed to `model.keras`. A crash at any point leaves a consistent pair: the old one, or
the new state with `model.next.keras`, which `load_run` renames into place. A `model.keras` that
matches neither is reported, not loaded.

This module imports Keras only to load a checkpoint, so the CLI can check a run directory
before TensorFlow starts.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import shutil
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragged_common import atomic

if TYPE_CHECKING:
    from chain import Chain

from . import floors
from .options import FitOptions

MODEL_FILE = "model.keras"
NEXT_MODEL_FILE = "model.next.keras"
STATE_FILE = "state.json"
HISTORY_FILE = "history.csv"
PLOT_FILE = "loss.png"
REPORT_FILE = "report.json"
GENERATED_FILE = "generated.json"
TENSORBOARD_DIR = "tensorboard"
RUN_FILES = (MODEL_FILE, NEXT_MODEL_FILE, STATE_FILE, HISTORY_FILE, PLOT_FILE, REPORT_FILE, GENERATED_FILE)


class RunDirError(ValueError):
    """A run directory that cannot be used as asked (the message says why and what to pass)."""


# ----------------------------------------------------------------------------- the directory


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


API_NAMES = {"resume": "resume=True", "overwrite": "overwrite=True", "other": "another run directory"}
CLI_NAMES = {"resume": "--resume", "overwrite": "--overwrite", "other": "another --out"}


def check_target(run_dir: Path, *, resume: bool, overwrite: bool, names: dict[str, str] = API_NAMES) -> None:
    """Refuses a run directory that the run may not write into, before anything is written.

    Args:
        run_dir: the run directory.
        resume: the run continues the one in `run_dir`.
        overwrite: the run replaces the run's own files in `run_dir` (others are kept).
        names: how messages spell `resume`, `overwrite` and "another run directory".

    Raises:
        RunDirError: `run_dir` (or a parent) is a file, its nearest existing directory cannot be
            written, both flags are set, `resume` without a run, or a non-empty directory
            without `resume` or `overwrite`.
    """
    if resume and overwrite:
        raise RunDirError(f"use one of {names['resume']} and {names['overwrite']}, not both")
    ancestor = _existing_ancestor(run_dir)
    if not ancestor.is_dir():
        raise RunDirError(f"{ancestor} is a file, not a directory; pass {names['other']}")
    reason = atomic.cannot_create_in(ancestor)
    if reason is not None:
        raise RunDirError(f"{run_dir} cannot be written ({ancestor}: {reason}); pass {names['other']}")
    if resume:
        if not (run_dir / STATE_FILE).is_file():
            raise RunDirError(f"{run_dir} holds no run to resume (no {STATE_FILE})")
        return
    if overwrite or ancestor != run_dir or not any(run_dir.iterdir()):
        return
    if (run_dir / STATE_FILE).exists():
        raise RunDirError(f"{run_dir} holds a run already; pass {names['resume']} to continue it, "
                          f"{names['overwrite']} to replace it, or {names['other']}")  # fmt: skip
    raise RunDirError(f"{run_dir} is not empty; pass {names['overwrite']} to write a run into it "
                      f"(only a run's own files are replaced) or {names['other']}")  # fmt: skip


def _run_owned(entry: Path) -> bool:
    """A run's own file, or a temporary file left by one of its writes."""
    if entry.name in RUN_FILES or entry.name in (TENSORBOARD_DIR, f".tmp-{MODEL_FILE}"):
        return True
    return entry.name.startswith(".") and any(entry.name.startswith(f".{name}.") for name in RUN_FILES)


def prepare(run_dir: Path, *, overwrite: bool) -> None:
    """Creates `run_dir`; with `overwrite`, first removes the run's own files from it, nothing else.

    Raises:
        RunDirError: the directory cannot be created or cleared (the message gives the OS's reason).
    """
    try:
        if overwrite and run_dir.is_dir():
            for entry in run_dir.iterdir():
                if not _run_owned(entry):
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunDirError(f"{run_dir}: cannot prepare the run directory ({error.strerror or error})") from None


# ----------------------------------------------------------------------------- the state


def new_state(options: FitOptions, data_dir: Path, heldout: Path | None) -> dict[str, Any]:
    """The state of a run before its first epoch."""
    return {"options": dataclasses.asdict(options), "data_dir": str(data_dir),
            "heldout": None if heldout is None else str(heldout), "epochs_done": 0, "history": []}  # fmt: skip


def _check_state(state: Any, where: Path) -> dict[str, Any]:
    if not isinstance(state, dict):
        raise ValueError(f"{where}: a run state must be a JSON object; received {type(state).__name__}")
    missing = [key for key in ("options", "data_dir", "epochs_done", "history") if key not in state]
    if missing:
        raise ValueError(f"{where}: not a run state, missing {', '.join(f'`{key}`' for key in missing)}")
    FitOptions.from_state(state["options"], str(where))
    done = state["epochs_done"]
    if isinstance(done, bool) or not isinstance(done, int) or done < 0:
        raise ValueError(f"{where}: `epochs_done` must be an integer >= 0; received {done!r}")
    for key in ("data_dir", "heldout", "model_sha256"):
        if state.get(key) is not None and not isinstance(state[key], str):
            raise ValueError(f"{where}: `{key}` must be a string; received {state[key]!r}")
    history = state["history"]
    if not isinstance(history, list) or len(history) != done or not all(isinstance(row, dict) for row in history):
        raise ValueError(f"{where}: `history` must be a list of {done} rows, one per epoch done")
    return state


def read_state(run_dir: Path) -> dict[str, Any]:
    """The checked `state.json` of a run directory.

    Raises:
        FileNotFoundError: there is no `state.json`.
        ValueError: it is not JSON or not a run state; the message names the field.
    """
    path = run_dir / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no checkpoint ({MODEL_FILE} and {STATE_FILE}) to load")
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: unreadable run state ({type(error).__name__}: {error})") from None
    except RecursionError:
        raise ValueError(f"{path}: corrupt run state (its JSON is nested too deeply)") from None
    return _check_state(state, path)


def options_of(state: dict[str, Any]) -> FitOptions:
    return FitOptions(**state["options"])


# ----------------------------------------------------------------------------- the checkpoint


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _commit_model(run_dir: Path) -> None:
    os.replace(run_dir / NEXT_MODEL_FILE, run_dir / MODEL_FILE)


def save_checkpoint(net: "Chain", run_dir: Path, state: dict[str, Any]) -> None:
    """Writes the pair `model.keras` and `state.json` so that a crash never mixes two epochs.

    Raises:
        OSError: a file cannot be written (a full disk); it names the file, not its temporary
            one, and the previous pair is left as it was.
    """
    target = run_dir / NEXT_MODEL_FILE
    try:
        with atomic.atomic_path(target, suffix=".keras") as temporary:
            net.save(temporary)
        state["model_sha256"] = _sha256(target)
        target = run_dir / STATE_FILE
        atomic.atomic_write(target, json.dumps(state, indent=1))
    except OSError as error:
        if target.name == STATE_FILE:  # the new model is no checkpoint without its state
            (run_dir / NEXT_MODEL_FILE).unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror or str(error), str(target)) from None
    _commit_model(run_dir)


def _matching_model(run_dir: Path, state: dict[str, Any]) -> Path:
    """`model.keras`, once it is the model `state.json` names; finishes an interrupted checkpoint."""
    model, staged = run_dir / MODEL_FILE, run_dir / NEXT_MODEL_FILE
    expected = state.get("model_sha256")
    if expected is None:  # written before checkpoints recorded their model's sha256
        return model
    if model.is_file() and _sha256(model) == expected:
        return model
    if staged.is_file() and _sha256(staged) == expected:
        _commit_model(run_dir)
        return model
    raise ValueError(
        f"{model}: does not match {STATE_FILE} (epoch {state['epochs_done']}, sha256 "
        f"{expected[:12]}...): the checkpoint was damaged or replaced; start a new run with --overwrite"
    )


def _check_archive(path: Path) -> None:
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a Keras .keras archive (not a zip file); the checkpoint is damaged")
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
    if "config.json" not in names:
        raise ValueError(f"{path}: not a Keras .keras archive (no config.json); the checkpoint is damaged")


def load_run(run_dir: Path) -> tuple[Any, dict[str, Any]]:
    """The checkpointed model and the checked state of a run directory.

    Raises:
        FileNotFoundError: the directory holds no checkpoint.
        ValueError: the state is damaged, the model does not match it, or the model cannot load.
    """
    state = read_state(run_dir)
    if not (run_dir / MODEL_FILE).is_file() and not (run_dir / NEXT_MODEL_FILE).is_file():
        raise FileNotFoundError(f"{run_dir}: no checkpoint ({MODEL_FILE} and {STATE_FILE}) to load")
    model_path = _matching_model(run_dir, state)
    _check_archive(model_path)
    import keras

    import chain  # noqa: F401 - registers Chain and its metrics with Keras' deserializer

    try:
        net = keras.models.load_model(model_path)
    except Exception as error:  # noqa: BLE001 - any failure means the file cannot be used
        raise ValueError(f"{model_path}: cannot load the checkpoint ({type(error).__name__}: {error})") from None
    return net, state


# ----------------------------------------------------------------------------- history, plot, report


def write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """`history.csv`, one row per epoch."""
    keys = sorted({key for row in history for key in row}, key=lambda k: (k != "epoch", k))
    with atomic.atomic_path(run_dir / HISTORY_FILE) as temporary:
        with open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            writer.writerows(history)


def plot_history(run_dir: Path, history: list[dict[str, Any]], info: dict[str, Any]) -> None:
    """`loss.png`: the score per epoch against its floor (drawn when > 0).

    The score is the masked MSE against the noise floor, or on token data the cross-entropy
    against the law's floor (`chain_app.floors`), or on imported data against the held-out
    bigram's; `info` is the held-out set's `data.describe`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = floors.of(info)
    floor = info[figures.floor]
    epochs = [row["epoch"] for row in history]
    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    for key, label in ((figures.log, "training"), (f"val_{figures.log}", "held-out")):
        if any(key in row for row in history):
            axis.plot(epochs, [row.get(key, math.nan) for row in history], marker=".", label=label)
    if floor:
        axis.axhline(floor, color="grey", linestyle="--", label=figures.floor_label)
    bigram = (info.get("baselines") or {}).get("bigram_cross_entropy")
    if bigram is not None:
        axis.axhline(bigram, color="grey", linestyle=":", label="held-out bigram")
    axis.set(xlabel="epoch", ylabel=figures.label, yscale=figures.scale, title="chain fit")
    axis.legend()
    figure.tight_layout()
    with atomic.atomic_path(run_dir / PLOT_FILE, suffix=".png") as temporary:
        figure.savefig(temporary)
    plt.close(figure)


def write_report(run_dir: Path, report: dict[str, Any]) -> None:
    """`report.json`."""
    atomic.atomic_write(run_dir / REPORT_FILE, json.dumps(report, indent=1))
