"""The file operations every output goes through: atomic writes, links never followed, FIFOs never opened."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: errors of the disk rather than of the path: reported as one clear error, never a traceback
DISK_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EROFS, errno.EIO,
                                    errno.EFBIG) if e is not None)


def _write_file(fh: Any, data: bytes, target: Path) -> None:
    """The one low-level write of every file visctl makes, to ``target`` through ``fh`` (tests replace it to
    simulate a full disk)."""
    fh.write(data)


def _umask() -> int:
    """The process umask, read without changing it where /proc tells it (os.umask can only set it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same directory and a rename.

    On any failure (a full disk included) the temp file is removed and ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes 0600; a written file gets the mode open() would give it
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            _write_file(fh, data, path)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _path_hint(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return "the disk (or your quota) is full: free some space, or choose another folder with -o/--out-dir"
    if exc.errno == errno.EROFS:
        return "that file system is read-only: choose a folder you can write in with -o/--out-dir"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "you may not write there: choose a folder you own with -o/--out-dir, e.g. -o ./visctl-out"
    return "choose a folder you can write in with -o/--out-dir"


def remove_empty(folders: Iterable[Path]) -> None:
    """Remove the folders a run created and left empty, deepest first."""
    for d in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        try:
            d.rmdir()
        except OSError:
            pass


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a device"),
          (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"))


def _kind(st: os.stat_result) -> str:
    """What a non-regular file is, in words."""
    return next((what for test, what in _KINDS if test(st.st_mode)), "not a regular file")


def _lstat(path: Path | str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (OSError, ValueError):
        return None


def _real(path: Path | str) -> str:
    """``path`` absolute with its folders resolved and its own name kept: a link there is named, not followed."""
    p = Path(os.path.abspath(path))
    return str(p.parent.resolve() / p.name)


def read_regular(path: Path | str, limit: int | None = None) -> bytes | None:
    """The bytes of ``path`` when it is a regular file (at most ``limit``), else None: a link is never
    followed, a FIFO or device never opened for long (O_NONBLOCK: a FIFO with no writer cannot hang the run)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    st = _lstat(path)
    if st is None or not stat.S_ISREG(st.st_mode):
        return None
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped for something else since the lstat
            return None
        chunks, left = [], limit if limit is not None else -1
        while left:
            chunk = os.read(fd, 1 << 20 if left < 0 else min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left = left - len(chunk) if left > 0 else left
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def file_id(path: Path | str) -> tuple[int, int] | None:
    """The (device, inode) of an existing file, following links; None when there is none."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino)
