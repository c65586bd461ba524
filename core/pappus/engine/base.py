"""What both engines share: admission, the fair queue, settling, metrics, shutdown."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import EngineClosed, OutOfMemory, PappusError
from ..interfaces import Backend, DeviceSpec, Engine
from ..plan import Plan
from .executor import ExecutorConfig
from .invocation import (
    FAULT_OUTCOMES,
    FunctionSpec,
    Invocation,
    InvocationRecord,
    input_views,
    outcome_of,
)
from .queue import FairQueue

if TYPE_CHECKING:
    from ..plugins import Plugins

log = logging.getLogger("pappus.engine")


@dataclass
class EngineOptions:
    """Options common to every engine; backends add their own device options."""

    workers: int = 2  # multiprocess only
    #: Multiprocess only: workers started ahead and held in reserve. A dead worker's slot takes
    #: one at once instead of waiting for a new process to open the device (on a GPU, most of a
    #: respawn); each holds a device context and a pool share like a serving worker.
    spare_workers: int = 0
    queue_size: int = 1024
    heap_limit: int = 0
    pool_bytes: int | None = None
    memory_fraction: float = 0.9
    module_cache_size: int = 64
    abort_grace: float = 2.0  # seconds a hung device gets to stop after abort()
    tenant_weights: dict[str, int] = field(default_factory=dict)
    per_tenant_queue: Callable[[str], int | None] | None = None
    device_options: dict[str, Any] = field(default_factory=dict)

    fault_monitors: tuple[Callable[[], Any], ...] = ()
    #: The plugins whose hooks hear this engine's events (``pappus_worker_respawned``) and whose
    #: fault monitors it starts: the Runtime's own; None, the process's (``get_plugins()``).
    plugins: Plugins | None = None

    def executor_config(self, share: int) -> ExecutorConfig:
        return ExecutorConfig(pool_bytes=self.pool_bytes, memory_fraction=self.memory_fraction, share=share,
                              heap_limit=self.heap_limit, module_cache_size=self.module_cache_size,
                              fault_monitors=self.fault_monitors)


class Metrics:
    """Counters and recent latencies of one engine. Cheap to update; read by /metrics and hooks."""

    def __init__(self, engine: str, keep: int = 4096) -> None:
        self.engine = engine
        self.lock = threading.Lock()
        self.submitted = 0
        self.outcomes: dict[str, int] = {}
        self.in_flight = 0
        self.respawns = 0
        self.faults = 0
        self.cold = 0
        self.latencies: deque[float] = deque(maxlen=keep)
        self.records: list[InvocationRecord] = []
        self.collect_records = False

    def finished(self, inv: Invocation, error: BaseException | None) -> None:
        now = time.monotonic()
        outcome = outcome_of(error)
        with self.lock:
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
            self.latencies.append(now - inv.submitted)
            if outcome in FAULT_OUTCOMES:
                self.faults += 1
            if inv.cold:
                self.cold += 1
            if self.collect_records:
                started = inv.started or now
                self.records.append(InvocationRecord(inv.id, inv.function.name, inv.tenant, self.engine, outcome,
                                                     started - inv.submitted, now - started, inv.cold))

    def take_records(self) -> list[InvocationRecord]:
        with self.lock:
            records, self.records = self.records, []
            return records

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            lat = sorted(self.latencies)
        def pct(p: float) -> float | None:
            return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else None
        return {
            "engine": self.engine, "submitted": self.submitted, "in_flight": self.in_flight,
            "outcomes": dict(self.outcomes), "respawns": self.respawns, "faults": self.faults,
            "cold": self.cold, "p50_s": pct(0.5), "p99_s": pct(0.99),
        }


class DriverLock:
    """Who drives one executor or worker now: its engine (or supervisor) thread, or a caller
    running an invocation on its own thread (:meth:`EngineBase.call`) while it is idle.

    Callers only try (:meth:`try_acquire`); the engine thread waits for its turn
    (:meth:`engine_turn`), and while it waits, holding queued work, callers leave the driver to
    it: a lock is not fair, and callers invoking back to back could starve the queue. Used as a
    context manager it is a plain lock, for the engine thread's own upkeep (start, respawn).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wanted = False

    def try_acquire(self) -> bool:
        """For a caller: True (holding the lock) if nobody drives now and the engine thread
        does not want to."""
        if self._wanted or not self._lock.acquire(blocking=False):
            return False
        if self._wanted:  # the engine thread began to wait meanwhile: its turn
            self._lock.release()
            return False
        return True

    def release(self) -> None:
        self._lock.release()

    @property
    def engine_waiting(self) -> bool:
        """Whether the engine thread waits for its turn (callers then stand aside)."""
        return self._wanted

    @contextmanager
    def engine_turn(self) -> Iterator[None]:
        """For the engine thread with queued work: wait for the driver, callers standing aside."""
        self._wanted = True
        with self._lock:
            self._wanted = False
            yield

    def __enter__(self) -> DriverLock:
        self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class EngineBase(Engine):
    """Admission and settling shared by the sequential and multiprocess engines."""

    kind = "?"

    def __init__(self, backend: Backend, options: EngineOptions) -> None:
        self.backend = backend
        self.options = options
        self.name = f"{backend.name}-{self.kind}"
        if options.plugins is None:
            from ..plugins import get_plugins

            options.plugins = get_plugins()
        self.plugins: Plugins = options.plugins
        if not options.fault_monitors:
            options.fault_monitors = tuple(e.factory for e in self.plugins.fault_monitors.for_backend(backend.name))
        self.device_spec: DeviceSpec = backend.device(**{**dict(backend.defaults), **options.device_options})
        self.queue: FairQueue[Invocation] = FairQueue(options.queue_size, weights=options.tenant_weights,
                                                      per_tenant_max=options.per_tenant_queue)
        self.metrics = Metrics(self.name)
        self._healthy = True
        self._closed = False
        self.unhealthy_reason = ""
        self.started = threading.Event()
        self.start_error: BaseException | None = None
        self._plans: dict[str, Plan] = {}
        self._plans_lock = threading.Lock()
        #: Called (in a new thread) when the engine goes out of service after it had started.
        self.on_unhealthy: Callable[[EngineBase], None] | None = None

    # --- public ----------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self._healthy and not self._closed

    def submit(self, invocation: Invocation) -> Future[dict[str, bytes]]:
        self._accept(invocation)
        return self._enqueue(invocation)

    def call(self, invocation: Invocation) -> Future[dict[str, bytes]]:
        """Run an invocation for a caller that waits for it: on the calling thread when the
        engine is idle (nothing queued, a worker or the device free), which saves the two
        thread hand-offs of the queue (tens of microseconds each, more on a VM whose idle core
        must be woken); otherwise queued as :meth:`submit`. Either way the returned future
        settles exactly once, at the deadline at the latest."""
        self._accept(invocation)
        if not len(self.queue) and self._run_here(invocation):
            return invocation.future
        return self._enqueue(invocation)

    def _enqueue(self, invocation: Invocation) -> Future[dict[str, bytes]]:
        self.queue.put(invocation)
        self._count_submitted()
        return invocation.future

    def _count_submitted(self) -> None:
        with self.metrics.lock:
            self.metrics.submitted += 1

    def _accept(self, invocation: Invocation) -> None:
        """Checks before an invocation is queued or run: engine open, sizes and bounds, capacity."""
        if self._closed:
            raise EngineClosed(f"engine {self.name} is closed")
        invocation.inputs = input_views(invocation.inputs)  # flat bytes (no-op for Runtime's)
        if invocation.resolution is None:  # sizes and bounds are checked before anything is queued
            invocation.resolution = self.plan_for(invocation.function).resolve(invocation.inputs)
        if invocation.resolution.top > self.capacity:
            raise _oom(invocation, self.capacity)

    def _run_here(self, invocation: Invocation) -> bool:
        """Run ``invocation`` on the calling thread if a worker (or the device) is free now
        (counting it submitted) and settle it; False, with nothing done, if not. Engines that
        can do this override it."""
        return False

    def wait_started(self, timeout: float | None = None) -> None:
        if not self.started.wait(timeout):
            raise EngineClosed(f"engine {self.name} did not start within {timeout} s")
        if self.start_error is not None:
            raise self.start_error

    def plan_for(self, fn: FunctionSpec) -> Plan:
        """The supervisor's own plan of a function, for admission checks."""
        plan = self._plans.get(fn.key)
        if plan is None:
            with self._plans_lock:
                plan = self._plans.get(fn.key)
                if plan is None:
                    plan = fn.plan(device_limits=self.backend.driver.device_limits())
                    if len(self._plans) > 4096:
                        self._plans.clear()
                    self._plans[fn.key] = plan
        return plan

    # --- for subclasses --------------------------------------------------------------------

    def finish(self, inv: Invocation, outputs: dict[str, bytes] | None, error: BaseException | None) -> None:
        if error is not None and isinstance(error, PappusError):
            error.fields.setdefault("invocation", inv.id)
            if error.fields.get("invocation") is None:
                error.fields["invocation"] = inv.id
        if inv.settle(outputs, error):
            self.metrics.finished(inv, error)

    def mark_unhealthy(self, reason: str) -> None:
        """Take this engine out of service. With a dispatcher watching (``on_unhealthy``), the
        engine is replaced at once and invocations still queued move to the replacement; on its
        own, they fail with EngineClosed. Either way each one settles exactly once."""
        first = self._healthy
        if first:
            log.warning("engine %s is unhealthy: %s", self.name, reason)
        self._healthy = False
        self.unhealthy_reason = reason
        if not first:
            return
        if self.on_unhealthy is not None and self.started.is_set() and self.start_error is None:
            threading.Thread(target=self.on_unhealthy, args=(self,), name=f"pappus-replace-{self.name}",
                             daemon=True).start()
        else:
            self.fail_queued(f"engine {self.name} is out of service: {reason}")

    def fail_queued(self, reason: str) -> None:
        for inv in self.queue.close():
            self.finish(inv, None, EngineClosed(reason))


def _oom(inv: Invocation, capacity: int) -> OutOfMemory:
    res = inv.resolution
    for name, offset in res.offsets.items():
        end = offset + res.sizes[name]
        if end > capacity:
            return OutOfMemory(buffer=name, requested=res.sizes[name], available=max(0, capacity - offset),
                               pool_size=capacity)
    return OutOfMemory(buffer="(all)", requested=res.top, available=capacity, pool_size=capacity)
