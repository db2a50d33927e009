"""`chain fit`, `evaluate`, `generate` and `harmonise` on imported chorales: four chorales imported
once, a one-epoch fit, its scores beside the manifest's baselines, and a soprano written over the
held-out chorale's lower voices."""

from __future__ import annotations

import importlib.util
import json
from fractions import Fraction

import keras
import numpy as np
import pytest
import tensorflow as tf

import chain
import datagen
from chain_app import data, harmonise
from chain_app.runs import load_run

from .conftest import run

CHORALES = "bwv286,bwv165.6,bwv281,bwv384"
WINDOW = 14  # bwv286, held out whole, is 24 beats: its second window ends with 4 beats of padding
HELD_OUT = "bwv286"
FIT = ["--feedback", "--predict-lengths", "--bidirectional", "--epochs", "1", "--hidden", "8", "--batch-size", "4"]


@pytest.fixture(scope="module")
def chorales(tmp_path_factory):
    pytest.importorskip("music21")
    out = tmp_path_factory.mktemp("chorales") / "data"
    datagen.import_chorales(out, chorales=CHORALES, window=WINDOW)
    return out


@pytest.fixture(scope="module")
def fitted(chorales, tmp_path_factory):
    """`chain fit` of the chorales for one epoch: the run directory and the command's output."""
    out = tmp_path_factory.mktemp("chorale-run") / "run"
    result = run("fit", chorales, "--out", out, *FIT)
    assert result.exit_code == 0, result.output
    return out, result.output


def _held_out(directory):
    held = datagen.read(directory, split="heldout")
    cells = tf.RaggedTensor.from_row_lengths(held["y_values"], held["row_lengths"])
    return held, tf.RaggedTensor.from_uniform_row_length(cells, held["steps"].shape[1])


def _cross_entropy(net, directory):
    """Mean cross-entropy over the held-out notes of the teacher-forced logits, by hand."""
    held, y = _held_out(directory)
    logits = net(held["x"], held["steps"], targets=y).flat_values.numpy().astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(logits)), held["y_values"]].mean())


def test_fit_reports_the_cross_entropy_per_note_beside_the_baselines(chorales, fitted):
    out, output = fitted
    report = json.loads((out / "report.json").read_text())
    figures = datagen.info(chorales)["manifest"]["baselines"]
    net, _ = load_run(out)
    assert report["heldout_cross_entropy"] == pytest.approx(_cross_entropy(net, chorales), rel=1e-5)
    bigram, unigram = figures["tokens"]["bigram"]["cross_entropy"], figures["tokens"]["unigram"]["cross_entropy"]
    assert report["bigram_cross_entropy"] == bigram and report["unigram_cross_entropy"] == unigram
    assert report["heldout_cross_entropy_over_bigram"] == pytest.approx(report["heldout_cross_entropy"] / bigram)
    assert report["cross_entropy_floor"] is None and report["perplexity_floor"] is None
    assert "no law made the data (it was imported)" in report["heldout_cross_entropy_over_floor_omitted"]
    assert report["majority_length_accuracy"] == figures["counts"]["majority"]["accuracy"]
    assert report["logistic_length_accuracy"] == figures["counts"]["logistic"]["accuracy"]
    summary = json.loads(output[output.index("{"):])
    assert summary["heldout_cross_entropy_over_bigram"] == report["heldout_cross_entropy_over_bigram"]
    assert summary["logistic_length_accuracy"] == report["logistic_length_accuracy"]


def test_the_length_accuracy_counts_the_chorales_beats_and_not_the_padding(chorales, fitted):
    report = json.loads((fitted[0] / "report.json").read_text())
    net, _ = load_run(fitted[0])
    held, _ = _held_out(chorales)
    real = held["x"][..., datagen.CHORALE_FEATURES.index("in_chorale")] > 0.5
    guess = net.generate(held["x"]).row_lengths(axis=2).numpy().reshape(real.shape)
    hits = guess == held["steps"]
    assert (~real).sum() == 4 and held["steps"][~real].sum() == 0  # bwv286's padding, no notes in it
    assert report["length_accuracy"] == pytest.approx(hits[real].mean())
    assert report["length_accuracy"] != pytest.approx(hits.mean())  # what counting the padding gives


@pytest.mark.slow  # the held-out split scored whole; the fit's report above has the baselines too
def test_evaluate_puts_the_held_out_split_beside_the_baselines(chorales, fitted):
    report = json.loads((fitted[0] / "report.json").read_text())
    result = run("evaluate", fitted[0], chorales, "--split", "heldout")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert scores["split"] == "heldout" and scores["samples"] == 2
    assert scores["cross_entropy"] == pytest.approx(report["heldout_cross_entropy"], rel=1e-6)
    assert scores["cross_entropy_over_bigram"] == pytest.approx(report["heldout_cross_entropy_over_bigram"], rel=1e-6)
    assert scores["length_accuracy"] == pytest.approx(report["length_accuracy"])
    result = run("evaluate", fitted[0], chorales)  # every sample: not the baselines' split
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert scores["split"] == "all" and scores["samples"] == 11 and "cross_entropy_over_bigram" not in scores


def test_only_the_split_the_baselines_were_scored_on_has_them(chorales):
    manifest = datagen.info(chorales)["manifest"]
    assert data.baselines(manifest, "heldout", 0.1)["bigram_cross_entropy"] == (
        manifest["baselines"]["tokens"]["bigram"]["cross_entropy"])
    assert data.baselines(manifest, "train", 0.1) is None and data.baselines(manifest, "heldout", 0.2) is None
    described = data.describe(chorales, "heldout", 0.2)
    assert described["cross_entropy_floor"] is None and described["baselines"] is None
    assert described["real_feature"] == 0
    ended = json.loads(json.dumps(manifest))
    ended["law"]["encoding"]["runs_end_with_end_token"] = True  # the baselines leave end tokens out
    figures = data.baselines(ended, "heldout", 0.1)
    assert figures["bigram_cross_entropy"] is None and figures["logistic_length_accuracy"] is not None


def test_generate_writes_the_runs_of_a_chorale_run(fitted, tmp_path):
    result = run("generate", fitted[0], "--out", tmp_path / "g.json", "--predict-lengths")
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "g.json").read_text())
    assert [sample["index"] for sample in document["samples"]] == [9, 10]
    result = run("generate", fitted[0], "--out", tmp_path / "g.json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["law_greedy_long_match_rate"] is None  # no law: the data's own runs stand for its best


def test_bidirectional_reads_each_sample_both_ways(fitted):
    net, state = load_run(fitted[0])
    assert isinstance(net.model_a, keras.layers.Bidirectional) and state["options"]["bidirectional"]
    x = np.random.default_rng(0).normal(size=(1, 6, 64)).astype("float32")
    later = x.copy()
    later[0, 5] += 1.0  # the last beat changes: with a model A both ways, the first beat's length logits do too
    heads = [net.length_head(net.model_a(sample))[0, 0].numpy() for sample in (x, later)]
    assert not np.allclose(*heads)


def test_bidirectional_and_windows_do_not_mix(chorales, tmp_path):
    result = run("fit", chorales, "--out", tmp_path / "run", "--bidirectional", "--window", "7")
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "Error: use one of --bidirectional and --window, not both: windows run in order, model A's state "
        "carried forward only")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match=r"`bidirectional` reads each sample whole, which `window` cuts in pieces "
                                         r"run in order; received bidirectional=True and window=7"):
        chain.FitOptions(bidirectional=True, window=7)


@pytest.fixture(scope="module")
def harmonised(fitted, tmp_path_factory):
    """`chain harmonise` of the held-out chorale: the output folder and the summary printed."""
    out = tmp_path_factory.mktemp("harmonised") / "out"
    result = run("harmonise", fitted[0], "--out", out)
    assert result.exit_code == 0, result.output
    return out, json.loads(result.output[result.output.index("{"):])


def _sounding(notes):
    return [(Fraction(note["offset"]), note["pitch"], Fraction(note["duration"])) for note in notes
            if note["pitch"] is not None]


def test_harmonise_writes_a_generated_soprano_over_the_held_out_chorales_lower_voices(chorales, fitted, harmonised):
    out, summary = harmonised
    files = [out / f"{HELD_OUT}{suffix}" for suffix in (".musicxml", ".mid", ".png", ".json")]
    assert summary["chorale"] == HELD_OUT and summary["split"] == "heldout"
    assert summary["files"] == list(map(str, files))
    assert sorted(out.iterdir()) == sorted(files)
    assert files[1].read_bytes()[:4] == b"MThd" and files[2].read_bytes()[:4] == b"\x89PNG"
    document = json.loads(files[3].read_text())
    assert document["decoder"] == {"name": "Greedy"} and document["lengths"] == "predicted"
    music21 = pytest.importorskip("music21")
    score = music21.converter.parse(str(files[0]))
    written = [(Fraction(n.offset), n.pitch.midi, Fraction(n.quarterLength))
               for n in score.parts[0].stripTies().flatten().notes]  # fmt: skip
    assert written == _sounding(document["generated"]["notes"]) and written
    voices = datagen.chorale_voices(chorales, HELD_OUT)
    for part, name in zip(score.parts[1:], ("alto", "tenor", "bass")):
        notes = [(Fraction(n.offset), n.pitch.midi, Fraction(n.quarterLength))
                 for n in part.stripTies().flatten().notes]  # fmt: skip
        assert notes == [note for note in voices[name] if note.pitch is not None]


def test_harmonise_generates_greedily_over_the_chorale_at_the_predicted_lengths(chorales, fitted, harmonised):
    out, summary = harmonised
    document = json.loads((out / f"{HELD_OUT}.json").read_text())
    net, _ = load_run(fitted[0])
    held = datagen.read(chorales, split="heldout")
    x = held["x"].reshape(1, -1, 64)[:, :24]  # bwv286's two windows joined, the padding left out
    tokens = net.generate(x).to_list()[0]
    assert document["generated"]["tokens"] == tokens and summary["beats"] == 24
    codec = datagen.ChoraleCodec.from_manifest(chorales)
    steps = [len(run) for run in tokens]
    flat = [token for run in tokens for token in run]
    bach_steps = held["steps"].reshape(-1)[:24]
    assert summary["in_harmony"] == pytest.approx(codec.in_harmony(x[0], steps, flat).mean())
    assert summary["in_chord"] == pytest.approx(codec.in_harmony(x[0], steps, flat, key=False).mean())
    assert summary["bach_in_harmony"] == pytest.approx(codec.in_harmony(x[0], bach_steps, held["y_values"]).mean())
    assert summary["notes_per_beat_as_bach"] == pytest.approx(np.mean(np.array(steps) == bach_steps))
    bach = _sounding(document["bach"]["notes"])
    assert bach == [note for note in datagen.chorale_voices(chorales, HELD_OUT)["soprano"] if note.pitch is not None
                    and codec.token(note.pitch, note.duration) != codec.unknown]  # fmt: skip


def test_harmonise_takes_the_decoders_of_generate(fitted, tmp_path):
    result = run("harmonise", fitted[0], "--out", tmp_path / "beam", "--beam", "2", "--chorale", "bwv281")
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "beam" / "bwv281.json").read_text())
    assert document["decoder"] == {"name": "Beam", "width": 2, "length_penalty": 0.0}
    assert document["split"] == "train"


@pytest.mark.parametrize(("args", "line"), [
    (["--chorale", "bwv1"], "Invalid value for '--chorale': must be the id of one of the dataset's chorales, e.g. a "
                            "held-out one: bwv286; received 'bwv1'"),
    (["--beam", "2", "--seed", "1"], "--beam 2 searches the most likely outputs and draws nothing; received --seed 1 "
                                     "too"),
    (["--top-k", "1000"], "Invalid value for '--top-k': must be an integer in [1, {vocab}] (the run's vocabulary "
                          "size); received 1000"),
])  # fmt: skip
def test_bad_harmonise_options_exit_2_and_write_nothing(fitted, chorales, tmp_path, args, line):
    result = run("harmonise", fitted[0], "--out", tmp_path / "out", *args)
    assert result.exit_code == 2, result.output
    vocab = datagen.info(chorales)["vocab_size"]
    assert result.output.strip().splitlines()[-1] == f"Error: {line.format(vocab=vocab)}"
    assert list(tmp_path.iterdir()) == []


def test_a_run_not_fitted_on_chorales_or_without_music21_is_refused(token_fitted, fitted, tmp_path, monkeypatch):
    result = run("harmonise", token_fitted[0], "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        f"Error: Invalid value for 'RUN_DIR': {token_fitted[0]} holds a run fitted on tokens data; harmonising needs "
        "a run fitted on chorales imported by `datagen import chorales`")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "music21" else find_spec(
        name, *args))  # fmt: skip
    result = run("harmonise", fitted[0], "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: chain harmonise needs music21, which is not installed: pip install 'ragged-chain[music]'")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_harmonisation_leaves_nothing(fitted, tmp_path, monkeypatch):
    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(harmonise, "draw_roll", fail)
    with pytest.raises(OSError, match="No space left on device"):
        harmonise.harmonise_run(fitted[0], out=tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match=r"`chorale` must be the id of one of the dataset's chorales, e\.g\. a "
                                         r"held-out one: bwv286; received 'bwv1'"):
        harmonise.harmonise_run(fitted[0], "bwv1", out=tmp_path / "out")


@pytest.mark.usefixtures("stand_in_training")
def test_a_run_without_a_lengths_part_harmonises_at_bachs_notes_per_beat(chorales, tmp_path):
    result = run("fit", chorales, "--out", tmp_path / "run", "--feedback", "--epochs", "1", "--hidden", "8")
    assert result.exit_code == 0, result.output
    result = run("harmonise", tmp_path / "run", "--out", tmp_path / "out", "--chorale", "bwv281")
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "out" / "bwv281.json").read_text())
    assert document["lengths"] == "data"
    assert [len(run) for run in document["generated"]["tokens"]] == [len(run) for run in document["bach"]["tokens"]]
    assert json.loads(result.output[result.output.index("{"):])["notes_per_beat_as_bach"] == 1.0


HARMONY_GAP = 0.10
"""The goal: the generated sopranos' share of notes in harmony or key is within 10 points of Bach's."""


@pytest.mark.slow
def test_the_full_corpus_beats_the_baselines_and_harmonises_like_bach(tmp_path):
    """The fit docs/chorales.md reports, on every chorale of music21's corpus: its held-out
    cross-entropy per note well under the bigram's, its notes per beat better than both count
    baselines, and sopranos over the held-out chorales' lower voices in harmony or key about as
    often as Bach's (about 2.5 minutes to import, 1 to fit and 1 to generate on 2 CPU cores)."""
    pytest.importorskip("music21")
    datagen.import_chorales(tmp_path / "data", workers=2)
    options = chain.FitOptions(feedback=True, predict_lengths=True, bidirectional=True, hidden=128, epochs=10)
    report = chain.fit_run(tmp_path / "data", tmp_path / "run", options, verbose=0)
    assert report["heldout_cross_entropy_over_bigram"] <= 0.5
    assert report["length_accuracy"] > report["logistic_length_accuracy"] > report["majority_length_accuracy"]
    assert report["train_seconds"] < 600
    summary = harmonise.harmonise_run(tmp_path / "run", out=tmp_path / "harmonised")
    assert abs(summary["in_harmony"] - summary["bach_in_harmony"]) <= HARMONY_GAP
    manifest = datagen.info(tmp_path / "data")["manifest"]
    codec, net = datagen.ChoraleCodec.from_manifest(manifest), load_run(tmp_path / "run")[0]
    fits = {"generated": [], "bach": []}
    held = sorted({window.chorale for window in datagen.chorale_windows(manifest) if window.split == "heldout"})
    for chorale in held:
        x, bach = harmonise.chorale_beats(tmp_path / "data", manifest, chorale)
        steps, tokens, _ = harmonise.generate(net, x, None, None)
        fits["generated"].append(codec.in_harmony(x, steps, tokens))
        fits["bach"].append(codec.in_harmony(x, *bach))
    shares = {name: np.concatenate(found).mean() for name, found in fits.items()}
    assert abs(shares["generated"] - shares["bach"]) <= HARMONY_GAP
