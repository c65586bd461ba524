"""The multiprocess worker: one process, one device share, one invocation at a time.

Started from the forkserver template (pappus and the backend already imported), so a respawn is
a fork plus device set-up. Control messages are small tuples on a pipe, and the replies are
never pickled (``replies.py``: the supervisor does not trust a process that runs next to tenant
code); payloads live in a shared arena the supervisor maps too. A watchdog thread aborts the device at an
invocation's deadline; if that does not work the supervisor kills the whole process.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import struct
import threading
import time
from multiprocessing import reduction
from multiprocessing.connection import Connection
from typing import Any

from ..errors import DeadlineExceeded, DeviceError, KernelFault, PappusError
from ..interfaces import DeviceSpec
from ..memory import SharedArena
from . import lockdown, replies
from .executor import Executor, ExecutorConfig
from .invocation import FunctionSpec, wait_for

log = logging.getLogger("pappus.worker")

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class _Watchdog:
    """Calls ``device.abort()`` when the running invocation passes its deadline."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.cond = threading.Condition()
        self.deadline_at: float | None = None
        self.until: float | None = None  # when the watchdog thread wakes by itself (None: never)
        self.fired = False
        threading.Thread(target=self._main, name="pappus-worker-watchdog", daemon=True).start()

    def arm(self, deadline_at: float) -> None:
        with self.cond:
            self.deadline_at = deadline_at
            self.fired = False
            if self.until is None or deadline_at < self.until:  # else it wakes in time by itself
                self.cond.notify()

    def disarm(self) -> bool:
        with self.cond:
            self.deadline_at = None
            return self.fired

    def _main(self) -> None:
        while True:
            with self.cond:
                while self.deadline_at is None or time.monotonic() < self.deadline_at:
                    now = time.monotonic()
                    timeout = None if self.deadline_at is None else wait_for(self.deadline_at, now)
                    self.until = None if timeout is None else now + timeout
                    self.cond.wait(timeout)
                self.until = None
                self.deadline_at = None
                self.fired = True
            device = self.executor.device
            if device is not None:
                try:
                    device.abort()
                except NotImplementedError:
                    pass
                except Exception:
                    log.warning("abort failed", exc_info=True)


def worker_main(fd: int, spec: DeviceSpec, config: ExecutorConfig, index: int, keeps: frozenset[str] = frozenset(),
                locked: bool = True) -> None:
    """Entry point of a worker forked by the zygote; ``fd`` is its control socket. It scopes itself
    before its device opens and locks itself down once it is open (``lockdown.py``), less what is
    in ``keeps``, unless not ``locked``."""
    started_at = time.monotonic()  # CLOCK_MONOTONIC: the supervisor's clock too
    _die_with_parent()
    scoped = lockdown.scope(keeps, enable=locked)  # first: every thread and child inherits it
    steps = {"scope": time.monotonic() - started_at}
    conn = Connection(fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when workers stop
    executor = Executor(spec.create, config)
    try:
        info = executor.start()
    except BaseException as exc:
        err = exc if isinstance(exc, PappusError) else DeviceError(f"device failed to start: {exc}")
        replies.send(conn, replies.StartFailed(err))
        return
    steps.update(executor.start_seconds)
    details = dict(info.details)
    locking = time.monotonic()
    details["worker_lockdown"] = lockdown.lock_down(keeps, enable=locked).describe()
    steps["lockdown"] = time.monotonic() - locking
    details["worker_scope"] = scoped
    details["started_at"] = started_at
    details["start_seconds"] = steps
    replies.send(conn, replies.Ready(os.getpid(), executor.capacity, executor.heap_limit, info.name, details))
    arena_size = conn.recv()
    arena = SharedArena(arena_size, fd=reduction.recv_handle(conn))
    functions: dict[str, FunctionSpec] = {}
    watchdog = _Watchdog(executor)
    try:
        _serve(conn, executor, arena, functions, watchdog)
    finally:
        executor.close()
        arena.close()


def _serve(conn: Connection, executor: Executor, arena: SharedArena, functions: dict[str, FunctionSpec],
           watchdog: _Watchdog) -> None:
    view = arena.view
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] == "exit":
            return
        _, inv_id, key, spec, input_layout, output_layout, deadline_at, deadline, seq = msg
        struct.pack_into("<Q", view, 0, seq)  # tells the supervisor this run was picked up
        if spec is not None:
            functions[key] = spec
        fn = functions[key]
        inputs = {name: view[off:off + n] for name, off, n in input_layout}
        outputs = {name: (off, n) for name, off, n in output_layout}

        def sink(name: str, size: int, outputs: dict[str, tuple[int, int]] = outputs) -> Any:
            off, n = outputs[name]
            if size != n:
                raise DeviceError(f"output {name!r} resolved to {size} bytes here but {n} in the supervisor")
            return view[off:off + n]

        watchdog.arm(deadline_at)
        error: PappusError | None = None
        loads = executor.cold
        try:
            executor.execute(fn, inputs, sink=sink, invocation_id=inv_id)
        except PappusError as exc:
            error = exc
        except Exception as exc:
            log.exception("internal error in worker")
            error = DeviceError(f"internal error in worker: {type(exc).__name__}: {exc}")
        finally:
            fired = watchdog.disarm()
            for v in inputs.values():
                v.release()
        if fired:
            kernel = error.fields.get("kernel") if error else None
            error = DeadlineExceeded(deadline, invocation=inv_id, kernel=kernel)
        fatal = False
        if isinstance(error, (KernelFault, DeadlineExceeded, DeviceError)):
            fatal = not executor.recover()
        if error is None:
            replies.send(conn, replies.Done(inv_id, cold=executor.cold > loads))
            try:
                executor.release_pending()  # zeroing while the supervisor hands the outputs over
            except Exception:
                log.exception("zeroing the pool failed; this worker ends (its replacement starts clean)")
                return
        else:
            replies.send(conn, replies.Failed(inv_id, error, fatal))
        if fatal:
            return  # the supervisor respawns a fresh worker with a fresh device
