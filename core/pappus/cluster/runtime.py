"""``ClusterRuntime``: ``pappus.Runtime``'s API over engine actors on a Ray cluster.

    rt = ClusterRuntime("auto", engine="cpu-sequential")   # one actor per device / CPU engine
    rt.register_library("matmul", "matmul.so", tenant="alice")
    rt.register_function("matmul", "matmul.json", tenant="alice")
    out = rt.invoke("matmul", {"A": a}, tenant="alice")    # same outputs, same typed errors
    rt.close()

**Registry.** The driver keeps the registry and the tenants (a local ``pappus.Runtime`` that
never starts an engine): libraries are validated statically and stored by sha256, functions
validated once, against the exact libraries they name, at registration. An actor receives
a function as its validated :class:`~pappus.engine.FunctionSpec` plus a handle per library
blob (a Ray object ref), the first time it runs it; it checks each blob's sha256 before
storing or loading it (:mod:`pappus.cluster.host`).

**Admission.** Inputs are checked against the function's bounds and the tenant's quotas
(pool bytes, concurrent invocations, queued invocations) in the driver, before anything is
queued, exactly as locally.

**Queues.** Each actor has a bounded fair queue (DRR across tenants, the engine kit's
``FairQueue``) *in the driver*. An invocation waits there until its actor has a free slot
(its engine's parallelism, plus ``prefetch``), and only then is sent. When every actor's queue
is full, ``invoke_async`` raises ``Overloaded``. An actor with free slots and nothing queued
takes work from the longest queue of a busy actor.

**At most once.** An invocation still in the driver's queue has certainly not started: when its
actor dies it moves to another actor (or waits for the replacement), which is the only retry
there is. One that was sent may have started (the actor may have died in the middle of it),
so it fails with ``WorkerLost`` and is never run again: the caller decides. An actor that
answers "not started" (its engine refused it before queueing it) is treated like a queued
one. A dead actor is replaced at once, on whatever node has room.

**Errors** cross Ray as ``to_dict()`` and come back through ``error_from_dict``: the caller sees
the same types and facts as with a local runtime.
"""

from __future__ import annotations

import logging
import queue as queue_mod
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.limits import DEFAULT_LIMITS, Limits
from ..engine import FunctionSpec, Invocation, Metrics
from ..engine.invocation import check_deadline, input_views
from ..engine.queue import FairQueue
from ..errors import (
    BackendUnavailable,
    DeadlineExceeded,
    EngineClosed,
    FieldError,
    Overloaded,
    PappusError,
    ValidationError,
    WorkerLost,
    error_from_dict,
)
from ..plan import Plan
from ..registry import FunctionRecord, LibraryRecord
from ..runtime import DEFAULT_ENGINE, Runtime
from ..tenants import TenantStore, quota_error
from .placement import Placement, placement_for
from .router import Router
from .transport import ActorHandle, ActorLost, Transport

log = logging.getLogger("pappus.cluster")

STARTING, READY, DEAD, CLOSED = "starting", "ready", "dead", "closed"
#: how often one invocation may move between actors without having started
MAX_MOVES = 8
#: blob handles kept in the driver (Ray object refs; evicted ones are put again on demand)
BLOB_HANDLES = 256
#: past its deadline plus this, an unanswered invocation is failed by the driver itself
ANSWER_GRACE_S = 10.0
#: an actor that owes an answer this long past a deadline is killed and replaced
STUCK_S = 60.0
#: once one actor is ready, how long ``engine()`` still waits for the others
PENDING_GRACE_S = 15.0
#: how often the event thread checks deadlines, replacements and idle actors
TICK_S = 0.25


class ClusterFuture(Future[dict[str, bytes]]):
    """The future of a cluster invocation: outputs, or a pappus error. ``invocation`` is its id
    (as in errors' ``invocation``), ``actor`` and ``node`` name where it was sent (last),
    ``moves`` how often it moved without having started."""

    invocation: str | None = None
    actor: str | None = None
    node: str | None = None
    moves: int = 0


@dataclass(eq=False)
class _Job:
    inv: Invocation
    engine: str
    key: str
    moves: int = 0
    slot: _Slot | None = None
    gen: int = -1
    sent: bool = False
    sent_at: float = 0.0
    done: bool = False

    @property
    def tenant(self) -> str:  # the fair queue's tenant_of
        return self.inv.tenant


@dataclass(eq=False)
class _Slot:
    """One actor position: an engine host and its replacements over time."""

    index: int
    label: str
    queue: FairQueue[_Job]
    metrics: Metrics
    spill_factor: int
    prefetch: int
    memory: int
    state: str = STARTING
    generation: int = 0
    handle: ActorHandle | None = None
    info: dict[str, Any] = field(default_factory=dict)
    parallel: int = 1
    in_flight: dict[str, _Job] = field(default_factory=dict)
    known: set[str] = field(default_factory=set)
    recent: OrderedDict[str, None] = field(default_factory=OrderedDict)
    started_at: float = 0.0
    restarts: int = 0
    failures: int = 0
    respawn_at: float | None = None
    last_error: str = ""
    ran: int = 0

    # --- what the router and the serve metrics read -----------------------------------------

    @property
    def name(self) -> str:
        return self.label

    @property
    def healthy(self) -> bool:
        return self.state == READY

    @property
    def ready(self) -> bool:
        return self.state == READY

    @property
    def accepting(self) -> bool:
        return self.state in (READY, STARTING)

    @property
    def credits(self) -> int:
        return self.parallel + self.prefetch

    @property
    def load(self) -> int:
        return len(self.queue) + len(self.in_flight)

    @property
    def spill_at(self) -> int:
        return self.spill_factor * self.parallel

    def has_room(self) -> bool:
        return len(self.queue) < self.queue.maxsize

    def is_warm(self, key: str) -> bool:
        return key in self.recent

    def remember(self, key: str) -> None:
        self.recent[key] = None
        self.recent.move_to_end(key)
        while len(self.recent) > self.memory:
            self.recent.popitem(last=False)

    @property
    def node(self) -> str | None:
        return self.info.get("node")


@dataclass(frozen=True)
class ActorInfo:
    """What ``ClusterRuntime.actors()`` reports of one actor position."""

    index: int
    label: str
    state: str
    node: str | None
    generation: int
    restarts: int
    queued: int
    in_flight: int
    ran: int
    recent: tuple[str, ...]
    handle: Any  # the transport's handle (a Ray ActorHandle): for operators and tests
    last_error: str


class _Dispatcher:
    """What ``pappus serve`` reads of a runtime's dispatcher: engines by name (one per actor)."""

    def __init__(self, rt: ClusterRuntime) -> None:
        self._rt = rt

    @property
    def engines(self) -> dict[str, _Slot]:
        return {s.label: s for s in self._rt._slots}

    def metrics(self) -> list[dict[str, Any]]:
        return [s.metrics.snapshot() for s in self._rt._slots]


class ClusterRuntime:
    """``pappus.Runtime``'s public API, with invocations run by engine actors.

    ``address``: where Ray is (None: the Ray this process is connected to, else a local one;
    ``"local"``; ``"auto"``; ``"ray://HOST:10001"``; ``"HOST:6379"``), or pass ``transport``.
    ``actors``: how many engine actors (default: as many as the cluster's resources hold, one
    per device / per CPU engine). ``queue_size``: the bound of each actor's queue.
    ``prefetch``: invocations sent to an actor beyond its parallelism, to hide the round trip;
    each may have started when the actor dies, so more prefetch means more ``WorkerLost`` on a
    death (never a second run). ``affinity_spill``: the load, in multiples of an actor's
    parallelism, at which a warm actor stops attracting its functions.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        engine: str = DEFAULT_ENGINE,
        actors: int | None = None,
        state_dir: str | Path | None = None,
        workers: int = 2,
        queue_size: int = 1024,
        prefetch: int = 1,
        heap_limit: int = 0,
        pool_bytes: int | None = None,
        deadline: float | None = None,
        device_options: Mapping[str, Any] | None = None,
        module_cache_size: int | None = None,
        limits: Limits = DEFAULT_LIMITS,
        tenants: TenantStore | None = None,
        placement: Placement | None = None,
        affinity_spill: int = 2,
        steal: bool = True,
        transport: Transport | None = None,
        start_timeout: float = 180.0,
        wait_ready: bool = True,
    ) -> None:
        if queue_size < 1:
            raise ValidationError(FieldError("queue_size", "must be >= 1"), what="arguments")
        if prefetch < 0:
            raise ValidationError(FieldError("prefetch", "must be >= 0"), what="arguments")
        # The driver's own runtime: registry, tenants, validation. It never starts an engine.
        self.local = Runtime(engine=engine, state_dir=state_dir, workers=workers, queue_size=queue_size,
                             heap_limit=heap_limit, pool_bytes=pool_bytes, deadline=deadline,
                             device_options=device_options, limits=limits, tenants=tenants)
        self.default_engine = engine
        self.backend = self.local.backend
        self.registry = self.local.registry
        self.tenants = self.local.tenants
        self.limits = limits
        _, kind = self.local._backend_for(engine)
        self.placement = placement or placement_for(self.backend.name, kind, workers)
        self.start_timeout = start_timeout
        self.steal = steal
        self._host_kwargs: dict[str, Any] = {"workers": workers, "queue_size": max(queue_size, 64),
                                             "heap_limit": heap_limit, "pool_bytes": pool_bytes,
                                             "device_options": dict(device_options or {}),
                                             "module_cache_size": module_cache_size}
        if transport is None:
            from .transport import RayTransport

            transport = RayTransport(address)
        self.transport = transport
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._closing = False
        self._router = Router()
        self._plans: dict[str, Plan] = {}
        self._blob_handles: OrderedDict[str, Any] = OrderedDict()
        self._blob_lock = threading.Lock()
        self._active: dict[str, int] = {}
        self._events: queue_mod.SimpleQueue[tuple[Any, ...]] = queue_mod.SimpleQueue()
        count = actors if actors is not None else self.placement.slots_in(transport.totals())
        if count < 1:
            raise ValidationError(FieldError("actors", "must be >= 1"), what="arguments")
        memory = module_cache_size if module_cache_size is not None else 64
        weights = self.tenants.weights()
        self._slots = [
            _Slot(index=i, label=f"{engine}@actor{i}", metrics=Metrics(f"{engine}@actor{i}"),
                  queue=self._new_queue(queue_size, weights), spill_factor=max(1, affinity_spill),
                  prefetch=prefetch, memory=max(1, memory))
            for i in range(count)]
        self._queue_size = queue_size
        self.dispatcher = _Dispatcher(self)
        self.tenants.on_change(self._tenants_changed)
        self._thread = threading.Thread(target=self._loop, name="pappus-cluster", daemon=True)
        self._thread.start()
        try:
            for slot in self._slots:
                self._respawn(slot)
            if wait_ready:
                self.engine()
        except BaseException:
            self.close(drain=False, timeout=5.0)
            raise

    def _new_queue(self, size: int, weights: dict[str, int] | None = None) -> FairQueue[_Job]:
        return FairQueue(size, weights=weights if weights is not None else self.tenants.weights(),
                         per_tenant_max=self._queued_quota)

    def _queued_quota(self, tenant: str) -> int | None:
        return self.tenants.quotas(tenant).queued_invocations

    def _tenants_changed(self, store: TenantStore) -> None:
        weights = store.weights()
        for slot in self._slots:
            slot.queue.weights = dict(weights)

    # --- registry: the driver's, exactly as the local runtime's -----------------------------

    def register_library(self, name: str, source: str | Path | bytes, *, tenant: str = "default",
                         backend: str | None = None) -> LibraryRecord:
        """Validate (statically, here) and store a library; actors get it by hash when needed."""
        return self.local.register_library(name, source, tenant=tenant, backend=backend)

    def register_function(self, name: str, config: str | Path | bytes | Mapping[str, Any], *,
                          tenant: str = "default", format: str | None = None,
                          modules_dir: str | Path | None = None,
                          input_sizes: Mapping[str, int] | None = None,
                          engine: str | None = None) -> FunctionRecord:
        """Validate a function once, here, against its libraries; actors receive the result."""
        return self.local.register_function(name, config, tenant=tenant, format=format, modules_dir=modules_dir,
                                            input_sizes=input_sizes, engine=engine)

    def remove_function(self, name: str, *, tenant: str = "default") -> None:
        self.local.remove_function(name, tenant=tenant)

    def remove_library(self, name: str, *, tenant: str = "default") -> None:
        self.local.remove_library(name, tenant=tenant)

    def list_libraries(self, *, tenant: str = "default") -> list[LibraryRecord]:
        return self.local.list_libraries(tenant=tenant)

    def list_functions(self, *, tenant: str = "default") -> list[FunctionRecord]:
        return self.local.list_functions(tenant=tenant)

    def function_spec(self, name: str, tenant: str = "default") -> FunctionSpec:
        return self.local.function_spec(name, tenant)

    def _plan(self, spec: FunctionSpec) -> Plan:
        plan = self._plans.get(spec.key)
        if plan is None:
            plan = spec.plan(device_limits=self.backend.driver.device_limits())
            if len(self._plans) > 4096:
                self._plans.clear()
            self._plans[spec.key] = plan
        return plan

    def _blob_handle(self, sha: str) -> Any:
        with self._blob_lock:
            handle = self._blob_handles.get(sha)
            if handle is not None:
                self._blob_handles.move_to_end(sha)
                return handle
        data = self.registry.read_blob(sha)  # checks the sha256: a blob changed on disk is refused
        handle = self.transport.put_blob(data)
        with self._blob_lock:
            self._blob_handles[sha] = handle
            while len(self._blob_handles) > BLOB_HANDLES:
                self._blob_handles.popitem(last=False)
        return handle

    # --- invocation -------------------------------------------------------------------------

    def invoke_async(self, name: str, inputs: Mapping[str, Any], *, tenant: str = "default",
                     deadline: float | None = None, engine: str | None = None) -> ClusterFuture:
        """Queue an invocation on some actor; the future resolves to the outputs or raises a
        pappus error (``WorkerLost`` if its actor died after it was sent: it is not re-run)."""
        if self._closing:
            raise EngineClosed("cluster runtime is closed")
        spec = self.function_spec(name, tenant)
        if deadline is not None:
            deadline = check_deadline(deadline, self.limits.max_deadline)
        # Sized in bytes, InvalidInput if not bytes-like; copied to bytes, as they travel pickled.
        inputs = {k: v if isinstance(v, bytes) else bytes(v) for k, v in input_views(inputs).items()}
        engine_name = engine or spec.engine or self.default_engine
        self._check_engine(engine_name)
        inv = Invocation(spec, inputs, deadline or spec.deadline, tenant, future=ClusterFuture())
        inv.future.invocation = inv.id  # type: ignore[attr-defined]
        inv.resolution = self._plan(spec).resolve(inputs)  # sizes and bounds, before anything is queued
        self._admit(tenant, inv.resolution.top)
        job = _Job(inv, engine_name, _affinity_key(spec))
        try:
            with self._lock:
                if self._closing:
                    raise EngineClosed("cluster runtime is closed")
                slot = self._route(job)
        except BaseException:
            self._release(tenant)
            raise
        self._pump(slot)
        if len(slot.queue):  # it had to wait: an idle actor may take it instead
            for other in self._slots:
                if other is not slot and other.state == READY and not other.load:
                    self._pump(other)
        return inv.future  # type: ignore[return-value]

    def invoke(self, name: str, inputs: Mapping[str, Any], *, tenant: str = "default",
               deadline: float | None = None, engine: str | None = None) -> dict[str, bytes]:
        """Run a function on some actor and wait: ``{"B": b"..."}``; raises pappus errors."""
        return self.invoke_async(name, inputs, tenant=tenant, deadline=deadline, engine=engine).result()

    def _check_engine(self, engine: str) -> None:
        backend, _ = self.local._backend_for(engine)
        if backend.name != self.backend.name:
            raise ValidationError(FieldError("engine", f"engine {engine!r} is of backend {backend.name!r}; this "
                                             f"cluster's actors run {self.backend.name!r}"), what="request")

    def _admit(self, tenant: str, pool_bytes: int) -> None:
        quotas = self.tenants.quotas(tenant)
        limit = quotas.pool_bytes_per_invocation
        if limit is not None and pool_bytes > limit:
            raise quota_error(tenant, "pool_bytes_per_invocation", limit)
        limit = quotas.concurrent_invocations
        with self._lock:
            active = self._active.get(tenant, 0)
            if limit is not None and active >= limit:
                raise quota_error(tenant, "concurrent_invocations", limit, retry_after=1.0)
            self._active[tenant] = active + 1

    def _release(self, tenant: str) -> None:
        with self._lock:
            self._active[tenant] -= 1
            if not self._active[tenant]:
                del self._active[tenant]
            self._idle.notify_all()

    def _route(self, job: _Job, exclude: _Slot | None = None) -> _Slot:
        """Put ``job`` in the queue of the actor the router picks (caller holds the lock)."""
        slot = self._router.choose(self._slots, job.key, exclude=exclude)
        if slot is None:
            alive = [s for s in self._slots if s.accepting]
            if not alive:
                raise EngineClosed("no engine actor is running: " + "; ".join(
                    f"{s.label}: {s.last_error}" for s in self._slots if s.last_error)[:500])
            raise Overloaded(f"every actor's queue is full ({len(alive)} actors x {self._queue_size} "
                             "invocations waiting)", retry_after=1.0, queued=sum(len(s.queue) for s in alive))
        assert isinstance(slot, _Slot)
        slot.queue.put(job)  # QuotaExceeded (the tenant's queued quota) or Overloaded
        job.slot = slot
        with slot.metrics.lock:
            slot.metrics.submitted += 1
        return slot

    # --- sending ----------------------------------------------------------------------------

    def _next_for(self, slot: _Slot) -> _Job | None:
        job = slot.queue.get(timeout=0)
        if job is not None or not self.steal:
            return job
        # Nothing of its own: take from the longest queue of an actor that cannot send it now.
        victims = [s for s in self._slots if s is not slot and len(s.queue)
                   and (s.state != READY or len(s.in_flight) >= s.credits)]
        if not victims:
            return None
        victim = max(victims, key=lambda s: len(s.queue))
        return victim.queue.get(timeout=0)

    def _pump(self, slot: _Slot) -> None:
        """Send what ``slot`` has room for (and steal for it when its own queue is empty)."""
        batch: list[_Job] = []
        expired: list[_Job] = []
        with self._lock:
            if slot.state != READY or slot.handle is None:
                return
            now = time.monotonic()
            while len(slot.in_flight) < slot.credits:
                job = self._next_for(slot)
                if job is None:
                    break
                if now >= job.inv.submitted + job.inv.deadline:  # expired while queued: never start it
                    expired.append(job)
                    continue
                job.slot, job.gen, job.sent, job.sent_at = slot, slot.generation, True, now
                slot.in_flight[job.inv.id] = job
                slot.remember(job.key)
                batch.append(job)
            handle, gen = slot.handle, slot.generation
            if batch:
                with slot.metrics.lock:
                    slot.metrics.in_flight = len(slot.in_flight)
        for job in expired:
            self._finish(job, None, DeadlineExceeded(job.inv.deadline, invocation=job.inv.id))
        for job in batch:
            self._send(slot, handle, gen, job)

    def _send(self, slot: _Slot, handle: ActorHandle, gen: int, job: _Job) -> None:
        inv = job.inv
        fut = inv.future
        if isinstance(fut, ClusterFuture):
            fut.actor, fut.node = slot.label, slot.node
        try:
            with self._lock:
                include = inv.function.key not in slot.known
                slot.known.add(inv.function.key)
            blobs = {ref.sha256: self._blob_handle(ref.sha256) for ref in inv.function.libraries.values()} \
                if include else None
            remaining = inv.deadline - (time.monotonic() - inv.submitted)
            if remaining <= 0:
                raise DeadlineExceeded(inv.deadline, invocation=inv.id)
            request = {"id": inv.id, "key": inv.function.key, "spec": inv.function if include else None,
                       "blobs": blobs, "inputs": dict(inv.inputs), "deadline": remaining, "tenant": inv.tenant,
                       "engine": job.engine}
            answer = handle.run(request)
        except PappusError as exc:  # nothing was sent: a registry problem, or expired
            with self._lock:
                slot.known.discard(inv.function.key)
            self._finish(job, None, exc)
            self._pump(slot)
            return
        except Exception as exc:  # the transport refused the call: it never reached the actor
            log.warning("sending to %s failed: %s", slot.label, exc)
            self._move(job, slot, f"sending to {slot.label} failed: {exc}")
            self._actor_lost(slot, gen, f"the transport refused a call: {exc}")
            return
        answer.add_done_callback(lambda f: self._events.put(("answer", slot, gen, job, f)))

    # --- the event thread -------------------------------------------------------------------

    def _loop(self) -> None:
        last_tick = time.monotonic()
        while True:
            try:
                event = self._events.get(timeout=TICK_S)
            except queue_mod.Empty:
                event = ("tick",)
            kind = event[0]
            if kind == "stop":
                return
            try:
                if kind == "answer":
                    self._on_answer(*event[1:])
                elif kind == "ready":
                    self._on_ready(*event[1:])
                elif kind == "watch":
                    self._on_watch(*event[1:])
                now = time.monotonic()
                if now - last_tick >= TICK_S:
                    last_tick = now
                    self._tick()
            except Exception:  # the event thread must survive anything
                log.exception("cluster event %s failed", kind)

    def _on_answer(self, slot: _Slot, gen: int, job: _Job, fut: Future[dict[str, Any]]) -> None:
        inv = job.inv
        try:
            answer = fut.result()
        except ActorLost as exc:
            self._actor_lost(slot, gen, str(exc))
            self._finish(job, None, _lost_error(slot, job, str(exc)))
            return
        except PappusError as exc:
            self._finish(job, None, exc)
            self._pump(slot)
            return
        if answer.get("need_spec"):
            with self._lock:
                slot.known.discard(inv.function.key)
                handle = slot.handle if slot.generation == gen and slot.state == READY else None
            if handle is not None:
                self._send(slot, handle, gen, job)
            else:
                self._move(job, slot, "its actor was replaced")
            return
        if answer.get("ok"):
            with self._lock:
                slot.ran += 1
            self._finish(job, answer["outputs"], None)
        else:
            error = error_from_dict(answer.get("error") or {"error": "error", "message": "unknown error"})
            if isinstance(error, DeadlineExceeded):  # the actor knew the time left, the caller set this
                error = DeadlineExceeded(inv.deadline, invocation=inv.id, kernel=error.fields.get("kernel"))
            if not answer.get("started") and isinstance(error, (EngineClosed, Overloaded)) \
                    and job.moves < MAX_MOVES and not self._closing:
                self._move(job, slot, error.message)  # refused before it started: safe to send elsewhere
            else:
                self._finish(job, None, error)
        self._pump(slot)

    def _move(self, job: _Job, slot: _Slot, why: str) -> None:
        """Re-route a job that has certainly not started (the retry of the at-most-once rule)."""
        with self._lock:
            slot.in_flight.pop(job.inv.id, None)
            job.sent = False
            job.moves += 1
            if isinstance(job.inv.future, ClusterFuture):
                job.inv.future.moves = job.moves
            try:
                if job.moves > MAX_MOVES:
                    raise EngineClosed(f"invocation moved {job.moves} times without starting; last: {why}")
                target = self._route(job, exclude=slot if slot.state == READY else None)
            except PappusError as exc:
                target = None
                error: PappusError | None = exc
            else:
                error = None
        if error is not None:
            self._finish(job, None, error)
        elif target is not None:
            self._pump(target)

    def _finish(self, job: _Job, outputs: dict[str, bytes] | None, error: BaseException | None) -> None:
        slot = job.slot
        with self._lock:
            if job.done:
                return
            job.done = True
            if slot is not None and slot.in_flight.get(job.inv.id) is job:
                del slot.in_flight[job.inv.id]
                with slot.metrics.lock:
                    slot.metrics.in_flight = len(slot.in_flight)
        self._release(job.inv.tenant)
        if isinstance(error, PappusError) and error.fields.get("invocation") is None:
            error.fields["invocation"] = job.inv.id
        if job.inv.settle(outputs, error) and slot is not None:
            slot.metrics.finished(job.inv, error)

    # --- actors: start, death, replacement ---------------------------------------------------

    def _respawn(self, slot: _Slot) -> None:
        with self._lock:
            if self._closing:
                return
            slot.generation += 1
            gen = slot.generation
            slot.state, slot.started_at, slot.respawn_at = STARTING, time.monotonic(), None
            slot.known.clear()
            slot.recent.clear()
        try:
            handle = self.transport.spawn(f"{slot.label}.{gen}", self.default_engine, dict(self._host_kwargs),
                                          self.placement)
        except Exception as exc:
            self._events.put(("ready", slot, gen, _failed(exc)))
            return
        with self._lock:
            slot.handle = handle
        handle.ready().add_done_callback(lambda f: self._events.put(("ready", slot, gen, f)))
        handle.watch().add_done_callback(lambda f: self._events.put(("watch", slot, gen, f)))

    def _on_ready(self, slot: _Slot, gen: int, fut: Future[dict[str, Any]]) -> None:
        with self._lock:
            if slot.generation != gen or slot.state != STARTING:
                return
            error = fut.exception()
            if error is None:
                slot.info = dict(fut.result())
                slot.parallel = max(1, int(slot.info.get("workers", 1)))
                slot.state = READY
                slot.failures = 0
                slot.last_error = ""
                log.info("actor %s ready on node %s", slot.label, slot.node)
            else:
                slot.last_error = f"{type(error).__name__}: {error}"
                slot.failures += 1
                slot.state = DEAD
                slot.respawn_at = time.monotonic() + min(30.0, 0.5 * 2 ** min(slot.failures, 6))
                log.warning("actor %s did not start: %s", slot.label, slot.last_error)
                handle = slot.handle
                slot.handle = None
            self._idle.notify_all()
        if error is None:
            self._pump(slot)
        else:
            if handle is not None:
                handle.kill()
            self._rehome_queue(slot, f"actor {slot.label} could not start: {slot.last_error}")

    def _on_watch(self, slot: _Slot, gen: int, fut: Future[None]) -> None:
        error = fut.exception()
        if isinstance(error, ActorLost):
            self._actor_lost(slot, gen, str(error))

    def _actor_lost(self, slot: _Slot, gen: int, reason: str) -> None:
        """``slot``'s actor of generation ``gen`` is gone: fail what it had (may have started),
        move what was queued for it (had not), start a replacement."""
        with self._lock:
            if slot.generation != gen or slot.state in (DEAD, CLOSED):
                return
            slot.state = DEAD
            slot.last_error = reason
            slot.restarts += 1
            lost = list(slot.in_flight.values())
            handle, slot.handle = slot.handle, None
            self._idle.notify_all()
        if handle is not None:
            handle.kill()  # unreachable is not always dead: make sure it is before replacing it
        log.warning("actor %s (node %s) lost: %s; %d invocation(s) in flight fail with WorkerLost",
                    slot.label, slot.node, reason, len(lost))
        for job in lost:
            self._finish(job, None, _lost_error(slot, job, reason))
        if not self._closing:
            self._respawn(slot)  # the queue stays: it is served by the replacement unless others take it
            self._rehome_queue(slot, reason, keep=True)

    def _rehome_queue(self, slot: _Slot, why: str, keep: bool = False) -> None:
        """Move ``slot``'s queued (never started) jobs to actors that can send them now. With
        ``keep``, jobs no ready actor has room for stay for the replacement."""
        moved: list[_Job] = []
        targets: set[int] = set()
        with self._lock:
            others = [s for s in self._slots if s is not slot and s.state == READY]
            if not others and keep:
                return
            while True:
                job = slot.queue.get(timeout=0)
                if job is None:
                    break
                moved.append(job)
        failures: list[tuple[_Job, PappusError]] = []
        for job in moved:
            with self._lock:
                job.moves += 1
                if isinstance(job.inv.future, ClusterFuture):
                    job.inv.future.moves = job.moves
                choice = self._router.choose(others, job.key) if others else None
                if choice is None and keep and slot.has_room():
                    slot.queue.put(job)
                    continue
                if choice is None:
                    failures.append((job, EngineClosed(f"no actor could take the invocation: {why}")))
                    continue
                assert isinstance(choice, _Slot)
                try:
                    choice.queue.put(job)
                except PappusError as exc:
                    failures.append((job, exc))
                    continue
                job.slot = choice
                targets.add(choice.index)
        for job, problem in failures:
            self._finish(job, None, problem)
        for index in targets:
            self._pump(self._slots[index])

    def _tick(self) -> None:
        now = time.monotonic()
        overdue: list[tuple[_Slot, _Job, float]] = []
        respawn: list[_Slot] = []
        stale: list[_Slot] = []
        with self._lock:
            for slot in self._slots:
                for job in slot.in_flight.values():
                    late = now - (job.inv.submitted + job.inv.deadline)
                    if late > ANSWER_GRACE_S:
                        overdue.append((slot, job, late))
                if slot.state == DEAD and slot.respawn_at is not None and now >= slot.respawn_at \
                        and not self._closing:
                    respawn.append(slot)
                if slot.state in (STARTING, DEAD) and len(slot.queue) and now - slot.started_at > self.start_timeout:
                    stale.append(slot)
        for slot, job, late in overdue:
            self._finish(job, None, DeadlineExceeded(job.inv.deadline, invocation=job.inv.id))
            if late > STUCK_S and slot.handle is not None:
                log.warning("actor %s owes an answer %.0f s past its deadline: replacing it", slot.label, late)
                slot.handle.kill()
        for slot in respawn:
            self._respawn(slot)
        for slot in stale:
            self._rehome_queue(slot, f"actor {slot.label} has not started within {self.start_timeout:g} s: "
                               f"{slot.last_error or 'waiting for resources'}")
        # A ready actor with room and nothing of its own may steal from those that cannot send.
        if self.steal:
            for slot in self._slots:
                if slot.state == READY and len(slot.in_flight) < slot.credits:
                    self._pump(slot)

    # --- inspection -------------------------------------------------------------------------

    def engine(self, name: str | None = None) -> ClusterRuntime:
        """Wait until every actor has started its engine (the first call of a server, so a
        backend that cannot start fails it); raises if none could start. Once one is ready,
        others still waiting (for resources Ray does not have yet) are waited for at most
        ``PENDING_GRACE_S`` more: they join when Ray places them."""
        t0 = time.monotonic()
        end = t0 + self.start_timeout
        with self._lock:
            while any(s.state == STARTING for s in self._slots) and not self._closing:
                now = time.monotonic()
                if now >= end or (any(s.state == READY for s in self._slots) and now - t0 > PENDING_GRACE_S):
                    break
                self._idle.wait(min(end - now, 0.5))
            if not any(s.state == READY for s in self._slots):
                errors = "; ".join(f"{s.label}: {s.last_error or 'still starting'}" for s in self._slots)
                raise BackendUnavailable(self.backend.name, f"no engine actor started ({errors})"[:1000])
            pending = [s.label for s in self._slots if s.state == STARTING]
        if pending:
            log.warning("%d of %d engine actors are not placed yet (the cluster lacks %s for them): %s",
                        len(pending), len(self._slots), self.placement.ray_options(), ", ".join(pending))
        return self

    def actors(self) -> list[ActorInfo]:
        """Every actor position: state, node, load, what it ran, recent affinity keys."""
        with self._lock:
            return [ActorInfo(s.index, s.label, s.state, s.node, s.generation, s.restarts, len(s.queue),
                              len(s.in_flight), s.ran, tuple(s.recent), s.handle.raw if s.handle else None,
                              s.last_error) for s in self._slots]

    def actor_stats(self, timeout: float = 10.0) -> list[dict[str, Any] | None]:
        """Each ready actor's own account (engine metrics, installed specs, blobs)."""
        futures = [s.handle.stats() if s.handle is not None and s.state == READY else None for s in self._slots]
        out: list[dict[str, Any] | None] = []
        for fut in futures:
            try:
                out.append(fut.result(timeout) if fut is not None else None)
            except Exception:
                out.append(None)
        return out

    def active(self, tenant: str | None = None) -> int | dict[tuple[str, str], int]:
        """Admitted, unsettled invocations of ``tenant``; without one, by (actor, tenant)."""
        with self._lock:
            if tenant is not None:
                return self._active.get(tenant, 0)
            out: dict[tuple[str, str], int] = {}
            for slot in self._slots:
                for job in slot.in_flight.values():
                    out[(slot.label, job.tenant)] = out.get((slot.label, job.tenant), 0) + 1
                for name in list(self._active):
                    depth = slot.queue.depth(name)
                    if depth:
                        out[(slot.label, name)] = out.get((slot.label, name), 0) + depth
            return out

    def metrics(self) -> list[dict[str, Any]]:
        return self.dispatcher.metrics()

    # --- lifecycle --------------------------------------------------------------------------

    def close(self, drain: bool = True, timeout: float | None = 30.0) -> None:
        """Stop taking invocations; with ``drain``, let queued and running ones finish (up to
        ``timeout``); then fail what is left (queued: ``EngineClosed``; running:
        ``WorkerLost``, as it may have run), stop the actors and, if it started Ray, Ray."""
        with self._lock:
            if self._closing and not self._thread.is_alive():
                return
            self._closing = True
            if drain:
                end = time.monotonic() + (timeout if timeout is not None else 1e9)
                while any(s.load for s in self._slots if s.state in (READY, STARTING)):
                    remaining = end - time.monotonic()
                    if remaining <= 0:
                        break
                    self._idle.wait(min(remaining, 0.25))
            queued: list[_Job] = []
            for slot in self._slots:
                queued.extend(slot.queue.close())
        for job in queued:
            self._finish(job, None, EngineClosed("cluster runtime closed before the invocation started"))
        closes = []
        for slot in self._slots:
            if slot.handle is not None and slot.state in (READY, STARTING):
                closes.append((slot, slot.handle.close(False, 5.0)))
        for _slot, fut in closes:
            try:
                fut.result(10.0)
            except Exception:
                pass
        with self._lock:
            left = [job for s in self._slots for job in s.in_flight.values()]
            for slot in self._slots:
                slot.state = CLOSED
        for job in left:
            self._finish(job, None, WorkerLost("cluster runtime closed while the invocation was running; it may "
                                               "have run", invocation=job.inv.id))
        for slot, _ in closes:
            if slot.handle is not None:
                slot.handle.kill()
        self._events.put(("stop",))
        self._thread.join(10)
        self.transport.shutdown()
        self.local.close(drain=False, timeout=5.0)

    def __enter__(self) -> ClusterRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _affinity_key(spec: FunctionSpec) -> str:
    return spec.tenant + "/" + ",".join(sorted({ref.sha256 for ref in spec.libraries.values()}))


def _lost_error(slot: _Slot, job: _Job, reason: str) -> WorkerLost:
    return WorkerLost(f"actor {slot.label} (node {str(slot.node)[:12]}) was lost after the invocation was sent to "
                      f"it, so it may have run; it was not run again (at most once): {reason}",
                      worker=slot.index, invocation=job.inv.id)


def _failed(exc: BaseException) -> Future[Any]:
    fut: Future[Any] = Future()
    fut.set_exception(exc)
    return fut
