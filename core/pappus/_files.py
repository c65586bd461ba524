"""Files named by callers or shared between processes: safe reads, and one lock primitive.

Reading a caller-named file safely: regular files only, never more than a limit.

``Path.read_bytes`` after ``stat`` is not enough: a character device (``/dev/zero``, or a
symlink to it) reports size 0 and never ends, a FIFO blocks the reader forever, and a file can
grow between the ``stat`` and the read.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path


class NotARegularFile(OSError):
    """The path names a directory, device, FIFO or socket, not a regular file."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def read_regular_file(path: str | Path, limit: int, check_size: Callable[[int], None] | None = None) -> bytes:
    """The bytes of the regular file at ``path`` (symlinks followed), at most ``limit + 1`` of them.

    ``check_size(size)`` is called with the size the file reports before anything is read (it
    raises to refuse); a result longer than ``limit`` means the file is larger than the limit.
    Raises :class:`NotARegularFile` (``strerror`` names what it is) or another ``OSError``.
    """
    mode = os.stat(path).st_mode  # refuse devices and FIFOs before even opening them
    if not stat.S_ISREG(mode):
        raise NotARegularFile(0, f"is {_kind(mode)}, not a regular file", str(path))
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)  # what was opened, not what the path named a moment ago
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFile(0, f"is {_kind(st.st_mode)}, not a regular file", str(path))
        if check_size is not None:
            check_size(st.st_size)
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if absent) for the ``with`` block: what
    processes sharing a state or cache directory serialise on."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
