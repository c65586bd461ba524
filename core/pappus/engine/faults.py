"""Which invocation caused a device fault: generic over fault monitors (HSA, or any other).

Engines register each invocation while it is in flight, with the agent (device) it runs on, the
pool range its buffers live in, and a callback that fails it. :meth:`FaultAttributor.attribute`
takes a fault event (anything with ``address``, ``reasons``, ``agent``: e.g.
:class:`pappus.interfaces.FaultEvent`) and fails

1. exactly the invocation(s) on that agent whose pool range ``[pool_start, pool_end)`` contains
   the address, or
2. when no range contains it (or the reasons say the address is not exact: ``imprecise``,
   ``sramecc``, ``hang``), every invocation in flight on that agent, saying so in the message, or
3. nobody, when nothing is in flight on that agent: the fault is counted as an orphan.

Each registration is failed at most once: later faults that land on an already failed invocation
(a fault storm from one kernel) are counted as repeats, and an unmatched storm fails the others on
the agent once, not once per event. Registrations stay until the engine unregisters them, so a
storm's later events still find the invocation that caused it.

Agent matching: an invocation registered with ``agent=None`` is on every agent, and an event with
``agent=None`` concerns every agent (use this when an engine cannot name its device the way the
monitor does). Fail callbacks run outside the lock, in the caller's thread (the monitor's
dispatcher), so they may unregister or take the engine's locks; an exception from one is counted
and does not stop the others.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from pappus.errors import KernelFault

log = logging.getLogger("pappus.faults")

#: Reasons after which the fault address does not point at the faulting access.
ADDRESS_UNRELIABLE = frozenset({"imprecise", "sramecc", "hang"})

_REASON_TEXT = {
    "page_not_present": "page not present or supervisor privilege",
    "read_only": "write to a read-only page",
    "nx": "execute access to a page marked NX",
    "host_only": "access to a host-only page",
    "dramecc": "DRAM ECC failure",
    "imprecise": "address not exact",
    "sramecc": "SRAM ECC failure",
    "hang": "GPU reset after a hang",
}


@dataclass
class _InFlight:
    invocation_id: Hashable
    agent: str | None
    pool_start: int
    pool_end: int
    fail: Callable[[KernelFault], Any]
    failed: bool = False


@dataclass(frozen=True)
class Attribution:
    """What :meth:`FaultAttributor.attribute` did with one event.

    ``outcome``: ``"matched"`` (the address is in these invocations' pools), ``"agent"`` (no pool
    matched; all on the agent failed), ``"repeat"`` (everyone it concerned had already failed),
    ``"orphan"`` (nothing in flight on the agent).
    """

    outcome: str
    failed: tuple[Hashable, ...] = ()
    error: KernelFault | None = None


class FaultAttributor:
    """Thread-safe map from in-flight invocations to pool ranges; see the module docstring."""

    def __init__(self, *, keep_orphans: int = 32) -> None:
        self._lock = threading.Lock()
        self._inflight: dict[Hashable, _InFlight] = {}
        self.orphans = 0
        self.matched = 0
        self.unmatched = 0
        self.repeats = 0
        self.callback_errors = 0
        #: The last few orphan events, for diagnostics.
        self.recent_orphans: collections.deque[Any] = collections.deque(maxlen=keep_orphans)

    # --- engine side --------------------------------------------------------------------------

    def register(self, invocation_id: Hashable, agent: str | None, pool_start: int, pool_end: int,
                 fail_callback: Callable[[KernelFault], Any]) -> None:
        if not callable(fail_callback):
            raise TypeError("fail_callback must be callable")
        start, end = int(pool_start), int(pool_end)
        if start < 0 or end < start:
            raise ValueError(f"bad pool range [0x{start:x}, 0x{end:x})")
        with self._lock:
            if invocation_id in self._inflight:
                raise ValueError(f"invocation {invocation_id!r} is already registered")
            self._inflight[invocation_id] = _InFlight(invocation_id, agent, start, end, fail_callback)

    def unregister(self, invocation_id: Hashable) -> bool:
        """Forget a settled invocation; False if it was not registered (idempotent)."""
        with self._lock:
            return self._inflight.pop(invocation_id, None) is not None

    def in_flight(self, agent: str | None = None) -> list[Hashable]:
        with self._lock:
            return [e.invocation_id for e in self._inflight.values() if _same_agent(e.agent, agent)]

    # --- monitor side -------------------------------------------------------------------------

    def __call__(self, event: Any) -> Attribution:
        return self.attribute(event)

    def attribute(self, event: Any) -> Attribution:
        address = getattr(event, "address", None)
        reasons = [str(r) for r in (getattr(event, "reasons", None) or ())]
        agent = getattr(event, "agent", None)
        exact = address is not None and not ADDRESS_UNRELIABLE.intersection(reasons)
        with self._lock:
            on_agent = [e for e in self._inflight.values() if _same_agent(e.agent, agent)]
            if not on_agent:
                self.orphans += 1
                self.recent_orphans.append(event)
                outcome, targets, hit = "orphan", [], []
            else:
                hit = [e for e in on_agent
                       if exact and address is not None and e.pool_start <= address < e.pool_end]
                concerned = hit or on_agent
                targets = [e for e in concerned if not e.failed]
                for e in targets:
                    e.failed = True
                if not targets:
                    self.repeats += 1
                    outcome = "repeat"
                elif hit:
                    self.matched += 1
                    outcome = "matched"
                else:
                    self.unmatched += 1
                    outcome = "agent"
        if outcome == "orphan":
            log.warning("device memory fault %s with no invocation in flight on agent %s",
                        _describe(address, reasons), agent or "?")
            return Attribution("orphan")
        if outcome == "repeat":
            return Attribution("repeat", tuple(e.invocation_id for e in (hit or on_agent)))
        error = self._error(outcome, address, reasons, agent, exact, targets)
        for entry in targets:
            err = error if len(targets) == 1 else self._error(outcome, address, reasons, agent, exact,
                                                              targets, entry)
            try:
                entry.fail(err)
            except Exception:
                with self._lock:
                    self.callback_errors += 1
                log.exception("failing invocation %r after a device fault raised", entry.invocation_id)
        return Attribution(outcome, tuple(e.invocation_id for e in targets), error)

    @staticmethod
    def _error(outcome: str, address: int | None, reasons: list[str], agent: str | None,
               exact: bool, targets: list[_InFlight], entry: _InFlight | None = None) -> KernelFault:
        entry = entry or targets[0]
        what = f"device memory fault {_describe(address, reasons)}"
        if outcome == "matched":
            message = (f"{what}, inside this invocation's pool [0x{entry.pool_start:x}, "
                       f"0x{entry.pool_end:x}) on agent {agent or '?'}")
        else:
            why = ("fault address not in any invocation's pool" if exact
                   else "fault address not exact")
            message = f"{what}; {why}; failing all invocations on agent {agent or '?'}"
        return KernelFault(message, invocation=_id_text(entry.invocation_id), address=address,
                           reasons=reasons, agent=agent, attribution=outcome,
                           failed_together=len(targets))

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"in_flight": len(self._inflight), "matched": self.matched,
                    "unmatched": self.unmatched, "repeats": self.repeats, "orphans": self.orphans,
                    "callback_errors": self.callback_errors}


def _same_agent(registered: str | None, event_agent: str | None) -> bool:
    return registered is None or event_agent is None or registered == event_agent


def _describe(address: int | None, reasons: list[str]) -> str:
    where = f"at 0x{address:x}" if address is not None else "at an unknown address"
    why = "; ".join(_REASON_TEXT.get(r, r) for r in reasons) or "no reason given"
    return f"{where} ({why})"


def _id_text(invocation_id: Hashable) -> str:
    return invocation_id if isinstance(invocation_id, str) else repr(invocation_id)
