"""`datagen import chorales`: three chorales imported once, read back by datagen's readers, checked
beat by beat against their scores, and the importer's refusals.

The expected notes and lower voices below were read by hand from the MusicXML files of music21's
corpus (bwv384.mxl and bwv281.mxl), not from the importer.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from click.testing import CliRunner

import datagen
from datagen import _baselines, _chorales, _import, _music
from datagen.cli import main

CHORALES = ("bwv165.6", "bwv281", "bwv384")
WINDOW = 10
HALF, QUARTER, EIGHTH = Fraction(2), Fraction(1), Fraction(1, 2)


def run(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def music21():
    return pytest.importorskip("music21")


@pytest.fixture(scope="module")
def imported(music21, tmp_path_factory):
    out = tmp_path_factory.mktemp("chorales") / "data"
    manifest = datagen.import_chorales(out, chorales=",".join(CHORALES), window=WINDOW, shard_size=5)
    return out, manifest


@pytest.fixture(scope="module")
def parsed(music21):
    return _import._read_all([_file(name) for name in CHORALES], 1, False)


def _file(name):
    return next(path for path in _music.corpus_files() if path.stem == name)


def _runs(out, chorale):
    """The chorale's beats as lists of tokens, from the stored samples in window order."""
    data = datagen.read(out)
    samples = [window.sample for window in datagen.chorale_windows(out) if window.chorale == chorale]
    offsets = np.concatenate([[0], np.cumsum(data["steps"].sum(axis=1))])
    runs = []
    for sample in samples:
        tokens = data["y_values"][offsets[sample] : offsets[sample + 1]].tolist()
        for count in data["steps"][sample]:
            runs.append(tokens[:count])
            tokens = tokens[count:]
    return runs, data["x"][samples].reshape(-1, data["x"].shape[-1])


def test_the_import_is_a_token_dataset_that_the_readers_read(imported):
    out, manifest = imported
    facts = datagen.info(out)
    assert facts["task"] == "chorales" and facts["input_size"] == len(datagen.CHORALE_FEATURES) == 64
    assert facts["timesteps"] == WINDOW and facts["vocab_size"] == manifest["law"]["vocab_size"]
    assert facts["splits"] == {"train": 8, "heldout": 1} and facts["counts"]["shards"] == 2
    data = datagen.read(out, verify=True)
    assert data["x"].shape == (9, WINDOW, 64) and data["steps"].shape == (9, WINDOW)
    assert data["y_values"].shape == (data["steps"].sum(),)
    np.testing.assert_array_equal(data["y_clean_values"].argmax(axis=1), data["y_values"])  # one-hot: the data
    np.testing.assert_array_equal(data["y_best_values"], data["y_values"])
    (x, steps), y = next(iter(datagen.load(out, batch_size=4, split="train")))
    assert x.shape == (4, WINDOW, 64) and steps.shape == (4, WINDOW) and y.dtype.name == "int32"
    np.testing.assert_array_equal(y.row_lengths(axis=2).numpy().reshape(4, WINDOW), steps.numpy())
    result = run("inspect", str(out), "--verify")
    assert result.exit_code == 0, result.output
    assert "task         chorales (state: carry); lengths data" in result.output
    assert "source       Bach chorales from music21 (music21 " in result.output
    assert "3 chorales (1 held out), 0 skipped" in result.output


def test_no_held_out_chorale_has_a_window_in_training(imported):
    out, manifest = imported
    records = {record["id"]: record for record in manifest["source"]["chorales"]}
    assert [(name, records[name]["split"], records[name]["samples"], records[name]["dropped_windows"])
            for name in records] == [("bwv281", "train", [0, 4], 0), ("bwv384", "train", [4, 8], 0),
                                     ("bwv165.6", "heldout", [8, 9], 3)]  # fmt: skip
    windows = datagen.chorale_windows(out)
    cut = datagen.info(out)["splits"]["train"]
    train = {window.chorale for window in windows if window.sample < cut}
    heldout = {window.chorale for window in windows if window.sample >= cut}
    assert train == {"bwv281", "bwv384"} and heldout == {"bwv165.6"}
    for name, record in records.items():
        assert record["sha256"] == _music.sha256_of(_file(name)) and record["file"] == f"{name}.mxl"


def test_the_vocabulary_is_the_training_chorales_pairs_and_the_rest_is_unknown(imported, parsed):
    out, manifest = imported
    codec = datagen.ChoraleCodec.from_manifest(out)
    scores = {entry.id: entry.score for entry in parsed}
    training = {note for name in ("bwv281", "bwv384") for run in _chorales.soprano_runs(scores[name]) for note in run}
    assert set(codec.vocabulary) == training and len(codec.vocabulary) == len(training)
    assert codec.vocab_size == manifest["params"]["vocab_size"] == len(training) + 2
    held_runs, _ = _runs(out, "bwv165.6")
    expected = [[codec.token(*note) for note in run] for run in _chorales.soprano_runs(scores["bwv165.6"])[:WINDOW]]
    assert held_runs == expected
    unknown = [note for run in _chorales.soprano_runs(scores["bwv165.6"])[:WINDOW] for note in run if note not in training]
    assert unknown and sum(token == 0 for run in held_runs for token in run) == len(unknown)


BWV384_SOPRANO = {  # beat: (MIDI pitch, quarter notes) of each note that begins in it
    0: [(75, QUARTER)], 1: [(74, EIGHTH), (72, EIGHTH)], 2: [(79, QUARTER)], 3: [(77, EIGHTH), (75, EIGHTH)],
    4: [(74, QUARTER)], 5: [(75, EIGHTH), (77, EIGHTH)], 6: [(71, HALF)], 7: [], 8: [(72, EIGHTH), (74, EIGHTH)],
    9: [(75, QUARTER)], 10: [(68, QUARTER)], 11: [(67, QUARTER)], 12: [(65, QUARTER)], 13: [(70, QUARTER)],
}  # fmt: skip
BWV281_SOPRANO = {5: [(72, HALF)], 6: [], 7: [(69, QUARTER)], 13: [(69, HALF)], 14: [], 15: [(None, QUARTER)],
                  16: [(72, QUARTER)], 29: [(65, Fraction(3))], 30: [], 31: []}  # fmt: skip


@pytest.mark.parametrize(("chorale", "expected"), [("bwv384", BWV384_SOPRANO), ("bwv281", BWV281_SOPRANO)])
def test_each_beat_holds_the_soprano_notes_that_begin_in_it(imported, chorale, expected):
    out, _ = imported
    codec = datagen.ChoraleCodec.from_manifest(out)
    runs, _ = _runs(out, chorale)
    for beat, notes in expected.items():
        assert codec.notes(runs[beat]) == [(pitch, duration) for pitch, duration in notes], beat
    assert [len(run) for run in runs[32:]] == [0] * 8  # the padding after the chorale's 32 beats


def test_beat_features_decode_to_the_lower_voices_bar_fermata_and_key(imported):
    out, _ = imported
    codec = datagen.ChoraleCodec.from_manifest(out)
    _, x = _runs(out, "bwv384")
    beats = codec.beats(x)
    voices = {beat: tuple(beats[beat][:3]) for beat in (1, 2, 6, 7, 8)}
    assert voices == {
        1: ((65, True, 0), (59, True, 0), (50, True, 0)),
        2: ((63, True, 1), (60, True, 0), (51, True, 0)),
        6: ((67, True, 0), (62, True, 0), (55, True, 0)),
        7: ((67, False, 0), (62, False, 0), (55, False, 0)),
        8: ((67, True, 0), (60, True, 0), (51, True, 1)),
    }
    assert [beats[beat].bar_position for beat in range(10)] == [2, 3, 0, 1, 2, 3, 0, 1, 2, 3]  # a pickup of two
    assert [beats[beat].fermata for beat in (5, 6, 7, 8)] == [False, True, True, False]
    assert {beat.key for beat in beats if beat is not None} == {(0, "minor")}  # C minor, three flats
    assert beats[31] is not None and beats[32:] == [None] * 8


def test_onsets_rebuild_the_soprano_from_its_windows(imported, parsed):
    out, _ = imported
    codec = datagen.ChoraleCodec.from_manifest(out)
    runs, _ = _runs(out, "bwv281")
    tokens = [token for run in runs for token in run]
    onsets = codec.onsets([len(run) for run in runs], tokens)
    score = next(entry.score for entry in parsed if entry.id == "bwv281")
    assert onsets == [note.offset for note in score.voices[0]]
    assert onsets[codec.notes(tokens).index((None, QUARTER))] == 15  # the rest, hand-checked
    generated = codec.onsets([2, 0, 1], [codec.token(72, HALF), codec.token(69, QUARTER), codec.token(72, QUARTER)])
    assert generated == [0, 2, 3]  # each note waits for the one before it, even past its own beat's onset


def test_windows_record_each_sample_s_chorale_and_first_beat(imported):
    out, manifest = imported
    windows = datagen.chorale_windows(manifest)
    assert [window.sample for window in windows] == list(range(9))
    assert windows[5] == (5, "bwv384", "train", WINDOW, Fraction(WINDOW))
    assert windows[8] == (8, "bwv165.6", "heldout", 0, Fraction(0))


def test_the_same_files_give_the_same_bytes(imported, tmp_path):
    out, _ = imported
    again = tmp_path / "again"
    datagen.import_chorales(again, chorales=list(CHORALES), window=WINDOW, shard_size=5)
    names = sorted(path.name for path in out.iterdir())
    assert names == sorted(path.name for path in again.iterdir()) == ["manifest.json", "shard-00000.npz",
                                                                      "shard-00001.npz"]  # fmt: skip
    for name in names:
        assert (out / name).read_bytes() == (again / name).read_bytes(), name


def test_tfrecord_shards_hold_the_same_samples(imported, parsed, tmp_path, monkeypatch):
    monkeypatch.setattr(_import, "_read_all", lambda files, workers, progress: parsed)  # read once, by the fixture
    datagen.import_chorales(tmp_path / "d", chorales=list(CHORALES), window=WINDOW, format="tfrecord")
    stored, again = datagen.read(imported[0]), datagen.read(tmp_path / "d", verify=True)
    for key in ("x", "steps", "y_values", "y_clean_values", "y_best_values"):
        np.testing.assert_array_equal(again[key], stored[key], err_msg=key)


def test_end_tokens_end_every_run_and_leave_the_baselines_alike(parsed):
    plain, ended = (_import.assemble(parsed, WINDOW, end) for end in (False, True))
    np.testing.assert_array_equal(ended.steps, plain.steps + 1)
    ends = np.cumsum(ended.steps.ravel()) - 1
    assert (ended.tokens[ends] == datagen.ChoraleCodec.end).all()
    assert np.array_equal(np.delete(ended.tokens, ends), plain.tokens)
    assert _import.baselines(ended, True) == _import.baselines(plain, False)


def _reference_cross_entropy(train, heldout, size, k, bigram):
    """Add-k unigram or bigram (the token before in the sample, or a start context), written out."""
    counts = {}
    for sequence in train:
        for before, token in zip([None, *sequence], sequence):
            key = (before if bigram else None, token)
            counts[key] = counts.get(key, 0) + 1
    totals = {}
    for (before, _), count in counts.items():
        totals[before] = totals.get(before, 0) + count
    losses = [-math.log((counts.get((before if bigram else None, token), 0) + k)
                        / (totals.get(before if bigram else None, 0) + k * size))
              for sequence in heldout for before, token in zip([None, *sequence], sequence)]  # fmt: skip
    return sum(losses) / len(losses)


def test_the_token_baselines_are_the_add_k_models_they_say(imported):
    out, manifest = imported

    def sequences(split):
        data = datagen.read(out, split=split)
        offsets = np.concatenate([[0], np.cumsum(data["steps"].sum(axis=1))])
        return [data["y_values"][offsets[i] : offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]

    train, heldout = sequences("train"), sequences("heldout")
    figures = manifest["baselines"]["tokens"]
    size = manifest["params"]["vocab_size"]
    for name, bigram in (("unigram", False), ("bigram", True)):
        expected = _reference_cross_entropy(train, heldout, size, figures[name]["k"], bigram)
        assert figures[name]["cross_entropy"] == pytest.approx(expected, rel=1e-12)
        assert figures[name]["k"] in _baselines.K_GRID
    assert manifest["baselines"]["heldout_notes"] == sum(map(len, heldout))


def test_the_count_baselines_read_the_held_out_beats_of_the_chorales(imported):
    out, manifest = imported
    train, heldout = datagen.read(out, split="train"), datagen.read(out, split="heldout")
    real = [data["x"][..., datagen.CHORALE_FEATURES.index("in_chorale")] == 1 for data in (train, heldout)]
    majority = int(np.argmax(np.bincount(train["steps"][real[0]])))
    counts = manifest["baselines"]["counts"]
    assert counts["majority"] == {"count": majority, "accuracy": float(np.mean(heldout["steps"][real[1]] == majority))}
    assert manifest["baselines"]["heldout_beats"] == int(real[1].sum()) == WINDOW
    assert 0.0 <= counts["logistic"]["accuracy"] <= 1.0 and counts["logistic"]["l2"] in _baselines.L2_GRID


def test_the_regression_learns_counts_that_its_features_decide():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 3))
    counts = np.digitize(x[:, 0] - x[:, 1], [-0.7, 0.7])  # three classes from a linear rule
    weights = _baselines.fit_logistic(x[:400], counts[:400], 3, 1e-4)
    logits = np.concatenate([x[400:], np.ones((200, 1))], axis=1) @ weights
    assert np.mean(logits.argmax(axis=1) == counts[400:]) > 0.95


def test_the_split_holds_out_whole_chorales_exactly(monkeypatch):
    windows = {f"c{i}": size for i, size in enumerate([3, 5, 2, 7, 4, 6, 1, 5, 3, 4, 8, 2])}
    held, dropped = _import.hold_out(windows)
    total = sum(windows.values())
    assert dropped == {} and sum(windows[name] for name in held) == math.ceil(0.1 * total)
    held, dropped = _import.hold_out({"a": 5, "b": 5})  # no whole chorale fits one window of ten
    assert len(held) == 1 and dropped == {held[0]: 4}
    monkeypatch.setattr(_import, "_heldout_count", lambda total: total + 1)  # more than there are
    with pytest.raises(datagen.DatasetError, match="cannot hold out whole chorales as the last 0.1 of 10 windows"):
        _import.hold_out({"a": 5, "b": 5})


def test_a_chorale_that_does_not_parse_is_skipped_and_recorded(music21, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("bwv281", "bwv384"):
        shutil.copy(_file(name), corpus)
    (corpus / "broken.xml").write_text("<score-partwise><part")
    shutil.copy(_file("bwv165.6"), corpus / "bwv384.xml")  # a second file of chorale bwv384
    (corpus / "notes.txt").write_text("not a score")  # not MusicXML: not read at all
    result = run("import", "chorales", "--out", str(tmp_path / "data"), "--corpus", str(corpus))
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [f"datagen import: {done}/4 chorales" for done in (1, 2, 3, 4)]
    assert "skipped broken: does not parse (ParseError: unclosed token: line 1, column 16)" in result.stdout
    assert "imported 2 chorales, 1 of them held out (2 skipped)" in result.stdout
    manifest = datagen.info(tmp_path / "data")["manifest"]
    assert manifest["source"]["skipped"] == [
        {"id": "broken", "file": "broken.xml", "sha256": _music.sha256_of(corpus / "broken.xml"),
         "reason": "does not parse (ParseError: unclosed token: line 1, column 16)"},
        {"id": "bwv384", "file": "bwv384.xml", "sha256": _music.sha256_of(_file("bwv165.6")),
         "reason": "another file of the corpus has the id 'bwv384'"},
    ]
    assert [record["file"] for record in manifest["source"]["chorales"]] == ["bwv281.mxl", "bwv384.mxl"]
    assert manifest["source"]["corpus"] == str(corpus)


def test_too_few_readable_chorales_write_nothing(music21, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(_file("bwv281"), corpus)
    (corpus / "bad.mxl").write_bytes(b"not a zip")
    result = run("import", "chorales", "--out", str(tmp_path / "data"), "--corpus", str(corpus))
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == ("Error: 1 of 2 chorales could be read; a split by chorale needs two "
                                              "or more")  # fmt: skip
    assert not (tmp_path / "data").exists()


def _part(music21, name, *measures, metre="4/4", padding=0.0):
    """A part of whole measures, each a list of (pitch name or a list of them for a chord, quarter notes)."""
    part = music21.stream.Part()
    part.partName = name
    for number, notes in enumerate(measures, start=1):
        measure = music21.stream.Measure(number=number)
        if number == 1:
            measure.timeSignature = music21.meter.TimeSignature(metre)
            measure.paddingLeft = padding
        for pitch, length in notes:
            make = music21.chord.Chord if isinstance(pitch, list) else music21.note.Note
            measure.append(make(pitch, quarterLength=length))
        part.append(measure)
    return part


def _chorale(music21, **changes):
    """Four voices of one bar of 4/4, with ``changes`` (a voice's part, or None to leave it out)."""
    voices = {"Soprano": [[("C5", 4)]], "Alto": [[("G4", 4)]], "Tenor": [[("E4", 4)]], "Bass": [[("C3", 4)]]}
    score = music21.stream.Score()
    for name, measures in voices.items():
        part = changes.get(name, _part(music21, name, *measures))
        if part is not None:
            score.insert(0, part)
    return score


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (lambda m: {"Bass": None}, "has 0 parts named Bass, not one; its parts are ['Soprano', 'Alto', 'Tenor']"),
        (lambda m: {"Alto": _part(m, "Alto", [(["G4", "B4"], 4)])}, "the alto holds a chord at offset 0"),
        (lambda m: {"Soprano": _part(m, "Soprano", [("C5", 3), ("D5", 3)], metre="6/8")},
         "metre 6/8 (the encoding takes 2/4, 3/4, 4/4)"),
        (lambda m: {"Soprano": _part(m, "Soprano", [("C5", 0.5)], [("D5", 4)], padding=3.5)},
         "bar 1 starts off the beat, at offset -3.5"),
        (lambda m: {"Soprano": _part(m, "Soprano", [("C5", 4), ("D5", 4)])},
         "bar 1 holds 8 quarter notes, more than its metre 4/4 has"),
        (lambda m: {"Bass": _part(m, "Bass", [("C3", 4)], [("G2", 4)])}, "beat 4 lies in no bar"),
        (lambda m: {name: _part(m, name) for name in ("Soprano", "Alto", "Tenor", "Bass")}, "holds no notes"),
    ],
)  # fmt: skip
def test_a_chorale_that_cannot_be_encoded_says_why(music21, monkeypatch, changes, reason):
    score = _chorale(music21, **changes(music21))
    monkeypatch.setattr(music21.converter, "parse", lambda *args, **kwargs: score)
    with pytest.raises(_music.Unreadable) as refused:
        _music.read(_file("bwv281"))
    assert str(refused.value) == reason
    monkeypatch.setattr(music21.converter, "parse", lambda *args, **kwargs: _chorale(music21))
    assert _music.read(_file("bwv281")).beats == 4  # the unchanged chorale is read


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--corpus", "{tmp}/nowhere"], "Error: Invalid value for '--corpus': Directory '{tmp}/nowhere' does not exist."),
        (["--corpus", "{tmp}/empty"], "Error: Invalid value for '--corpus': must be a folder holding .mxl, .xml, "
                                      ".musicxml files; received '{tmp}/empty', which holds none"),
        (["--chorales", "bwv281,bwv9999"], "Error: Invalid value for '--chorales': must be ids of the corpus's "
                                           "chorales (file names without their suffix); received 'bwv9999'"),
        (["--limit", "0"], "Error: Invalid value for '--limit': must be an integer >= 1; received 0"),
        (["--window", "0"], "Error: Invalid value for '--window': must be an integer >= 1; received 0"),
        (["--format", "csv"], "Error: Invalid value for '--format': must be one of npz, tfrecord; received 'csv'"),
    ],
)  # fmt: skip
def test_bad_options_exit_2_with_one_line_and_write_nothing(music21, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    result = run("import", "chorales", "--out", str(tmp_path / "data"), *args)
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == message.replace("{tmp}", str(tmp_path))
    assert not (tmp_path / "data").exists()


def test_the_library_names_the_argument_it_refuses(music21, tmp_path):
    with pytest.raises(ValueError, match="`corpus` must be an existing folder of MusicXML files; received '"):
        datagen.import_chorales(tmp_path / "data", corpus=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="`chorales` must be chorale ids, comma-separated or a list of strings; "
                                         r"received \[1, 2\]"):
        datagen.import_chorales(tmp_path / "data", chorales=[1, 2])
    with pytest.raises(ValueError, match="`window` must be an integer >= 1; received 0"):
        datagen.import_chorales(tmp_path / "data", window=0)
    assert not (tmp_path / "data").exists()


def test_an_out_that_holds_files_is_refused_and_a_dataset_replaced_only_with_overwrite(imported, tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    result = run("import", "chorales", "--out", str(tmp_path / "other"), "--overwrite")
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == (f"Error: Invalid value for '--out': `out` holds files that are not a "
                                              f"dataset; choose a new or empty directory; received "
                                              f"{str(tmp_path / 'other')!r}")  # fmt: skip
    data = tmp_path / "data"
    shutil.copytree(imported[0], data)
    result = run("import", "chorales", "--out", str(data), "--chorales", "bwv281")
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == (f"Error: Invalid value for '--out': {str(data)!r} already holds a "
                                              f"dataset ({str(data / 'manifest.json')!r}); pass --overwrite to "
                                              "replace it")  # fmt: skip


def test_a_failed_write_leaves_the_dataset_there_as_it_was(imported, parsed, tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(imported[0], data)
    before = {path.name: path.read_bytes() for path in data.iterdir()}
    monkeypatch.setattr(_import, "_read_all", lambda files, workers, progress: parsed)  # read once, by the fixture
    real = _import._storage.atomic_write

    def full_at_the_manifest(path, content):
        if path.name == "manifest.json":
            raise datagen.DatasetError(f"no space left while writing {path}")
        real(path, content)

    monkeypatch.setattr(_import._storage, "atomic_write", full_at_the_manifest)
    with pytest.raises(datagen.DatasetError, match="no space left while writing"):
        datagen.import_chorales(data, chorales="bwv281,bwv384", window=WINDOW, overwrite=True)
    assert {path.name: path.read_bytes() for path in data.iterdir()} == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data"]  # no half-written directory beside it


def test_without_music21_the_command_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "music21", None)  # `import music21` now raises ImportError
    result = run("import", "chorales", "--out", str(tmp_path / "data"), "--limit", "2")
    assert result.exit_code == 1
    assert result.output.splitlines() == ["Error: importing chorales needs music21, which is not installed: "
                                          "pip install 'ragged-chain[music]'"]  # fmt: skip
    assert not (tmp_path / "data").exists()
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'ragged-chain\[music\]'"):
        datagen.import_chorales(tmp_path / "data")


def test_datagen_and_its_command_do_not_import_music21():
    code = ("import sys, datagen, datagen.cli\n"
            "from click.testing import CliRunner\n"
            "assert CliRunner().invoke(datagen.cli.main, ['import', 'chorales', '--help']).exit_code == 0\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('music21', 'scipy')))\n")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_readers_know_the_imported_task_as_tokens_that_no_law_made():
    assert datagen.IMPORTED_TASKS == ("chorales",) and "chorales" not in datagen.TASKS
    assert datagen.TOKEN_TARGETS == (*datagen.TOKEN_TASKS, "chorales")
    for name in ("import_chorales", "ChoraleCodec", "chorale_windows", "CHORALE_FEATURES", "IMPORTED_TASKS"):
        assert name in datagen.__all__ and hasattr(datagen, name)


def test_make_and_generate_refuse_the_imported_task(tmp_path):
    with pytest.raises(ValueError, match="`task` must be one of echo, .*, tokens-reset; received 'chorales'"):
        datagen.make(tmp_path / "d", task="chorales")
    with pytest.raises(ValueError, match="`task` must be one of echo, .*, tokens-reset; received 'chorales'"):
        datagen.generate(2, task="chorales")
    assert not (tmp_path / "d").exists()


def _flip_to_heldout(source):
    source["chorales"][1]["split"] = "heldout"  # bwv384, samples [4, 8): training samples


def _leave_a_gap(source):
    source["chorales"][1]["samples"] = [5, 8]


def _drop_the_last(source):
    source["chorales"].pop()


def _unknown_split(source):
    source["chorales"][0]["split"] = "test"


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (_flip_to_heldout, r"the held-out chorales must hold exactly samples \[8, 9\), the held-out split at "
                           r"heldout_fraction 0.1; received heldout chorale 'bwv384' at samples \[4, 8\]"),
        (_leave_a_gap, r"chorale 'bwv384': samples \[5, 8\] do not follow on from sample 4"),
        (_drop_the_last, r"`source.chorales` covers 8 samples, the shards 9"),
        (_unknown_split, r"each `source.chorales` entry needs a split \(train or heldout\)"),
        (lambda source: source.clear(), r"`source.chorales` must be a non-empty list"),
    ],
)  # fmt: skip
def test_a_manifest_whose_chorales_do_not_tile_the_split_is_refused(imported, tmp_path, tamper, message):
    data = tmp_path / "data"
    shutil.copytree(imported[0], data)
    manifest = json.loads((data / "manifest.json").read_text())
    tamper(manifest["source"])
    (data / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(datagen.DatasetError, match="invalid manifest: " + message):
        datagen.read(data)


def test_the_codec_refuses_what_it_cannot_decode(imported):
    codec = datagen.ChoraleCodec.from_manifest(imported[1])
    with pytest.raises(ValueError, match=rf"`token` must be an integer in \[0, {codec.vocab_size}\) \(vocab_size\); "
                                         rf"received {codec.vocab_size}"):
        codec.note(codec.vocab_size)
    with pytest.raises(ValueError, match=r"`features` must have shape \(64,\) \(the chorale features\); received "
                                         r"shape \(3,\)"):
        codec.beat([0.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="`tokens` must hold sum\\(steps\\) = 2 tokens; received 1"):
        codec.onsets([1, 1], [2])
    assert codec.note(datagen.ChoraleCodec.unknown) is None and codec.note(datagen.ChoraleCodec.end) is None


def test_a_dataset_that_is_not_an_import_has_no_codec_or_windows(tmp_path):
    datagen.make(tmp_path / "d", task="tokens", n_samples=10, timesteps=3)
    with pytest.raises(datagen.DatasetError, match="not a manifest of imported chorales: no valid `law.encoding"):
        datagen.ChoraleCodec.from_manifest(tmp_path / "d")
    with pytest.raises(datagen.DatasetError, match="not a manifest of imported chorales: no valid `source.chorales`"):
        datagen.chorale_windows(tmp_path / "d")


def test_melody_rebuilds_bach_and_keeps_each_generated_note_in_its_beat(imported, parsed):
    out, _ = imported
    codec = datagen.ChoraleCodec.from_manifest(out)
    runs, _ = _runs(out, "bwv281")
    score = next(entry.score for entry in parsed if entry.id == "bwv281")
    melody = codec.melody([len(run) for run in runs], [token for run in runs for token in run])
    assert melody == [(note.offset, note.pitch, note.duration) for note in score.voices[0]]
    codec = datagen.ChoraleCodec([(69, QUARTER), (72, HALF), (71, EIGHTH), (70, Fraction(3, 2))])
    a, c, b, b_flat = (codec.token(*pair) for pair in ((69, QUARTER), (72, HALF), (71, EIGHTH), (70, Fraction(3, 2))))
    # a half note, then a second note in the same beat: it would begin at beat 2, so it moves halfway
    # into its own beat and cuts the half note there; the beat after that begins at its onset
    assert codec.melody([2, 0, 1], [c, a, a]) == [(0, 72, EIGHTH), (EIGHTH, 69, QUARTER), (2, 69, QUARTER)]
    # a held note cut by the next beat's first note, which begins at its beat's onset
    assert codec.melody([1, 1], [c, a]) == [(0, 72, QUARTER), (1, 69, QUARTER)]
    # a note that begins inside its beat stays where it begins; unknown and end tokens sound nothing
    assert codec.melody([1, 3], [b_flat, 0, b, 1], first_beat=4) == [(4, 70, Fraction(3, 2)), (Fraction(11, 2), 71, EIGHTH)]
    with pytest.raises(ValueError, match=r"`tokens` must hold sum\(steps\) = 2 tokens; received 1"):
        codec.melody([1, 1], [a])


def _beat(alto=None, key=(0, "major")):
    row = np.zeros(len(datagen.CHORALE_FEATURES), np.float32)
    index = {name: i for i, name in enumerate(datagen.CHORALE_FEATURES)}
    row[[index["in_chorale"], index["bar_position_0"], index[f"key_tonic_{key[0]}"]]] = 1
    row[index["key_minor"]] = key[1] == "minor"
    if alto is not None:
        row[[index[f"alto_pitch_class_{alto % 12}"], index["alto_attack"]]] = 1
        row[index["alto_pitch"]] = (alto - 60) / 12
    return row


def test_in_harmony_asks_whether_a_note_sounds_in_the_lower_voices_or_the_key():
    codec = datagen.ChoraleCodec([(None, QUARTER), *((pitch, QUARTER) for pitch in (64, 65, 66, 68, 80))])
    e, f, f_sharp, g_sharp, g_sharp_high = (codec.token(pitch, QUARTER) for pitch in (64, 65, 66, 68, 80))
    x = np.stack([_beat(alto=54), _beat(alto=54), _beat(key=(9, "minor"))])  # F#3 in C major, then A minor
    steps, tokens = [3, 1, 2], [e, f_sharp, codec.token(None, QUARTER), f, g_sharp, g_sharp_high]
    # E: in C major; F#: the alto's; the rest is left out; F: in C major; G# twice: A minor's raised seventh
    assert codec.in_harmony(x, steps, tokens).tolist() == [True, True, True, True, True]
    assert codec.in_harmony(x, steps, tokens, key=False).tolist() == [False, True, False, False, False]
    assert codec.in_harmony(x[:1], [1], [g_sharp]).tolist() == [False]  # neither C major's nor the alto's
    with pytest.raises(ValueError, match=r"`x` must hold one row per beat of `steps`, 2; received 3"):
        codec.in_harmony(x, [1, 1], [e, e])


def _voice(score, index):
    """A music21 part's notes and rests as (offset, MIDI pitch or None, duration), ties joined and
    consecutive rests merged, as datagen reads a voice."""
    found = []
    for element in score.parts[index].stripTies().flatten().notesAndRests:
        note = (Fraction(element.offset), None if element.isRest else element.pitch.midi, Fraction(element.quarterLength))
        if found and note[1] is None and found[-1][1] is None:
            found[-1] = (found[-1][0], None, found[-1][2] + note[2])
        else:
            found.append(note)
    return found


def test_a_chorale_score_puts_a_soprano_over_bachs_lower_voices(imported):
    out, manifest = imported
    voices = datagen.chorale_voices(out, "bwv384")
    bach = datagen.chorale_score(manifest, "bwv384")
    assert [_voice(bach, i) for i in range(4)] == [voices[name] for name in ("soprano", "alto", "tenor", "bass")]
    # one note over the first six beats (bar lines at 2 and 6: a pickup of two), then a rest, then
    # a note past the last bar, which is cut there
    score = datagen.chorale_score(out, "bwv384", soprano=[(0, 67, 6), (7, None, 1), (30, 70, 8)])
    notes = [element for element in score.parts[0].flatten().notesAndRests]
    assert [(float(n.offset), float(n.quarterLength), n.tie.type if n.tie else None) for n in notes[:3]] == [
        (0.0, 2.0, "start"), (2.0, 4.0, "stop"), (6.0, 1.0, None)]  # rests fill the gaps around the one given
    assert _voice(score, 0) == [(0, 67, 6), (6, None, 24), (30, 70, 2)]
    assert [_voice(score, i) for i in (1, 2, 3)] == [voices[name] for name in ("alto", "tenor", "bass")]
    assert [float(m.duration.quarterLength) for m in score.parts[0].getElementsByClass("Measure")] == [
        float(m.duration.quarterLength) for m in bach.parts[0].getElementsByClass("Measure")]


def test_a_chorale_score_refuses_an_unknown_chorale_a_changed_file_and_overlapping_notes(imported, tmp_path):
    out, manifest = imported
    with pytest.raises(ValueError, match=r"`chorale` must be the id of one of the dataset's 3 chorales \(held out: "
                                         r"bwv165.6\); received 'bwv1'"):
        datagen.chorale_score(out, "bwv1")
    changed = json.loads(json.dumps(manifest))
    changed["source"]["chorales"][0]["sha256"] = "0" * 64
    with pytest.raises(datagen.DatasetError, match=r"chorale bwv281: '.*bwv281.mxl' is no longer the file imported"):
        datagen.chorale_voices(changed, "bwv281")
    changed["source"]["corpus"] = str(tmp_path)
    with pytest.raises(datagen.DatasetError, match=r"chorale bwv281: its file '.*bwv281.mxl' is gone"):
        datagen.chorale_file(changed, "bwv281")
    with pytest.raises(ValueError, match=r"`soprano` notes must follow each other without overlapping; received a "
                                         r"note at 0 lasting 2, then one at 1"):
        datagen.chorale_score(out, "bwv281", soprano=[(0, 67, 2), (1, 69, 1)])
