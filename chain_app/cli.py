"""`chain fit`, `chain evaluate` and `chain generate`: a thin click layer over `chain.fit_run`,
`chain.evaluate_run` and `chain_app.generate.generate_run`.

Options are checked, and the run directory too, before TensorFlow is imported: `--help` and bad
input answer at once, and bad input writes nothing.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import click

from ragged_common.checks import OptionError
from ragged_common.cli import Choice, OneLineGroup, OutputDir, checked

from .options import SAMPLING, SEARCH, SPLITS, STATES, STRATEGIES, FitOptions, check_generate_option, check_option

_DEFAULTS = FitOptions()
_checked = checked(check_option)
"""The option callback running `FitOptions`' own check of the option's field (exit 2 naming it)."""
_generate_checked = checked(check_generate_option)
"""The option callback running `chain generate`'s check of the option (exit 2 naming it)."""


def _runtime_errors() -> tuple[type[Exception], ...]:
    import datagen

    from .options import TrainingDiverged

    return datagen.DatasetError, ValueError, FileNotFoundError, TrainingDiverged, OSError, MemoryError


def _own_errors() -> tuple[type[Exception], ...]:
    """Errors whose one-line messages this project writes (a path in them may hold a line break)."""
    import datagen

    from .options import TrainingDiverged
    from .runs import RunDirError

    return datagen.DatasetError, OptionError, RunDirError, TrainingDiverged  # datagen.ParameterError is OptionError


def _one_line(error: Exception) -> click.ClickException:
    """The error in one line: ours whole (the group escapes line breaks), another library's first line."""
    if isinstance(error, OSError) and not isinstance(error, FileNotFoundError) and error.strerror:
        return click.ClickException(f"{error.filename or ''}: {error.strerror}".lstrip(": "))
    message = str(error)
    if not isinstance(error, _own_errors()):
        message = message.splitlines()[0] if message else type(error).__name__
    return click.ClickException(message)


def _check_out(run_dir: Path, resume: bool, overwrite: bool) -> None:
    from . import runs

    try:
        runs.check_target(run_dir, resume=resume, overwrite=overwrite, names=runs.CLI_NAMES)
    except runs.RunDirError as error:
        raise click.BadParameter(str(error), param_hint="'--out'") from None


def _check_window(data_dir: Path, window: int, batch_size: int, heldout: Path | None) -> None:
    """`--window` at most the dataset's T and full batches possible (manifest alone), else exit 2."""
    import datagen

    try:
        facts = datagen.info(data_dir, split=None if heldout else "train",
                             heldout_fraction=_DEFAULTS.heldout_fraction)  # fmt: skip
    except (datagen.DatasetError, ValueError):
        return  # the run reports the dataset's problem itself
    if window > facts["timesteps"]:
        raise click.BadParameter(f"must be at most T = {facts['timesteps']}, the dataset's outer steps; "
                                 f"received {window}", param_hint="'--window'")  # fmt: skip
    if batch_size > facts["samples"]:
        raise click.BadParameter(f"`--window` needs full batches: must be at most the {facts['samples']} "
                                 f"training samples; received {batch_size}", param_hint="'--batch-size'")  # fmt: skip


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """Train and score chained models on datagen datasets."""


@main.command("fit")
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--out", "run_dir", type=OutputDir(path_type=Path), default="chain-run",
              show_default=True, help="Run directory: checkpoints, history, plot, TensorBoard logs, report.")
@click.option("--state", type=Choice(STATES), default=_DEFAULTS.state, show_default=True,
              help="Where B's state comes from.")
@click.option("--epochs", type=int, default=_DEFAULTS.epochs, show_default=True, callback=_checked,
              help="Total epochs (also the target of --resume).")
@click.option("--batch-size", type=int, default=_DEFAULTS.batch_size, show_default=True,
              callback=_checked, help="Samples per batch.")
@click.option("--hidden", type=int, default=_DEFAULTS.hidden, show_default=True, callback=_checked,
              help="Units of model A (GRU) and model B (GRUCell), at most 8192.")
@click.option("--lr", type=float, default=_DEFAULTS.lr, show_default=True, callback=_checked,
              help="Peak Adam learning rate, finite and > 0 (cosine decay to 1%).")
@click.option("--strategy", type=Choice(STRATEGIES), default=_DEFAULTS.strategy, show_default=True,
              help="How B runs.")
@click.option("--predict-lengths", is_flag=True, help="Train a length head on `steps`.")
@click.option("--stop-token", is_flag=True, help="Train a stop head on B's outputs instead.")
@click.option("--heldout", type=click.Path(path_type=Path), default=None,
              help="A separate held-out dataset; default: the last 10% of DATA_DIR by index.")
@click.option("--seed", type=int, default=_DEFAULTS.seed, show_default=True, callback=_checked,
              help="Seeds weights, per-epoch shuffles and scheduled sampling, in [0, 2**31 - 1].")
@click.option("--window", type=int, default=None, callback=_checked,
              help="Train on consecutive windows of W outer steps per sample, in order, with the state "
                   "carried and reset per sample (truncated backpropagation through time).")
@click.option("--feedback", is_flag=True,
              help="Feed model B its previous output (the previous target in training: teacher forcing).")
@click.option("--feedback-sampling", type=float, default=_DEFAULTS.feedback_sampling, show_default=True,
              callback=_checked,
              help="With --feedback: probability of feeding the model's own output instead of the target "
                   "per inner step in training (scheduled sampling), in [0, 1].")
@click.option("--bidirectional", is_flag=True,
              help="Model A reads each sample both ways (a bidirectional GRU): for inputs known in full "
                   "beforehand, such as a chorale's lower voices. Not with --window.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace the run in --out (only a run's own files are removed).")
def fit(data_dir: Path, run_dir: Path, heldout: Path | None, resume: bool, overwrite: bool, **options: Any) -> None:
    """Fit a Chain to the dataset in DATA_DIR and write the run to --out.

    Model A is a GRU (with --bidirectional, one each way), model B a GRUCell, all of --hidden
    units, with a Dense head; Adam with a cosine-decayed learning rate. Held-out data is
    --heldout, or else the deterministic split of `datagen.read(..., split="heldout")`: the last
    10% of DATA_DIR's samples by index.

    The run directory holds model.keras (the last good checkpoint, with optimizer state) and
    state.json, written as a pair every epoch whose losses and weights are finite; history.csv,
    loss.png, tensorboard/ (scalars per epoch, held-out noise-floor ratio included) and
    report.json (heldout_mse, noise_floor, heldout_mse_over_noise_floor and, with predicted
    lengths, length_accuracy). A non-empty --out needs --resume, which continues the run up to
    --epochs with its stored options, or --overwrite.

    Token data (`datagen make --task tokens` or tokens-reset) is told by its manifest: the head
    then gives one logit per token of the vocabulary, the loss is the token cross-entropy, and
    the report gives heldout_cross_entropy (nats per token), the law's cross_entropy_floor,
    heldout_cross_entropy_over_floor, heldout_perplexity, perplexity_floor and
    heldout_token_accuracy instead of the MSE figures. Every option works on both.

    Imported data (`datagen import chorales`) has no law, so no floor: the report sets the
    held-out cross-entropy beside the unigram's and the bigram's from the dataset's manifest
    (heldout_cross_entropy_over_bigram), and the length_accuracy, counted over the real outer
    steps only (a chorale's beats, not the padding after its end), beside the most frequent
    count's and the logistic regression's (majority_length_accuracy, logistic_length_accuracy).
    """
    if options["predict_lengths"] and options["stop_token"]:
        raise click.UsageError("use one of --predict-lengths and --stop-token, not both")
    if options["feedback_sampling"] and not options["feedback"]:
        raise click.UsageError("--feedback-sampling needs --feedback")
    if resume and overwrite:
        raise click.UsageError("use one of --resume and --overwrite, not both")
    if options["bidirectional"] and options["window"] is not None:
        raise click.UsageError("use one of --bidirectional and --window, not both: windows run in order, "
                               "model A's state carried forward only")  # fmt: skip
    _check_out(run_dir, resume, overwrite)
    if options["window"] is not None:
        _check_window(data_dir, options["window"], options["batch_size"], heldout)
    from .fit import fit_run, tensorboard_available

    logs = tensorboard_available()
    if not logs:
        click.echo("chain fit: no TensorBoard logs, the tensorboard package is missing "
                   "(pip install tensorboard)", err=True)  # fmt: skip
    verbose = 1 if sys.stdout.isatty() else 2
    try:
        report = fit_run(data_dir, run_dir, FitOptions(**options), heldout=heldout, resume=resume,
                         overwrite=overwrite, verbose=verbose, tensorboard=logs)  # fmt: skip
    except _runtime_errors() as error:
        raise _one_line(error) from None
    click.echo(json.dumps(_summary(report), indent=1))


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("heldout_mse", "noise_floor", "heldout_mse_over_noise_floor", "heldout_mse_over_noise_floor_omitted",
            "heldout_cross_entropy", "cross_entropy_floor", "heldout_cross_entropy_over_floor",
            "heldout_cross_entropy_over_floor_omitted", "heldout_perplexity", "perplexity_floor",
            "heldout_token_accuracy", "heldout_cross_entropy_over_bigram", "unigram_cross_entropy",
            "bigram_cross_entropy", "length_accuracy", "majority_length_accuracy", "logistic_length_accuracy",
            "epochs", "train_seconds")  # fmt: skip
    return {key: report[key] for key in keys if key in report}


@main.command("evaluate")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--batch-size", type=int, default=256, show_default=True, callback=_checked,
              help="Samples per batch.")
@click.option("--split", type=Choice(SPLITS), default="all", show_default=True,
              help="Which samples: all, or datagen's held-out or training split at the run's held-out fraction.")
@click.option("--allow-other-law", is_flag=True,
              help="Score DATA_DIR even when another law made it (with a warning): its MSE then says "
                   "nothing of the fit.")
def evaluate(run_dir: Path, data_dir: Path, batch_size: int, split: str, allow_other_law: bool) -> None:
    """Score the last checkpoint of RUN_DIR on every sample of DATA_DIR (or of --split); print JSON.

    Prints mse (over real inner steps), noise_floor, mse_over_noise_floor (left out, with the
    reason, when the noise floor is 0), samples and, for a model that predicts lengths,
    length_accuracy. A token run prints cross_entropy (nats per token), cross_entropy_floor (the
    law's), cross_entropy_over_floor, perplexity, perplexity_floor and token_accuracy instead.
    On imported data, length_accuracy counts the real outer steps only (not a chorale's padding),
    and with --split heldout, the split its manifest's baselines were scored on, the scores stand
    beside them as in `chain fit`'s report (cross_entropy_over_bigram, ...).

    DATA_DIR must come from the law the run was trained on: made by `datagen make` with the
    training set's --task, --seed and law options (--teacher-hidden, --input-size,
    --output-size, ...); --samples, --noise, --lengths and the storage may differ, and the first
    samples of a larger set repeat the training set's. The run's own held-out split (the last 10%
    of its data by default) is scored in its report.json. Data of another law (another task or
    seed: another teacher) exits 2 naming both law digests, unless --allow-other-law.
    """
    _check_checkpoint(run_dir)
    _check_law(run_dir, data_dir, allow_other_law)
    from .report import evaluate_run

    try:
        result = evaluate_run(run_dir, data_dir, batch_size=batch_size, allow_other_law=allow_other_law, split=split)
    except _runtime_errors() as error:
        raise _one_line(error) from None
    click.echo(json.dumps(result, indent=1))


def _check_checkpoint(run_dir: Path) -> None:
    """Exit 2 for a RUN_DIR that holds no checkpoint (no TensorFlow)."""
    from . import runs

    if not any((run_dir / name).is_file() for name in (runs.MODEL_FILE, runs.NEXT_MODEL_FILE)):
        raise click.BadParameter(f"{run_dir} holds no checkpoint ({runs.MODEL_FILE})", param_hint="'RUN_DIR'")


def _check_law(run_dir: Path, data_dir: Path, allow: bool) -> None:
    """Exit 2 when another law made DATA_DIR, or a warning with --allow-other-law (no TensorFlow)."""
    import datagen

    from . import laws, runs

    try:
        state = runs.read_state(run_dir)
        laws.check_same_law(state, data_dir, laws.law_digest(datagen.info(data_dir)["manifest"]))
    except laws.OtherLaw as error:
        if not allow:
            raise click.BadParameter(f"{error}; pass --allow-other-law to score it anyway",
                                     param_hint="'DATA_DIR'") from None  # fmt: skip
        click.echo(f"chain evaluate: WARNING: {error}; scored anyway (--allow-other-law)", err=True)
    except (ValueError, OSError):
        return  # a missing or damaged state or dataset: the evaluation reports it


_DECODING = (
    click.option("--temperature", type=float, default=None, callback=_generate_checked,
                 help="Sample tokens from softmax(logits / T), T finite and > 0 (default 1 when sampling)."),
    click.option("--top-k", type=int, default=None, callback=_generate_checked,
                 help="Sample among the K most likely tokens, 1 <= K <= the vocabulary size."),
    click.option("--top-p", type=float, default=None, callback=_generate_checked,
                 help="Sample among the most likely tokens whose probabilities first reach P, in (0, 1]."),
    click.option("--seed", type=int, default=None, callback=_generate_checked,
                 help="Seeds the draws when sampling, in [0, 2**31 - 1] (default 0)."),
    click.option("--beam", type=int, default=None, callback=_generate_checked,
                 help="Search the K most likely outputs (beam search of width K >= 1), written best first."),
    click.option("--length-penalty", type=float, default=None, callback=_generate_checked,
                 help="With --beam: rank hypotheses by log p / ((5 + n) / 6) ** A, A finite and >= 0 "
                      "(default 0); it matters only where a run's end is predicted."),
)  # fmt: skip


def _decoding_options(command: Any) -> Any:
    """The decoding options of `chain generate` and `chain harmonise`, in order (`SAMPLING`, `SEARCH`)."""
    for option in reversed(_DECODING):
        command = option(command)
    return command


@main.command("generate")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=None,
              help="Dataset whose inputs are generated from; default: the run's training dataset.")
@click.option("--split", type=Choice(SPLITS), default="heldout", show_default=True,
              help="Which samples of it: datagen's held-out split (at the run's held-out fraction), the "
                   "training split, or all.")
@click.option("--samples", type=int, default=None, callback=_generate_checked,
              help="Generate for the first N samples of the split only; default: all.")
@_decoding_options
@click.option("--predict-lengths", is_flag=True,
              help="Generate at the lengths the run's lengths part predicts (a run fitted with "
                   "--predict-lengths or --stop-token) instead of the dataset's steps.")
@click.option("--free", is_flag=True,
              help="Carry mode with feedback: run each sample whole on its own tokens; by default each "
                   "outer step's run follows the dataset's tokens before it.")
@click.option("--batch-size", type=int, default=256, show_default=True, callback=_generate_checked,
              help="Samples per batch.")
@click.option("--out", type=click.Path(path_type=Path), default=None, callback=_generate_checked,
              help="The JSON file to write; default: RUN_DIR/generated.json.")
@click.option("--plot", type=click.Path(path_type=Path), default=None, callback=_generate_checked,
              help="Also draw the first 4 samples' outputs to this PNG.")
@click.option("--allow-other-law", is_flag=True, help="Generate on DATA even when another law made it.")
def generate(run_dir: Path, data_dir: Path | None, out: Path | None, plot: Path | None, allow_other_law: bool,
             **options: Any) -> None:  # fmt: skip
    """Generate with the last checkpoint of RUN_DIR on a dataset's inputs; write JSON, print a summary.

    A token run takes the most likely token at every inner step (greedy), samples with any of
    --temperature, --top-k, --top-p and --seed, or searches the K most likely outputs with
    --beam K (and --length-penalty). Runs are as long as the dataset's steps, or with
    --predict-lengths as the run predicts. In carry mode with feedback, each outer step's run
    follows the dataset's tokens before it (as the law's most likely sequences do; a beam then
    searches each run), unless --free or --predict-lengths: then each sample runs whole on its
    own tokens (a beam spans the whole sample).

    The JSON file holds, per sample, the tokens of every outer step, each token's log
    probability under the model and their total, the dataset's tokens and the law's most likely
    ones, and which runs equal those. The summary printed (and in the file) gives the tokens
    generated, the mean log probability per token, and the share of the dataset's runs whose
    tokens equal the law's most likely sequence (and of its runs of 2+ tokens, next to the
    law's own greedy walk's share).

    A real-valued run generates free-running outputs at the dataset's steps; the summary gives
    their MSE against the targets and the noise floor. It takes no decoding option.
    """
    from . import runs

    given = {name: options[name] for name in (*SAMPLING, *SEARCH) if options[name] is not None}
    _check_decoders(given)
    _check_checkpoint(run_dir)
    try:
        state = runs.read_state(run_dir)
    except (ValueError, OSError):
        state = None  # the generation reports it
    if state is not None:
        _check_decoding(run_dir, state, given, options["predict_lengths"])
        data_dir = _check_samples(state, data_dir, options["split"], options["samples"])
        _check_law(run_dir, data_dir, allow_other_law)
    from .generate import generate_run

    try:
        document = generate_run(run_dir, data_dir, decoder=_decoder(given), split=options["split"],
                                samples=options["samples"], predict_lengths=options["predict_lengths"],
                                free=options["free"], batch_size=options["batch_size"], out=out, plot=plot,
                                allow_other_law=allow_other_law, progress=True)  # fmt: skip
    except _runtime_errors() as error:
        raise _one_line(error) from None
    click.echo(json.dumps(document["summary"], indent=1))


def _option(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def _check_decoding(run_dir: Path, state: dict[str, Any], given: dict[str, Any], predict_lengths: bool) -> None:
    """Exit 2 for decoding options a run cannot take, from its state alone (no TensorFlow)."""
    info = state.get("train_info")
    vocab = info.get("vocab_size") if isinstance(info, dict) else None
    for name, value in given.items():
        if vocab is None:
            raise click.BadParameter(f"{run_dir} holds a real-valued run, which picks no tokens; received {value}",
                                     param_hint=f"'{_option(name)}'")  # fmt: skip
    if "top_k" in given and given["top_k"] > vocab:
        raise click.BadParameter(f"must be an integer in [1, {vocab}] (the run's vocabulary size); received "
                                 f"{given['top_k']}", param_hint="'--top-k'")  # fmt: skip
    fitted = state["options"]
    if predict_lengths and not (fitted.get("predict_lengths") or fitted.get("stop_token")):
        raise click.BadParameter(f"{run_dir} holds a run without a lengths part (fit it with --predict-lengths "
                                 "or --stop-token)", param_hint="'--predict-lengths'")  # fmt: skip


def _check_samples(state: dict[str, Any], data_dir: Path | None, split: str, samples: int | None) -> Path:
    """The dataset (the run's training data for None) and, from its manifest, exit 2 where
    `--samples` asks for more samples than the split holds."""
    import datagen

    where = Path(state["data_dir"]) if data_dir is None else data_dir
    try:
        facts = datagen.info(where, split=None if split == "all" else split,
                             heldout_fraction=state["options"]["heldout_fraction"])  # fmt: skip
    except (ValueError, OSError):
        return where  # the generation reports it
    if samples is not None and samples > facts["samples"]:
        raise click.BadParameter(f"must be at most the {facts['samples']} samples of {where}'s {split} split; "
                                 f"received {samples}", param_hint="'--samples'")  # fmt: skip
    return where


def _check_decoders(given: dict[str, Any]) -> None:
    """Exit 2 where the options ask for two decoders (a sample and a search), or a search's
    option without the search."""
    sampling = [name for name in SAMPLING if name in given]
    if "beam" in given and sampling:
        raise click.UsageError(f"--beam {given['beam']} searches the most likely outputs and draws nothing; "
                               f"received {_option(sampling[0])} {given[sampling[0]]} too")  # fmt: skip
    if "length_penalty" in given and "beam" not in given:
        raise click.UsageError(f"--length-penalty ranks a beam search's hypotheses: it needs --beam; received "
                               f"--length-penalty {given['length_penalty']} alone")  # fmt: skip


def _decoder(given: dict[str, Any]) -> Any:
    """The `chain.Decoder` of the decoding options: a Beam with --beam, a Sampler with any
    sampling option, else None (greedy)."""
    if not given:
        return None
    import chain

    if "beam" in given:
        return chain.Beam(given["beam"], given.get("length_penalty", 0.0))
    return chain.Sampler(**given)


@main.command("harmonise")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--chorale", default=None,
              help="The chorale's id (e.g. bwv10.7); default: the first held-out chorale of the run's dataset.")
@click.option("--out", type=OutputDir(path_type=Path), default="harmonised", show_default=True,
              help="The folder the chorale's four files go to.")
@_decoding_options
def harmonise(run_dir: Path, chorale: str | None, out: Path, **options: Any) -> None:
    """Write a soprano over the lower voices of a chorale with a run fitted on imported chorales.

    The run (`chain fit` on `datagen import chorales` data, with --feedback and best a lengths
    part) generates over the chorale's beats, its windows run in order with the state carried:
    as many notes per beat as its lengths part predicts (Bach's count without one), each token
    the most likely (greedy), sampled (--temperature, --top-k, --top-p, --seed) or the best of a
    beam search (--beam). The soprano goes over Bach's alto, tenor and bass into --out as
    ID.musicxml and ID.mid (through music21), ID.png (a piano roll of it above Bach's own
    soprano) and ID.json (both sopranos as notes and tokens, and the summary printed).

    The summary gives the share of each soprano's notes whose pitch class sounds in a lower
    voice at its beat or belongs to the chorale's key (in_harmony, bach_in_harmony), the share
    in the lower voices alone (in_chord, bach_in_chord), and the share of beats with as many
    notes as Bach's. Needs music21: pip install 'ragged-chain[music]'. The four files are
    written together or not at all.
    """
    from . import harmonise as harmonising

    given = {name: options[name] for name in (*SAMPLING, *SEARCH) if options[name] is not None}
    _check_decoders(given)
    _check_chorale_run(run_dir, chorale, given)
    if importlib.util.find_spec("music21") is None:
        raise click.ClickException("chain harmonise needs music21, which is not installed: "
                                   "pip install 'ragged-chain[music]'")  # fmt: skip
    try:
        summary = harmonising.harmonise_run(run_dir, chorale, out, decoder=_decoder(given))
    except (*_runtime_errors(), ModuleNotFoundError) as error:
        raise _one_line(error) from None
    click.echo(json.dumps(summary, indent=1))


def _check_chorale_run(run_dir: Path, chorale: str | None, given: dict[str, Any]) -> None:
    """Exit 2 for a run that holds no checkpoint or was not fitted on chorales, decoding options
    it cannot take, or a chorale its dataset lacks (no TensorFlow)."""
    import datagen

    from .harmonise import chorales_state, pick_chorale

    _check_checkpoint(run_dir)
    try:
        state = chorales_state(run_dir)
    except (ValueError, OSError) as error:
        raise click.BadParameter(str(error), param_hint="'RUN_DIR'") from None
    _check_decoding(run_dir, state, given, False)
    try:
        manifest = datagen.info(Path(state["data_dir"]))["manifest"]
    except (ValueError, OSError):
        return  # a missing or damaged dataset: the harmonisation reports it
    try:
        pick_chorale(manifest, chorale)
    except ValueError as error:
        raise click.BadParameter(str(error).removeprefix("`chorale` "), param_hint="'--chorale'") from None


if __name__ == "__main__":
    main()
