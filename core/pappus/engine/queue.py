"""The engine work queue: bounded, fair across tenants (deficit round robin), closable.

Each tenant has its own FIFO; tenants with work take turns, each getting ``weight`` invocations
per round. One tenant's burst therefore waits behind itself, not in front of everyone else.
As in fq_codel's DRR++, a tenant that had nothing queued joins a *new* list served before the
round-robin of busy tenants, so a sparse tenant waits for at most one invocation of a busy one;
a new tenant that has been served moves to the busy list (even if its queue emptied), so
arriving with one request at a time cannot starve anyone.
Bounds are checked before anything is queued: past them ``put`` raises ``Overloaded`` (engine
full) or ``QuotaExceeded`` (the tenant's own queue bound), never grows memory without bound.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

from ..errors import Overloaded, QuotaExceeded

T = TypeVar("T")


class FairQueue(Generic[T]):
    def __init__(
        self,
        maxsize: int,
        *,
        tenant_of: Callable[[T], str] = lambda item: getattr(item, "tenant", "default"),
        weights: Mapping[str, int] | None = None,
        per_tenant_max: Callable[[str], int | None] | None = None,
    ) -> None:
        if maxsize <= 0:
            raise ValueError("queue size must be positive")
        self.maxsize = maxsize
        self.tenant_of = tenant_of
        self.weights = dict(weights or {})
        self.per_tenant_max = per_tenant_max
        self._queues: dict[str, deque[T]] = {}
        self._new: deque[str] = deque()  # tenants that just got work, served first
        self._old: deque[str] = deque()  # the round robin of tenants that have been served
        self._credit: dict[str, int] = {}
        self._size = 0
        self._closed = False
        self._wakes = 0  # bumped by wake(): getters waiting then return None
        self._cond = threading.Condition(threading.Lock())

    def __len__(self) -> int:
        return self._size

    def depth(self, tenant: str) -> int:
        q = self._queues.get(tenant)
        return len(q) if q else 0

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: T) -> None:
        tenant = self.tenant_of(item)
        with self._cond:
            if self._closed:
                from ..errors import EngineClosed

                raise EngineClosed("engine is shutting down")
            if self._size >= self.maxsize:
                raise Overloaded(f"engine queue is full ({self.maxsize} invocations waiting)",
                                 retry_after=1.0, queued=self._size)
            if self.per_tenant_max is not None:
                limit = self.per_tenant_max(tenant)
                if limit is not None and self.depth(tenant) >= limit:
                    raise QuotaExceeded("queued_invocations", limit, tenant, retry_after=1.0)
            q = self._queues.get(tenant)
            if q is None:
                q = self._queues[tenant] = deque()
            if tenant not in self._credit:  # in neither list: a new flow
                self._new.append(tenant)
                self._credit[tenant] = self.weights.get(tenant, 1)
            q.append(item)
            self._size += 1
            self._cond.notify()

    def get(self, timeout: float | None = None) -> T | None:
        """Next item in fair order; None when closed and empty, on timeout, or on :meth:`wake`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            wakes = self._wakes
            while not self._size:
                if self._closed or self._wakes != wakes:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            while True:
                ring = self._new if self._new else self._old
                tenant = ring[0]
                q = self._queues[tenant]
                if q:
                    break
                # An emptied tenant left in the old list: it is done for this round.
                ring.popleft()
                self._credit.pop(tenant, None)
                del self._queues[tenant]
            item = q.popleft()
            self._size -= 1
            self._credit[tenant] -= 1
            if self._credit[tenant] <= 0 or not q:
                # Quantum used up, or nothing left: to the back of the round robin. A tenant whose
                # queue emptied stays there (empty) until its turn comes round, so it cannot
                # re-enter as "new" at once and jump ahead again.
                ring.popleft()
                self._credit[tenant] = self.weights.get(tenant, 1)
                self._old.append(tenant)
            return item

    def close(self) -> list[T]:
        """Refuse new work; return what was still queued (the caller settles it)."""
        with self._cond:
            self._closed = True
            left: list[T] = []
            for tenant in list(self._new) + list(self._old):
                left.extend(self._queues.pop(tenant, ()))
            self._new.clear()
            self._old.clear()
            self._credit.clear()
            self._size = 0
            self._cond.notify_all()
            return left

    def wake(self) -> None:
        """Wake every thread waiting in :meth:`get` (it returns None if there is still nothing):
        for consumers that have something other than the queue to look at."""
        with self._cond:
            self._wakes += 1
            self._cond.notify_all()

    def mark_closed(self) -> None:
        """Refuse new work but let workers drain what is queued."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
