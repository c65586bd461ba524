"""Which actor an invocation goes to: module-cache affinity first, then the least loaded.

An actor that ran a tenant's library recently has its module loaded and its kernel handles
looked up (the executor's module cache); sending the next invocation of the same library there
makes it *hot*, elsewhere it is *cold* (SAGE and KaaS both build on this). So:

1. only actors that can take it are candidates: alive (ready, or a replacement starting) and
   with room in their bounded queue. None left: the caller gets ``Overloaded``;
2. among candidates that ran this affinity key recently (*warm*), the least loaded one is
   chosen while it is not overloaded: its load (invocations queued for it plus running on it)
   is under its spill threshold (by default twice its parallelism: every worker busy and as
   many waiting), or no other candidate is less loaded;
3. otherwise the least loaded candidate, ready ones before starting ones; ties go round robin.

A hot function therefore stays on one actor at low load and spreads over more actors, each of
which becomes warm for it, as load grows. The affinity key is the tenant plus the set of
library hashes (modules are cached per tenant, so one tenant's warm actor says nothing about
another's and attracts nothing of it).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Protocol


class Candidate(Protocol):
    index: int

    @property
    def load(self) -> int: ...

    @property
    def ready(self) -> bool: ...

    @property
    def accepting(self) -> bool: ...

    @property
    def spill_at(self) -> int: ...

    def has_room(self) -> bool: ...

    def is_warm(self, key: str) -> bool: ...


class Router:
    def __init__(self) -> None:
        self._turn = itertools.count()

    def choose(self, slots: Sequence[Candidate], key: str, exclude: Candidate | None = None) -> Candidate | None:
        """The actor for an invocation with affinity ``key``, or None when no actor can take it."""
        eligible = [s for s in slots if s is not exclude and s.accepting and s.has_room()]
        if not eligible:
            return None
        turn = next(self._turn)
        n = len(slots)

        def order(s: Candidate) -> tuple[int, int, int]:
            return (0 if s.ready else 1, s.load, (s.index - turn) % n)

        least = min(eligible, key=order)
        warm = [s for s in eligible if s.is_warm(key) and s.ready]
        if warm:
            best = min(warm, key=order)
            if best.load < best.spill_at or best.load <= least.load:
                return best
        return least
