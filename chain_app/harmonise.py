"""`harmonise_run`: a run fitted on imported chorales writes a soprano over a chorale's lower voices.

The chorale's windows, consecutive samples of its dataset, are joined into one sequence of its
beats, and the chain generates over it once: in carry mode the state crosses every window edge,
as a stateful chain running the windows in order would carry it. The notes per beat are the ones
the run's lengths part predicts (Bach's where it has none), the tokens are picked by a decoder
(greedy by default, `chain.Sampler` or `chain.Beam`), and `datagen.ChoraleCodec.melody` places
the notes in their beats. `datagen.chorale_score` puts that soprano over Bach's lower voices,
rendered as MusicXML and MIDI; a piano roll draws it beside Bach's own soprano.

Four files named after the chorale go to the output folder, all of them or none:

- `ID.musicxml` and `ID.mid`: the chorale with the generated soprano;
- `ID.png`: the piano roll, the generated soprano above Bach's, each over the lower voices;
- `ID.json`: the summary `chain harmonise` prints (see `summarise`), the decoder, and both
  sopranos as notes (`offset`, `pitch`, `duration` in quarter notes; `pitch` null for a rest)
  and as tokens per beat.

TensorFlow is imported only to generate, so that `chain harmonise` checks its input without it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import datagen
from ragged_common import atomic

from . import laws, runs

if TYPE_CHECKING:
    from chain import Chain, Decoder

SUFFIXES = (".musicxml", ".mid", ".png", ".json")
"""The files `harmonise_run` writes, `ID` + each."""
IN_CHORALE = datagen.CHORALE_FEATURES.index("in_chorale")


def chorales_state(run_dir: Path) -> dict[str, Any]:
    """The state of a run fitted on imported chorales.

    Raises:
        FileNotFoundError: the run has no checkpoint.
        ValueError: its state is damaged, or it was fitted on other data.
    """
    state = runs.read_state(run_dir)
    info = state.get("train_info")
    task = info.get("task") if isinstance(info, dict) else None
    if task not in datagen.IMPORTED_TASKS:
        raise ValueError(f"{run_dir} holds a run fitted on {task or 'unknown'} data; harmonising needs a run "
                         "fitted on chorales imported by `datagen import chorales`")  # fmt: skip
    return state


def pick_chorale(manifest: dict[str, Any], chorale: str | None) -> str:
    """`chorale`, checked to be one of the dataset's; None picks its first held-out chorale.

    Raises:
        ValueError: no chorale of the dataset has that id (the message names some held-out ones).
    """
    windows = datagen.chorale_windows(manifest)
    if chorale is None:
        return next(window.chorale for window in windows if window.split == "heldout")
    if chorale not in {window.chorale for window in windows}:
        held = sorted({window.chorale for window in windows if window.split == "heldout"})
        raise ValueError(f"`chorale` must be the id of one of the dataset's chorales, e.g. a held-out one: "
                         f"{', '.join(held[:5])}{', ...' if len(held) > 5 else ''}; received {chorale!r}")  # fmt: skip
    return chorale


def harmonise_run(run_dir: str | os.PathLike[str], chorale: str | None = None,
                  out: str | os.PathLike[str] = "harmonised", *,
                  decoder: "Decoder | None" = None) -> dict[str, Any]:  # fmt: skip
    """Generates a soprano over a chorale's lower voices with a run's last checkpoint, and renders it.

    Args:
        run_dir: a run fitted on chorales imported by `datagen import chorales` (`chain fit`'s
            `--out`); its training dataset must still be there.
        chorale: the chorale's id (`datagen.chorale_windows` names them); None for the first
            held-out one.
        out: the folder the four files go to (see the module's notes), created if needed; files
            of the same names are replaced.
        decoder: a `chain.Decoder`; None for greedy. A `chain.Beam` writes its best hypothesis.

    Returns:
        The summary (see `summarise`), with `files`: the paths written.

    Raises:
        FileNotFoundError: no checkpoint in `run_dir`.
        ValueError: the run was not fitted on chorales, `chorale` is not one of its dataset's,
            the dataset was imported again otherwise (another vocabulary), or the checkpoint is
            damaged.
        datagen.DatasetError: the dataset or the chorale's file is missing or changed.
        ModuleNotFoundError: music21 is not installed (`pip install 'ragged-chain[music]'`).
        OSError: a file cannot be written.
    """
    run_dir, out = Path(os.fspath(run_dir)), Path(os.fspath(out))
    state = chorales_state(run_dir)
    data_dir = Path(state["data_dir"])
    manifest = datagen.info(data_dir)["manifest"]
    laws.check_same_law(state, data_dir, laws.law_digest(manifest))
    chorale = pick_chorale(manifest, chorale)
    voices = datagen.chorale_voices(manifest, chorale)  # before TensorFlow's work: music21 and the file
    net, _ = runs.load_run(run_dir)
    x, bach = chorale_beats(data_dir, manifest, chorale)
    steps, tokens, log_prob = generate(net, x, None if net.lengths is not None else bach[0], decoder)
    codec = datagen.ChoraleCodec.from_manifest(manifest)
    melody = codec.melody(steps, tokens)
    summary = summarise(codec, x, (steps, tokens), bach, log_prob)
    document = {**_header(run_dir, data_dir, manifest, chorale, net, decoder), "summary": summary,
                "generated": _soprano(melody, steps, tokens), "bach": _soprano(codec.melody(*bach), *bach)}  # fmt: skip
    score = datagen.chorale_score(manifest, chorale, soprano=melody)
    files = _write(out, chorale, score, document, lambda path: _roll(path, document, x, melody, voices))
    return {**summary, "chorale": chorale, "split": document["split"], "files": [str(path) for path in files]}


def _header(run_dir: Path, data_dir: Path, manifest: dict[str, Any], chorale: str, net: "Chain",
            decoder: "Decoder | None") -> dict[str, Any]:  # fmt: skip
    """What the JSON file says of the harmonisation before its figures: the run, the chorale,
    its split, the decoder and where the lengths came from."""
    import chain

    split = next(window.split for window in datagen.chorale_windows(manifest) if window.chorale == chorale)
    decoder = decoder or chain.Greedy()
    return {"run_dir": str(run_dir), "data_dir": str(data_dir), "chorale": chorale, "split": split,
            "decoder": {"name": type(decoder).__name__, **decoder.get_config()},
            "lengths": "predicted" if net.lengths is not None else "data"}  # fmt: skip


def chorale_beats(data_dir: Path, manifest: dict[str, Any],
                  chorale: str) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """A chorale's beats from its windows: `x` `(beats, features)`, and Bach's notes per beat
    `(beats,)` and tokens `(notes,)`; the padding after its last beat is left out."""
    samples = [window.sample for window in datagen.chorale_windows(manifest) if window.chorale == chorale]
    arrays = datagen.read(data_dir)
    offsets = np.concatenate([[0], np.cumsum(arrays["steps"].sum(axis=1))])
    x = arrays["x"][samples].reshape(-1, arrays["x"].shape[-1])
    beats = int(np.sum(x[:, IN_CHORALE] > 0.5))
    steps = arrays["steps"][samples].reshape(-1)[:beats]
    tokens = arrays["y_values"][offsets[samples[0]] : offsets[samples[-1] + 1]]
    return x[:beats], (steps, tokens[: int(steps.sum())])


def generate(net: "Chain", x: np.ndarray, steps: np.ndarray | None,
             decoder: "Decoder | None") -> tuple[np.ndarray, np.ndarray, float]:  # fmt: skip
    """The chain's soprano over `x` `(beats, features)`, as one sample: notes per beat `(beats,)`,
    tokens `(notes,)` and their total log probability; at `steps`, or at predicted lengths."""
    import chain

    kept, net.stateful = net.stateful, False  # one sample, from zero states
    try:
        given = None if steps is None else steps[None]
        tokens, scores = net.generate(x[None], given, decoder=decoder, return_scores=True)
    finally:
        net.stateful = kept
    if isinstance(decoder, chain.Beam):  # (1, K, T, None): the best hypothesis
        tokens, scores = tokens[:, 0], scores[:, 0]
    lengths = tokens.row_lengths(axis=2).numpy().reshape(-1)
    return lengths, tokens.flat_values.numpy(), float(np.sum(scores.flat_values.numpy()))


def summarise(codec: datagen.ChoraleCodec, x: np.ndarray, made: tuple[np.ndarray, np.ndarray],
              bach: tuple[np.ndarray, np.ndarray], log_prob: float) -> dict[str, Any]:  # fmt: skip
    """What `chain harmonise` prints.

    Returns:
        `beats`; `notes` and `bach_notes` (pitched notes of each soprano); `in_harmony` and
        `bach_in_harmony`: the share of each soprano's notes whose pitch class sounds in a lower
        voice at their beat's onset or belongs to the key (`datagen.ChoraleCodec.in_harmony`);
        `in_chord` and `bach_in_chord`: the same, of the lower voices' pitch classes alone;
        `notes_per_beat_as_bach`: the share of beats where the generated soprano begins as many
        notes as Bach's; and `log_prob`, the generated tokens' total log probability.
    """
    summary: dict[str, Any] = {"beats": len(x)}
    for prefix, (steps, tokens) in (("", made), ("bach_", bach)):
        fits = codec.in_harmony(x, steps, tokens)
        summary |= {f"{prefix}notes": int(fits.size), f"{prefix}in_harmony": _mean(fits),
                    f"{prefix}in_chord": _mean(codec.in_harmony(x, steps, tokens, key=False))}  # fmt: skip
    return {**summary, "notes_per_beat_as_bach": float(np.mean(made[0] == bach[0])), "log_prob": log_prob}


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def _soprano(melody: list[datagen.PlacedNote], steps: np.ndarray, tokens: np.ndarray) -> dict[str, Any]:
    cuts = np.cumsum(steps)[:-1]
    return {"notes": [{"offset": float(note.offset), "pitch": note.pitch, "duration": float(note.duration)}
                      for note in melody],
            "tokens": [run.tolist() for run in np.split(np.asarray(tokens), cuts)]}  # fmt: skip


def _write(out: Path, chorale: str, score: Any, document: dict[str, Any], roll: Any) -> list[Path]:
    """Renders the four files in a fresh folder beside `out`, then moves them into `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        score.write("musicxml", fp=str(fresh / f"{chorale}.musicxml"))
        score.write("midi", fp=str(fresh / f"{chorale}.mid"))
        roll(fresh / f"{chorale}.png")
        (fresh / f"{chorale}.json").write_text(json.dumps(document, indent=1))
        out.mkdir(exist_ok=True)
        for suffix in SUFFIXES:
            os.replace(fresh / f"{chorale}{suffix}", out / f"{chorale}{suffix}")
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    return [out / f"{chorale}{suffix}" for suffix in SUFFIXES]


# ----------------------------------------------------------------------------- the piano roll


def _roll(path: Path, document: dict[str, Any], x: np.ndarray, melody: list[Any], voices: dict[str, list[Any]]) -> None:
    """`draw_roll` of the generated soprano above Bach's, each titled with its share in harmony or key."""
    summary = document["summary"]
    figures = (("generated", summary["notes"], summary["in_harmony"] or 0),
               ("Bach's", summary["bach_notes"], summary["bach_in_harmony"] or 0))
    titles = [f"{name} soprano over Bach's alto, tenor and bass (grey): {count} notes, {share:.0%} in harmony or key"
              for name, count, share in figures]
    downbeats = np.flatnonzero(x[:, datagen.CHORALE_FEATURES.index("bar_position_0")] > 0.5).tolist()
    draw_roll(path, document["chorale"], list(zip((melody, voices["soprano"]), titles)), voices, downbeats)


def draw_roll(path: Path, chorale: str, sopranos: list[tuple[list[Any], str]], voices: dict[str, list[Any]],
              downbeats: list[int]) -> None:  # fmt: skip
    """A piano roll PNG, written atomically: each soprano in a panel of its own, in colour over
    the lower voices in grey, time in quarter notes across (bar lines at `downbeats`) and MIDI
    pitch up.

    Args:
        sopranos: the notes of each soprano and its panel's title, top down.
        voices: `datagen.chorale_voices` of the chorale, whose alto, tenor and bass are drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    lower = [note for voice in ("alto", "tenor", "bass") for note in voices[voice]]
    every = [note for notes in (lower, *(notes for notes, _ in sopranos)) for note in notes]
    pitches = [note.pitch for note in every if note.pitch is not None]
    end = max(float(note.offset + note.duration) for note in every)
    figure, axes = pyplot.subplots(len(sopranos), 1, sharex=True, sharey=True, squeeze=False,
                                   figsize=(min(24.0, 2.0 + end / 6), 1.0 + 2.8 * len(sopranos)))  # fmt: skip
    for axis, (notes, title), colour in zip(axes[:, 0], sopranos, ("C3", "C0", "C2", "C1")):
        for beat in downbeats:
            axis.axvline(beat, color="0.9", linewidth=0.8, zorder=0)
        _bars(axis, lower, "0.78")
        _bars(axis, notes, colour)
        axis.set_title(f"{chorale}: {title}", fontsize=9)
        axis.set(ylabel="MIDI pitch", ylim=(min(pitches) - 2, max(pitches) + 2))
    axes[-1, 0].set(xlabel="quarter notes from the chorale's start (bar lines in grey)", xlim=(0, end))
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=80)
    pyplot.close(figure)
    atomic.atomic_write(path, image.getbuffer())


def _bars(axis: Any, notes: list[Any], colour: str) -> None:
    """One bar per sounding note, at its pitch from its onset for its duration."""
    from matplotlib.patches import Rectangle

    for note in notes:
        if note.pitch is not None:
            axis.add_patch(Rectangle((float(note.offset), note.pitch - 0.4), float(note.duration), 0.8,
                                     facecolor=colour, edgecolor="black", linewidth=0.3))  # fmt: skip
