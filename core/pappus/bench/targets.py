"""What load is offered to: pappus in process, the dedicated baseline, or an HTTP endpoint.

Every target turns "send request ``i`` of this workload" into a future, so the open-loop
generator (``loadgen``) drives them all the same way.

``cpu-sequential``, ``cpu-multiprocess`` (any ``<backend>-<kind>``)
    an in-process :class:`pappus.Runtime` with that engine. ``hot`` sets the hot/cold mix:
    1.0 (default) every request hits a cached module; 0.0 every request is cold (the engine
    runs with ``module_cache_size=0``: each invocation loads its library, as the thesis's
    engines did); in between, each request is cold with probability ``1 - hot`` and a cold
    request goes to a *fresh tenant*: one that registered the same library and function just
    before the level (outside the timed window) and never invoked it, so its module is not
    cached on any worker (modules are cached per tenant). That is exactly "the first
    invocation after registration"; the hot requests go to the warmed-up ``default`` tenant.
``dedicated``
    :class:`pappus.bench.dedicated.DedicatedServer`: the same compiled kernels called directly
    by N worker processes behind a frontend, no isolation. There is no cold start for it.
``http``
    an HTTP endpoint speaking pappus serve's JSON (``pappus serve`` or the dedicated server's
    HTTP face). Requests are sent by an ``httpx.AsyncClient`` on an event loop in a background
    thread, so submitting stays open-loop. Only hot requests (``hot == 1``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import tempfile
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from ..errors import FieldError, ValidationError
from .workloads import Workload

Submit = Callable[[int], "Future[Any]"]


class BenchTargetError(RuntimeError):
    """A request failed on an HTTP target; ``code`` is the server's error code (or the status)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Target:
    """Base: a named system under test."""

    name = "?"
    kind = "?"
    supports_cold = False
    #: the backend whose code objects this target runs (the dedicated and HTTP targets: cpu)
    backend = "cpu"

    def setup(self, workloads: list[Workload]) -> None:
        """Register (or load) the workloads' functions."""

    def submitter(self, wl: Workload, inputs: Mapping[str, bytes], deadline: float, *, n: int = 0,
                  seed: int = 0, warm: bool = False) -> Submit:
        """``submit(i)`` for a level of (at most) ``n`` requests of ``wl`` with ``inputs``
        (``warm``: for warming up, hot requests only)."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind}

    def close(self) -> None:
        pass

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RuntimeTarget(Target):
    """A pappus engine in this process."""

    kind = "pappus"
    supports_cold = True

    def __init__(self, engine: str = "cpu-sequential", *, workers: int = 2, hot: float = 1.0,
                 state_dir: str | Path | None = None, queue_size: int = 4096, name: str | None = None,
                 runtime: Any = None) -> None:
        if not 0.0 <= hot <= 1.0:
            raise ValidationError(FieldError("hot", f"must be between 0 and 1, not {hot}"), what="arguments")
        from ..engine import EngineOptions
        from ..runtime import Runtime

        self.engine = engine
        self.backend = engine.rsplit("-", 1)[0]
        self.workers = workers
        self.hot = hot
        self._tmp = None
        if state_dir is None and runtime is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="pappus-bench-")
            state_dir = self._tmp.name
        options = None
        if hot == 0.0:  # every invocation cold: nothing is cached (the thesis's engines)
            options = {engine: EngineOptions(workers=workers, queue_size=queue_size, module_cache_size=0)}
        self.rt = runtime or Runtime(engine=engine, state_dir=state_dir, workers=workers,
                                     queue_size=queue_size, engine_options=options)
        self._own_runtime = runtime is None
        self.name = name or _default_name(engine, workers, hot)
        self._workloads: list[Workload] = []
        self._levels = 0

    def setup(self, workloads: list[Workload]) -> None:
        for wl in workloads:
            wl.register(self.rt)
            self._workloads.append(wl)
        self.rt.engine(self.engine)  # started now, not inside the first level

    def submitter(self, wl: Workload, inputs: Mapping[str, bytes], deadline: float, *, n: int = 0,
                  seed: int = 0, warm: bool = False) -> Submit:
        rt, fn, engine = self.rt, wl.function, self.engine
        if self.hot >= 1.0 or self.hot == 0.0 or warm:
            return lambda i: rt.invoke_async(fn, inputs, deadline=deadline, engine=engine)
        # A mix: request i is cold with probability 1 - hot, to a tenant that has just
        # registered and never invoked (registered here, before the timed level starts).
        rng = random.Random(seed ^ 0x5EED)
        cold = [rng.random() >= self.hot for _ in range(n)]
        self._levels += 1
        tenants: dict[int, str] = {}
        for i, is_cold in enumerate(cold):
            if is_cold:
                tenant = f"cold{self._levels}x{i}"
                wl.register(rt, tenant=tenant)
                tenants[i] = tenant

        def submit(i: int) -> Future[Any]:
            tenant = tenants.get(i, "default")
            return rt.invoke_async(fn, inputs, tenant=tenant, deadline=deadline, engine=engine)

        return submit

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "engine": self.engine, "workers": self.workers
                if self.engine.endswith("multiprocess") else 1, "hot": self.hot,
                "cold_mix": ("none" if self.hot == 1.0 else "module_cache_size=0" if self.hot == 0.0
                             else "fresh tenant per cold request")}

    def close(self) -> None:
        if self._own_runtime:
            self.rt.close(drain=False, timeout=10)
        if self._tmp is not None:
            self._tmp.cleanup()


def _default_name(engine: str, workers: int, hot: float) -> str:
    name = engine
    if engine.endswith("multiprocess") and workers != 2:
        name += f"-{workers}w"
    if hot != 1.0:
        name += f" ({hot:.0%} hot)"
    return name


class DedicatedTarget(Target):
    """The dedicated baseline in this process (frontend threads + N worker processes)."""

    kind = "dedicated"

    def __init__(self, workers: int = 2, name: str | None = None) -> None:
        from .dedicated import DedicatedServer

        self.workers = workers
        self.server = DedicatedServer(workers=workers)
        self.name = name or ("dedicated" if workers == 2 else f"dedicated-{workers}w")

    def setup(self, workloads: list[Workload]) -> None:
        for wl in workloads:
            self.server.register(wl.function, wl.config, wl.libraries)
            for w in self.server.workers:  # programs prepared now, not inside a level
                w.program(wl.function, self.server.functions[wl.function], wl.inputs(0))

    def submitter(self, wl: Workload, inputs: Mapping[str, bytes], deadline: float, *, n: int = 0,
                  seed: int = 0, warm: bool = False) -> Submit:
        srv, fn = self.server, wl.function
        for w in srv.workers:
            w.program(fn, srv.functions[fn], inputs)
        return lambda i: srv.submit(fn, inputs, deadline)

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "workers": self.workers}

    def close(self) -> None:
        self.server.close()


class HttpTarget(Target):
    """An HTTP endpoint with pappus serve's JSON; requests from an asyncio loop in a thread."""

    kind = "http"

    def __init__(self, url: str, token: str | None = None, *, name: str | None = None, register: bool = True,
                 max_connections: int = 512) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.token = token
        self.name = name or f"http {self.url}"
        self.register = register
        self.headers = {"content-type": "application/json"}
        if token:
            self.headers["authorization"] = f"Bearer {token}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pappus-bench-http", daemon=True)
        self._thread.start()
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)

        async def make() -> Any:
            return httpx.AsyncClient(base_url=self.url, headers=self.headers, limits=limits, timeout=None)

        self.client = asyncio.run_coroutine_threadsafe(make(), self._loop).result()

    def setup(self, workloads: list[Workload]) -> None:
        import httpx

        auth = {"authorization": f"Bearer {self.token}"} if self.token else {}
        with httpx.Client(base_url=self.url, headers=auth, timeout=60) as client:
            for wl in workloads:
                if not self.register:
                    continue
                assert wl.library_path is not None
                r = client.put(f"/v1/libraries/{wl.library}", content=Path(wl.library_path).read_bytes())
                _raise_for(r)
                r = client.put(f"/v1/functions/{wl.function}", content=json.dumps(wl.config).encode())
                _raise_for(r)

    def submitter(self, wl: Workload, inputs: Mapping[str, bytes], deadline: float, *, n: int = 0,
                  seed: int = 0, warm: bool = False) -> Submit:
        body = json.dumps({"inputs": {k: base64.b64encode(v).decode("ascii") for k, v in inputs.items()},
                           "deadline": deadline}).encode()
        path = f"/v1/functions/{wl.function}/invoke"
        client, loop = self.client, self._loop
        timeout = deadline + 5.0

        async def invoke() -> bytes:
            r = await client.post(path, content=body, timeout=timeout)
            if r.status_code != 200:
                try:
                    doc = r.json()
                    code, message = str(doc.get("error", r.status_code)), str(doc.get("message", ""))
                except ValueError:
                    code, message = str(r.status_code), r.text[:200]
                raise BenchTargetError(code, f"HTTP {r.status_code}: {message}")
            return r.content

        return lambda i: asyncio.run_coroutine_threadsafe(invoke(), loop)

    @staticmethod
    def decode(body: bytes) -> dict[str, bytes]:
        """The outputs of an invoke response."""
        doc = json.loads(body)
        return {k: base64.b64decode(v) for k, v in doc["outputs"].items()}

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "url": self.url}

    def close(self) -> None:
        async def shut() -> None:
            await self.client.aclose()

        try:
            asyncio.run_coroutine_threadsafe(shut(), self._loop).result(10)
        except Exception:
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def _raise_for(r: Any) -> None:
    if r.status_code >= 400:
        try:
            doc = r.json()
            message = doc.get("message", r.text)
        except ValueError:
            message = r.text
        raise BenchTargetError(str(r.status_code), f"{r.request.method} {r.request.url.path}: "
                               f"HTTP {r.status_code}: {message}")


def make_target(spec: str, *, workers: int = 2, hot: float = 1.0, http: str | None = None,
                token: str | None = None, register: bool = True, state_dir: str | Path | None = None) -> Target:
    """A target by name: an engine (``cpu-sequential``, ...), ``dedicated``, or ``http``."""
    if http is not None or spec == "http":
        if http is None:
            raise ValidationError(FieldError("target", "target 'http' needs --http URL"), what="arguments")
        if hot != 1.0:
            raise ValidationError(FieldError("hot", "HTTP targets run hot requests only (--hot 1.0): "
                                             "cold mixes need fresh tenants, each with its own token"),
                                  what="arguments")
        return HttpTarget(http, token, register=register)
    if spec == "dedicated" or spec.startswith("dedicated"):
        if hot != 1.0:
            raise ValidationError(FieldError("hot", "the dedicated baseline has no cold start (thesis 5.2.2): "
                                             "run it with --hot 1.0"), what="arguments")
        return DedicatedTarget(workers=workers)
    if "-" not in spec:
        raise ValidationError(FieldError("target", f"unknown target {spec!r} (an engine such as cpu-sequential "
                                         "or cpu-multiprocess, dedicated, or http)"), what="arguments")
    return RuntimeTarget(spec, workers=workers, hot=hot, state_dir=state_dir)
