"""The sequential engine (thesis 4.3, ``gpu_thread``): one device, one invocation at a time.

One thread owns the executor and runs invocations in queue order. A watchdog thread enforces
deadlines: at the deadline it asks the device to abort; if the device does not come back within
``abort_grace`` the invocation is settled anyway and the engine declares itself unhealthy (a
thread cannot be killed) so the dispatcher replaces it. After a fault the executor resets its
device, or is replaced in place by a fresh one.
"""

from __future__ import annotations

import logging
import threading
import time

from ..errors import DeadlineExceeded, DeviceError, KernelFault, PappusError
from ..host_access import refuse_in_serving_process
from ..interfaces import Backend
from .base import DriverLock, EngineBase, EngineOptions
from .executor import Executor
from .invocation import SETTLE_GRACE, Invocation, wait_for

log = logging.getLogger("pappus.engine")


class SequentialEngine(EngineBase):
    kind = "sequential"

    def __init__(self, backend: Backend, options: EngineOptions) -> None:
        super().__init__(backend, options)
        self.executor = Executor(self.device_spec.create, options.executor_config(share=1))
        self._current: Invocation | None = None
        self._deadline_at: float | None = None
        self._timed_out: set[str] = set()
        self._watch = threading.Condition()
        self._watch_until: float | None = None  # when the watchdog wakes by itself (None: never)
        self._driver = DriverLock()  # the engine thread, or a caller while the engine is idle
        self._thread = threading.Thread(target=self._main, name=f"pappus-{self.name}", daemon=True)
        self._watchdog = threading.Thread(target=self._watch_main, name=f"pappus-{self.name}-watchdog", daemon=True)
        self._thread.start()
        self._watchdog.start()

    @property
    def capacity(self) -> int:
        return self.executor.capacity

    @property
    def workers(self) -> int:
        return 1

    # --- the engine thread ------------------------------------------------------------------

    def _start_device(self) -> None:
        """Open the device in this (the serving) process; refuse one whose kernels reach host memory."""
        info = self.executor.start()
        try:
            refuse_in_serving_process(info.details, device=info.name, engine=self.name)
        except DeviceError:
            self.executor.close()
            raise

    def _main(self) -> None:
        try:
            self._start_device()
        except BaseException as exc:  # report start failures to whoever waits
            self.start_error = exc if isinstance(exc, PappusError) else DeviceError(f"device failed to start: {exc}")
            self.started.set()
            self.mark_unhealthy(str(exc))
            return
        self.started.set()
        while True:
            inv = self.queue.get()
            if inv is None:
                break
            if not inv.future.set_running_or_notify_cancel():
                continue
            with self._driver.engine_turn():
                self._drive(inv)
            if not self.healthy and not self._closed:
                break
        with self._driver:
            self.executor.close()

    def _run_here(self, invocation: Invocation) -> bool:
        # Only where an abort ends a run at once: a kernel hung past its deadline must not keep
        # the caller's thread (the engine thread it would otherwise keep is replaced instead).
        device = self.executor.device
        if device is None or not device.abort_ends_run or not self._driver.try_acquire():
            return False
        try:
            if self.queue.closed or not self.healthy or self.executor.device is not device:
                return False
            self._count_submitted()
            if invocation.future.set_running_or_notify_cancel():
                self._drive(invocation)
            return True
        finally:
            self._driver.release()

    def _drive(self, inv: Invocation) -> None:
        """Run ``inv`` (the caller holds ``_driver``) and settle it, whatever happens."""
        try:
            self._run(inv)
        except Exception as exc:  # never let an invocation go unsettled, nor the engine thread die
            log.exception("engine %s: internal error running %s", self.name, inv.id)
            self.finish(inv, None, DeviceError(f"internal error: {type(exc).__name__}: {exc}"))
        except BaseException:  # a caller's thread interrupted (KeyboardInterrupt) mid-invocation
            self.finish(inv, None, DeviceError(f"the caller was interrupted while {inv.function.name!r} ran"))
            self._replace_device()  # what the device was doing is unknown
            raise

    def _run(self, inv: Invocation) -> None:
        inv.started = time.monotonic()
        if inv.started >= inv.submitted + inv.deadline:  # expired while queued: never start it
            self.finish(inv, None, DeadlineExceeded(inv.deadline, invocation=inv.id))
            return
        with self._watch:
            self._current = inv
            self._deadline_at = inv.submitted + inv.deadline
            # Wake the watchdog only if it would otherwise sleep past this deadline: back to back
            # invocations with similar deadlines then cost no thread switch each.
            if self._watch_until is None or self._deadline_at < self._watch_until:
                self._watch.notify()
        error: BaseException | None = None
        outputs = None
        with self.metrics.lock:
            self.metrics.in_flight += 1
        loads = self.executor.cold
        try:
            outputs = self.executor.execute(inv.function, inv.inputs, resolution=inv.resolution, invocation_id=inv.id)
        except PappusError as exc:
            error = exc
        except Exception as exc:  # never let an invocation go unsettled
            log.exception("internal error running %s", inv.id)
            error = DeviceError(f"internal error: {type(exc).__name__}: {exc}")
        finally:
            inv.cold = self.executor.cold > loads
            with self._watch:
                self._current = None
                self._deadline_at = None
                timed_out = inv.id in self._timed_out
                self._timed_out.discard(inv.id)
            with self.metrics.lock:
                self.metrics.in_flight -= 1
        if timed_out:
            outputs, error = None, DeadlineExceeded(inv.deadline, invocation=inv.id,
                                                    kernel=getattr(error, "fields", {}).get("kernel"))
        self.finish(inv, outputs, error)
        try:
            self.executor.release_pending()  # zeroing after the caller has its outputs
        except Exception as exc:
            log.warning("engine %s: zeroing the pool failed (%s); replacing its device", self.name, exc)
            self._replace_device()
            return
        if isinstance(error, (KernelFault, DeadlineExceeded, DeviceError)):
            self._recover()

    def _recover(self) -> None:
        if self.executor.recover():
            return
        log.info("engine %s: replacing its device after a fault", self.name)
        self._replace_device()

    def _replace_device(self) -> None:
        self.executor.close()
        try:
            self._start_device()
        except Exception as exc:
            self.mark_unhealthy(f"device could not be restarted: {exc}")

    # --- the watchdog -----------------------------------------------------------------------

    def _watch_main(self) -> None:
        while True:
            with self._watch:
                while not self._closed and (self._deadline_at is None or time.monotonic() < self._deadline_at):
                    # Clamped: a huge deadline must not overflow the wait and kill the watchdog.
                    now = time.monotonic()
                    timeout = None if self._deadline_at is None else wait_for(self._deadline_at, now)
                    self._watch_until = None if timeout is None else now + timeout
                    self._watch.wait(timeout)
                self._watch_until = None
                if self._closed and self._current is None:
                    return
                inv = self._current
                if inv is None:
                    continue
                self._timed_out.add(inv.id)
                self._deadline_at = None
            self._abort(inv)

    def _abort(self, inv: Invocation) -> None:
        # The caller learns at the deadline, not after the device has been dealt with: a run the
        # abort ends at once is settled by its own thread, naming the kernel stopped; otherwise
        # it is settled here, SETTLE_GRACE after the deadline at the latest.
        device = self.executor.device
        stops = True
        try:
            if device is not None:
                device.abort()
        except NotImplementedError:
            stops = False
        except Exception:
            log.warning("abort failed on %s", self.name, exc_info=True)
        if stops and self._ended(inv, SETTLE_GRACE):
            return
        self.finish(inv, None, DeadlineExceeded(inv.deadline, invocation=inv.id))
        if not self._ended(inv, self.options.abort_grace):
            # The device did not stop and a thread cannot be killed: take this engine out of
            # service (what is still queued moves to its replacement).
            self.mark_unhealthy(f"a kernel did not stop within {self.options.abort_grace} s of its deadline")

    def _ended(self, inv: Invocation, within: float) -> bool:
        """Whether the run of ``inv`` ends within ``within`` seconds."""
        end = time.monotonic() + within
        while True:
            with self._watch:
                if self._current is not inv:
                    return True
            if time.monotonic() >= end:
                return False
            time.sleep(0.002)

    # --- shutdown ---------------------------------------------------------------------------

    def close(self, drain: bool = True, timeout: float | None = 30.0) -> None:
        if self._closed:
            return
        if drain:
            self.queue.mark_closed()
        else:
            self.fail_queued(f"engine {self.name} closed")
        self._thread.join(timeout)
        self._closed = True
        with self._watch:
            self._watch.notify_all()
        self.fail_queued(f"engine {self.name} closed")
        if self._thread.is_alive():
            # Stuck in a kernel that would not stop: close the device under it, so whatever it
            # runs (a sandboxed child, a GPU context) goes too instead of running on unowned.
            log.warning("engine %s: thread still busy at close; closing its device", self.name)
            self.executor.close()
