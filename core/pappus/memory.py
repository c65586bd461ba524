"""Host-side memory that function inputs and outputs travel in: shared, so it crosses processes.

A :class:`SharedArena` is one ``memfd`` mapped by the supervisor and by one worker; contexts are
regions of it with named item sets. Payloads are written once by the supervisor and read in
place by the worker (and the reverse for outputs): no pickling of payloads, no copies beyond
the one into the device pool.
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
from collections.abc import Mapping
from typing import Any

ALIGN = 64


def _align(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


class SharedArena:
    """A shared-memory region backed by a memfd (pages are allocated only when touched)."""

    def __init__(self, size: int, fd: int | None = None, name: str = "pappus-arena") -> None:
        self.size = max(size, mmap.PAGESIZE)
        owns_fd = fd is None
        if fd is None:
            fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            os.ftruncate(fd, self.size)
            # The worker gets this fd and is not trusted: sealed, it cannot shrink the memory
            # under the supervisor's mapping (whose next access would then die of SIGBUS).
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
        self.fd = fd
        self._owns_fd = owns_fd
        self.mm = mmap.mmap(fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.view = memoryview(self.mm)
        self.address = ctypes.addressof(ctypes.c_char.from_buffer(self.mm))
        self.closed = False

    def zero(self, offset: int, nbytes: int) -> None:
        """Zero ``[offset, offset + nbytes)``. After ``close`` nothing is left to zero (the pages
        went with the memfd), and ``address`` may by then belong to another mapping: a no-op."""
        if nbytes <= 0 or self.closed:
            return
        if nbytes >= 4 * 1024 * 1024 and offset % mmap.PAGESIZE == 0:
            # Large ranges: give the pages back (they read as zero afterwards).
            length = nbytes - nbytes % mmap.PAGESIZE
            self.mm.madvise(mmap.MADV_REMOVE, offset, length)
            offset, nbytes = offset + length, nbytes - length
        if nbytes:
            ctypes.memset(self.address + offset, 0, nbytes)

    def close(self) -> None:
        self.closed = True  # first: a context released after its worker was replaced must not write
        try:
            self.view.release()
            self.mm.close()
        except (BufferError, ValueError):
            pass  # still exported somewhere; the mapping goes with the process
        if self._owns_fd:
            try:
                os.close(self.fd)
            except OSError:
                pass


class ArenaContext:
    """A context in an arena: named inputs and outputs laid out back to back."""

    def __init__(self, arena: SharedArena, offset: int = 0, capacity: int | None = None) -> None:
        self.arena = arena
        self.offset = offset
        self.capacity = arena.size - offset if capacity is None else capacity
        self.top = 0
        self.sets: dict[str, dict[str, tuple[int, int]]] = {}

    def reserve(self, item_set: str, name: str, nbytes: int) -> memoryview:
        start = _align(self.top)
        end = start + nbytes
        if end > self.capacity:
            from .errors import OutOfMemory

            raise OutOfMemory(buffer=f"{item_set}.{name}", requested=nbytes,
                              available=max(0, self.capacity - start), pool_size=self.capacity)
        self.top = end
        self.sets.setdefault(item_set, {})[name] = (self.offset + start, nbytes)
        return self.arena.view[self.offset + start:self.offset + end]

    def write(self, item_set: str, name: str, data: Any) -> memoryview:
        src = memoryview(data).cast("B") if not isinstance(data, (bytes, bytearray)) else memoryview(data)
        dst = self.reserve(item_set, name, src.nbytes)
        dst[:] = src
        return dst

    def view(self, item_set: str, name: str) -> memoryview:
        off, n = self.sets[item_set][name]
        return self.arena.view[off:off + n]

    def items(self, item_set: str) -> Mapping[str, memoryview]:
        return {name: self.arena.view[off:off + n] for name, (off, n) in self.sets.get(item_set, {}).items()}

    def layout(self, item_set: str) -> list[tuple[str, int, int]]:
        return [(name, off, n) for name, (off, n) in self.sets.get(item_set, {}).items()]

    def release(self) -> None:
        """Zero what this context used and forget it."""
        self.arena.zero(self.offset, _align(self.top))
        self.top = 0
        self.sets.clear()


class ArenaDomain:
    """Memory domain over one arena: hands out one context at a time (one invocation per worker)."""

    def __init__(self, arena: SharedArena) -> None:
        self.arena = arena

    def acquire_context(self, size: int) -> ArenaContext:
        return ArenaContext(self.arena, 0, min(size, self.arena.size) if size else None)
