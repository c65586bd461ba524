"""The multiprocess engine (thesis 4.4, ``gpu_process``), with the supervision the thesis lacked.

N worker processes share one device, each with its own DeviceAPI instance and 1/N of device
memory. Each worker has a supervisor thread here that feeds it from the engine's fair queue,
copies inputs into the worker's shared arena, and waits for the reply, the worker's death, or
the deadline. A worker that dies, hangs or cannot recover from a fault is killed if needed and
respawned from the forkserver template; only its in-flight invocation fails, with the cause.
Its pool memory goes with the process, so no other tenant can reach it. With
``spare_workers``, workers started ahead wait in reserve and a dead worker's slot takes one at
once (``_SpareKeeper``), so a respawn does not wait for a new process to open the device.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import pickle
import select
import signal
import socket
import struct
import threading
import time
from collections import deque
from multiprocessing import connection, reduction
from typing import Any

from .. import landlock
from ..errors import (
    DeadlineExceeded,
    DeviceError,
    EngineClosed,
    KernelFault,
    PappusError,
    WorkerLost,
)
from ..interfaces import Backend
from ..memory import ArenaContext, SharedArena
from . import lockdown, replies
from .base import DriverLock, EngineBase, EngineOptions
from .invocation import MAX_WAIT, SETTLE_GRACE, Invocation, wait_for
from .zygote import Zygote

log = logging.getLogger("pappus.engine")

START_TIMEOUT = 120.0  # a first start may compile a device runtime
IDLE_CHECK = 0.05  # how often an idle supervisor thread checks that its worker is alive
HEADER_BYTES = 64  # start of each arena: the sequence number of the run the worker last picked up
_HANDED_OVER = "handed over"  # an _attempt cause: the supervisor thread finishes with the worker
_FATAL_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT, signal.SIGTRAP}

def _signal_name(code: int | None) -> str | None:
    if code is None or code >= 0:
        return None
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _ended_by(error: PappusError) -> str | None:
    """What ended a lost worker, in a respawn's ``cause``: its signal or its exit code."""
    if error.fields.get("signal"):
        return str(error.fields["signal"])
    code = error.fields.get("exitcode")
    return None if code is None else f"exit code {code}"


def poll_until(conn: connection.Connection, deadline_at: float) -> bool:
    """Wait for a message (or the end of the pipe) until ``deadline_at``, in waits of at most
    ``MAX_WAIT`` (a huge deadline must not overflow a poll timeout); True if one came.

    A ``select.poll`` of the connection's descriptor, not ``Connection.poll``: the standard
    library's builds a selector per call (5 us here, 1.4 us this way), on every invocation's
    path. ``fileno()`` raises OSError on a closed connection, as ``Connection.poll`` does."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    while True:
        timeout = wait_for(deadline_at, time.monotonic())
        if poller.poll(math.ceil(timeout * 1000)):  # also POLLHUP/POLLERR: the read then says why
            return True
        if timeout < MAX_WAIT:
            return False


def start_steps(details: dict[str, Any], asked_at: float, ready_at: float, served_at: float) -> dict[str, float]:
    """A worker's start, step by step, in seconds (``fork``, its own steps, ``handshake``,
    ``total``): what a respawn spends its time on. The worker's part is its own report, so only
    numbers that fit inside the time the supervisor saw pass, and a handful of them at most."""
    steps: dict[str, float] = {}
    started_at = details.get("started_at")
    if isinstance(started_at, float) and asked_at <= started_at <= ready_at:
        steps["fork"] = started_at - asked_at
    reported = details.get("start_seconds")
    if isinstance(reported, dict):
        for name, seconds in list(reported.items())[:16]:
            if (isinstance(name, str) and len(name) <= 32 and isinstance(seconds, (int, float))
                    and not isinstance(seconds, bool) and 0 <= seconds <= ready_at - asked_at):
                steps[name] = float(seconds)
    steps["handshake"] = served_at - ready_at
    steps["total"] = served_at - asked_at
    return steps


class _Worker:
    """One live worker process as its supervisor thread sees it."""

    def __init__(self, engine: MultiprocessEngine, index: int) -> None:
        self.engine = engine
        self.index = index
        self.conn: connection.Connection | None = None
        self.arena: SharedArena | None = None
        self.pid: int | None = None
        self.capacity = 0
        self.heap_limit: int | None = None
        self.details: dict[str, Any] = {}  # the device details its worker reported at start
        self.start_steps: dict[str, float] = {}  # its last start, step by step (``start_steps``)
        self.reaped_in: float | None = None  # seconds its last kill took, until the process was gone
        self.known: set[str] = set()
        self.current: str | None = None  # id of the invocation this worker runs now
        self.seq = 0
        self.driver = DriverLock()  # its supervisor thread, or a caller while the worker is idle
        #: An invocation a caller's thread gave up on at its deadline, with its arena context:
        #: its worker may still run it, so nobody else may use the worker until the supervisor
        #: thread has dealt with it (grace, kill, respawn) as its driver.
        self.handed_over: tuple[Invocation, ArenaContext] | None = None

    @property
    def alive(self) -> bool:
        return self.conn is not None

    def spawn(self) -> None:
        asked_at = time.monotonic()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        cfg = self.engine.options.executor_config(share=self.engine.processes)
        try:
            self.pid = self.engine.zygote.spawn("pappus.engine.worker:worker_main", [theirs.fileno()],
                                                (self.engine.device_spec, cfg, self.index,
                                                 self.engine.backend.worker_keeps, lockdown.enabled()))
        finally:
            theirs.close()
        conn = connection.Connection(ours.detach())
        self.conn = conn
        try:
            if not conn.poll(START_TIMEOUT):
                raise DeviceError(f"worker {self.index} did not start within {START_TIMEOUT:g} s")
            try:
                msg = replies.receive(conn)
            except (EOFError, OSError):
                code = self.engine.zygote.wait_exit(self.pid, 5.0)
                raise DeviceError(f"worker {self.index} exited during start-up (exit code {code})") from None
            except replies.ProtocolError as exc:
                raise DeviceError(f"worker {self.index} answered its start with a malformed reply: {exc}",
                                  status="protocol_error") from None
            if isinstance(msg, replies.StartFailed):
                raise msg.error
            if not isinstance(msg, replies.Ready):
                raise DeviceError(f"worker {self.index} answered its start with {type(msg).__name__}",
                                  status="protocol_error")
            ready_at = time.monotonic()
            self.capacity, self.heap_limit = msg.capacity, msg.heap_limit
            self.details = msg.details
            self.engine.note_lockdown(self.index, msg.details.get("worker_lockdown"))
            arena_size = 2 * self.capacity + 2 * 1024 * 1024
            self.arena = SharedArena(arena_size, name=f"pappus-{self.engine.name}-{self.index}")
            conn.send(arena_size)
            reduction.send_handle(conn, self.arena.fd, self.pid)
            self.known = set()
            self.start_steps = start_steps(msg.details, asked_at, ready_at, time.monotonic())
        except BaseException:
            self.kill()
            raise

    def exitcode(self, timeout: float = 2.0) -> int | None:
        if self.pid is None:
            return None
        return self.engine.zygote.wait_exit(self.pid, timeout)

    def kill(self) -> None:
        pid, self.pid = self.pid, None
        if pid is not None:
            started = time.monotonic()
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.engine.zygote.wait_exit(pid, 5.0)
            self.engine.zygote.forget(pid)
            self.reaped_in = time.monotonic() - started
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.arena is not None:
            self.arena.close()
            self.arena = None

    def adopt(self, spare: _Worker) -> None:
        """Take over ``spare``'s started worker process (this slot's own has been killed)."""
        self.conn, self.arena, self.pid = spare.conn, spare.arena, spare.pid
        spare.conn, spare.arena, spare.pid = None, None, None
        self.capacity, self.heap_limit, self.details = spare.capacity, spare.heap_limit, spare.details
        self.start_steps = spare.start_steps
        self.known = set()

    def stop(self, timeout: float = 5.0) -> None:
        if self.conn is not None and self.pid is not None:
            try:
                self.conn.send(("exit",))
                self.engine.zygote.wait_exit(self.pid, timeout)
            except (OSError, ValueError):
                pass
        self.kill()


class MultiprocessEngine(EngineBase):
    kind = "multiprocess"

    def __init__(self, backend: Backend, options: EngineOptions) -> None:
        super().__init__(backend, options)
        if options.workers < 1:
            raise ValueError("a multiprocess engine needs at least one worker")
        if options.spare_workers < 0:
            raise ValueError(f"spare_workers must be 0 or more, not {options.spare_workers}")
        unknown = lockdown.unknown_keeps(backend.worker_keeps)
        if unknown:
            raise ValueError(f"backend {backend.name!r}: worker_keeps names {', '.join(unknown)}, which the worker "
                             f"lockdown does not deny (it denies {', '.join(lockdown.DENIED_CALLS)} and socket, "
                             f"and scopes {', '.join(landlock.SCOPES)})")
        factory_module = self.device_spec.factory.partition(":")[0]
        self.zygote = Zygote(["numpy", "pappus.engine.worker", factory_module, "pappus.engine.lockdown:prepare"],
                             name=f"pappus-{self.name}")
        self.slots = [_Worker(self, i) for i in range(options.workers)]
        self._threads = [threading.Thread(target=self._slot_main, args=(slot,), daemon=True,
                                          name=f"pappus-{self.name}-sup{slot.index}") for slot in self.slots]
        self._started_count = 0
        self._start_lock = threading.Lock()
        #: The last 1,000 respawns, each step by step (``start_steps``).
        self.respawn_steps: deque[dict[str, float]] = deque(maxlen=1000)
        self._warned_unlocked = False
        self.spares = _SpareKeeper(self, options.spare_workers)
        for t in self._threads:
            t.start()
        self.spares.start()

    @property
    def workers(self) -> int:
        return len(self.slots)

    @property
    def processes(self) -> int:
        """Worker processes this engine keeps: its workers and its spares (each takes a pool share)."""
        return len(self.slots) + self.spares.wanted

    @property
    def respawn_times(self) -> list[float]:
        """Seconds each of the last 1,000 respawns took, from asking the zygote (or the spares) until
        the worker serves."""
        return [steps["total"] for steps in self.respawn_steps]

    @property
    def capacity(self) -> int:
        caps = [s.capacity for s in self.slots if s.capacity]
        return min(caps) if caps else 0

    def worker_pids(self) -> list[int | None]:
        return [s.pid for s in self.slots]

    # --- supervisor thread per worker --------------------------------------------------------

    def note_lockdown(self, index: int, state: object) -> None:
        """Warn once per engine when a worker serves without its lockdown (``lockdown.py``)."""
        if isinstance(state, str) and state.startswith("off") and not self._warned_unlocked:
            self._warned_unlocked = True
            log.warning("engine %s: worker %d is not locked down (%.200s)", self.name, index, state[5:])

    def _slot_main(self, slot: _Worker) -> None:
        with slot.driver:
            try:
                slot.spawn()
            except BaseException as exc:
                log.warning("engine %s: worker %d failed to start", self.name, slot.index, exc_info=True)
                err = exc if isinstance(exc, PappusError) else DeviceError(f"worker failed to start: {exc!r}")
                self.start_error = err
                self.started.set()
                self.mark_unhealthy(str(err))
                return
        with self._start_lock:
            self._started_count += 1
            if self._started_count == len(self.slots):
                self.started.set()
        failures = 0
        while True:
            if slot.handed_over is not None:
                with slot.driver:
                    self._after_handover(slot)
            if not slot.alive:
                if self.queue.closed and not len(self.queue):
                    break
                with slot.driver:
                    respawned = slot.alive or self._respawn(slot, "previous worker ended")
                if not respawned:
                    failures += 1
                    if failures >= 5:
                        self.mark_unhealthy(f"worker {slot.index} cannot be respawned")
                        break
                    time.sleep(min(2.0, 0.05 * 2 ** failures))
                    continue
                failures = 0
            inv = self.queue.get(timeout=IDLE_CHECK)
            if inv is None:
                if self.queue.closed and not len(self.queue):
                    break
                if slot.driver.try_acquire():  # else a caller drives it: it is not idle
                    try:
                        self._after_handover(slot)
                        if slot.conn is not None and slot.conn.poll(0):  # an idle worker spoke: it died
                            slot.kill()
                            self._respawn(slot, "worker died while idle")
                    finally:
                        slot.driver.release()
                continue
            if not inv.future.set_running_or_notify_cancel():
                continue
            with slot.driver.engine_turn():
                self._after_handover(slot)
                self._drive(slot, inv)
        with slot.driver:
            self._after_handover(slot)
            slot.stop()

    def _run_here(self, invocation: Invocation) -> bool:
        for slot in self.slots:
            if not slot.alive or not slot.driver.try_acquire():
                continue
            try:
                if not slot.alive or slot.handed_over is not None or self.queue.closed:
                    continue
                self._count_submitted()
                if invocation.future.set_running_or_notify_cancel():
                    self._drive(slot, invocation, here=True)
                return True
            finally:
                slot.driver.release()
        return False

    def _drive(self, slot: _Worker, inv: Invocation, here: bool = False) -> None:
        """Run ``inv`` on ``slot`` (whose driver the caller holds) and settle it, whatever happens."""
        try:
            self._run(slot, inv, here)
        except Exception as exc:  # never let an invocation go unsettled, nor the thread die
            log.exception("engine %s: internal error running %s", self.name, inv.id)
            self.finish(inv, None, DeviceError(f"internal error: {type(exc).__name__}: {exc}"))
            slot.kill()  # its state is unknown: the supervisor loop respawns it
        except BaseException:  # a caller's thread interrupted (KeyboardInterrupt) mid-invocation
            self.finish(inv, None, WorkerLost(f"the caller was interrupted while worker {slot.index} ran "
                                              f"{inv.function.name!r}", worker=slot.index, invocation=inv.id))
            slot.kill()
            raise

    def _respawn(self, slot: _Worker, cause: str) -> bool:
        try:
            if not self.spares.hand_to(slot):
                slot.spawn()
        except Exception:
            log.warning("engine %s: respawning worker %d failed", self.name, slot.index, exc_info=True)
            return False
        seconds = slot.start_steps["total"]
        with self.metrics.lock:
            self.metrics.respawns += 1
        reaped, slot.reaped_in = slot.reaped_in, None  # the old process's end, before the new one's start
        self.respawn_steps.append(slot.start_steps if reaped is None else {"reap": reaped, **slot.start_steps})
        self.plugins.notify("pappus_worker_respawned", engine=self.name, worker=slot.index, cause=cause,
                            seconds=seconds)
        return True

    def _run(self, slot: _Worker, inv: Invocation, here: bool = False) -> None:
        inv.started = time.monotonic()
        deadline_at = inv.submitted + inv.deadline
        if inv.started >= deadline_at:
            self.finish(inv, None, DeadlineExceeded(inv.deadline, invocation=inv.id))
            return
        if not slot.alive and not self._respawn(slot, "previous worker ended"):  # ended by a caller's thread
            self.finish(inv, None, WorkerLost(f"worker {slot.index} could not be restarted", worker=slot.index,
                                              invocation=inv.id))
            return
        with self.metrics.lock:
            self.metrics.in_flight += 1
        slot.current = inv.id
        ctx: ArenaContext | None = None
        try:
            for attempt in (1, 2):
                if ctx is not None:
                    ctx.release()
                outputs, error, cause, started, ctx = self._attempt(slot, inv, deadline_at, here)
                if cause == _HANDED_OVER:
                    slot.handed_over = (inv, ctx)
                    self.queue.wake()  # the supervisor thread takes over the worker now
                    return
                if not cause:
                    break
                # A worker that died before it picked this invocation up: its replacement runs it.
                retry = attempt == 1 and not started and not cause.startswith("internal")
                self._replace(slot, cause, even_if_closing=retry)
                if not (retry and slot.alive):
                    break
        except BaseException:
            if ctx is not None:
                ctx.release()
            raise
        finally:
            if slot.handed_over is None:
                slot.current = None
            with self.metrics.lock:
                self.metrics.in_flight -= 1
        try:
            self.finish(inv, outputs, error)
        finally:
            assert ctx is not None  # the loop ran at least once
            ctx.release()  # zeroing the arena once the caller has its outputs, before its reuse

    def _replace(self, slot: _Worker, cause: str, even_if_closing: bool = False) -> None:
        """Kill the worker and start its replacement (unless the engine is draining away)."""
        slot.kill()
        if even_if_closing or not self.queue.closed or len(self.queue):
            self._respawn(slot, cause)

    def _attempt(self, slot: _Worker, inv: Invocation, deadline_at: float, here: bool = False
                 ) -> tuple[dict[str, bytes] | None, BaseException | None, str, bool, ArenaContext]:
        """One try on one worker: (outputs, error, why the worker must go, whether it started,
        the arena context, which the caller releases). On a caller's thread (``here``) the
        wait past the deadline is left to the supervisor thread (cause ``_HANDED_OVER``)."""
        assert slot.arena is not None and slot.conn is not None
        ctx = ArenaContext(slot.arena, HEADER_BYTES)
        slot.seq += 1
        seq = slot.seq
        outputs: dict[str, bytes] | None = None
        error: BaseException | None = None
        cause = ""
        try:
            for name in inv.function.config.blueprint.input_names:
                ctx.write("inputs", name, inv.inputs[name])
            for name in inv.function.config.blueprint.outputs:
                ctx.reserve("outputs", name, inv.resolution.sizes[name])
            key = inv.function.key
            spec = None if key in slot.known else inv.function
            # pickle.dumps, not Connection.send's ForkingPickler (2 us more per message): the
            # message holds no descriptors or connections, which are what the latter adds.
            slot.conn.send_bytes(pickle.dumps(("run", inv.id, key, spec, ctx.layout("inputs"),
                                               ctx.layout("outputs"), deadline_at, inv.deadline, seq),
                                              pickle.HIGHEST_PROTOCOL))
            slot.known.add(key)
            # At the deadline the worker's watchdog aborts its device; where that ends the run at
            # once, the worker's answer (SETTLE_GRACE later at most) names the kernel it stopped.
            if poll_until(slot.conn, deadline_at + SETTLE_GRACE):
                outputs, error, cause = self._receive(slot, inv, ctx)
            else:
                # Past the deadline: the caller learns now. If the worker does not answer within
                # the abort grace, it is killed and replaced.
                error = DeadlineExceeded(inv.deadline, invocation=inv.id)
                self.finish(inv, None, error)
                cause = _HANDED_OVER if here else self._after_deadline(slot, inv, ctx)
        except PappusError as exc:
            error = exc
        except (OSError, EOFError, ValueError) as exc:  # the pipe broke: the worker is gone
            error = self._lost(slot, inv)
            cause = _ended_by(error) or f"pipe: {exc}"
        except Exception as exc:  # a bug here: settle with it; the worker's state is unknown
            log.exception("engine %s: internal error running %s", self.name, inv.id)
            error = DeviceError(f"internal error: {type(exc).__name__}: {exc}")
            cause = f"internal error: {type(exc).__name__}"
        started = struct.unpack_from("<Q", slot.arena.view, 0)[0] == seq
        return outputs, error, cause, started, ctx

    def _after_deadline(self, slot: _Worker, inv: Invocation, ctx: ArenaContext) -> str:
        """After an invocation's deadline: give the worker ``abort_grace`` to answer (its
        watchdog aborts the device); returns why it must be replaced, "" if it recovered."""
        assert slot.conn is not None
        try:
            if slot.conn.poll(self.options.abort_grace):
                return self._receive(slot, inv, ctx)[2]
        except (OSError, EOFError, ValueError) as exc:
            return f"pipe: {exc}"
        return "deadline"

    def _after_handover(self, slot: _Worker) -> None:
        """The supervisor thread's part (as the worker's driver) of an invocation a caller's thread
        gave up on at its deadline, if any: the grace, then the worker's replacement if needed."""
        if slot.handed_over is None:
            return
        inv, ctx = slot.handed_over
        try:
            cause = self._after_deadline(slot, inv, ctx)
            if cause:
                self._replace(slot, cause)
        except Exception:
            log.exception("engine %s: internal error after the deadline of %s", self.name, inv.id)
            slot.kill()
        finally:
            ctx.release()
            slot.current = None
            slot.handed_over = None

    def _receive(self, slot: _Worker, inv: Invocation,
                 ctx: ArenaContext) -> tuple[dict[str, bytes] | None, BaseException | None, str]:
        """Read the worker's answer; the third item names why the worker must be replaced, if so."""
        assert slot.conn is not None
        try:
            msg = replies.receive(slot.conn)
        except (EOFError, OSError):
            error = self._lost(slot, inv)
            return None, error, _ended_by(error) or "worker died"
        except replies.ProtocolError as exc:
            return None, self._malformed(slot, inv, str(exc)), "protocol error"
        if isinstance(msg, replies.Done) and msg.invocation == inv.id:
            inv.cold = msg.cold
            return {name: bytes(view) for name, view in ctx.items("outputs").items()}, None, ""
        if isinstance(msg, replies.Failed) and msg.invocation == inv.id:
            return None, msg.error, ("device could not recover: " + msg.error.code) if msg.fatal else ""
        return None, self._malformed(slot, inv, f"a {type(msg).__name__} reply out of turn"), "protocol error"

    def _malformed(self, slot: _Worker, inv: Invocation, what: str) -> PappusError:
        log.warning("engine %s: worker %d broke the reply protocol (%s) while running %s; it is replaced",
                    self.name, slot.index, what, inv.id)
        return DeviceError(f"worker {slot.index} sent a malformed reply while running {inv.function.name!r} "
                           f"({what}); it is replaced", status="protocol_error", worker=slot.index,
                           invocation=inv.id)

    def _lost(self, slot: _Worker, inv: Invocation) -> PappusError:
        code = slot.exitcode(2.0)
        sig = _signal_name(code)
        if code is not None and code < 0 and signal.Signals(-code) in _FATAL_SIGNALS:
            return KernelFault(f"worker {slot.index} crashed with {sig} while running {inv.function.name!r}",
                               invocation=inv.id, signal=sig, worker=slot.index)
        how = f"was killed by {sig}" if sig else f"exited with code {code}"
        return WorkerLost(f"worker {slot.index} {how} while running {inv.function.name!r}",
                          worker=slot.index, exitcode=code, signal=sig, invocation=inv.id)

    # --- shutdown ---------------------------------------------------------------------------

    def close(self, drain: bool = True, timeout: float | None = 30.0) -> None:
        if self._closed:
            return
        if drain:
            self.queue.mark_closed()
        else:
            self.fail_queued(f"engine {self.name} closed")
        end = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if end is None else max(0.0, end - time.monotonic()))
        self._closed = True
        self.fail_queued(f"engine {self.name} closed")
        for slot, t in zip(self.slots, self._threads, strict=True):
            if t.is_alive():  # still busy past the timeout: stop it hard
                slot.kill()
        for t in self._threads:
            t.join(5)
        self.spares.close()
        self.zygote.close()


class _SpareKeeper:
    """Keeps ``wanted`` started workers in reserve, from its own thread, and hands one to a slot
    whose worker has gone (``hand_to``). A spare is a worker like any other (opened, pool
    reserved, locked down, arena handed over) that has not served yet; one that speaks or dies
    while waiting is replaced, never handed out."""

    def __init__(self, engine: MultiprocessEngine, wanted: int) -> None:
        self.engine = engine
        self.wanted = wanted
        self._ready: list[_Worker] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._next_index = len(engine.slots)  # spares are numbered after the slots, never reused
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.wanted:
            self._thread = threading.Thread(target=self._main, daemon=True, name=f"pappus-{self.engine.name}-spares")
            self._thread.start()

    def pids(self) -> list[int]:
        with self._lock:
            return [w.pid for w in self._ready if w.pid is not None]

    def hand_to(self, slot: _Worker) -> bool:
        """Give ``slot`` (whose process is gone) a waiting spare; False if none is ready."""
        while True:
            with self._lock:
                if not self._ready:
                    return False
                spare = self._ready.pop(0)
            self._wake.set()  # start its replacement now
            asked_at = time.monotonic()
            if self._gone(spare):
                spare.kill()
                continue
            slot.adopt(spare)
            handed = time.monotonic() - asked_at
            slot.start_steps = {"spare": handed, "total": handed}
            return True

    @staticmethod
    def _gone(spare: _Worker) -> bool:
        """A waiting worker says nothing until it is asked: one that spoke has died."""
        return spare.conn is None or spare.conn.poll(0)

    def _main(self) -> None:
        failures = 0
        while not self._closing:
            with self._lock:
                dead = [w for w in self._ready if self._gone(w)]
                self._ready = [w for w in self._ready if w not in dead]
                short = self.wanted - len(self._ready)
            for worker in dead:
                worker.kill()
            if short <= 0 or self.engine.queue.closed:
                self._wake.wait(IDLE_CHECK * 10)
                self._wake.clear()
                continue
            spare = _Worker(self.engine, self._next_index)
            self._next_index += 1
            try:
                spare.spawn()
            except Exception:
                failures += 1
                log.warning("engine %s: starting spare worker %d failed", self.engine.name, spare.index,
                            exc_info=True)
                self._wake.wait(min(30.0, 0.05 * 2 ** min(failures, 10)))
                self._wake.clear()
                continue
            failures = 0
            with self._lock:
                keep = not self._closing
                if keep:
                    self._ready.append(spare)
            if not keep:
                spare.stop()

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(START_TIMEOUT)
        with self._lock:
            ready, self._ready = self._ready, []
        for spare in ready:
            spare.stop()


def kill_worker(engine: MultiprocessEngine, index: int, sig: int = signal.SIGKILL) -> int:
    """Send a signal to one worker (tests and chaos drills); returns its pid."""
    pid = engine.slots[index].pid
    if pid is None:
        raise EngineClosed(f"worker {index} is not running")
    os.kill(pid, sig)
    return pid


class WorkerSequentialEngine(MultiprocessEngine):
    """The sequential engine for backends whose faults end the process's use of the device
    (``Backend.faults_end_process``, e.g. CUDA): one invocation at a time on one device with a
    pool over (almost) all its memory, as ``SequentialEngine``, but driven from one worker
    process, so a fault is recovered from by replacing that process; the supervisor never
    touches the device, and a deadline can stop a kernel by ending the worker."""

    kind = "sequential"

    def __init__(self, backend: Backend, options: EngineOptions) -> None:
        super().__init__(backend, dataclasses.replace(options, workers=1))
