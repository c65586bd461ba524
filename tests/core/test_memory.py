"""The shared arena that inputs and outputs travel in between supervisor and worker."""

from __future__ import annotations

import fcntl
import mmap
import os

import pytest

from pappus.memory import ArenaContext, SharedArena


def test_context_round_trip_and_release_zeroes():
    arena = SharedArena(1 << 20)
    try:
        ctx = ArenaContext(arena, 64)
        ctx.write("inputs", "A", b"\x07" * 1000)
        ctx.reserve("outputs", "B", 100)
        assert bytes(ctx.items("inputs")["A"]) == b"\x07" * 1000
        ctx.release()
        assert bytes(arena.view[: 64 + 2048]) == bytes(64 + 2048)
    finally:
        arena.close()


def test_release_after_the_arena_is_closed_writes_nothing():
    """A worker that died mid-invocation is replaced (its arena closed and unmapped) before the
    invocation's context is released: that release must not write through the old address,
    which may be unmapped (a crash) or already another worker's arena (corruption)."""
    arena = SharedArena(4 * mmap.PAGESIZE)
    ctx = ArenaContext(arena, 64)
    ctx.write("inputs", "A", b"\x01" * 512)
    arena.close()
    old = arena.address
    other = mmap.mmap(-1, 4 * mmap.PAGESIZE)  # whatever is mapped there now keeps its bytes
    other.write(b"\x5a" * len(other))
    try:
        ctx.release()
        arena.zero(0, arena.size)
        assert arena.closed and old == arena.address
        assert other[:] == b"\x5a" * len(other)
    finally:
        other.close()


def test_a_worker_cannot_resize_the_memory_under_the_supervisor():
    """The worker receives the arena's fd. Shrunk, the supervisor's next access to the lost pages
    would die of SIGBUS; the memfd is sealed, so the worker's attempts fail and the mapping holds."""
    arena = SharedArena(4 * mmap.PAGESIZE)
    try:
        worker_fd = os.dup(arena.fd)  # what the worker holds (received with SCM_RIGHTS)
        for size in (0, mmap.PAGESIZE, 8 * mmap.PAGESIZE):
            with pytest.raises(PermissionError):
                os.ftruncate(worker_fd, size)
        with pytest.raises(PermissionError):  # nor can the seals be lifted or changed
            fcntl.fcntl(worker_fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE)
        os.close(worker_fd)
        arena.zero(0, arena.size)  # every page still there
        assert os.fstat(arena.fd).st_size == arena.size
    finally:
        arena.close()
