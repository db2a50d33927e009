"""Reading a whole file only when it is a regular one, the one way every package reads untrusted paths.

A FIFO or a device named by a user or a manifest is refused before any read, instead of hanging or
reading forever, and so is a file larger than the reader expects.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def read_regular(path: str | os.PathLike[str], *, max_bytes: int | None = None, what: str = "",
                 error: type[Exception] = ValueError) -> bytes:  # fmt: skip
    """The bytes of the regular file `path`.

    The file is opened without blocking and checked to be a regular file before any read.

    Args:
        path: the file.
        max_bytes: refuse a file larger than this.
        what: the kind of file for messages, e.g. `"manifest"`.
        error: the exception type raised, with one message naming `path` and the reason.

    Raises:
        error: the file is missing, not a regular file, larger than `max_bytes` or unreadable.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> _ = target.write_text("done")
    >>> read_regular(target)
    b'done'
    >>> read_regular(target.parent, what="run file")
    Traceback (most recent call last):
    ...
    ValueError: ...: cannot read run file (Is a directory)
    """
    kind = f" {what}" if what else ""
    path = Path(path)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise error(f"{path}: cannot read{kind} ({exc.strerror or exc})") from None
    try:
        info = os.fstat(descriptor)
        if stat.S_ISDIR(info.st_mode):
            raise error(f"{path}: cannot read{kind} (Is a directory)")
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{path}: not a regular file; a{kind or ' file'} must be one")
        if max_bytes is not None and info.st_size > max_bytes:
            raise error(f"{path}:{kind} larger than {max_bytes} bytes")
        with os.fdopen(os.dup(descriptor), "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise error(f"{path}: cannot read{kind} ({exc.strerror or exc})") from None
    finally:
        os.close(descriptor)
