"""Progress of long work on stderr: a bar on a terminal, a line per tenth done anywhere else."""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterator


class _Lines:
    """Progress where stderr is not a terminal (a log, a pipe): a line per tenth of the work done,
    as ``datagen make: 12/120 shards``, where a bar would leave only its label."""

    def __init__(self, length: int, label: str, unit: str) -> None:
        self.length, self.label, self.unit, self.done, self.tenths = length, label, unit, 0, 0

    def update(self, count: int) -> None:
        self.done += count
        if self.done * 10 // self.length > self.tenths:
            self.tenths = self.done * 10 // self.length
            print(f"{self.label}: {self.done}/{self.length} {self.unit}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def progress(enabled: bool, length: int, label: str, unit: str) -> Iterator[Any]:
    """A bar on a terminal's stderr, lines on any other (see :class:`_Lines`), or None.

    Args:
        enabled: False yields None: no progress is shown.
        length: the units of work in all.
        label: what is shown first, e.g. ``datagen make``.
        unit: what is counted, e.g. ``shards``.
    """
    if not enabled:
        yield None
    elif not sys.stderr.isatty():
        yield _Lines(length, label, unit)
    else:
        import click

        with click.progressbar(length=length, label=label, file=sys.stderr, show_pos=True) as bar:
            yield bar
