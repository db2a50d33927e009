"""Exclusive use of an output directory, so two runs writing it at once cannot mix their files.

A run that makes a whole dataset (or merges slices) holds ``DIR/.datagen.lock`` exclusively for
its whole length, ``resume`` included. A run that makes one slice holds that file shared, so the K
slices of one dataset may be made into one directory at once, plus its own
``DIR/.datagen.slice-i-of-K.lock`` exclusively. A second run that would clash is refused at once,
before it writes anything. The locks are ``flock`` locks: the kernel drops them when the holder
exits, however it exits, so a killed run never leaves a stale lock. The empty lock files stay in
the directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from ._errors import DatasetError
from ._params import ParameterError

LOCK = ".datagen.lock"


class BusyError(DatasetError):
    """Another run is writing the directory (``datagen make`` exits 1 with this message)."""


def _created_directories(path: Path) -> list[Path]:
    """Creates ``path`` and its missing parents; returns the ones it created, deepest first."""
    missing = []
    parent = path
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        for made in missing:
            with contextlib.suppress(OSError):
                made.rmdir()
        reason = error.strerror or error
        raise ParameterError("out", message=f"`out` cannot be created ({reason}); received {str(path)!r}") from None
    return missing


def _acquire(path: Path, shared: bool, directory: Path) -> int:
    """Opens and flocks ``path``; refuses at once, naming the directory, if another run holds it."""
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as error:
        reason = error.strerror or error
        raise ParameterError("out", message=f"`out` is not writable ({reason}); received {str(directory)!r}") from None
    try:
        fcntl.flock(descriptor, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        busy = (f"{directory}: another datagen run is writing this directory (it holds {path.name}); "
                "wait for it to finish")  # fmt: skip
        raise BusyError(f"{busy} or choose another `out`", cli_message=f"{busy} or choose another --out") from None
    except OSError as error:
        os.close(descriptor)
        reason = error.strerror or error
        raise ParameterError("out", message=f"`out` cannot be locked ({reason}); received {str(directory)!r}") from None
    return descriptor


@contextlib.contextmanager
def locked(directory: Path, slice_name: str | None = None) -> Iterator[Path]:
    """Creates ``directory`` if needed and holds it for one run; see the module docstring.

    Args:
        directory: the output directory.
        slice_name: for a slice run, its name (``slice-00001-of-00004``): the directory lock is
            then shared and this slice's own lock exclusive.

    Yields:
        ``directory``.

    Raises:
        BusyError: another run holds a lock this run needs.
        ValueError: the directory cannot be created or written (``out``).

    On failure, directories this call created are removed again if they are empty but for the
    lock files, so a failed run into a new directory leaves nothing behind. A run refused because
    another holds the lock removes nothing: both may have seen the directory missing, and it is
    the holder's.
    """
    created = _created_directories(directory)
    names = [LOCK] + ([f".datagen.{slice_name}.lock"] if slice_name else [])
    descriptors: list[int] = []
    try:
        for index, name in enumerate(names):
            descriptors.append(_acquire(directory / name, slice_name is not None and index == 0, directory))
        yield directory
    except BusyError:
        raise  # the directory is the other run's: leave it and its lock file alone
    except BaseException:
        if created:
            _remove_if_only_locks(created, names)
        raise
    finally:
        for descriptor in reversed(descriptors):
            os.close(descriptor)


def _remove_if_only_locks(created: list[Path], names: list[str]) -> None:
    """Removes the new directories of a failed run when nothing but its lock files is in them."""
    top = created[0]
    if {entry.name for entry in top.iterdir()} <= set(names):
        for name in names:
            with contextlib.suppress(OSError):
                (top / name).unlink()
    for path in created:
        with contextlib.suppress(OSError):
            path.rmdir()
