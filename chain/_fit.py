"""Fitting runs on stored datasets: a run directory with checkpoints, history, plot and report.

A run directory holds:

- `model.keras`: the last good checkpoint (model, optimizer state), written to a temporary file
  and renamed, after every epoch whose loss stayed finite;
- `state.json`: the options, the dataset and the epochs done, written the same way;
- `history.csv`: one row of metrics per epoch;
- `loss.png`: training and held-out masked MSE per epoch, with the noise floor;
- `report.json`: the held-out scores at the end.

Held-out data is either a separate dataset or, by default, the deterministic split of
`datagen.load(..., split="heldout")`: the last 10% of samples by index.

Datasets are read through `datagen`, imported when a run starts, so `import chain` does not
need it.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ._model import Chain
from ._train import NoiseFloorRatio

MODEL_FILE = "model.keras"
STATE_FILE = "state.json"
HISTORY_FILE = "history.csv"
PLOT_FILE = "loss.png"
REPORT_FILE = "report.json"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run directory keeps the last good checkpoint."""


@dataclasses.dataclass
class FitOptions:
    """Options of a fitting run; the defaults reach the noise floor on datagen's tasks.

    Attributes:
        state: B's state mode, `"carry"`, `"reset"` or `"init"`.
        epochs: total epochs of the run.
        batch_size: samples per batch.
        hidden: units of model A (a GRU) and model B (a GRUCell).
        lr: peak learning rate of Adam; it follows a cosine decay to 1% over the run.
        strategy: the Chain strategy.
        predict_lengths: add a length head trained on `steps`.
        stop_token: add a stop head instead.
        seed: seeds the weights and the per-epoch shuffles.
        heldout_fraction: share of the dataset held out when no separate held-out set is given.
    """

    state: str = "carry"
    epochs: int = 60
    batch_size: int = 32
    hidden: int = 64
    lr: float = 6e-3
    strategy: str = "packed"
    predict_lengths: bool = False
    stop_token: bool = False
    seed: int = 0
    heldout_fraction: float = 0.1


# ----------------------------------------------------------------------------- datasets


def dataset_info(directory: str | os.PathLike[str], split: str | None = None,
                 heldout_fraction: float = 0.1) -> dict[str, Any]:  # fmt: skip
    """Sizes, noise floor and sample count of a stored dataset (checked while read).

    Raises:
        datagen.DatasetError: the directory is missing, not a dataset, or corrupt.
    """
    import datagen

    data = datagen.read(directory, split=split, heldout_fraction=heldout_fraction)
    params = data["manifest"]["params"]
    return {
        "input_size": int(params["input_size"]),
        "output_size": int(params["output_size"]),
        "longest_step": int(params["longest_step"]),
        "noise_floor": float(data["manifest"]["noise_floor"]),
        "samples": int(len(data["x"])),
        "task": params.get("task"),
    }


def check_sizes(net: Chain, info: dict[str, Any], where: str) -> None:
    """Raises a ValueError naming both sizes when a dataset does not fit the model.

    Args:
        net: a built Chain.
        info: `dataset_info` of the dataset.
        where: the dataset's path, for the message.
    """
    model = {"input_size": net.input_size, "output_size": net.output_size}
    for key, size in model.items():
        if size is not None and info[key] != size:
            raise ValueError(
                f"{where}: the dataset's {key} is {info[key]} but the model's {key} is {size}"
            )
    if net.max_steps is not None and info["longest_step"] > net.max_steps:
        raise ValueError(
            f"{where}: the dataset's longest_step is {info['longest_step']} but the model's "
            f"max_steps is {net.max_steps}"
        )


def _load(directory, batch_size: int, split: str | None, fraction: float, seed: int | None = None):
    import datagen

    return datagen.load(directory, batch_size=batch_size, shuffle=seed is not None, seed=seed,
                        split=split, heldout_fraction=fraction)  # fmt: skip


# ----------------------------------------------------------------------------- the model


def build_chain(info: dict[str, Any], options: FitOptions, steps_per_epoch: int) -> Chain:
    """A GRU model A, a GRUCell model B and a Dense head, compiled with Adam and cosine decay."""
    keras.utils.set_random_seed(options.seed)
    net = Chain(
        keras.layers.GRU(options.hidden, return_sequences=True),
        keras.layers.GRUCell(options.hidden),
        output_size=info["output_size"],
        state=options.state,
        strategy=options.strategy,
        max_steps=info["longest_step"],
        predict_lengths=options.predict_lengths,
        stop="token" if options.stop_token else None,
    )
    net.build((None, None, info["input_size"]))
    schedule = keras.optimizers.schedules.CosineDecay(
        options.lr, decay_steps=max(1, options.epochs * steps_per_epoch), alpha=0.01
    )
    net.compile(
        optimizer=keras.optimizers.Adam(schedule, clipnorm=1.0),
        loss="mse",
        metrics=[NoiseFloorRatio(info["noise_floor"])],
    )
    return net


# ----------------------------------------------------------------------------- files


def _write_atomically(path: Path, text: str) -> None:
    from datagen._atomic import atomic_write

    atomic_write(path, text)


def save_checkpoint(net: Chain, run_dir: Path, state: dict[str, Any]) -> None:
    """Writes `model.keras` then `state.json`, each to a temporary file renamed into place."""
    tmp = run_dir / f".tmp-{MODEL_FILE}"
    net.save(tmp)
    os.replace(tmp, run_dir / MODEL_FILE)
    _write_atomically(run_dir / STATE_FILE, json.dumps(state, indent=1))


def load_run(run_dir: Path) -> tuple[Chain, dict[str, Any]]:
    """The checkpointed model and the state of a run directory.

    Raises:
        FileNotFoundError: the directory holds no checkpoint.
        ValueError: the checkpoint or state cannot be read.
    """
    model_path, state_path = run_dir / MODEL_FILE, run_dir / STATE_FILE
    if not model_path.is_file() or not state_path.is_file():
        raise FileNotFoundError(f"{run_dir}: no checkpoint ({MODEL_FILE} and {STATE_FILE}) to load")
    try:
        state = json.loads(state_path.read_text())
        net = keras.models.load_model(model_path)
    except Exception as error:  # noqa: BLE001 - any failure means the file cannot be used
        raise ValueError(f"{run_dir}: unreadable checkpoint ({type(error).__name__}: {error})") from None
    return net, state


def write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """`history.csv`, one row per epoch."""
    keys = sorted({key for row in history for key in row}, key=lambda k: (k != "epoch", k))
    tmp = run_dir / f".{HISTORY_FILE}.tmp"
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, run_dir / HISTORY_FILE)


def plot_history(run_dir: Path, history: list[dict[str, Any]], noise_floor: float) -> None:
    """`loss.png`: masked MSE per epoch (log scale) against the noise floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    for key, label in (("masked_mse", "training"), ("val_masked_mse", "held-out")):
        if any(key in row for row in history):
            axis.plot(epochs, [row.get(key, math.nan) for row in history], marker=".", label=label)
    axis.axhline(noise_floor, color="grey", linestyle="--", label="noise floor")
    axis.set(xlabel="epoch", ylabel="masked MSE", yscale="log", title="chain fit")
    axis.legend()
    figure.tight_layout()
    tmp = run_dir / f".{PLOT_FILE}.tmp.png"
    figure.savefig(tmp)
    plt.close(figure)
    os.replace(tmp, run_dir / PLOT_FILE)


# ----------------------------------------------------------------------------- training


class _NanGuard(keras.callbacks.Callback):
    """Stops training at the first batch whose loss is not finite, and remembers where."""

    def __init__(self) -> None:
        super().__init__()
        self.bad: tuple[int, float] | None = None

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            self.bad = (batch, loss)
            self.model.stop_training = True


def _epoch_row(epoch: int, logs: dict[str, Any], seconds: float) -> dict[str, Any]:
    row: dict[str, Any] = {"epoch": epoch}
    row.update({key: float(value) for key, value in logs.items()})
    row["seconds"] = round(seconds, 3)
    return row


def _sources(data_dir: Path, heldout: Path | None) -> dict[str, Any]:
    """Where training and held-out samples come from, and their splits."""
    if heldout is None:
        return {"train": (data_dir, "train"), "heldout": (data_dir, "heldout")}
    return {"train": (data_dir, None), "heldout": (heldout, None)}


def fit_run(data_dir: str | os.PathLike[str], run_dir: str | os.PathLike[str],
            options: FitOptions | None = None, *, heldout: str | os.PathLike[str] | None = None,
            resume: bool = False, verbose: int | str = "auto",
            callbacks: list[keras.callbacks.Callback] | None = None) -> dict[str, Any]:  # fmt: skip
    """Trains a Chain on a stored dataset, checkpointing every epoch, then writes its report.

    Args:
        data_dir: the training dataset (a `datagen make` directory).
        run_dir: where checkpoints, history, plot and report go (created if needed).
        options: the run's options; on `resume`, only `epochs` is taken from here.
        heldout: a separate held-out dataset; None holds out the last `heldout_fraction` of
            `data_dir` by index.
        resume: continue the run in `run_dir` from its last checkpoint (epoch count and
            optimizer state included).
        verbose: Keras' progress display: 0 silent, 1 progress bar, 2 one line per epoch.
        callbacks: more Keras callbacks, run after the epoch's checkpoint is written.

    Returns:
        The report (also in `report.json`).

    Raises:
        datagen.DatasetError: a dataset is missing or corrupt.
        ValueError: a dataset does not fit the model, or `run_dir` has a run and not `resume`.
        FileNotFoundError: `resume` without a checkpoint in `run_dir`.
        TrainingDiverged: the loss became NaN or infinite.
    """
    run_dir = Path(os.fspath(run_dir))
    net, state = _start(Path(os.fspath(data_dir)), run_dir, options or FitOptions(),
                        None if heldout is None else Path(os.fspath(heldout)), resume)  # fmt: skip
    _train(net, run_dir, state, verbose, callbacks or [])
    return write_report(net, run_dir, state)


def _start(data_dir: Path, run_dir: Path, options: FitOptions, heldout: Path | None,
           resume: bool) -> tuple[Chain, dict[str, Any]]:  # fmt: skip
    """Loads the run to resume, or builds a new model and saves its epoch-0 checkpoint."""
    if resume:
        net, state = load_run(run_dir)
        state["options"]["epochs"] = options.epochs
        for key, where in (("data_dir", data_dir), ("heldout", heldout)):
            if key == "data_dir" or where is not None:
                state[key] = str(where)
        return net, _check_run_data(net, state)
    if (run_dir / STATE_FILE).exists():
        raise ValueError(f"{run_dir}: holds a run already; pass resume=True (--resume) or another run directory")
    sources = _sources(data_dir, heldout)
    info = dataset_info(sources["train"][0], split=sources["train"][1],
                        heldout_fraction=options.heldout_fraction)  # fmt: skip
    steps_per_epoch = math.ceil(info["samples"] / options.batch_size)
    net = build_chain(info, options, steps_per_epoch)
    state = {"options": dataclasses.asdict(options), "data_dir": str(data_dir),
             "heldout": None if heldout is None else str(heldout), "epochs_done": 0, "history": []}  # fmt: skip
    _check_run_data(net, state)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(net, run_dir, state)
    return net, state


def _split_of(state: dict[str, Any], part: str) -> tuple[Path, str | None]:
    data_dir = Path(state["data_dir"])
    if state.get("heldout"):
        return (data_dir, None) if part == "train" else (Path(state["heldout"]), None)
    return data_dir, part


def _check_run_data(net: Chain, state: dict[str, Any]) -> dict[str, Any]:
    fraction = state["options"]["heldout_fraction"]
    for part in ("train", "heldout"):
        where, split = _split_of(state, part)
        info = dataset_info(where, split=split, heldout_fraction=fraction)
        check_sizes(net, info, str(where))
        state[f"{part}_info"] = info
    return state


def epoch_batches(directory, split: str | None, fraction: float, batch_size: int, seed: int,
                  first: int, last: int) -> tuple[tf.data.Dataset, int]:  # fmt: skip
    """Training batches for epochs `[first, last)`, each epoch in its own seeded order.

    The order of epoch `e` depends only on `(seed, e)`, so a resumed run sees the batches the
    uninterrupted run would have seen.

    Returns:
        `(dataset of ((x, steps), y), steps per epoch)`.
    """
    import datagen

    data = datagen.read(directory, split=split, heldout_fraction=fraction)
    cells = tf.RaggedTensor.from_row_lengths(data["y_values"], data["row_lengths"], validate=False)
    y = tf.RaggedTensor.from_uniform_row_length(cells, data["steps"].shape[1], validate=False)
    x, steps = tf.constant(data["x"]), tf.constant(data["steps"])
    n = int(data["x"].shape[0])

    def one_epoch(epoch: tf.Tensor) -> tf.data.Dataset:
        order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=tf.stack([seed, epoch]))
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    def gather(index: tf.Tensor):
        return (tf.gather(x, index), tf.gather(steps, index)), tf.gather(y, index)

    epochs = tf.data.Dataset.range(first, last).flat_map(one_epoch)
    return epochs.map(gather).prefetch(tf.data.AUTOTUNE), math.ceil(n / batch_size)


class _Checkpoint(keras.callbacks.Callback):
    """After each finite epoch: checkpoint, history, plot. After a NaN: stop, keep the last one."""

    def __init__(self, run_dir: Path, state: dict[str, Any], guard: _NanGuard) -> None:
        super().__init__()
        self.run_dir, self.state, self.guard = run_dir, state, guard
        self.started = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.guard.bad is not None:
            return
        state = self.state
        state["history"].append(_epoch_row(epoch + 1, logs or {}, time.perf_counter() - self.started))
        state["epochs_done"] = epoch + 1
        save_checkpoint(self.model, self.run_dir, state)
        write_history(self.run_dir, state["history"])
        plot_history(self.run_dir, state["history"], state["heldout_info"]["noise_floor"])


def _train(net: Chain, run_dir: Path, state: dict[str, Any], verbose, more: list) -> None:
    """Runs the remaining epochs in one `fit`; raises TrainingDiverged on a non-finite loss."""
    opts = FitOptions(**state["options"])
    first = state["epochs_done"]
    if first >= opts.epochs:
        return
    train_dir, train_split = _split_of(state, "train")
    train, per_epoch = epoch_batches(train_dir, train_split, opts.heldout_fraction, opts.batch_size,
                                     opts.seed, first, opts.epochs)  # fmt: skip
    held_dir, held_split = _split_of(state, "heldout")
    held = _load(held_dir, 256, held_split, opts.heldout_fraction)
    guard = _NanGuard()
    callbacks = [guard, _Checkpoint(run_dir, state, guard), *more]
    net.fit(train, validation_data=held, epochs=opts.epochs, initial_epoch=first,
            steps_per_epoch=per_epoch, callbacks=callbacks, verbose=verbose)  # fmt: skip
    if guard.bad is not None:
        batch, loss = guard.bad
        raise TrainingDiverged(
            f"the loss became {loss} at epoch {state['epochs_done'] + 1}, batch {batch + 1}: "
            f"training stopped; the last good checkpoint (epoch {state['epochs_done']}) is kept "
            f"in {run_dir}"
        )


# ----------------------------------------------------------------------------- scoring


def score(net: Chain, directory: str | os.PathLike[str], split: str | None = None,
          heldout_fraction: float = 0.1, batch_size: int = 256) -> dict[str, Any]:  # fmt: skip
    """Scores a model on a stored dataset (or one split of it).

    Returns:
        `mse` (masked, over real inner steps), `noise_floor`, `mse_over_noise_floor`, `samples`,
        and `length_accuracy` (exact match of predicted and true `steps` per `(b, t)`) when the
        model predicts lengths.

    Raises:
        datagen.DatasetError: the dataset is missing or corrupt.
        ValueError: its sizes do not fit the model.
    """
    info = dataset_info(directory, split=split, heldout_fraction=heldout_fraction)
    check_sizes(net, info, str(directory))
    data = _load(directory, batch_size, split, heldout_fraction)
    logs = net.evaluate(data, return_dict=True, verbose=0)
    result = {"mse": float(logs["masked_mse"]), "noise_floor": info["noise_floor"],
              "mse_over_noise_floor": float(logs["masked_mse"]) / info["noise_floor"],
              "samples": info["samples"]}  # fmt: skip
    if net.predict_lengths or net.stop:
        result["length_accuracy"] = length_accuracy(net, data)
    return result


def length_accuracy(net: Chain, data: tf.data.Dataset) -> float:
    """Share of `(b, t)` whose generated length equals the true `steps`."""
    hits = total = 0
    for (x, steps), _ in data:
        guess = net.generate(x).row_lengths(axis=2)
        hits += int(np.sum(guess.numpy().reshape(steps.shape) == steps.numpy()))
        total += int(np.prod(steps.shape))
    return hits / max(total, 1)


def write_report(net: Chain, run_dir: Path, state: dict[str, Any]) -> dict[str, Any]:
    """Scores the held-out data and writes `report.json`."""
    where, split = _split_of(state, "heldout")
    scores = score(net, where, split, state["options"]["heldout_fraction"])
    report = {
        "heldout_mse": scores["mse"],
        "noise_floor": scores["noise_floor"],
        "heldout_mse_over_noise_floor": scores["mse_over_noise_floor"],
        "heldout_samples": scores["samples"],
        "heldout": {"data_dir": str(where), "split": split,
                    "fraction": state["options"]["heldout_fraction"] if split else None},  # fmt: skip
        "epochs": state["epochs_done"],
        "train_seconds": round(sum(row["seconds"] for row in state["history"]), 1),
        "options": state["options"],
        "data_dir": state["data_dir"],
    }
    if "length_accuracy" in scores:
        report["length_accuracy"] = scores["length_accuracy"]
    _write_atomically(run_dir / REPORT_FILE, json.dumps(report, indent=1))
    return report


def evaluate_run(run_dir: str | os.PathLike[str], data_dir: str | os.PathLike[str],
                 batch_size: int = 256) -> dict[str, Any]:  # fmt: skip
    """Scores the last checkpoint of a run on another dataset (all of its samples).

    Raises:
        FileNotFoundError: no checkpoint in `run_dir`.
        datagen.DatasetError: the dataset is missing or corrupt.
        ValueError: the dataset does not fit the model, or the checkpoint is unreadable.
    """
    net, state = load_run(Path(os.fspath(run_dir)))
    result = score(net, data_dir, None, batch_size=batch_size)
    return {"data_dir": str(data_dir), "run_dir": str(run_dir), "epochs": state["epochs_done"], **result}
