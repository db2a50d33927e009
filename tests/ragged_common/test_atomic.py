"""Files and directories written whole or not at all, and files read only when regular."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from ragged_common import atomic
from ragged_common.reading import read_regular


def test_atomic_write_replaces_the_file_whole_with_mode_644(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    atomic.atomic_write(target, "new")
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["a.json"]


def test_a_failed_write_leaves_the_old_file_and_nothing_else_and_names_the_target(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    with pytest.raises(OSError) as caught:
        with atomic.atomic_path(target) as temporary:
            temporary.write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["a.json"]


def test_a_failure_that_is_no_os_error_leaves_nothing_behind_either(tmp_path):
    target = tmp_path / "plot.png"
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_path(target, suffix=".png") as temporary:
            assert temporary.suffix == ".png" and temporary.parent == tmp_path
            temporary.write_bytes(b"half")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_a_write_into_a_missing_directory_names_the_target(tmp_path):
    target = tmp_path / "missing" / "a.txt"
    with pytest.raises(FileNotFoundError) as caught:
        atomic.atomic_write(target, b"data")
    assert caught.value.filename == str(target)


def test_write_directory_replaces_a_directory_whole(tmp_path):
    target = tmp_path / "saved"
    target.mkdir()
    (target / "old.txt").write_text("old")
    atomic.write_directory(target, lambda into: open(os.path.join(into, "new.txt"), "w").close())
    assert os.listdir(target) == ["new.txt"] and os.listdir(tmp_path) == ["saved"]


def test_a_failed_directory_write_leaves_the_old_one_and_nothing_else(tmp_path):
    target = tmp_path / "saved"
    target.mkdir()
    (target / "old.txt").write_text("old")

    def fail(into: str) -> None:
        open(os.path.join(into, "half.txt"), "w").close()
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic.write_directory(target, fail)
    assert os.listdir(target) == ["old.txt"] and os.listdir(tmp_path) == ["saved"]


def test_cannot_create_in_says_why(tmp_path):
    assert atomic.cannot_create_in(tmp_path) is None
    assert atomic.cannot_create_in(tmp_path / "missing") == "No such file or directory"


def test_read_regular_refuses_what_is_no_regular_file_before_reading(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "big").write_bytes(b"x" * 11)

    class Refused(ValueError):
        pass

    with pytest.raises(Refused, match=rf"^{fifo}: not a regular file; a run file must be one$"):
        read_regular(fifo, what="run file", error=Refused)
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'big'}: larger than 10 bytes$"):
        read_regular(tmp_path / "big", max_bytes=10)
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'none'}: cannot read \(No such file or directory\)$"):
        read_regular(tmp_path / "none")
    assert read_regular(tmp_path / "big", max_bytes=11) == b"x" * 11
