"""``HsaFaultMonitor``: GPU memory faults from the HSA runtime, as pappus ``FaultEvent``s.

Importing this module is cheap: the cffi binding (and the runtime library) load on first use.

Lifecycle, per process:

- :meth:`HsaFaultMonitor.availability` opens ``libhsa-runtime64`` and calls ``hsa_init`` once
  (then ``hsa_shut_down`` again); the answer is cached per library path.
- The first :meth:`~HsaFaultMonitor.start` in a process calls ``hsa_init`` and registers one
  handler with ``hsa_amd_register_system_event_handler``. HSA cannot unregister a handler, so the
  handler, its event hub and the runtime reference it took live until the process exits; every
  monitor of the process subscribes to that one hub. ``start`` is idempotent.
- :meth:`~HsaFaultMonitor.stop` unsubscribes: this monitor's ``on_fault`` gets no further events
  (including ones already queued). While no monitor is started, the handler answers
  ``HSA_STATUS_ERROR`` to every fault, so the runtime's default handling applies exactly as if
  the handler had been removed (ROCm 5.x: print "Memory access fault by GPU ..." and abort).
  ``start`` after ``stop`` subscribes again, without touching HSA.

ROCm 5.x watches VM faults with a one-shot signal handler (``VMFaultHandler`` returns false:
"we are done"), so after the first fault of a process no further fault is reported in that
process. An engine must treat a reported fault as the end of the device context (replace the
worker process or reset the device), which the design asks for anyway.

fork(): the runtime's threads and the dispatcher do not survive it. In a child forked after the
parent started a monitor, that runtime counts as unavailable and ``start`` raises DeviceError
(start monitors in the worker, never in a zygote/template process before it forks); a monitor
object inherited from the parent is not running in the child.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pappus.errors import DeviceError
from pappus.interfaces import Availability, FaultEvent, FaultMonitor

if TYPE_CHECKING:
    from .binding import Hsa
    from .events import EventHub, Subscription


class _Registration:
    """The process-wide handler for one runtime library: never undone."""

    def __init__(self, hsa: Hsa, hub: EventHub) -> None:
        self.hsa = hsa
        self.hub = hub


_registrations: dict[str, _Registration] = {}
_probes: dict[str, Availability] = {}
_inherited: set[str] = set()  # runtimes a parent had initialised and registered with before fork()
_process_lock = threading.Lock()
_monitors: weakref.WeakSet[HsaFaultMonitor] = weakref.WeakSet()


_INHERITED_REASON = ("this process was forked from one that had initialised the HSA runtime; "
                     "start the monitor in a process that did not inherit it")


def _after_fork_in_child() -> None:
    # The HSA runtime does not survive fork(): its threads (and the dispatcher) stay in the parent.
    # A child must not believe it has a working registration, nor reuse the parent's probe.
    global _process_lock
    _process_lock = threading.Lock()
    for monitor in list(_monitors):  # a lock held by a parent thread at fork() would never open
        monitor._lock = threading.Lock()
    _inherited.update(_registrations)
    _registrations.clear()
    _probes.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _probe(library: str | None) -> Availability:
    from . import binding

    try:
        hsa = binding.load(library)
    except binding.HsaUnavailable as exc:
        return Availability(False, exc.reason)
    with _process_lock:
        if hsa.path in _inherited:
            return Availability(False, _INHERITED_REASON)
        if hsa.path in _registrations:
            return Availability(True, f"HSA runtime {hsa.path}; fault handler registered")
        cached = _probes.get(hsa.path)
        if cached is not None:
            return cached
        try:
            hsa.init()
        except binding.HsaUnavailable as exc:
            result = Availability(False, exc.reason)
        else:
            hsa.shut_down()
            result = Availability(True, f"HSA runtime {hsa.path}")
        _probes[hsa.path] = result
        return result


def _register(library: str | None, capacity: int) -> _Registration:
    from . import binding
    from .events import EventHub

    try:
        hsa = binding.load(library)
    except binding.HsaUnavailable as exc:
        raise DeviceError(f"hsa fault monitor cannot start: {exc.reason}", api="dlopen") from None
    with _process_lock:
        reg = _registrations.get(hsa.path)
        if reg is not None:
            return reg
        if hsa.path in _inherited:
            raise DeviceError(f"hsa fault monitor cannot start: {_INHERITED_REASON}", api="fork")
        try:
            hsa.init()
        except binding.HsaUnavailable as exc:
            _probes[hsa.path] = Availability(False, exc.reason)
            raise DeviceError(f"hsa fault monitor cannot start: {exc.reason}", api="hsa_init",
                              status=binding.status_name(exc.status or 0)) from None
        hub = EventHub(capacity)
        rc = int(hsa.lib.hsa_amd_register_system_event_handler(hub.callback, binding.ffi.NULL))
        if rc != binding.HSA_STATUS_SUCCESS:
            hsa.shut_down()
            hub.close()
            raise DeviceError("hsa fault monitor cannot start: hsa_amd_register_system_event_handler "
                              f"failed: {hsa.status_text(rc)}",
                              api="hsa_amd_register_system_event_handler",
                              status=binding.status_name(rc))
        # Deliberately no hsa_shut_down: the runtime keeps calling hub.callback, which must stay
        # alive (referenced from this module-level dict) for the rest of the process.
        reg = _registrations[hsa.path] = _Registration(hsa, hub)
        return reg


class HsaFaultMonitor(FaultMonitor):
    """Reports ``HSA_AMD_GPU_MEMORY_FAULT_EVENT`` s (address, decoded reasons, agent).

    :param library: the runtime to use; default ``$PAPPUS_HSA_LIBRARY``, then
        ``libhsa-runtime64.so.1`` from the loader's path, then ``/opt/rocm*/lib``.
    :param capacity: faults that may wait for the dispatcher before new ones are dropped (and
        counted). The first start in a process fixes it for the process.

    ``on_fault`` runs on the monitor's dispatcher thread, never on the runtime's thread; an
    exception from it is logged and counted, and does not stop later deliveries.
    Agents are named ``hsa:0x<handle>`` (:func:`pappus_hsa.binding.agent_name`).
    """

    name = "hsa"

    def __init__(self, *, library: str | None = None, capacity: int = 4096) -> None:
        self.library = library
        self.capacity = capacity
        self._lock = threading.Lock()
        self._registration: _Registration | None = None
        self._subscription: Subscription | None = None
        self._pid = os.getpid()
        _monitors.add(self)

    def availability(self) -> Availability:
        try:
            return _probe(self.library)
        except Exception as exc:  # an availability probe must never raise
            return Availability(False, f"{type(exc).__name__}: {exc}")

    def start(self, on_fault: Callable[[FaultEvent], Any]) -> None:
        """Deliver faults to ``on_fault`` from now on; raise DeviceError if HSA is unusable.

        Idempotent: while started, another call changes nothing (the first ``on_fault`` stays).
        """
        if not callable(on_fault):
            raise TypeError("on_fault must be callable")
        with self._lock:
            self._forget_if_forked()
            if self._subscription is not None:
                return
            reg = _register(self.library, self.capacity)
            self._registration = reg
            self._subscription = reg.hub.subscribe(on_fault)

    def stop(self) -> None:
        """Deliver nothing more to ``on_fault``; see the module docstring. Idempotent."""
        with self._lock:
            self._forget_if_forked()
            sub, self._subscription = self._subscription, None
            if sub is not None and self._registration is not None:
                self._registration.hub.unsubscribe(sub)

    def _forget_if_forked(self) -> None:
        if self._pid != os.getpid():  # inherited through fork(): the parent's hub is not ours
            self._registration = self._subscription = None
            self._pid = os.getpid()

    @property
    def running(self) -> bool:
        return self._subscription is not None and self._pid == os.getpid()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every fault the handler accepted so far has been dispatched.

        An engine whose synchronize failed can call this (briefly) before deciding whether a
        fault report explains the failure.
        """
        reg = self._registration
        return True if reg is None else reg.hub.wait_idle(timeout)

    def stats(self) -> dict[str, Any]:
        reg = self._registration
        out: dict[str, Any] = {"running": self.running}
        if reg is not None:
            out["library"] = reg.hsa.path
            out.update(reg.hub.stats())
        sub = self._subscription
        if sub is not None:
            out["delivered"] = sub.delivered
            out["delivery_errors"] = sub.errors
        return out
