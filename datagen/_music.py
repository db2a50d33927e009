"""Reading a chorale with music21: its four voices as notes and rests in quarter notes, its bars
and its key. music21 is imported here only, and only when a chorale is read.

Each voice is the part whose name begins with the voice's name (``Soprano``, ``Alto``, ``Tenor``,
``Bass``, in any case), so instrumental parts that double the choir are left aside. Tied notes
are joined into one note, grace notes are dropped, and consecutive rests are joined into one rest.
"""

from __future__ import annotations

import hashlib
import re
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

VOICES = ("soprano", "alto", "tenor", "bass")
METRES = ("2/4", "3/4", "4/4")
"""The time signatures a chorale may have (one or several of them): bars of at most four quarter
notes, so that a beat's place in its bar is one of four."""

EXTRA = "pip install 'ragged-chain[music]'"
SUFFIXES = (".mxl", ".xml", ".musicxml")
"""The files a corpus folder is read from: MusicXML, compressed or not."""


def music21() -> ModuleType:
    """The music21 module.

    Raises:
        ModuleNotFoundError: music21 is not installed; the message names the extra that brings it.
    """
    try:
        import music21 as module
    except ImportError:
        raise ModuleNotFoundError(f"importing chorales needs music21, which is not installed: {EXTRA}",
                                  name="music21") from None  # fmt: skip
    return module


def version() -> str:
    """music21's version, e.g. ``10.5.1``."""
    return str(music21().__version__)


def corpus_files() -> list[Path]:
    """The chorales of music21's own corpus (``music21/corpus/bach``): its MusicXML files, sorted."""
    paths = music21().corpus.getComposer("bach")
    return sorted((Path(path) for path in paths if Path(path).suffix.lower() in SUFFIXES), key=lambda p: p.name)


class Note(NamedTuple):
    """A note or rest of one voice, in quarter notes from the chorale's start."""

    offset: Fraction
    duration: Fraction
    pitch: int | None  # MIDI pitch, None for a rest
    fermata: bool


class Score(NamedTuple):
    """What the encoding reads of a chorale."""

    voices: tuple[list[Note], ...]  # soprano, alto, tenor, bass: each voice's notes in order
    beats: int  # quarter-note beats from offset 0 to the end of the last note
    positions: list[int]  # each beat's place in its bar, 0 for the downbeat
    key: tuple[int, str]  # the tonic's pitch class (C = 0) and the mode, "major" or "minor"


class Unreadable(Exception):
    """A chorale that cannot be encoded; the message says why (it is recorded in the manifest)."""


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read(path: Path) -> Score:
    """Parses one chorale file and reads its voices, bars and key.

    Raises:
        Unreadable: the file does not parse, or the chorale has no four voices, no notes, another
            metre, chords in a voice, a bar off the quarter-note grid or longer than its metre, or
            beats in no bar.
    """
    module = music21()
    try:
        score = module.converter.parse(str(path), forceSource=True)
    except Exception as error:  # music21 raises many kinds, all meaning the same here
        raise Unreadable(f"does not parse ({type(error).__name__}: {_first_line(error)})") from None
    parts = [_voice_part(score, voice) for voice in VOICES]
    voices = tuple(_notes(part, voice, module.expressions.Fermata) for part, voice in zip(parts, VOICES))
    end = max((note.offset + note.duration for notes in voices for note in notes), default=Fraction(0))
    beats = int(end) if end == int(end) else int(end) + 1
    if beats == 0:
        raise Unreadable("holds no notes")
    key = score.analyze("key")
    return Score(voices, beats, _positions(parts[0], beats), (int(key.tonic.pitchClass), str(key.mode)))


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else "")[:200]


def _voice_part(score: Any, voice: str) -> Any:
    """The one part whose name's first word is ``voice`` (``Soprano 1`` counts, ``Basso`` does not)."""
    found = [part for part in score.parts if _first_word(part.partName) == voice]
    if len(found) != 1:
        names = [part.partName for part in score.parts]
        raise Unreadable(f"has {len(found)} parts named {voice.capitalize()}, not one; its parts are {names}")
    return found[0]


def _first_word(name: str | None) -> str:
    match = re.match(r"[a-z]+", (name or "").strip().lower())
    return match.group(0) if match else ""


def _notes(part: Any, voice: str, fermata_class: type) -> list[Note]:
    """A voice's notes and rests, ties joined, grace notes dropped, consecutive rests joined."""
    notes: list[Note] = []
    for element in part.stripTies().flatten().notesAndRests:
        if element.duration.isGrace:
            continue
        if element.isChord:
            raise Unreadable(f"the {voice} holds a chord at offset {float(element.offset):g}")
        offset, duration = Fraction(element.offset), Fraction(element.quarterLength)
        pitch = None if element.isRest else int(element.pitch.midi)
        fermata = any(isinstance(mark, fermata_class) for mark in element.expressions)
        if pitch is None and notes and notes[-1].pitch is None and notes[-1].offset + notes[-1].duration == offset:
            notes[-1] = notes[-1]._replace(duration=notes[-1].duration + duration, fermata=notes[-1].fermata or fermata)
            continue
        notes.append(Note(offset, duration, pitch, fermata))
    return notes


def _positions(part: Any, beats: int) -> list[int]:
    """Each beat's place in its bar, from the soprano's bars and time signatures."""
    positions = [-1] * beats
    for measure in part.getElementsByClass("Measure"):
        metre = measure.timeSignature or measure.getContextByClass("TimeSignature")
        ratio = metre.ratioString if metre is not None else "none"
        if ratio not in METRES:
            raise Unreadable(f"metre {ratio} (the encoding takes {', '.join(METRES)})")
        start = Fraction(measure.offset) - Fraction(measure.paddingLeft)
        if start != int(start):
            raise Unreadable(f"bar {measure.number} starts off the beat, at offset {float(start):g}")
        length = int(Fraction(metre.barDuration.quarterLength))
        if Fraction(measure.paddingLeft) + Fraction(measure.duration.quarterLength) > length:
            raise Unreadable(f"bar {measure.number} holds {float(measure.duration.quarterLength):g} quarter notes, more "
                             f"than its metre {ratio} has")  # fmt: skip
        for position in range(length):
            beat = int(start) + position
            if 0 <= beat < beats and Fraction(measure.offset) <= beat:
                positions[beat] = position
    if -1 in positions:
        raise Unreadable(f"beat {positions.index(-1)} lies in no bar")
    return positions
