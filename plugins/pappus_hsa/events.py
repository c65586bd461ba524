"""From the HSA runtime's event thread to Python callbacks, without ever raising into C.

The HSA runtime calls its system-event handler on its own async-events thread (a C thread that
also runs every other asynchronous signal handler of the process, HIP's among them). So the
handler here does the least it can: it copies the event out of the C struct into an immutable
:class:`HsaFault`, offers it to a bounded :class:`FaultChannel` (never blocking; when the channel
is full the fault is counted as dropped) and returns. A dispatcher thread takes faults off the
channel and hands them, as :class:`pappus.interfaces.FaultEvent`, to every subscriber.

What the handler answers the runtime (ROCR 5.x ``Runtime::VMFaultHandler``: if no handler answers
``HSA_STATUS_SUCCESS``, the runtime prints "Memory access fault by GPU ..." and calls ``abort()``):

- a memory fault while at least one subscriber listens: ``HSA_STATUS_SUCCESS`` (handled), also
  when the channel was full and the fault was only counted;
- a memory fault while nobody listens (every monitor stopped), a NULL event, or an event type
  this module does not know (newer runtimes add hardware-exception and memory-error events):
  ``HSA_STATUS_ERROR``, so the runtime's default handling applies as if no handler were registered;
- an unexpected exception inside the handler (it should not happen; the body is a few attribute
  reads): counted in ``callback_errors`` and answered with ``HSA_STATUS_SUCCESS`` while someone
  listens (the invocation still fails through its queue error, only unattributed), otherwise
  ``HSA_STATUS_ERROR``. cffi's ``onerror`` does this, so no traceback reaches C or stderr.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pappus.interfaces import FaultEvent

from .binding import (
    HSA_AMD_GPU_MEMORY_FAULT_EVENT,
    HSA_STATUS_ERROR,
    HSA_STATUS_SUCCESS,
    agent_name,
    decode_reasons,
    ffi,
)

log = logging.getLogger("pappus.hsa")

DEFAULT_CAPACITY = 4096


@dataclass(frozen=True, slots=True)
class HsaFault:
    """One ``HSA_AMD_GPU_MEMORY_FAULT_EVENT``, copied out of the runtime's struct."""

    agent_handle: int
    address: int
    reason_mask: int
    reasons: tuple[str, ...]
    timestamp: float  # time.monotonic() when the handler ran

    @property
    def agent(self) -> str:
        return agent_name(self.agent_handle)

    def to_fault_event(self) -> FaultEvent:
        return FaultEvent(address=self.address, reasons=self.reasons, agent=self.agent,
                          timestamp=self.timestamp)


class FaultChannel:
    """A bounded FIFO between the runtime's thread and the dispatcher.

    ``offer`` never blocks: when ``capacity`` items wait, the new item is dropped and counted
    (the first faults of a storm are the telling ones). ``done`` marks a taken item as fully
    handled, so :meth:`wait_idle` can tell when everything offered has been dispatched.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._items: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._unfinished = 0
        self._closed = False
        self.accepted = 0
        self.dropped = 0
        self.high_water = 0

    def offer(self, item: Any) -> bool:
        with self._cond:
            if self._closed or len(self._items) >= self.capacity:
                self.dropped += 1
                return False
            self._items.append(item)
            self.accepted += 1
            self._unfinished += 1
            if len(self._items) > self.high_water:
                self.high_water = len(self._items)
            self._cond.notify_all()
            return True

    def take(self, timeout: float | None = None) -> Any | None:
        """The oldest item; None when closed and empty, or after ``timeout`` seconds."""
        with self._cond:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._items:
                if self._closed:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return self._items.popleft()

    def done(self) -> None:
        with self._cond:
            self._unfinished -= 1
            if self._unfinished <= 0:
                self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """True once every accepted item is ``done`` (False on timeout)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._unfinished <= 0, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class Subscription:
    """One ``on_fault`` callback attached to a hub, with its own delivery counters."""

    def __init__(self, on_fault: Callable[[FaultEvent], Any]) -> None:
        self.on_fault = on_fault
        self.active = True
        self.delivered = 0
        self.errors = 0


class EventHub:
    """The C-callable handler, its channel and its dispatcher thread.

    ``callback`` is the cffi callback object (type ``hsa_amd_system_event_callback_t``); pass it
    to ``hsa_amd_register_system_event_handler``. It must stay alive as long as the runtime may
    call it: for the process-wide hub (see :mod:`pappus_hsa.monitor`) that is forever.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY, *, name: str = "pappus-hsa-faults") -> None:
        self.name = name
        self.channel = FaultChannel(capacity)
        self._subscribers: tuple[Subscription, ...] = ()
        self._lock = threading.Lock()  # subscribers, counters, thread start
        self._thread: threading.Thread | None = None
        self._closed = False
        self.events = 0  # every call of the handler
        self.faults = 0  # memory-fault events among them
        self.ignored = 0  # other event types
        self.invalid = 0  # NULL event pointers
        self.unhandled = 0  # faults that arrived while nobody listened
        self.dispatched = 0  # faults taken off the channel and handed to subscribers
        self.callback_errors = 0
        self.last_callback_error: str | None = None
        self._logged_delivery_errors = 0
        self.callback = ffi.callback("hsa_amd_system_event_callback_t", self._handle,
                                     error=HSA_STATUS_ERROR, onerror=self._on_callback_error)

    # --- the C side (runs on the runtime's thread) -------------------------------------------

    def _handle(self, event: Any, data: Any) -> int:
        now = time.monotonic()
        if event == ffi.NULL:
            self._bump("invalid")
            return HSA_STATUS_ERROR
        event_type = event.event_type
        if event_type != HSA_AMD_GPU_MEMORY_FAULT_EVENT:
            self._bump("ignored")
            return HSA_STATUS_ERROR  # not ours: let the runtime (or another handler) decide
        fault = self._copy_fault(event.memory_fault, now)
        with self._lock:
            self.events += 1
            self.faults += 1
            if not self._subscribers or self._closed:
                self.unhandled += 1
                return HSA_STATUS_ERROR  # nobody listens: the runtime's default handling applies
        self.channel.offer(fault)  # never blocks; a full channel counts the fault as dropped
        return HSA_STATUS_SUCCESS

    @staticmethod
    def _copy_fault(info: Any, now: float) -> HsaFault:
        mask = int(info.fault_reason_mask)
        return HsaFault(agent_handle=int(info.agent.handle), address=int(info.virtual_address),
                        reason_mask=mask, reasons=decode_reasons(mask), timestamp=now)

    def _bump(self, counter: str) -> None:
        with self._lock:
            self.events += 1
            setattr(self, counter, getattr(self, counter) + 1)

    def _on_callback_error(self, exc_type: Any, exc: Any, tb: Any) -> int:
        # Must not raise: whatever this returns is what the runtime gets.
        try:
            with self._lock:
                self.callback_errors += 1
                self.last_callback_error = f"{getattr(exc_type, '__name__', exc_type)}: {exc}"
                listening = bool(self._subscribers) and not self._closed
            return HSA_STATUS_SUCCESS if listening else HSA_STATUS_ERROR
        except BaseException:  # pragma: no cover - last resort
            return HSA_STATUS_ERROR

    # --- the Python side ----------------------------------------------------------------------

    def subscribe(self, on_fault: Callable[[FaultEvent], Any]) -> Subscription:
        if not callable(on_fault):
            raise TypeError("on_fault must be callable")
        sub = Subscription(on_fault)
        with self._lock:
            if self._closed:
                raise RuntimeError("event hub is closed")
            self._subscribers = (*self._subscribers, sub)
            if self._thread is None:
                self._thread = threading.Thread(target=self._dispatch, name=self.name, daemon=True)
                self._thread.start()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            sub.active = False
            self._subscribers = tuple(s for s in self._subscribers if s is not sub)

    @property
    def listening(self) -> bool:
        return bool(self._subscribers) and not self._closed

    def _dispatch(self) -> None:
        while True:
            fault = self.channel.take()
            if fault is None:
                return
            try:
                event = fault.to_fault_event()
                for sub in self._subscribers:
                    if not sub.active:  # unsubscribed while an earlier delivery ran
                        continue
                    try:
                        sub.on_fault(event)
                        sub.delivered += 1
                    except Exception:
                        sub.errors += 1
                        if self._logged_delivery_errors < 10:
                            self._logged_delivery_errors += 1
                            log.exception("fault monitor callback %r failed", sub.on_fault)
            except Exception:  # pragma: no cover - building a FaultEvent cannot fail
                log.exception("could not dispatch %r", fault)
            finally:
                with self._lock:
                    self.dispatched += 1
                self.channel.done()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every fault accepted so far has been handed to the subscribers."""
        return self.channel.wait_idle(timeout)

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop the dispatcher (tests). The handler then answers HSA_STATUS_ERROR."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self.channel.close()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def stats(self) -> dict[str, int]:
        with self._lock:
            out = {
                "events": self.events, "faults": self.faults, "ignored": self.ignored,
                "invalid": self.invalid, "unhandled": self.unhandled,
                "dispatched": self.dispatched, "callback_errors": self.callback_errors,
            }
        out.update(accepted=self.channel.accepted, dropped=self.channel.dropped,
                   pending=len(self.channel), capacity=self.channel.capacity,
                   high_water=self.channel.high_water)
        return out
