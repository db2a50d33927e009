"""Atomic file writes, shared by datagen, chain's run directories and bench.

Readers of a path written here see either the old file or the whole new one, never a partial write:
each write goes to a temporary file beside the target, then is renamed over it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path
from typing import Iterator


def temporary_beside(path: Path, suffix: str = ".tmp") -> Path:
    """A fresh hidden name in `path`'s directory, e.g. `.model.keras.1234-ab12cd34.tmp`.

    `suffix` lets writers that choose a format by extension (Keras, matplotlib) keep it.
    """
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """Yields a temporary path to write; on success it is renamed over `path`, else removed.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    temporary = temporary_beside(path, suffix)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def atomic_write(path: str | os.PathLike[str], data: bytes | memoryview | str) -> None:
    """Writes `data` (text is UTF-8 encoded) to `path` atomically, with mode 0o644."""
    if isinstance(data, str):
        data = data.encode()
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.chmod(temporary, 0o644)


def cannot_create_in(directory: str | os.PathLike[str]) -> str | None:
    """Why this process cannot create entries in `directory`, or None when it can.

    Tried with a temporary directory, removed at once, so that read-only and virtual file systems
    (such as /proc) are caught where permission bits alone would pass, as for root.

    >>> import tempfile
    >>> cannot_create_in(tempfile.mkdtemp()) is None
    True
    """
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".probe-", dir=directory))
    except OSError as error:
        return error.strerror or str(error)
    return None
