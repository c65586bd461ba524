"""What runs inside an engine actor: a local ``pappus.Runtime``, its engine and its caches.

The driver validated every function at registration; an actor receives the result as a
:class:`~pappus.engine.FunctionSpec` (a record, never a config to re-parse) together with a
handle per library blob, once per function (``install``). Before anything is loaded the host
checks each blob's sha256 against the hash the function was validated with and stores it in
its node-local blob store (the layout of :class:`pappus.registry.Registry`); the executor
checks the hash again when it loads the module, as it does in a local runtime.

Invocations then go straight to the local engine (``engine.submit``): admission, quotas and
fair queueing across tenants happen in the driver, so the engine's own queue only holds what
the driver sent. Every request is answered with a plain dict (errors as ``to_dict()``), with
``started`` saying whether the invocation may have begun running when it failed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

from ..engine import FunctionSpec, Invocation, LibraryRef
from ..errors import DeviceError, EngineClosed, LibraryError, PappusError

log = logging.getLogger("pappus.cluster")

#: how many installed function specs a host keeps (least recently used go; the driver resends)
SPEC_CACHE = 4096


def blob_mismatch(name: str, want: str, got: str) -> LibraryError:
    return LibraryError(f"library {name!r} arrived with sha256 {got[:12]}..., not the {want[:12]}... it was "
                        "registered and validated with; it was not loaded (tampered in transit or in the store?)")


class EngineHost:
    """One engine and what it needs, in the process of an actor (or of a test).

    ``fetch(handle) -> bytes`` turns a blob handle from the driver into bytes (``ray.get``
    for Ray object refs).
    """

    def __init__(self, engine: str, *, fetch: Callable[[Any], bytes], label: str = "", state_dir: str | None = None,
                 workers: int = 2, queue_size: int = 1024, heap_limit: int = 0, pool_bytes: int | None = None,
                 device_options: Mapping[str, Any] | None = None, module_cache_size: int | None = None,
                 node: str | None = None) -> None:
        from ..engine import EngineOptions
        from ..registry import Registry
        from ..runtime import Runtime

        self.engine_name = engine
        self.label = label
        self.fetch = fetch
        self.node = node or socket.gethostname()
        self._tmp = None
        if state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="pappus-actor-")
            state_dir = self._tmp.name
        self.blobs = Registry(os.path.join(state_dir, "host"))
        options = None
        if module_cache_size is not None:
            options = {engine: EngineOptions(workers=workers, queue_size=queue_size, heap_limit=heap_limit,
                                             pool_bytes=pool_bytes, module_cache_size=module_cache_size,
                                             device_options=dict(device_options or {}))}
        self.runtime = Runtime(engine=engine, state_dir=os.path.join(state_dir, "runtime"), workers=workers,
                               queue_size=queue_size, heap_limit=heap_limit, pool_bytes=pool_bytes,
                               device_options=device_options, engine_options=options)
        self.specs: OrderedDict[str, FunctionSpec] = OrderedDict()
        self._verified: set[str] = set()
        self._lock = threading.Lock()
        self._closed = False
        self.ran = 0

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        """Start the engine (a backend that cannot start raises here); describe this host."""
        engine = self.runtime.engine(self.engine_name)
        return {"label": self.label, "node": self.node, "pid": os.getpid(), "engine": engine.name,
                "workers": int(getattr(engine, "workers", 1)), "capacity": int(engine.capacity)}

    def stats(self) -> dict[str, Any]:
        return {"label": self.label, "node": self.node, "ran": self.ran, "specs": len(self.specs),
                "blobs": len(self._verified), "engines": self.runtime.metrics()}

    def close(self, drain: bool = True, timeout: float | None = 30.0) -> None:
        if self._closed:
            return
        self._closed = True
        self.runtime.close(drain=drain, timeout=timeout)
        if self._tmp is not None:
            self._tmp.cleanup()

    # --- functions and blobs ---------------------------------------------------------------

    def knows(self, key: str) -> bool:
        return key in self.specs

    def install(self, spec: FunctionSpec, blobs: Mapping[str, Any]) -> FunctionSpec:
        """Make ``spec`` runnable here: every library blob fetched, hash-checked, stored locally."""
        refs: dict[str, LibraryRef] = {}
        for libname, ref in spec.libraries.items():
            refs[libname] = LibraryRef(ref.name, ref.sha256, self._blob(ref.name, ref.sha256, blobs.get(ref.sha256)))
        local = replace(spec, libraries=refs)
        with self._lock:
            self.specs[spec.key] = local
            while len(self.specs) > SPEC_CACHE:
                self.specs.popitem(last=False)
        return local

    def _blob(self, name: str, sha: str, handle: Any) -> str:
        path = self.blobs.blob_path(sha)
        if sha in self._verified and path.exists():
            return str(path)
        if handle is None:
            raise LibraryError(f"library {name!r} ({sha[:12]}...) was not sent with its function")
        data = self.fetch(handle)
        got = hashlib.sha256(data).hexdigest()
        if got != sha:
            raise blob_mismatch(name, sha, got)
        stored, path = self.blobs.put_blob(data)
        assert stored == sha
        self._verified.add(sha)
        return str(path)

    # --- invocations -----------------------------------------------------------------------

    def submit(self, request: Mapping[str, Any]) -> Future[dict[str, Any]]:
        """Run one invocation; the future always resolves (never raises) to the answer dict:

        ``{"ok": True, "outputs": {...}, "run_s": ...}``, or ``{"ok": False, "error": {...},
        "started": bool}``, or ``{"ok": False, "need_spec": True, "started": False}`` when the
        function is not installed here and the request did not carry it.
        """
        answer: Future[dict[str, Any]] = Future()
        key = request["key"]
        try:
            if self._closed:
                raise EngineClosed(f"actor {self.label} is closing")
            spec = self.specs.get(key)
            if spec is None:
                if request.get("spec") is None:
                    answer.set_result({"ok": False, "need_spec": True, "started": False})
                    return answer
                spec = self.install(request["spec"], request.get("blobs") or {})
            else:
                self.specs.move_to_end(key)
            inv = Invocation(spec, request["inputs"], float(request["deadline"]), request["tenant"],
                             id=request["id"])
            engine = self.runtime.dispatcher.choose(request.get("engine") or self.engine_name, inv)
            future = engine.submit(inv)
        except PappusError as exc:
            answer.set_result({"ok": False, "error": exc.to_dict(), "started": False})
            return answer
        except Exception as exc:  # a bug here must not leave the driver waiting
            if self._closed:  # closed under it (its state directory went): not started
                err: PappusError = EngineClosed(f"actor {self.label} is closing")
            else:
                log.exception("host %s: submitting %s failed", self.label, request.get("id"))
                err = DeviceError(f"internal error on actor {self.label}: {type(exc).__name__}: {exc}")
            answer.set_result({"ok": False, "error": err.to_dict(), "started": False})
            return answer
        t0 = time.perf_counter()

        def done(f: Future[dict[str, bytes]]) -> None:
            error = f.exception()
            if error is None:
                self.ran += 1
                answer.set_result({"ok": True, "outputs": f.result(), "run_s": time.perf_counter() - t0})
                return
            if not isinstance(error, PappusError):
                error = DeviceError(f"internal error on actor {self.label}: {type(error).__name__}: {error}")
            answer.set_result({"ok": False, "error": error.to_dict(), "started": inv.started is not None})

        future.add_done_callback(done)
        return answer
