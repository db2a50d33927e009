"""The chorales' encoding: a beat's features ``x``, the soprano's tokens, and the way back.

One outer step is one quarter-note beat. Its inner steps are the soprano's notes and rests that
begin in it, each one token of a (pitch or rest, duration) pair; a note held over from an earlier
beat begins in none, so that beat has no inner step. Its features say what the lower voices sound
at the beat's onset, where the beat lies in its bar, whether a fermata holds, and the key (the
list is :data:`FEATURES`; docs/chorales.md says why).
"""

from __future__ import annotations

import bisect
import os
from fractions import Fraction
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np

from ._errors import DatasetError
from ._music import VOICES, Note, Score

LOWER = VOICES[1:]
BAR = 4
"""Places a beat can have in its bar: the metres are 2/4, 3/4 and 4/4."""

UNKNOWN, END = 0, 1
"""The two tokens that stand for no note: a (pitch, duration) pair the training chorales never
have, and the end of a beat's run (written only by ``end_token=True``)."""

SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 9, 10, 11)}
"""The pitch classes of a key above its tonic: the major scale; the minor scale with its raised
sixth and seventh (melodic and harmonic minor), as Bach's minor chorales use them."""

PITCH_CENTRE, PITCH_SCALE = 60, 12
"""A lower voice's MIDI pitch ``p`` is the feature ``(p - 60) / 12``: octaves from middle C."""


def _names() -> list[str]:
    names = ["in_chorale", *(f"bar_position_{i}" for i in range(BAR)), "fermata"]
    for voice in LOWER:
        names += [*(f"{voice}_pitch_class_{pc}" for pc in range(12)), f"{voice}_pitch", f"{voice}_attack",
                  f"{voice}_onsets"]  # fmt: skip
    return [*names, *(f"key_tonic_{pc}" for pc in range(12)), "key_minor"]


FEATURES: tuple[str, ...] = tuple(_names())
"""The features of ``x[b, t]``, in order: ``in_chorale`` (1 on a beat of the chorale, 0 on the
padding after its end); ``bar_position_0..3`` (one-hot, the beat's place in its bar);
``fermata`` (a lower voice sounds a note that bears a fermata); for each of the alto, tenor and
bass, ``*_pitch_class_0..11`` (one-hot pitch class of the note sounding at the beat's onset, all 0
for a rest), ``*_pitch`` (its MIDI pitch as ``(p - 60) / 12``, 0 for a rest), ``*_attack`` (1 if
the note begins at the onset, 0 if it is held over or a rest) and ``*_onsets`` (how many more
notes or rests the voice begins inside the beat); and the chorale's key, ``key_tonic_0..11``
(one-hot tonic pitch class) and ``key_minor``."""

_INDEX = {name: i for i, name in enumerate(FEATURES)}


class SopranoNote(NamedTuple):
    """A soprano token decoded: its MIDI ``pitch`` (None for a rest) and its ``duration`` in
    quarter notes."""

    pitch: int | None
    duration: Fraction


class PlacedNote(NamedTuple):
    """A note or rest of a melody as it sounds (``ChoraleCodec.melody``): when it begins, in
    quarter notes from the chorale's start, its MIDI ``pitch`` (None for a rest) and how long it
    sounds."""

    offset: Fraction
    pitch: int | None
    duration: Fraction


class Voice(NamedTuple):
    """A lower voice at a beat's onset: its MIDI ``pitch`` (None for a rest), whether the note
    begins there (``attack``) and how many more notes or rests it begins inside the beat."""

    pitch: int | None
    attack: bool
    onsets: int


class Beat(NamedTuple):
    """One beat's features decoded (``ChoraleCodec.beat``)."""

    alto: Voice
    tenor: Voice
    bass: Voice
    bar_position: int  # 0 for the downbeat
    fermata: bool
    key: tuple[int, str]  # the tonic's pitch class (C = 0) and "major" or "minor"


class Window(NamedTuple):
    """Where a sample comes from: its ``chorale`` (the file's name without its suffix), the split
    it is in, and its first beat, as a beat index and as an offset in quarter notes from the
    chorale's start. Beat ``t`` of the sample is beat ``first_beat + t`` of the chorale."""

    sample: int
    chorale: str
    split: str
    first_beat: int
    offset: Fraction


def beat_features(score: Score) -> np.ndarray:
    """(beats, len(FEATURES)) float32: the features of every beat of a chorale."""
    x = np.zeros((score.beats, len(FEATURES)), np.float32)
    x[:, _INDEX["in_chorale"]] = 1
    x[np.arange(score.beats), [_INDEX[f"bar_position_{p}"] for p in score.positions]] = 1
    x[:, _INDEX[f"key_tonic_{score.key[0]}"]] = 1
    x[:, _INDEX["key_minor"]] = score.key[1] == "minor"
    for voice, notes in zip(LOWER, score.voices[1:]):
        offsets = [note.offset for note in notes]
        for beat in range(score.beats):
            _voice_features(x[beat], voice, notes, offsets, beat)
    return x


def _voice_features(row: np.ndarray, voice: str, notes: list[Note], offsets: list[Fraction], beat: int) -> None:
    """One voice's features at one beat; ``offsets`` are the notes' (sorted) onsets."""
    row[_INDEX[f"{voice}_onsets"]] = bisect.bisect_left(offsets, beat + 1) - bisect.bisect_right(offsets, beat)
    index = bisect.bisect_right(offsets, beat) - 1
    if index < 0 or notes[index].offset + notes[index].duration <= beat:
        return
    note = notes[index]
    row[_INDEX["fermata"]] = max(row[_INDEX["fermata"]], note.fermata)
    if note.pitch is None:
        return
    row[_INDEX[f"{voice}_pitch_class_{note.pitch % 12}"]] = 1
    row[_INDEX[f"{voice}_pitch"]] = (note.pitch - PITCH_CENTRE) / PITCH_SCALE
    row[_INDEX[f"{voice}_attack"]] = note.offset == beat


def soprano_runs(score: Score) -> list[list[SopranoNote]]:
    """Per beat, the soprano's notes and rests that begin in it, as (pitch, duration) pairs."""
    runs: list[list[SopranoNote]] = [[] for _ in range(score.beats)]
    for note in score.voices[0]:
        runs[int(note.offset)].append(SopranoNote(note.pitch, note.duration))
    return runs


def _pair_to_json(note: SopranoNote) -> list[Any]:
    return [note.pitch, str(note.duration)]


def _pair_from_json(entry: Any) -> SopranoNote:
    if (not isinstance(entry, list) or len(entry) != 2 or not (entry[0] is None or type(entry[0]) is int)
            or not isinstance(entry[1], str)):  # fmt: skip
        raise ValueError(f"a vocabulary entry must be [MIDI pitch or null, duration as a fraction]; received {entry!r}")
    return SopranoNote(entry[0], Fraction(entry[1]))


class ChoraleCodec:
    """The soprano's tokens and the beats' features of an imported chorale dataset, and the way
    back from them to notes.

    Token 0 stands for a (pitch, duration) pair that no training chorale has, token 1 for the end
    of a beat's run; tokens ``2, 3, ...`` are the pairs of the vocabulary, in order.

    Args:
        vocabulary: the (MIDI pitch or None for a rest, duration in quarter notes) pairs.

    Examples:
        >>> from fractions import Fraction
        >>> codec = ChoraleCodec([(None, Fraction(1)), (67, Fraction(1, 2)), (67, Fraction(1))])
        >>> codec.vocab_size, codec.token(67, Fraction(1, 2)), codec.token(68, Fraction(1))
        (5, 3, 0)
        >>> codec.notes([4, 2, 0])
        [SopranoNote(pitch=67, duration=Fraction(1, 1)), SopranoNote(pitch=None, duration=Fraction(1, 1)), None]
    """

    unknown = UNKNOWN
    end = END

    def __init__(self, vocabulary: Iterable[tuple[int | None, Fraction]]) -> None:
        self.vocabulary = tuple(SopranoNote(pitch, Fraction(duration)) for pitch, duration in vocabulary)
        self._tokens = {note: token for token, note in enumerate(self.vocabulary, start=2)}

    @property
    def vocab_size(self) -> int:
        """Tokens in all: the pairs and the two special tokens."""
        return len(self.vocabulary) + 2

    @classmethod
    def from_manifest(cls, source: str | os.PathLike[str] | dict[str, Any]) -> "ChoraleCodec":
        """The codec of an imported dataset: its directory or its parsed manifest.

        Raises:
            DatasetError: the manifest is not one of imported chorales.
        """
        manifest = _manifest_of(source)
        try:
            return cls(_pair_from_json(entry) for entry in manifest["law"]["encoding"]["vocabulary"])
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as error:
            raise DatasetError(f"not a manifest of imported chorales: no valid `law.encoding.vocabulary` "
                               f"({error})") from None  # fmt: skip

    def to_json(self) -> list[list[Any]]:
        """The vocabulary as the manifest stores it: ``[pitch or null, "duration"]`` per pair."""
        return [_pair_to_json(note) for note in self.vocabulary]

    def token(self, pitch: int | None, duration: Fraction | float) -> int:
        """The token of a note (``pitch`` None: a rest) of ``duration`` quarter notes; 0 (unknown)
        for a pair outside the vocabulary."""
        return self._tokens.get(SopranoNote(pitch, Fraction(duration)), UNKNOWN)

    def note(self, token: int) -> SopranoNote | None:
        """The note a token stands for; None for the unknown and end tokens.

        Raises:
            ValueError: ``token`` is not in ``[0, vocab_size)``.
        """
        if isinstance(token, bool) or not isinstance(token, (int, np.integer)) or not 0 <= token < self.vocab_size:
            raise ValueError(f"`token` must be an integer in [0, {self.vocab_size}) (vocab_size); received {token!r}")
        return None if token < 2 else self.vocabulary[int(token) - 2]

    def notes(self, tokens: Iterable[int]) -> list[SopranoNote | None]:
        """:meth:`note` of each token, e.g. of ``y_values`` or of a generated run."""
        return [self.note(token) for token in tokens]

    def beat(self, features: Sequence[float] | np.ndarray) -> Beat | None:
        """The lower voices, bar position, fermata and key one beat's features hold; None for
        a padding beat (``in_chorale`` 0).

        Args:
            features: ``x[b, t]``, (len(FEATURES),).

        Raises:
            ValueError: ``features`` is not a vector of ``len(FEATURES)`` values.
        """
        row = np.asarray(features, np.float64)
        if row.shape != (len(FEATURES),):
            raise ValueError(f"`features` must have shape ({len(FEATURES)},) (the chorale features); "
                             f"received shape {row.shape}")  # fmt: skip
        if row[_INDEX["in_chorale"]] < 0.5:
            return None
        voices = [_decode_voice(row, voice) for voice in LOWER]
        tonic = int(np.argmax(row[_INDEX["key_tonic_0"] : _INDEX["key_tonic_0"] + 12]))
        position = int(np.argmax(row[_INDEX["bar_position_0"] : _INDEX["bar_position_0"] + BAR]))
        return Beat(*voices, position, bool(row[_INDEX["fermata"]] > 0.5),
                    (tonic, "minor" if row[_INDEX["key_minor"]] > 0.5 else "major"))  # fmt: skip

    def beats(self, x: np.ndarray) -> list[Beat | None]:
        """:meth:`beat` of each row of a sample's ``x`` (T, len(FEATURES))."""
        return [self.beat(row) for row in np.asarray(x)]

    def onsets(self, steps: Sequence[int], tokens: Sequence[int], first_beat: int = 0) -> list[Fraction]:
        """When each note of a run of beats begins, in quarter notes: at its beat's onset, or when
        the note before it ends if that is later. For Bach's own soprano this is when it begins;
        a generated one keeps its notes in the beats it put them in.

        Args:
            steps: notes per beat, (T,).
            tokens: the notes' tokens, (sum(steps),), in order; the unknown and end tokens last
                no time.
            first_beat: the first beat's index in the chorale.

        Raises:
            ValueError: ``sum(steps)`` differs from ``len(tokens)``.
        """
        starts, free = [], Fraction(first_beat)
        for beat, run in enumerate(_runs(steps, tokens), start=first_beat):
            for token in run:
                start = max(free, Fraction(beat))
                note = self.note(token)
                starts.append(start)
                free = start + (note.duration if note is not None else 0)
        return starts

    def melody(self, steps: Sequence[int], tokens: Sequence[int], first_beat: int = 0) -> list[PlacedNote]:
        """The notes of a run of beats as they sound, each kept in the beat it was put in.

        A note begins as in :meth:`onsets`, at its beat's onset or when the note before it ends,
        unless that falls after its beat: it then begins at its beat's onset if it is the beat's
        first note, else halfway from the note before it to the beat's end. Each note sounds
        until the next one begins, at most its duration. Bach's soprano is rebuilt as written; a
        generated one, whose notes may outlast the beats after them, keeps every note with the
        lower voices it was chosen over. The unknown and end tokens sound nothing and are left out.

        Args:
            steps: notes per beat, (T,).
            tokens: the notes' tokens, (sum(steps),), in order.
            first_beat: the first beat's index in the chorale.

        Raises:
            ValueError: ``sum(steps)`` differs from ``len(tokens)``, or a token is out of range.

        Examples:
            >>> from fractions import Fraction
            >>> codec = ChoraleCodec([(69, Fraction(1)), (72, Fraction(2))])
            >>> [(int(n.offset), n.pitch, int(n.duration)) for n in codec.melody([1, 1, 1], [3, 2, 2])]
            [(0, 72, 1), (1, 69, 1), (2, 69, 1)]
        """
        placed, free = [], Fraction(first_beat)
        for beat, run in enumerate(_runs(steps, tokens), start=first_beat):
            last = None  # when the beat's note before began
            for token in run:
                start = max(free, Fraction(beat))
                if start >= beat + 1:
                    start = Fraction(beat) if last is None else (last + beat + 1) / 2
                note = self.note(token)
                free, last = start + (note.duration if note is not None else 0), start
                if note is not None:
                    placed.append(PlacedNote(start, note.pitch, note.duration))
        return [note._replace(duration=min(note.duration, after.offset - note.offset))
                for note, after in zip(placed, placed[1:])] + placed[-1:]  # fmt: skip

    def in_harmony(self, x: np.ndarray, steps: Sequence[int], tokens: Sequence[int], key: bool = True) -> np.ndarray:
        """Whether each note of a soprano fits its beat: its pitch class sounds in a lower voice
        at the beat's onset, or belongs to the chorale's key (:data:`SCALES`).

        Args:
            x: the beats' features, (T, len(FEATURES)).
            steps: notes per beat, (T,).
            tokens: the notes' tokens, (sum(steps),), in order.
            key: count the key's pitch classes too; False asks for the lower voices' only.

        Returns:
            bool (notes,): one entry per token that stands for a note, in order; rests, unknown
            and end tokens are left out.

        Raises:
            ValueError: the shapes disagree, or a token is out of range.
        """
        beats = self.beats(x)
        if len(beats) != len(steps):
            raise ValueError(f"`x` must hold one row per beat of `steps`, {len(steps)}; received {len(beats)}")
        fits = []
        for beat, run in zip(beats, _runs(steps, tokens)):
            for note in self.notes(run):
                if note is None or note.pitch is None:
                    continue
                sounding = {voice.pitch % 12 for voice in beat[:3] if voice.pitch is not None} if beat else set()
                scale = {(beat.key[0] + step) % 12 for step in SCALES[beat.key[1]]} if beat and key else set()
                fits.append(note.pitch % 12 in sounding | scale)
        return np.array(fits, bool)


def _runs(steps: Sequence[int], tokens: Sequence[int]) -> list[list[int]]:
    """The tokens of each beat, ``steps`` of them per beat.

    Raises:
        ValueError: ``sum(steps)`` differs from ``len(tokens)``.
    """
    steps = [int(count) for count in steps]
    if sum(steps) != len(tokens):
        raise ValueError(f"`tokens` must hold sum(steps) = {sum(steps)} tokens; received {len(tokens)}")
    cuts = np.cumsum([0, *steps])
    return [[int(token) for token in tokens[low:high]] for low, high in zip(cuts[:-1], cuts[1:])]


def _decode_voice(row: np.ndarray, voice: str) -> Voice:
    classes = row[_INDEX[f"{voice}_pitch_class_0"] : _INDEX[f"{voice}_pitch_class_0"] + 12]
    onsets = int(round(row[_INDEX[f"{voice}_onsets"]]))
    if classes.max() < 0.5:
        return Voice(None, False, onsets)
    pitch = int(round(row[_INDEX[f"{voice}_pitch"]] * PITCH_SCALE + PITCH_CENTRE))
    return Voice(pitch, bool(row[_INDEX[f"{voice}_attack"]] > 0.5), onsets)


def _manifest_of(source: str | os.PathLike[str] | dict[str, Any]) -> dict[str, Any]:
    if isinstance(source, dict):
        return source
    from ._info import info

    return info(source)["manifest"]


def windows(source: str | os.PathLike[str] | dict[str, Any]) -> list[Window]:
    """Where each sample of an imported chorale dataset comes from, in sample order.

    Args:
        source: the dataset's directory or its parsed manifest.

    Returns:
        One :class:`Window` per sample: the samples of a chorale are consecutive, in beat order,
        so concatenating them (``first_beat`` 0, then ``T``, ``2 T``, ...) rebuilds it, up to the
        padding beats after its end (``in_chorale`` 0).

    Raises:
        DatasetError: the manifest is not one of imported chorales.
    """
    manifest = _manifest_of(source)
    try:
        timesteps = manifest["params"]["timesteps"]
        found = []
        for record in manifest["source"]["chorales"]:
            first, stop = record["samples"]
            for sample in range(first, stop):
                beat = (sample - first) * timesteps
                found.append(Window(sample, record["id"], record["split"], beat, Fraction(beat)))
    except (KeyError, TypeError, ValueError) as error:
        raise DatasetError(f"not a manifest of imported chorales: no valid `source.chorales` ({error})") from None
    return sorted(found, key=lambda window: window.sample)
