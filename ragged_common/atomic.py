"""Files and directories written whole or not at all, the one way every package writes them.

Readers of a path written here see either the old file (or directory) or the whole new one, never a
partial write: each write goes to a temporary name beside the target, then is renamed over it. A
failed write removes the temporary, leaves the target as it was and names the target, not the
temporary, in its `OSError`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator


def temporary_beside(path: Path, suffix: str = ".tmp") -> Path:
    """A fresh hidden name in `path`'s directory, e.g. `.model.keras.1234-ab12cd34.tmp`.

    `suffix` lets writers that choose a format by extension (Keras, matplotlib) keep it.
    """
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """Yields a temporary path to write; on success it is renamed over `path`, else removed.

    Raises:
        OSError: the write or the rename failed; it names `path`.

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
    except OSError as error:
        raise OSError(error.errno, error.strerror or str(error), str(path)) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def atomic_write(path: str | os.PathLike[str], data: bytes | memoryview | str) -> None:
    """Writes `data` (text is UTF-8 encoded) to `path` atomically, with mode 0o644.

    Raises:
        OSError: naming `path`, which is left as it was.
    """
    if isinstance(data, str):
        data = data.encode()
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.chmod(temporary, 0o644)


def write_directory(path: str | os.PathLike[str], write: Callable[[str], None]) -> None:
    """Runs `write(directory)` on a fresh directory beside `path`, then puts that one at `path`.

    A failure removes the new directory and leaves `path` as it was. A remote path
    (`scheme://...`) is written in place: renaming a directory there is not atomic.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "saved"
    >>> write_directory(target, lambda into: pathlib.Path(into, "a.txt").touch())
    >>> (target / "a.txt").exists()
    True
    """
    path = os.fspath(path)
    if "://" in path:
        write(path)
        return
    target = os.path.abspath(path)
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    fresh = tempfile.mkdtemp(prefix=f".{name}.", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(fresh, 0o777 & ~umask)  # as a plain mkdir would make it, not mkdtemp's 0o700
    try:
        write(fresh)
        if os.path.isdir(target):
            old = fresh + ".old"
            os.rename(target, old)
            os.rename(fresh, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(fresh, target)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise


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
