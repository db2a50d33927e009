"""`chain fit` and `chain evaluate`: a thin click layer over `chain.fit_run` and `chain.evaluate_run`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ._fit import FitOptions

_DEFAULTS = FitOptions()


def _positive(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Option callback: the value must be > 0."""
    if value is not None and value <= 0:
        raise click.BadParameter(f"must be > 0; received {value}", ctx, param)
    return value


def _dataset_error() -> type[Exception]:
    import datagen

    return datagen.DatasetError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Train and score chained models on datagen datasets."""


@main.command("fit")
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--out", "run_dir", type=click.Path(path_type=Path), default="chain-run",
              show_default=True, help="Run directory: checkpoints, history, plot, report.")
@click.option("--state", type=click.Choice(["carry", "reset", "init"]), default=_DEFAULTS.state,
              show_default=True, help="Where B's state comes from.")
@click.option("--epochs", type=int, default=_DEFAULTS.epochs, show_default=True,
              callback=_positive, help="Total epochs (also the target of --resume).")
@click.option("--batch-size", type=int, default=_DEFAULTS.batch_size, show_default=True,
              callback=_positive, help="Samples per batch.")
@click.option("--hidden", type=int, default=_DEFAULTS.hidden, show_default=True,
              callback=_positive, help="Units of model A (GRU) and model B (GRUCell).")
@click.option("--lr", type=float, default=_DEFAULTS.lr, show_default=True,
              callback=_positive, help="Peak Adam learning rate (cosine decay to 1%).")
@click.option("--strategy", type=click.Choice(["packed", "padded", "loop", "auto"]),
              default=_DEFAULTS.strategy, show_default=True, help="How B runs.")
@click.option("--predict-lengths", is_flag=True, help="Train a length head on `steps`.")
@click.option("--stop-token", is_flag=True, help="Train a stop head on B's outputs instead.")
@click.option("--heldout", type=click.Path(path_type=Path), default=None,
              help="A separate held-out dataset; default: the last 10% of DATA_DIR by index.")
@click.option("--seed", type=int, default=_DEFAULTS.seed, show_default=True,
              help="Seeds weights and per-epoch shuffles.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
def fit(data_dir: Path, run_dir: Path, heldout: Path | None, resume: bool, **options: Any) -> None:
    """Fit a Chain to the dataset in DATA_DIR and write the run to --out.

    Model A is a GRU, model B a GRUCell, both of --hidden units, with a Dense head; Adam with a
    cosine-decayed learning rate. Held-out data is --heldout, or else the deterministic split of
    `datagen.load(..., split="heldout")`: the last 10% of DATA_DIR's samples by index.

    The run directory holds model.keras (the last good checkpoint, with optimizer state, written
    atomically every epoch), state.json, history.csv, loss.png and report.json (heldout_mse,
    noise_floor, heldout_mse_over_noise_floor and, with predicted lengths, length_accuracy).
    --resume continues from the checkpoint up to --epochs with the run's stored options.
    """
    from ._fit import TrainingDiverged, fit_run

    if options["predict_lengths"] and options["stop_token"]:
        raise click.UsageError("use one of --predict-lengths and --stop-token, not both")
    if resume and not (run_dir / "state.json").is_file():
        raise click.BadParameter(f"{run_dir} holds no run to resume", param_hint="'--out'")
    if not resume and (run_dir / "state.json").exists():
        raise click.BadParameter(
            f"{run_dir} holds a run already; pass --resume or another --out", param_hint="'--out'"
        )
    verbose = 1 if sys.stdout.isatty() else 2
    try:
        report = fit_run(data_dir, run_dir, FitOptions(**options), heldout=heldout,
                         resume=resume, verbose=verbose)  # fmt: skip
    except (_dataset_error(), ValueError, FileNotFoundError, TrainingDiverged) as error:
        raise click.ClickException(str(error)) from None
    click.echo(json.dumps(_summary(report), indent=1))


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("heldout_mse", "noise_floor", "heldout_mse_over_noise_floor", "length_accuracy",
            "epochs", "train_seconds")  # fmt: skip
    return {key: report[key] for key in keys if key in report}


@main.command("evaluate")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--batch-size", type=int, default=256, show_default=True,
              callback=_positive, help="Samples per batch.")
def evaluate(run_dir: Path, data_dir: Path, batch_size: int) -> None:
    """Score the last checkpoint of RUN_DIR on every sample of DATA_DIR; print JSON.

    Prints mse (over real inner steps), noise_floor, mse_over_noise_floor, samples and, for a
    model that predicts lengths, length_accuracy.
    """
    from ._fit import evaluate_run

    if not (run_dir / "model.keras").is_file():
        raise click.BadParameter(f"{run_dir} holds no checkpoint (model.keras)", param_hint="'RUN_DIR'")
    try:
        result = evaluate_run(run_dir, data_dir, batch_size=batch_size)
    except (_dataset_error(), ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
