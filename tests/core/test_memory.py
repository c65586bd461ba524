"""The shared arena that inputs and outputs travel in between supervisor and worker."""

from __future__ import annotations

import mmap

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
