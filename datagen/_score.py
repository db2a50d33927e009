"""``chorale_score``: an imported chorale as a music21 score, with Bach's soprano or another.

The chorale is read again from the file its dataset's manifest records, whose sha256 must still
be the one imported, so the lower voices are Bach's as written: every note, tie, bar and clef.
Parts other than the four voices (instruments doubling the choir) are left out. A soprano given
as placed notes (``ChoraleCodec.melody``) takes the place of the soprano part's notes bar by bar:
a note that crosses a bar line is tied across it, and rests fill the time no note sounds.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable

from . import _music
from ._chorales import PlacedNote, _manifest_of
from ._errors import DatasetError
from ._params import ParameterError


def _record(manifest: dict[str, Any], chorale: Any) -> dict[str, Any]:
    """The manifest's record of ``chorale``.

    Raises:
        DatasetError: the manifest is not one of imported chorales.
        ValueError: no chorale of the dataset has that id.
    """
    try:
        records = {record["id"]: record for record in manifest["source"]["chorales"]}
    except (KeyError, TypeError) as error:
        raise DatasetError(f"not a manifest of imported chorales: no valid `source.chorales` ({error})") from None
    if not isinstance(chorale, str) or chorale not in records:
        held = [name for name, record in records.items() if record.get("split") == "heldout"]
        raise ParameterError("chorale", message=f"`chorale` must be the id of one of the dataset's {len(records)} "
                             f"chorales (held out: {', '.join(held[:5])}{', ...' if len(held) > 5 else ''}); "
                             f"received {chorale!r}")  # fmt: skip
    return records[chorale]


def chorale_file(source: str | os.PathLike[str] | dict[str, Any], chorale: str) -> Path:
    """The file an imported chorale was read from, checked to be the one imported.

    Args:
        source: the dataset's directory or its parsed manifest.
        chorale: the chorale's id, as ``datagen.chorale_windows`` names it.

    Raises:
        DatasetError: the manifest is not one of imported chorales, or the file is missing or
            no longer the one imported (another sha256).
        ValueError: no chorale of the dataset has that id.
        ModuleNotFoundError: the corpus is music21's and music21 is not installed.
    """
    manifest = _manifest_of(source)
    record = _record(manifest, chorale)
    corpus = manifest["source"]["corpus"]
    if corpus == "music21":
        path = next((file for file in _music.corpus_files() if file.name == record["file"]), Path(record["file"]))
    else:
        path = Path(corpus) / record["file"]
    if not path.is_file():
        raise DatasetError(f"chorale {chorale}: its file {str(path)!r} is gone")
    if _music.sha256_of(path) != record["sha256"]:
        raise DatasetError(f"chorale {chorale}: {str(path)!r} is no longer the file imported (another sha256)")
    return path


def chorale_voices(source: str | os.PathLike[str] | dict[str, Any], chorale: str) -> dict[str, list[PlacedNote]]:
    """An imported chorale's four voices as the importer reads them: ties joined, rests merged.

    Args:
        source: the dataset's directory or its parsed manifest.
        chorale: the chorale's id, as ``datagen.chorale_windows`` names it.

    Returns:
        ``{"soprano": [...], "alto": [...], "tenor": [...], "bass": [...]}``, each voice's notes
        and rests in order as ``(offset, pitch or None, duration)`` in quarter notes.

    Raises:
        DatasetError: the manifest is not one of imported chorales, or the chorale's file is
            missing, changed or no longer readable.
        ValueError: no chorale of the dataset has that id.
        ModuleNotFoundError: music21 is not installed (``pip install 'ragged-chain[music]'``).
    """
    path = chorale_file(source, chorale)
    try:
        score = _music.read(path)
    except _music.Unreadable as error:
        raise DatasetError(f"chorale {chorale}: {error}") from None
    return {voice: [PlacedNote(note.offset, note.pitch, note.duration) for note in notes]
            for voice, notes in zip(_music.VOICES, score.voices)}  # fmt: skip


def chorale_score(source: str | os.PathLike[str] | dict[str, Any], chorale: str,
                  soprano: Iterable[PlacedNote | tuple[Any, int | None, Any]] | None = None) -> Any:  # fmt: skip
    """An imported chorale as a music21 score of its four voices, its soprano Bach's or ``soprano``.

    Args:
        source: the dataset's directory or its parsed manifest.
        chorale: the chorale's id, as ``datagen.chorale_windows`` names it.
        soprano: the soprano's notes as ``(offset, pitch or None for a rest, duration)`` in
            quarter notes from the chorale's start, in order and not overlapping, such as
            ``ChoraleCodec.melody`` places them; None keeps Bach's. What lies past the last bar
            is cut.

    Returns:
        A ``music21.stream.Score``: ``.write("musicxml", path)`` and ``.write("midi", path)``
        render it.

    Raises:
        DatasetError: the manifest is not one of imported chorales, or the chorale's file is
            missing or changed.
        ValueError: no chorale of the dataset has that id, or ``soprano``'s notes overlap.
        ModuleNotFoundError: music21 is not installed (``pip install 'ragged-chain[music]'``).
    """
    module = _music.music21()
    path = chorale_file(source, chorale)
    score = module.converter.parse(str(path), forceSource=True)
    try:
        parts = {voice: _music._voice_part(score, voice) for voice in _music.VOICES}
    except _music.Unreadable as error:
        raise DatasetError(f"chorale {chorale}: {error}") from None
    for part in list(score.parts):
        if all(part is not kept for kept in parts.values()):
            score.remove(part)
    if soprano is not None:
        _replace_notes(module, parts["soprano"], _checked(soprano))
    return score


def _checked(soprano: Iterable[Any]) -> list[PlacedNote]:
    notes = [PlacedNote(Fraction(offset), pitch, Fraction(duration)) for offset, pitch, duration in soprano]
    for before, after in zip(notes, notes[1:]):
        if before.offset + before.duration > after.offset:
            raise ValueError(f"`soprano` notes must follow each other without overlapping; received a note at "
                             f"{before.offset} lasting {before.duration}, then one at {after.offset}")  # fmt: skip
    return notes


def _replace_notes(module: Any, part: Any, notes: list[PlacedNote]) -> None:
    """Empties every bar of ``part`` and fills it with the pieces of ``notes`` that fall in it."""
    for measure in part.getElementsByClass("Measure"):
        start = Fraction(measure.offset)
        end = start + Fraction(measure.duration.quarterLength)  # as written, before it is emptied
        for voice in list(measure.voices):
            measure.remove(voice)
        for element in list(measure.notesAndRests):
            measure.remove(element)
        for offset, element in _pieces(module, notes, start, end):
            measure.insert(offset - start, element)


def _pieces(module: Any, notes: list[PlacedNote], start: Fraction, end: Fraction) -> list[tuple[Fraction, Any]]:
    """The notes' parts inside ``[start, end)``, tied where a note crosses the span's edges, and
    rests where none sounds."""
    pieces, free = [], start
    for note in notes:
        low, high = max(note.offset, start), min(note.offset + note.duration, end)
        if high <= low:
            continue
        if low > free:
            pieces.append((free, module.note.Rest(quarterLength=low - free)))
        element = module.note.Rest() if note.pitch is None else module.note.Note(midi=note.pitch)
        element.quarterLength = high - low
        tie = _tie(note.offset < start, note.offset + note.duration > end)
        if tie is not None and note.pitch is not None:
            element.tie = module.tie.Tie(tie)
        pieces.append((low, element))
        free = high
    if free < end:
        pieces.append((free, module.note.Rest(quarterLength=end - free)))
    return pieces


def _tie(from_before: bool, to_after: bool) -> str | None:
    return {(True, True): "continue", (True, False): "stop", (False, True): "start"}.get((from_before, to_after))
