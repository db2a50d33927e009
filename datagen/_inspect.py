"""``inspect``: a dataset's counts, length histogram, padding ratio and noise floor; one sample's plot."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from ragged_common.checks import check_file_path, check_int

from . import _storage
from ._info import info
from ._params import IMPORTED_TASKS, TOKEN_TARGETS, TOKEN_TASKS, ParameterError
from ._read import read

_BAR = 40


def _histogram(steps: np.ndarray, longest: int) -> list[str]:
    """Text bars of the share of outer steps with each length (binned when ``L > 20``)."""
    edges = np.unique(np.linspace(0, longest + 1, min(longest + 1, 20) + 1).astype(int))
    counts = np.histogram(steps, bins=edges)[0]
    lines = []
    for low, high, count in zip(edges[:-1], edges[1:], counts):
        label = f"{low}" if high - low == 1 else f"{low}-{high - 1}"
        share = count / max(steps.size, 1)
        bar = "#" * int(round(share / max(counts.max() / steps.size, 1e-12) * _BAR))
        lines.append(f"  {label:>9} | {bar:<{_BAR}} {count:>10} ({share:6.1%})")
    return lines


def summary(directory: str | os.PathLike[str], verify: bool = False) -> str:
    """A text report of a dataset.

    Args:
        directory: the dataset directory.
        verify: also check every file's sha256.

    Returns:
        Lines with the counts, a histogram of ``steps``, the padding ratio
        ``T * longest_step / mean real steps per sample`` and the noise floor (for a token
        task, the law's cross-entropy and the greedy walk's miss rate).
    """
    data = read(directory, verify)
    manifest, steps = data["manifest"], data["steps"]
    params, law = manifest["params"], manifest["law"]
    n, timesteps = steps.shape
    per_sample = steps.sum() / n
    padding = timesteps * params["longest_step"] / per_sample if per_sample else float("inf")
    state = f" (state: {law['state']})" if "state" in law else ""
    tokens = params["task"] in TOKEN_TARGETS
    targets = f"vocab_size {params['vocab_size']}" if tokens else f"output_size {params['output_size']}"
    lines = [
        f"dataset      {directory} ({params['format']}, {manifest['counts']['shards']} shards, "
        f"generator {manifest['generator']['version']}{', verified' if verify else ''})",
        f"task         {params['task']}{state}; lengths {params['lengths']} (longest_step "
        f"{params['longest_step']}, zero_fraction {params['zero_fraction']}); seed {params['seed']}",
        f"samples      {n} x T={timesteps}; input_size {params['input_size']}, {targets}",
        f"real steps   {int(steps.sum())} ({per_sample:.2f} per sample, {per_sample / timesteps:.2f} per outer step)",
        f"padding      T * longest_step / mean real steps = {timesteps} * {params['longest_step']} / "
        f"{per_sample:.2f} = {padding:.2f}",
        *_target_lines(manifest),
        "lengths (share of outer steps):",
        *_histogram(steps.ravel(), params["longest_step"]),
    ]
    return "\n".join(lines)


def _target_lines(manifest: dict[str, Any]) -> list[str]:
    """What a fit can be judged against: the noise floor, a token law's figures, or an import's source and baselines."""
    task = manifest["params"]["task"]
    if task in TOKEN_TASKS:
        return _token_lines(manifest["law"])
    if task in IMPORTED_TASKS:
        return _source_lines(manifest)
    return [f"noise floor  {manifest['noise_floor']:.6g} (noise {manifest['params']['noise']})"]


def _source_lines(manifest: dict[str, Any]) -> list[str]:
    """An import's source, its split by chorale and its held-out baselines."""
    source, figures = manifest["source"], manifest["baselines"]
    held = sum(record["split"] == "heldout" for record in source["chorales"])
    tokens, counts = figures["tokens"], figures["counts"]
    return [
        f"source       {source['name']} from {source['corpus']} (music21 {source['music21']}): "
        f"{len(source['chorales'])} chorales ({held} held out), {len(source['skipped'])} skipped",
        f"baselines    held-out nats per note: unigram {tokens['unigram']['cross_entropy']:.4g}, bigram "
        f"{tokens['bigram']['cross_entropy']:.4g} ({figures['heldout_notes']} notes, "
        f"{figures['unknown_share']:.1%} unknown)",
        f"             notes per beat, held-out accuracy: most frequent ({counts['majority']['count']}) "
        f"{counts['majority']['accuracy']:.1%}, logistic regression on x {counts['logistic']['accuracy']:.1%} "
        f"({figures['heldout_beats']} beats)",
    ]


def _figure(value: float | None, form: str) -> str:
    return "none" if value is None else format(value, form)


def _token_lines(law: dict[str, Any]) -> list[str]:
    """A token law's floor and greedy miss rate, whole and per split."""
    floor, miss, runs = law["cross_entropy_floor"], law["greedy_miss_rate"], law["runs"]
    return [
        f"law floor    {_figure(floor['all'], '.6g')} nats per token (train {_figure(floor['train'], '.6g')}, "
        f"held-out {_figure(floor['heldout'], '.6g')}; held-out fraction {law['heldout_fraction']})",
        f"greedy miss  {_figure(miss['heldout'], '.1%')} of {runs['heldout']} held-out runs of 2+ tokens "
        f"({_figure(miss['all'], '.1%')} of all {runs['all']})",
    ]


def check_plot_path(path: str | os.PathLike[str]) -> Path:
    """``path`` must name a ``.png`` file in an existing, writable directory.

    Raises:
        ValueError (ParameterError ``plot``): another suffix, a missing or unwritable directory,
            or an existing directory as the path.
    """
    return check_file_path("plot", path, ".png")


def check_sample(directory: str | os.PathLike[str], sample: int) -> int:
    """``sample`` must index a sample of the dataset; its size comes from the manifest alone.

    Raises:
        ValueError (ParameterError ``sample``): not an integer in ``[0, n - 1]``.
        DatasetError: the manifest cannot be read.
    """
    return check_int("sample", sample, 0, info(directory)["counts"]["samples"] - 1)


def plot(directory: str | os.PathLike[str], path: str | os.PathLike[str], sample: int = 0) -> Path:
    """Draws one sample's input and its ragged outputs to a PNG (matplotlib, Agg backend).

    The PNG is written atomically: a failed plot leaves no file.

    Args:
        directory: the dataset directory.
        path: the PNG to write, in an existing directory.
        sample: the sample's index.

    Returns:
        The PNG's path.

    Raises:
        ValueError: ``sample`` is outside the dataset, or ``path`` fails :func:`check_plot_path`.
        DatasetError: the dataset cannot be read, or the PNG cannot be written (a full disk
            gives ``no space left while writing PATH``).
    """
    target = check_plot_path(path)
    data = read(directory)
    check_int("sample", sample, 0, len(data["x"]) - 1)
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (top, bottom) = pyplot.subplots(2, 1, figsize=(11, 6.5), sharex=True, height_ratios=[1, 1.6])
    _draw_input(top, data["x"][sample], data["steps"][sample])
    if data["manifest"]["params"]["task"] in TOKEN_TARGETS:
        _draw_tokens(bottom, data, sample)
    else:
        _draw_outputs(bottom, data, sample)
    figure.suptitle(f"{directory}: sample {sample}, task {data['manifest']['params']['task']}")
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=110)
    pyplot.close(figure)
    _storage.atomic_write(target, image.getbuffer())
    return target


_MAX_LINES = 12
"""Inputs of more features than this are drawn as an image, one row per feature, not as lines."""


def _draw_input(axes: Any, x: np.ndarray, steps: np.ndarray) -> None:
    """x[b] (T, input_size), one line per feature (an image of them when they are many), with
    each outer step's length on top."""
    outer = np.arange(len(x)) + 0.5
    if x.shape[1] > _MAX_LINES:
        shown = axes.imshow(x.T, aspect="auto", origin="lower", extent=(0, len(x), -0.5, x.shape[1] - 0.5),
                            cmap="viridis", interpolation="nearest")  # fmt: skip
        axes.figure.colorbar(shown, ax=axes, pad=0.01)
        axes.set_ylabel("feature of x[b, t]")
    else:
        for feature in range(x.shape[1]):
            axes.plot(outer, x[:, feature], marker="o", markersize=3, label=f"x[..., {feature}]")
        axes.set_ylabel("input x[b, t]")
        axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.005, 0.5))
    for t, count in enumerate(steps):
        axes.annotate(str(count), (t + 0.5, 1.01), xycoords=("data", "axes fraction"), ha="center", va="bottom",
                      fontsize=8, fontweight="bold")
    axes.set_title("steps[b, t] written above each outer step", fontsize=9, pad=16)


def _draw_outputs(axes: Any, data: dict[str, Any], sample: int) -> None:
    """Each outer step's inner outputs, spread across its unit of the time axis."""
    steps = data["steps"]
    offsets = np.concatenate([[0], np.cumsum(steps.reshape(-1))])
    first = sample * steps.shape[1]
    colours = [f"C{channel}" for channel in range(data["y_values"].shape[1])]
    labelled = False
    for t, count in enumerate(steps[sample]):
        rows = slice(offsets[first + t], offsets[first + t + 1])
        where = t + (np.arange(count) + 0.5) / max(count, 1)
        for channel, colour in enumerate(colours):
            label = None if labelled else f"y[..., {channel}]"
            axes.plot(where, data["y_clean_values"][rows, channel], color=colour, linewidth=1.2, label=label)
            axes.plot(where, data["y_values"][rows, channel], ".", color=colour, markersize=4)
        labelled = labelled or count > 0
        axes.axvline(t, color="0.85", linewidth=0.8, zorder=0)
    axes.set_xlim(0, steps.shape[1])
    axes.set_xlabel("outer step t (inner steps k spread across each unit)")
    axes.set_ylabel("targets y[b, t, k]: line clean, dots noisy")
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.005, 0.5))


def _draw_tokens(axes: Any, data: dict[str, Any], sample: int) -> None:
    """Each outer step's sampled tokens (dots) and its run's most likely tokens (line)."""
    steps = data["steps"]
    offsets = np.concatenate([[0], np.cumsum(steps.reshape(-1))])
    first = sample * steps.shape[1]
    for t, count in enumerate(steps[sample]):
        rows = slice(offsets[first + t], offsets[first + t + 1])
        where = t + (np.arange(count) + 0.5) / max(count, 1)
        labels = ("sampled", "most likely") if t == 0 else (None, None)
        axes.plot(where, data["y_best_values"][rows], color="C1", linewidth=1.2, label=labels[1])
        axes.plot(where, data["y_values"][rows], "o", color="C0", markersize=4, label=labels[0])
        axes.axvline(t, color="0.85", linewidth=0.8, zorder=0)
    axes.set_xlim(0, steps.shape[1])
    axes.set_xlabel("outer step t (inner steps k spread across each unit)")
    axes.set_ylabel("tokens y[b, t, k]")
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.005, 0.5))
