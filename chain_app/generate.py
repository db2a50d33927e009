"""`generate_run`: a run's chain generating on a dataset's inputs, written to a JSON file.

A token run picks its tokens with a `chain.Decoder` (greedy by default, a `chain.Sampler`, or
a `chain.Beam` search) at the dataset's `steps` or at the lengths its lengths part predicts. In
carry mode with feedback a run's tokens follow the tokens before it; at the dataset's lengths
those are the dataset's tokens (`chain.decode_runs`: each outer step decodes from the states a
teacher-forced pass over the steps before it leaves), as the law's most likely sequences
(`y_best_values`) are given the dataset's tokens, so that the two can be compared run by run.
`free=True`, or predicted lengths, runs each sample whole on its own tokens instead. Reset and
init chains run each `(b, t)` on its own either way.

A real-valued run generates free-running outputs (each inner step fed the model's own previous
output with feedback) at the dataset's `steps`, and is scored by their masked MSE.

The file (`generated.json` in the run directory by default) is one JSON object:

- `run_dir`, `data_dir`, `split` (`"heldout"`, `"train"` or `"all"`), `first_sample` (the
  dataset index of the split's first sample), `decoder` (`{"name": ..., **its config}`, None for
  a real-valued run), `lengths` (`"data"` or `"predicted"`), `context` (`"data"` or `"free"`),
  `vocab_size`;
- `summary`: what `chain generate` prints (see `summarise_tokens` and `summarise_values`);
- `samples`, one line each: `index` (in the dataset), `steps` (T), `outputs` (best first: one,
  or a beam search's K less any padding beams) each with `tokens` (T lists, the tokens of each
  outer step), `log_probs` (the same shape: each token's log probability under the model) and
  `log_prob` (their total), `targets` (the dataset's tokens), `best` (the law's most likely
  tokens of each run) and `matches_best` (T booleans: `outputs[0]`'s run equals `best`'s). A
  real-valued run's outputs hold `values` (T lists of inner steps of `output_size` numbers), and
  its `targets` the dataset's.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

import chain
import datagen
from ragged_common import atomic, progress

from . import data, laws, runs
from .options import check_generate_option

if TYPE_CHECKING:
    from chain import Chain, Decoder

GENERATED_FILE = runs.GENERATED_FILE
PLOTTED = 4
"""Samples `--plot` draws at most: the first ones."""


def generate_run(run_dir: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None, *,
                 decoder: "Decoder | None" = None, split: str = "heldout", samples: int | None = None,
                 predict_lengths: bool = False, free: bool = False, batch_size: int = 256,
                 out: str | os.PathLike[str] | None = None, plot: str | os.PathLike[str] | None = None,
                 allow_other_law: bool = False, progress: bool = False) -> dict[str, Any]:  # fmt: skip
    """Generates with a run's last checkpoint on a dataset's inputs and writes the outputs.

    Args:
        run_dir: the run directory (`chain fit`'s `--out`).
        data_dir: the dataset whose inputs are used; None for the run's training dataset.
        decoder: a token run's `chain.Decoder` (`chain.Greedy()` for None); None for a
            real-valued run.
        split: `"heldout"` (datagen's held-out split at the run's `heldout_fraction`),
            `"train"` or `"all"`.
        samples: the first `samples` samples of the split; None for all.
        predict_lengths: generate at the lengths the run's lengths part predicts instead of the
            dataset's `steps`.
        free: in carry mode, run each sample whole on its own tokens rather than each outer step
            after the dataset's tokens.
        batch_size: samples per generation call.
        out: the JSON file to write (atomically); None for `run_dir/generated.json`.
        plot: a PNG to draw the first samples' outputs to, or None.
        allow_other_law: generate on a dataset of another law all the same.
        progress: show the samples done on stderr (a bar on a terminal, lines elsewhere).

    Returns:
        The document written to `out` (see the module's notes).

    Raises:
        FileNotFoundError: no checkpoint in `run_dir`.
        datagen.DatasetError: the dataset is missing or corrupt.
        chain_app.laws.OtherLaw: the dataset was made by another law, unless `allow_other_law`.
        ValueError: an argument is invalid (the message names it), the dataset does not fit the
            model, the checkpoint is damaged, a decoder for a real-valued run, or
            `predict_lengths` for a run without a lengths part.
        OSError: `out` or `plot` cannot be written.
    """
    checked = {name: check_generate_option(name, value) for name, value in
               (("split", split), ("samples", samples), ("batch_size", batch_size), ("out", out), ("plot", plot))
               if value is not None}  # fmt: skip
    net, state = runs.load_run(Path(os.fspath(run_dir)))
    where = Path(state["data_dir"]) if data_dir is None else Path(os.fspath(data_dir))
    source = (where, None if split == "all" else split)
    info = data.describe(*source, state["options"]["heldout_fraction"])
    if not allow_other_law:
        laws.check_same_law(state, where, info["law_digest"])
    data.check_sizes(net, info, str(where))
    if samples is not None and samples > info["samples"]:
        raise ValueError(f"`samples` must be at most the {info['samples']} samples of {where}'s {split} split; "
                         f"received {samples}")  # fmt: skip
    _check_generation(net, decoder, predict_lengths)
    decoder = chain.Greedy() if decoder is None and net.vocab_size is not None else decoder
    arrays = data.first_samples(data.read(source, state["options"]["heldout_fraction"]), samples)
    made = _generate_all(net, arrays, decoder, predict_lengths, free, batch_size, progress)
    document = _document(net, state, run_dir, source, arrays, made, decoder, predict_lengths, free)
    target = checked.get("out", Path(os.fspath(run_dir)) / GENERATED_FILE)
    atomic.atomic_write(target, dumps(document))
    if plot is not None:
        draw(document, checked["plot"])
    return document


def dumps(document: dict[str, Any]) -> str:
    """The document as JSON, one line per sample."""
    head = json.dumps({key: value for key, value in document.items() if key != "samples"}, indent=1)
    lines = ",\n".join(f"  {json.dumps(sample)}" for sample in document["samples"])
    return f'{head[:-2]},\n "samples": [\n{lines}\n ]\n}}\n'


def _check_generation(net: "Chain", decoder: Any, predict_lengths: bool) -> None:
    if net.vocab_size is None and decoder is not None:
        raise ValueError(f"`decoder` picks tokens, and the run's chain is real-valued; received decoder={decoder!r}")
    if predict_lengths and net.lengths is None:
        raise ValueError("`predict_lengths` needs a run with a lengths part (fitted with --predict-lengths or "
                         "--stop-token); received predict_lengths=True")  # fmt: skip


# ----------------------------------------------------------------------------- generating


def in_context(net: "Chain", free: bool, predict_lengths: bool) -> bool:
    """Whether each run is decoded after the dataset's tokens (`chain.decode_runs`): a token
    chain whose tokens reach the next outer step (carry mode with feedback), at the dataset's
    lengths, unless `free`."""
    return not (free or predict_lengths) and _sees_tokens(net)


def _sees_tokens(net: "Chain") -> bool:
    """Whether a chain's runs depend on the tokens of the runs before them."""
    return net.vocab_size is not None and net.feedback and net.state == "carry"


def _generate_all(net: "Chain", arrays: dict[str, Any], decoder: Any, predict_lengths: bool, free: bool,
                  batch_size: int, shown: bool = False) -> list[dict[str, Any]]:  # fmt: skip
    """Per sample, `outputs` (best first) as nested lists: `tokens` and `log_probs`, or `values`."""
    (x, steps), y = data.tensors(arrays)
    kept, net.stateful = net.stateful, False  # whole samples from zero states, any batch size
    try:
        made, total = [], int(x.shape[0])
        with progress.progress(shown, total, "chain generate", "samples") as bar:
            for low in range(0, total, batch_size):
                rows = slice(low, low + batch_size)
                made += _generate_batch(net, x[rows], steps[rows], y[rows], decoder, predict_lengths, free)
                if bar is not None:
                    bar.update(len(made) - low)
        return made
    finally:
        net.stateful = kept


def _generate_batch(net: "Chain", x: tf.Tensor, steps: tf.Tensor, y: tf.RaggedTensor, decoder: Any,
                    predict_lengths: bool, free: bool) -> list[dict[str, Any]]:  # fmt: skip
    given = None if predict_lengths else steps
    if net.vocab_size is None:
        return [{"outputs": [{"values": sample}]} for sample in net.generate(x, given).to_list()]
    if in_context(net, free, predict_lengths):
        return _scored(*chain.decode_runs(net, x, steps, y, decoder=decoder, return_scores=True))
    return _scored(*net.generate(x, given, decoder=decoder, return_scores=True))


def _scored(tokens: tf.RaggedTensor, scores: tf.RaggedTensor) -> list[dict[str, Any]]:
    """Per sample, `outputs`: `(batch, T, None)` decodings are one output, `(batch, K, T, None)`
    beams K, less the padding beams (of log probability -inf) where fewer outputs exist."""
    beams = tokens.shape.rank == 4
    made = []
    for sample_tokens, sample_scores in zip(tokens.to_list(), scores.to_list()):
        pairs = zip(sample_tokens, sample_scores) if beams else [(sample_tokens, sample_scores)]
        outputs = [{"tokens": t, "log_probs": s, "log_prob": _total(s)} for t, s in pairs]
        made.append({"outputs": [output for output in outputs if math.isfinite(output["log_prob"])] or outputs[:1]})
    return made


def _total(scores: list[list[float]]) -> float:
    return float(sum(sum(run) for run in scores))


# ----------------------------------------------------------------------------- the document


def _runs_of(flat: np.ndarray, steps: np.ndarray) -> list[list[list[Any]]]:
    """Flat per-step rows `(sum(steps), ...)` as per sample, per outer step lists."""
    cuts = np.cumsum(steps.reshape(-1))[:-1]
    cells = [part.tolist() for part in np.split(flat, cuts)]
    width = steps.shape[1]
    return [cells[b * width : (b + 1) * width] for b in range(steps.shape[0])]


def _document(net: "Chain", state: dict[str, Any], run_dir: Any, source: data.Source, arrays: dict[str, Any],
              made: list[dict[str, Any]], decoder: Any, predict_lengths: bool, free: bool) -> dict[str, Any]:  # fmt: skip
    """The JSON document of a generation (see the module's notes)."""
    where, split = source
    facts = datagen.info(where)
    first = datagen.split_range(facts["counts"]["samples"], split, state["options"]["heldout_fraction"])[0]
    samples = _samples(made, arrays, first)
    document = {
        "run_dir": str(run_dir), "data_dir": str(where), "split": split or "all", "first_sample": first,
        "decoder": None if decoder is None else {"name": type(decoder).__name__, **decoder.get_config()},
        "lengths": "predicted" if predict_lengths else "data",
        "context": "data" if in_context(net, free, predict_lengths) else "free",
        "vocab_size": net.vocab_size,
    }  # fmt: skip
    if net.vocab_size is None:
        document["summary"] = summarise_values(samples, facts["noise_floor"])
    else:
        law_rate = _law_greedy_rate(facts["manifest"]["law"], split, state["options"]["heldout_fraction"])
        comparable = in_context(net, free, predict_lengths) or not _sees_tokens(net)
        document["summary"] = summarise_tokens(samples, law_rate, comparable=comparable)
    document["samples"] = samples
    return document


def _samples(made: list[dict[str, Any]], arrays: dict[str, Any], first: int) -> list[dict[str, Any]]:
    """Each sample's entry: its index, steps, outputs, targets and, for tokens, the law's most
    likely tokens and which runs of `outputs[0]` equal them."""
    steps = arrays["steps"]
    targets = _runs_of(arrays["y_values"], steps)
    best = _runs_of(arrays["y_best_values"], steps) if "y_best_values" in arrays else None
    samples = []
    for b, sample in enumerate(made):
        entry = {"index": first + b, "steps": steps[b].tolist(), **sample, "targets": targets[b]}
        if best is not None:
            mine = sample["outputs"][0]["tokens"]
            entry |= {"best": best[b], "matches_best": [a == c for a, c in zip(mine, best[b])]}
        samples.append(entry)
    return samples


def _law_greedy_rate(law: dict[str, Any], split: str | None, fraction: float) -> float | None:
    """The share of the split's runs of 2+ tokens where the law's own greedy walk finds its most
    likely sequence (`1 - greedy_miss_rate`), where the manifest has it for this split; None for
    imported data, which no law made (its "most likely" tokens are its own)."""
    if "greedy_miss_rate" not in law or split is not None and law["heldout_fraction"] != fraction:
        return None
    miss = law["greedy_miss_rate"][split or "all"]
    return None if miss is None else 1.0 - miss


OWN_CONTEXT = ("run free (--free or --predict-lengths), a carry chain's runs follow its own tokens where the law's "
               "most likely sequences follow the dataset's: they are not compared")  # fmt: skip


def summarise_tokens(samples: list[dict[str, Any]], law_rate: float | None, comparable: bool = True) -> dict[str, Any]:
    """What `chain generate` prints for a token run, from its samples (of `outputs[0]`).

    Returns:
        `samples`, `tokens` (generated), `log_prob` (their total) and `mean_log_prob` (per
        token); then `runs` (the dataset's runs of 1+ tokens), `runs_matching_best` and
        `best_match_rate` (the share of them equal to the law's most likely sequence),
        `long_runs` (of 2+ tokens) and `long_best_match_rate`, and `law_greedy_long_match_rate`
        (the law's own greedy walk's share on the whole split's runs of 2+ tokens); or, where
        the runs are not comparable (`comparable` False), `best_match_omitted` with the reason.
    """
    count = sum(len(run) for sample in samples for run in sample["outputs"][0]["tokens"])
    total = sum(sample["outputs"][0]["log_prob"] for sample in samples)
    summary = {"samples": len(samples), "tokens": count, "log_prob": total,
               "mean_log_prob": total / count if count else None}  # fmt: skip
    if not comparable:
        return {**summary, "best_match_omitted": OWN_CONTEXT}
    found = [(n, hit) for sample in samples for n, hit in zip(sample["steps"], sample["matches_best"]) if n > 0]
    hits = sum(hit for _, hit in found)
    long = [hit for n, hit in found if n >= 2]
    return {**summary, "runs": len(found), "runs_matching_best": hits, "best_match_rate": _share(hits, len(found)),
            "long_runs": len(long), "long_best_match_rate": _share(sum(long), len(long)),
            "law_greedy_long_match_rate": law_rate}  # fmt: skip


def summarise_values(samples: list[dict[str, Any]], noise_floor: float) -> dict[str, Any]:
    """What `chain generate` prints for a real-valued run: `samples`, `real_steps`, and the
    free-running `mse` against the targets with `noise_floor` and `mse_over_noise_floor` where
    the generated lengths are the dataset's (else `length_accuracy`, the share of equal ones)."""
    pairs = [(run, target) for sample in samples
             for run, target in zip(sample["outputs"][0]["values"], sample["targets"])]  # fmt: skip
    summary: dict[str, Any] = {"samples": len(samples), "real_steps": sum(len(target) for _, target in pairs)}
    if any(len(run) != len(target) for run, target in pairs):
        return {**summary, "length_accuracy": _share(sum(len(r) == len(t) for r, t in pairs), len(pairs))}
    errors = [np.square(np.subtract(run, target)).mean(axis=-1) for run, target in pairs if target]
    mse = float(np.concatenate(errors).mean()) if errors else None
    summary |= {"mse": mse, "noise_floor": noise_floor}
    if mse is not None and noise_floor > 0:
        summary["mse_over_noise_floor"] = mse / noise_floor
    return summary


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


# ----------------------------------------------------------------------------- the plot


def draw(document: dict[str, Any], path: Path) -> None:
    """Draws the first samples of a generation to a PNG (matplotlib, Agg), written atomically.

    A token run's sample is a row of grids, inner step `k` down and outer step `t` across, each
    cell coloured by its token (and labelled with it where the grid is small): the generated
    tokens (runs that differ from the law's most likely sequence framed in black), the law's most
    likely tokens and the dataset's. A real-valued run's sample is a panel of its generated
    outputs (lines) and the targets (dots), each outer step's inner steps spread across it.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    samples = document["samples"][:PLOTTED]
    tokens = document["vocab_size"] is not None
    columns = 3 if tokens else 1
    width = max(len(sample["steps"]) for sample in samples)
    runs = [run for sample in samples for run in (*sample["targets"], *_first_output(sample))]
    height = max([1, *map(len, runs)])
    scale = 0.32 if tokens else 0.5
    figure, axes = pyplot.subplots(len(samples), columns, squeeze=False, figsize=(
        max(4.0 if tokens else 7.0, columns * (1.2 + scale * width)), max(2.5, len(samples) * (1.0 + scale * height))))  # fmt: skip
    for row, sample in zip(axes, samples):
        if tokens:
            _draw_token_row(row, sample, document, height)
        else:
            _draw_values(row[0], sample)
    figure.suptitle(f"chain generate: {document['run_dir']} on {document['data_dir']} ({document['split']})",
                    fontsize=9)  # fmt: skip
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=100)
    pyplot.close(figure)
    atomic.atomic_write(path, image.getbuffer())


def _first_output(sample: dict[str, Any]) -> list[list[Any]]:
    output = sample["outputs"][0]
    return output["tokens"] if "tokens" in output else output["values"]


def _grid(runs: list[list[int]], height: int) -> np.ndarray:
    """Tokens `(height, T)`, NaN below each run's last step; `height` is at least the longest run."""
    grid = np.full((height, len(runs)), np.nan)
    for t, run in enumerate(runs):
        grid[: len(run), t] = run
    return grid


def _draw_token_row(row: Any, sample: dict[str, Any], document: dict[str, Any], height: int) -> None:
    vocab = document["vocab_size"]
    decoder = document["decoder"]["name"]
    panels = [(sample["outputs"][0]["tokens"], f"sample {sample['index']}: generated ({decoder})"),
              (sample.get("best"), "the law's most likely"), (sample["targets"], "the dataset's")]  # fmt: skip
    colours = _colours(vocab)
    for axis, (runs, title) in zip(row, panels):
        axis.set_title(title, fontsize=8)
        axis.set(xlabel="outer step t", ylabel="inner step k")
        if runs is None:
            axis.set_axis_off()
            continue
        grid = _grid(runs, height)
        axis.imshow(grid, cmap=colours, vmin=-0.5, vmax=vocab - 0.5, aspect="auto", interpolation="nearest")
        if grid.size <= 400:
            for k, t in zip(*np.nonzero(~np.isnan(grid))):
                axis.text(t, k, str(int(grid[k, t])), ha="center", va="center", fontsize=7)
    for t, hit in enumerate(sample.get("matches_best", [])):
        if not hit and sample["steps"][t]:
            row[0].add_patch(_frame(t, max(len(sample["outputs"][0]["tokens"][t]), 1)))


def _colours(vocab: int) -> Any:
    """A colour map of `vocab` distinct colours (tab20's, repeated past 20)."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    base = colormaps["tab20"].colors
    return ListedColormap([base[i % len(base)] for i in range(vocab)])


def _frame(t: int, length: int) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((t - 0.5, -0.5), 1, length, fill=False, edgecolor="black", linewidth=2.0)


def _draw_values(axis: Any, sample: dict[str, Any]) -> None:
    for t, (run, target) in enumerate(zip(sample["outputs"][0]["values"], sample["targets"])):
        for where, values, style in ((len(run), run, "-"), (len(target), target, ".")):
            if where:
                spread = t + (np.arange(where) + 0.5) / where
                for channel, series in enumerate(np.asarray(values).T):
                    axis.plot(spread, series, style, color=f"C{channel}", markersize=4, linewidth=1.2)
        axis.axvline(t, color="0.85", linewidth=0.8, zorder=0)
    axis.set_title(f"sample {sample['index']}: generated (lines), targets (dots)", fontsize=8)
    axis.set(xlabel="outer step t (its inner steps spread across it)", ylabel="y[b, t, k]")
