"""The dispatcher: picks an engine per invocation, starts engines lazily, replaces broken ones.

Engines are named ``<backend>-<kind>``. ``<backend>-auto`` follows the thesis's rule (5.5): run
on the multiprocess engine when the invocation fits a worker's share of device memory, else on
the sequential engine, which owns all of it. Finished invocations reach observation hooks in
batches from a background thread, never one hook call per invocation.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from .engine import EngineBase, EngineOptions, Invocation, create_engine
from .errors import BackendUnavailable, EngineClosed, PappusError
from .plugins import Plugins

log = logging.getLogger("pappus.dispatcher")

START_TIMEOUT = 180.0


class Dispatcher:
    def __init__(self, plugins: Plugins, options_for: Callable[[str], EngineOptions]) -> None:
        self.plugins = plugins
        self.options_for = options_for
        self.engines: dict[str, EngineBase] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._observers = bool(plugins.pm.hook.pappus_invocations_finished.get_hookimpls())
        self._stop = threading.Event()
        self._observer_thread: threading.Thread | None = None
        if self._observers:
            self._observer_thread = threading.Thread(target=self._observe, name="pappus-observer", daemon=True)
            self._observer_thread.start()

    # --- engines ---------------------------------------------------------------------------

    def engine(self, name: str) -> EngineBase:
        engine = self.engines.get(name)
        if engine is not None and engine.healthy:
            return engine
        with self._lock:
            if self._closed:
                raise EngineClosed("runtime is closed")
            engine = self.engines.get(name)
            if engine is not None and engine.healthy:
                return engine
            if engine is not None:  # unhealthy: replace it
                log.warning("replacing unhealthy engine %s: %s", name, engine.unhealthy_reason)
                threading.Thread(target=engine.close, kwargs={"drain": False, "timeout": 5.0},
                                 name=f"pappus-close-{name}", daemon=True).start()
            backend, kind = self.plugins.resolve_engine(name)
            availability = self.plugins.availability(backend)
            if not availability:
                raise BackendUnavailable(backend.name, availability.reason)
            engine = create_engine(backend, kind, self.options_for(name))
            engine.metrics.collect_records = self._observers
            engine.on_unhealthy = self._replace
            try:
                engine.wait_started(START_TIMEOUT)
            except BaseException:
                engine.close(drain=False, timeout=1.0)
                raise
            self.engines[name] = engine
            self.plugins.notify("pappus_engine_started", engine=name, workers=getattr(engine, "workers", 1),
                                pool_bytes=engine.capacity)
            return engine

    def _replace(self, old: EngineBase) -> None:
        """An engine went out of service: start its replacement now and move what was still
        queued there, so invocations that never started are not failed for another's fault."""
        with self._lock:
            if self._closed or self.engines.get(old.name) is not old:
                old.fail_queued(f"engine {old.name} is out of service: {old.unhealthy_reason}")
                return
        left = old.queue.close()
        try:
            new = self.engine(old.name)  # sees the old one unhealthy and starts a fresh one
        except Exception as exc:
            for inv in left:
                inv.settle(None, exc if isinstance(exc, PappusError) else EngineClosed(str(exc)))
            return
        for inv in left:
            try:
                new.queue.put(inv)
            except PappusError as exc:
                inv.settle(None, exc)
        self.plugins.notify("pappus_engine_stopped", engine=old.name, reason="unhealthy")

    def choose(self, name: str, invocation: Invocation) -> EngineBase:
        backend, sep, kind = name.rpartition("-")
        if kind != "auto":
            return self.engine(name)
        multi = self.engine(f"{backend}-multiprocess")
        plan = multi.plan_for(invocation.function)
        if invocation.resolution is None:
            invocation.resolution = plan.resolve(invocation.inputs)
        if invocation.resolution.top <= multi.capacity:
            return multi
        return self.engine(f"{backend}-sequential")

    def submit(self, engine_name: str, invocation: Invocation) -> Future[dict[str, bytes]]:
        return self.choose(engine_name, invocation).submit(invocation)

    # --- observation ------------------------------------------------------------------------

    def _observe(self) -> None:
        while not self._stop.wait(1.0):
            self._flush()
        self._flush()

    def _flush(self) -> None:
        for engine in list(self.engines.values()):
            records = engine.metrics.take_records()
            if records:
                self.plugins.notify("pappus_invocations_finished", engine=engine.name, records=records)

    def metrics(self) -> list[dict[str, Any]]:
        return [engine.metrics.snapshot() for engine in self.engines.values()]

    # --- shutdown ---------------------------------------------------------------------------

    def close(self, drain: bool = True, timeout: float | None = 30.0) -> None:
        with self._lock:
            self._closed = True
            engines = list(self.engines.items())
        for name, engine in engines:
            engine.close(drain=drain, timeout=timeout)
            self.plugins.notify("pappus_engine_stopped", engine=name, reason="closed")
        self._stop.set()
        if self._observer_thread is not None:
            self._observer_thread.join(5)
