"""`fit_run`: train a Chain on a stored dataset into a run directory (see `chain_app.runs`).

Held-out data is either a separate dataset or, by default, the deterministic split of
`datagen.read(..., split="heldout")`: the last 10% of samples by index. A run reads each of
its two sources once; everything else it needs comes from the manifests (`datagen.info`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import re
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import chain
from ragged_common.bounds import FLOAT32_MAX

from . import data, floors, report, runs
from .options import FitOptions, TrainingDiverged

HELDOUT_BATCH = 256
FLOAT32_TINY = float(np.finfo(np.float32).tiny)


def build_chain(info: dict[str, Any], options: FitOptions, steps_per_epoch: int) -> chain.Chain:
    """A GRU model A (bidirectional with `options.bidirectional`), a GRUCell model B and a Dense
    head, compiled with Adam and cosine decay.

    On token data (`info["vocab_size"]` set) the head gives `V` logits and the loss is the
    token cross-entropy; on real-valued data it is the masked MSE. The noise-floor ratio is a
    metric (for the progress display) only when the noise floor is a normal float32 number,
    the metric's precision; the logs' ratios are `_Ratios`', in float64.
    """
    keras.utils.set_random_seed(options.seed)
    tokens = info["vocab_size"] is not None
    model_a = keras.layers.GRU(options.hidden, return_sequences=True)
    net = chain.Chain(
        keras.layers.Bidirectional(model_a) if options.bidirectional else model_a,
        keras.layers.GRUCell(options.hidden),
        output_size=None if tokens else info["output_size"],
        vocab_size=info["vocab_size"],
        state=options.state,
        strategy=options.strategy,
        max_steps=info["longest_step"],
        predict_lengths=options.predict_lengths,
        stop="token" if options.stop_token else None,
        stateful=options.window is not None,
        feedback=options.feedback,
        feedback_sampling=options.feedback_sampling,
        sampling_seed=options.seed,
    )
    net.build((options.batch_size if options.window else None, None, info["input_size"]))
    schedule = keras.optimizers.schedules.CosineDecay(
        options.lr, decay_steps=max(1, options.epochs * steps_per_epoch), alpha=0.01
    )
    floor = info["noise_floor"]
    ratio = not tokens and floor >= FLOAT32_TINY
    net.compile(optimizer=keras.optimizers.Adam(schedule, clipnorm=1.0), loss=None if tokens else "mse",
                metrics=[chain.NoiseFloorRatio(floor)] if ratio else [])  # fmt: skip
    net.optimizer.build(net.trainable_variables)  # so that the epoch-0 checkpoint holds its slots
    return net


def check_window_fits(window: int, batch_size: int, info: dict[str, Any]) -> None:
    """Raises a ValueError when windows of `window` steps and full batches cannot be made."""
    if window > info["timesteps"]:
        raise ValueError(f"`window` must be at most T = {info['timesteps']}, the dataset's outer steps; "
                         f"received {window}")  # fmt: skip
    if info["samples"] < batch_size:
        raise ValueError(f"`window` needs full batches: `batch_size` must be at most the {info['samples']} "
                         f"training samples; received {batch_size}")  # fmt: skip


def tensorboard_available() -> bool:
    """Whether the `tensorboard` package, which TensorFlow's summaries need, is installed."""
    try:
        return importlib.util.find_spec("tensorboard") is not None
    except (ImportError, ValueError):
        return False


# ----------------------------------------------------------------------------- callbacks


class _NanGuard(keras.callbacks.Callback):
    """Stops training at the first batch whose loss is not finite; `bad` says what went wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.bad: str | None = None

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss) and self.bad is None:
            self.bad = f"the loss became {loss} at batch {batch + 1}"
            self.model.stop_training = True


def divergence(net: chain.Chain, logs: dict[str, Any]) -> str | None:
    """Why an epoch's checkpoint would not be good, or None: every loss, metric and weight finite.

    The floor ratios are left out: they follow the score, and a tiny floor alone can make them
    overflow.
    """
    for key, value in logs.items():
        if key.endswith(floors.RATIOS):
            continue
        if not math.isfinite(float(value)):
            where = "held-out" if key.startswith("val_") else "training"
            return f"the {where} `{key}` became {float(value)}"
    variables = [*net.weights, *(net.optimizer.variables if net.optimizer is not None else [])]
    for variable in variables:
        if not np.all(np.isfinite(keras.ops.convert_to_numpy(variable))):
            return f"the variable `{variable.path}` became non-finite"
    return None


class _Ratios(keras.callbacks.Callback):
    """Puts the training and held-out scores over their own sets' floors in the epoch's logs: the
    masked MSE over the noise floor, or a token run's cross-entropy (logged too, as
    `cross_entropy`) over the law's.

    Computed in float64: a noise floor below float32's range (noise 1e-30 gives 1e-60) still gives
    a finite ratio. A set whose floor is 0 or unknown has no ratio.
    """

    def __init__(self, figures: floors.Floor, train_floor: float | None, heldout_floor: float | None) -> None:
        super().__init__()
        self.figures = figures
        self.floors = {"": train_floor, "val_": heldout_floor}

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        figures = self.figures
        for prefix, floor in self.floors.items():
            if logs is None or f"{prefix}{figures.source}" not in logs:
                continue
            value = figures.score_in(logs, prefix)
            if figures.log != figures.source:
                logs[f"{prefix}{figures.log}"] = value
            ratio = figures.ratio_of(value, floor)
            if ratio is not None:
                logs[f"{prefix}{figures.ratio}"] = ratio
            else:
                logs.pop(f"{prefix}{figures.ratio}", None)


class _LogsUnwritable(OSError):
    """TensorBoard could not write its logs (a full disk, say); the message says where and why."""


class _TensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard callback, given only the values that fit its float32 scalars, failing
    with `_LogsUnwritable` where its logs cannot be written.

    A noise-floor ratio over float32's largest (a floor of 1e-60) is left out of the logs; it is
    in history.csv.
    """

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._writing(super().on_train_begin, logs)  # opens the training logs

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._writing(super().on_test_begin, logs)  # opens the held-out logs

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        self._writing(super().on_test_end, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        fits = {key: value for key, value in (logs or {}).items() if abs(float(value)) <= FLOAT32_MAX}
        self._writing(super().on_epoch_end, epoch, fits)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._writing(super().on_train_end, logs)

    def _writing(self, hook: Any, *args: Any) -> None:
        try:
            hook(*args)
        except (tf.errors.OpError, OSError) as error:
            why = error.message if isinstance(error, tf.errors.OpError) else error.strerror or str(error)
            why = re.sub(r"^\{\{[^}]*\}\}\s*", "", why).splitlines()[0]  # TensorFlow's op name, its details
            raise _LogsUnwritable(f"{self.log_dir}: cannot write TensorBoard logs ({why})") from None


def _remove_empty_logs(directory: Path) -> None:
    """Removes the empty event files that a failed open of TensorBoard's writers leaves."""
    for path in directory.glob("*/events.out.tfevents.*"):
        if path.is_file() and path.stat().st_size == 0:
            path.unlink()


class _Checkpoint(keras.callbacks.Callback):
    """After each good epoch: checkpoint, history, plot. After a bad one: stop, keep the last."""

    def __init__(self, run_dir: Path, state: dict[str, Any], guard: _NanGuard) -> None:
        super().__init__()
        self.run_dir, self.state, self.guard = run_dir, state, guard
        self.started = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        if self.guard.bad is None:
            self.guard.bad = divergence(self.model, logs)
        if self.guard.bad is not None:
            self.model.stop_training = True
            return
        row = {"epoch": epoch + 1, **{key: float(value) for key, value in logs.items()}}
        row["seconds"] = round(time.perf_counter() - self.started, 3)
        self.state["history"].append(row)
        self.state["epochs_done"] = epoch + 1
        runs.save_checkpoint(self.model, self.run_dir, self.state)
        runs.write_history(self.run_dir, self.state["history"])
        runs.plot_history(self.run_dir, self.state["history"], self.state["heldout_info"])


# ----------------------------------------------------------------------------- the run


def fit_run(data_dir: str | os.PathLike[str], run_dir: str | os.PathLike[str],
            options: FitOptions | None = None, *, heldout: str | os.PathLike[str] | None = None,
            resume: bool = False, overwrite: bool = False, verbose: int | str = "auto",
            callbacks: list[keras.callbacks.Callback] | None = None,
            tensorboard: bool | None = None) -> dict[str, Any]:  # fmt: skip
    """Trains a Chain on a stored dataset, checkpointing every epoch, then writes its report.

    Args:
        data_dir: the training dataset (a `datagen make` directory).
        run_dir: where checkpoints, history, plot, TensorBoard logs and report go (created if
            needed).
        options: the run's options; on `resume`, only `epochs` is taken from here.
        heldout: a separate held-out dataset; None holds out the last `heldout_fraction` of
            `data_dir` by index.
        resume: continue the run in `run_dir` from its last checkpoint (epoch count and
            optimizer state included).
        overwrite: replace the run's own files in a non-empty `run_dir` (other files are kept).
        verbose: Keras' progress display: 0 silent, 1 progress bar, 2 one line per epoch.
        callbacks: more Keras callbacks, run after the epoch's checkpoint is written.
        tensorboard: log scalars per epoch to `run_dir/tensorboard`; None does so when the
            `tensorboard` package is installed.

    Returns:
        The report (also in `report.json`).

    Raises:
        datagen.DatasetError: a dataset is missing or corrupt.
        ValueError: an option is invalid, a dataset does not fit the model, `run_dir` cannot
            be used as asked (a file, or a non-empty directory without `resume` or
            `overwrite`), or its checkpoint is damaged.
        FileNotFoundError: `resume` without a checkpoint in `run_dir`.
        ModuleNotFoundError: `tensorboard=True` without the `tensorboard` package.
        TrainingDiverged: a loss or a weight became NaN or infinite.
        OSError: a file of the run cannot be written (a full disk); TensorBoard's, in one line
            naming the logs and the last good checkpoint.
    """
    run_dir, data_dir = Path(os.fspath(run_dir)), Path(os.fspath(data_dir))
    heldout = None if heldout is None else Path(os.fspath(heldout))
    options = FitOptions() if options is None else FitOptions(**dataclasses.asdict(options))  # re-checked
    if tensorboard and not tensorboard_available():
        raise ModuleNotFoundError("tensorboard=True needs the tensorboard package: pip install tensorboard")
    runs.check_target(run_dir, resume=resume, overwrite=overwrite)
    if resume:
        net, state = _resumed(run_dir, data_dir, heldout, options.epochs)
    else:
        net, state = _fresh(data_dir, heldout, options)
    opts = runs.options_of(state)
    sources = data.sources(state)
    train = data.read(sources["train"], opts.heldout_fraction) if state["epochs_done"] < opts.epochs else None
    held = data.batches(data.read(sources["heldout"], opts.heldout_fraction), HELDOUT_BATCH)
    if not resume:
        runs.prepare(run_dir, overwrite=overwrite)
        runs.save_checkpoint(net, run_dir, state)
    if train is not None:
        logs = tensorboard_available() if tensorboard is None else tensorboard
        _train(net, run_dir, state, train, held, verbose, [*(callbacks or [])], logs)
    return report.write_report(net, run_dir, state, held)


def _describe_sources(state: dict[str, Any]) -> None:
    """Puts both sources' facts (`train_info`, `heldout_info`) in `state`, from their manifests."""
    fraction = state["options"]["heldout_fraction"]
    for part, (where, split) in data.sources(state).items():
        state[f"{part}_info"] = data.describe(where, split, fraction)


def _check_sources(net: chain.Chain, state: dict[str, Any]) -> None:
    for part, (where, _) in data.sources(state).items():
        data.check_sizes(net, state[f"{part}_info"], str(where))


def _fresh(data_dir: Path, heldout: Path | None, options: FitOptions) -> tuple[chain.Chain, dict[str, Any]]:
    """A new model and state; nothing is written yet."""
    state = runs.new_state(options, data_dir, heldout)
    _describe_sources(state)
    info = state["train_info"]
    per_epoch = math.ceil(info["samples"] / options.batch_size)
    if options.window:
        check_window_fits(options.window, options.batch_size, info)
        per_epoch = info["samples"] // options.batch_size * math.ceil(info["timesteps"] / options.window)
    net = build_chain(info, options, per_epoch)
    _check_sources(net, state)
    return net, state


def _resumed(run_dir: Path, data_dir: Path, heldout: Path | None, epochs: int) -> tuple[chain.Chain, dict[str, Any]]:
    """The run's checkpoint and state, pointed at the datasets given and the new epoch target."""
    net, state = runs.load_run(run_dir)
    state["options"]["epochs"] = epochs
    state["data_dir"] = str(data_dir)
    if heldout is not None:
        state["heldout"] = str(heldout)
    _describe_sources(state)
    _check_sources(net, state)
    return net, state


def _train(net: chain.Chain, run_dir: Path, state: dict[str, Any], train: dict[str, Any],
           held: tf.data.Dataset, verbose: int | str, more: list, tensorboard: bool) -> None:  # fmt: skip
    """Runs the remaining epochs in one `fit`; raises TrainingDiverged at a bad epoch."""
    opts = runs.options_of(state)
    first = state["epochs_done"]
    guard = _NanGuard()
    figures = floors.of(state["train_info"])
    ratios = _Ratios(figures, state["train_info"][figures.floor], state["heldout_info"][figures.floor])
    callbacks = [guard, ratios, _Checkpoint(run_dir, state, guard)]
    if opts.window:
        batches, per_epoch, per_batch = data.window_batches(train, opts.batch_size, opts.seed, first, opts.epochs,
                                                            opts.window)  # fmt: skip
        callbacks.insert(0, chain.WindowedStates(per_batch))
    else:
        batches, per_epoch = data.epoch_batches(train, opts.batch_size, opts.seed, first, opts.epochs)
    if tensorboard:
        callbacks.append(_TensorBoard(str(run_dir / runs.TENSORBOARD_DIR), write_graph=False))
    try:
        net.fit(batches, validation_data=held, epochs=opts.epochs, initial_epoch=first,
                steps_per_epoch=per_epoch, callbacks=[*callbacks, *more], verbose=verbose)  # fmt: skip
    except _LogsUnwritable as error:
        _remove_empty_logs(run_dir / runs.TENSORBOARD_DIR)
        raise OSError(f"{error}; the last good checkpoint (epoch {state['epochs_done']}) is kept in "
                      f"{run_dir}") from None  # fmt: skip
    if guard.bad is not None:
        done = state["epochs_done"]
        raise TrainingDiverged(f"{guard.bad} (epoch {done + 1}): training stopped; the last good "
                               f"checkpoint (epoch {done}) is kept in {run_dir}")  # fmt: skip
