"""How the driver reaches its engine hosts: Ray actors, or hosts in this process.

Everything the :class:`~pappus.cluster.ClusterRuntime` needs from a transport is here, as
``concurrent.futures.Future`` objects, so the dispatcher is written once:

- ``spawn(label, ...) -> ActorHandle``: start one engine host somewhere (asynchronously);
- ``ActorHandle.ready()`` (engine started: a description), ``run(request)`` (one invocation:
  the host's answer dict), ``watch()`` (fails with :class:`ActorLost` the moment the actor is
  gone: how deaths are noticed while an actor is idle), ``close()``, ``kill()``;
- ``put_blob(data)``: a handle for library bytes that hosts can fetch (a Ray object ref).

A call whose actor died fails with :class:`ActorLost`; it says nothing about whether the call
had started, so the dispatcher treats every call it sent as possibly started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from ..errors import DeviceError, PappusError
from .host import EngineHost
from .placement import Placement, claim_device_index

log = logging.getLogger("pappus.cluster")


class ActorLost(Exception):
    """The actor that hosted an engine died or cannot be reached (transport level)."""


def _chain(src: Future[Any], convert: Any) -> Future[Any]:
    out: Future[Any] = Future()

    def done(f: Future[Any]) -> None:
        try:
            out.set_result(convert(f))
        except BaseException as exc:  # noqa: B036 - handed to the waiter, never lost
            out.set_exception(exc)

    src.add_done_callback(done)
    return out


class ActorHandle:
    label = "?"
    raw: Any = None

    def ready(self) -> Future[dict[str, Any]]:
        raise NotImplementedError

    def run(self, request: Mapping[str, Any]) -> Future[dict[str, Any]]:
        raise NotImplementedError

    def watch(self) -> Future[None]:
        raise NotImplementedError

    def stats(self) -> Future[dict[str, Any]]:
        raise NotImplementedError

    def close(self, drain: bool, timeout: float) -> Future[None]:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError


class Transport:
    name = "?"

    def totals(self) -> dict[str, float]:
        """The cluster's total resources (to count how many actors fit)."""
        raise NotImplementedError

    def put_blob(self, data: bytes) -> Any:
        raise NotImplementedError

    def spawn(self, label: str, engine: str, host_kwargs: dict[str, Any], placement: Placement) -> ActorHandle:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

    def shutdown(self) -> None:
        pass


# --- hosts in this process (tests, and a model of the Ray transport) -----------------------


class _LocalActor(ActorHandle):
    def __init__(self, label: str, engine: str, host_kwargs: dict[str, Any], node: str) -> None:
        self.label = label
        self.host = EngineHost(engine, fetch=bytes, label=label, node=node, **host_kwargs)
        self.raw = self
        self._pending: set[Future[Any]] = set()
        self._lock = threading.Lock()
        self._dead = False
        self._watch: Future[None] = Future()

    def _call(self, fn: Any, *args: Any) -> Future[Any]:
        out: Future[Any] = Future()
        with self._lock:
            if self._dead:
                out.set_exception(ActorLost(f"actor {self.label} is dead"))
                return out
            self._pending.add(out)

        def finish(result: Any = None, error: BaseException | None = None) -> None:
            with self._lock:
                if out not in self._pending:
                    return  # killed meanwhile: already failed
                self._pending.discard(out)
            if error is not None:
                out.set_exception(error)
            else:
                out.set_result(result)

        def work() -> None:
            try:
                value = fn(*args)
            except BaseException as exc:  # noqa: B036
                finish(error=exc)
                return
            if isinstance(value, Future):
                value.add_done_callback(lambda f: finish(f.result()) if f.exception() is None
                                        else finish(error=f.exception()))
            else:
                finish(value)

        if fn == self.host.submit and self.host.knows(args[0]["key"]):
            work()  # the fast path runs in the caller, as a Ray async actor runs it on its loop
        else:
            threading.Thread(target=work, name=f"pappus-{self.label}-call", daemon=True).start()
        return out

    def ready(self) -> Future[dict[str, Any]]:
        return self._call(self.host.start)

    def run(self, request: Mapping[str, Any]) -> Future[dict[str, Any]]:
        return self._call(self.host.submit, request)

    def watch(self) -> Future[None]:
        return self._watch

    def stats(self) -> Future[dict[str, Any]]:
        return self._call(self.host.stats)

    def close(self, drain: bool, timeout: float) -> Future[None]:
        def close() -> None:
            self.host.close(drain=drain, timeout=timeout)
            if not self._watch.done():
                self._watch.set_result(None)

        return self._call(close)

    def kill(self) -> None:
        """Die as a killed process would: every pending call fails, nothing answers again."""
        with self._lock:
            if self._dead:
                return
            self._dead = True
            pending, self._pending = self._pending, set()
        for fut in pending:
            fut.set_exception(ActorLost(f"actor {self.label} was killed"))
        if not self._watch.done():
            self._watch.set_exception(ActorLost(f"actor {self.label} was killed"))
        threading.Thread(target=self.host.close, kwargs={"drain": False, "timeout": 5.0}, daemon=True).start()


class InProcessTransport(Transport):
    """Engine hosts in this process, one per "actor", on ``nodes`` pretend nodes (round robin).

    The same protocol as :class:`RayTransport` without Ray: for tests of the dispatcher (the
    retry rule, queues, affinity) that must run where Ray is not installed.
    """

    name = "in-process"

    def __init__(self, nodes: int = 2, cpus_per_node: int = 1) -> None:
        self.nodes = nodes
        self.cpus_per_node = cpus_per_node
        self.spawned: list[_LocalActor] = []

    def totals(self) -> dict[str, float]:
        return {"CPU": float(self.nodes * self.cpus_per_node)}

    def put_blob(self, data: bytes) -> Any:
        return bytes(data)

    def spawn(self, label: str, engine: str, host_kwargs: dict[str, Any], placement: Placement) -> ActorHandle:
        alive = [a for a in self.spawned if not a._dead]
        node = f"node-{len(alive) % self.nodes}"
        used = {a.host.node for a in alive}
        free = [f"node-{i}" for i in range(self.nodes) if f"node-{i}" not in used]
        if free:
            node = free[0]
        actor = _LocalActor(label, engine, host_kwargs, node)
        self.spawned.append(actor)
        return actor

    def shutdown(self) -> None:
        for actor in self.spawned:
            if not actor._dead:
                with contextlib.suppress(Exception):
                    actor.host.close(drain=False, timeout=5.0)


# --- Ray -----------------------------------------------------------------------------------


class _RayEngineActor:
    """The Ray actor class body (decorated with ``ray.remote`` on first use): an async actor,
    so one actor process takes many concurrent calls and awaits its engine's futures."""

    def __init__(self, engine: str, label: str, host_kwargs: dict[str, Any], claim_index_of: str | None) -> None:
        import ray

        kwargs = dict(host_kwargs)
        if claim_index_of:
            node_id = ray.get_runtime_context().get_node_id()
            total = next((n["Resources"].get(claim_index_of, 1) for n in ray.nodes() if n["NodeID"] == node_id), 1)
            index = claim_device_index(int(total), claim_index_of)
            kwargs["device_options"] = {**dict(kwargs.get("device_options") or {}), "device": index}
        node = ray.get_runtime_context().get_node_id()
        self.host = EngineHost(engine, fetch=bytes, label=label, node=node, **kwargs)
        self._closed: asyncio.Event | None = None

    def _event(self) -> asyncio.Event:
        if self._closed is None:
            self._closed = asyncio.Event()
        return self._closed

    async def ready(self) -> dict[str, Any]:
        return await asyncio.get_running_loop().run_in_executor(None, self.host.start)

    async def run(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.host.knows(request["key"]) or request.get("spec") is None:
            return await asyncio.wrap_future(self.host.submit(request))
        blobs = {}
        for sha, ref in (request.get("blobs") or {}).items():
            blobs[sha] = await ref  # bytes from the object store (the host checks their hash)
        request = {**request, "blobs": blobs}
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(None, self.host.submit, request)  # writes the blobs
        return await asyncio.wrap_future(answer)

    async def watch(self) -> None:
        await self._event().wait()

    async def stats(self) -> dict[str, Any]:
        return self.host.stats()

    async def close(self, drain: bool, timeout: float) -> None:
        await asyncio.get_running_loop().run_in_executor(None, lambda: self.host.close(drain=drain, timeout=timeout))
        self._event().set()


_ray_actor_class: Any = None


class _RayActor(ActorHandle):
    def __init__(self, transport: RayTransport, label: str, raw: Any) -> None:
        self.transport = transport
        self.label = label
        self.raw = raw

    def _future(self, ref: Any) -> Future[Any]:
        ray = self.transport.ray

        def convert(f: Future[Any]) -> Any:
            try:
                return f.result()
            except ray.exceptions.RayActorError as exc:  # died, killed, node lost, unreachable
                raise ActorLost(f"actor {self.label} is gone: {_first_line(exc)}") from None
            except ray.exceptions.RayError as exc:  # the actor's own code failed: not a death
                raise DeviceError(f"actor {self.label} failed a call: {_first_line(exc)}") from None

        return _chain(ref.future(), convert)

    def ready(self) -> Future[dict[str, Any]]:
        return self._future(self.raw.ready.remote())

    def run(self, request: Mapping[str, Any]) -> Future[dict[str, Any]]:
        return self._future(self.raw.run.remote(dict(request)))

    def watch(self) -> Future[None]:
        return self._future(self.raw.watch.remote())

    def stats(self) -> Future[dict[str, Any]]:
        return self._future(self.raw.stats.remote())

    def close(self, drain: bool, timeout: float) -> Future[None]:
        return self._future(self.raw.close.remote(drain, timeout))

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.transport.ray.kill(self.raw, no_restart=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


#: Seconds the address of a Ray cluster gets to accept a TCP connection before ``ray.init``,
#: which would otherwise retry for minutes when nothing listens there.
CONNECT_TIMEOUT = 5.0


def unreachable(address: str, timeout: float = CONNECT_TIMEOUT) -> str | None:
    """Why nothing can be reached at a Ray address (``HOST:PORT`` or ``ray://HOST:PORT``), or
    None if something accepts a TCP connection there (or the address names no port, as
    ``"auto"`` does: Ray finds those itself). It is only a connect; what answers may still not
    be Ray, which ``ray.init`` then reports."""
    rest = address.removeprefix("ray://")
    host, sep, port_text = rest.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        return None
    host = host.removeprefix("[").removesuffix("]")  # [::1]:6379
    port = int(port_text)
    if port > 65535:
        return f"{port} is not a TCP port (0-65535)"
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.gaierror as exc:
        return f"cannot resolve the host name {host!r}: {exc.strerror or exc}"
    except TimeoutError:
        return f"no answer from {where} within {timeout:g} s"
    except ConnectionRefusedError:
        return f"nothing listens at {where}: connection refused"
    except OSError as exc:
        return f"cannot open a connection to {where}: {exc.strerror or exc}"


class RayUnavailable(PappusError):
    """No Ray could be reached at the address given (``ClusterRuntime(address)``,
    ``pappus serve --cluster``). ``flag`` names the option the address came from, for the
    message; without it the message speaks of ``ClusterRuntime(...)``. Ray's own exception is
    the ``__cause__``."""

    code = "ray_unavailable"
    http_status = 503

    def __init__(self, address: str, reason: str, *, flag: str | None = None) -> None:
        def spell(value: str) -> str:
            return f"{flag} {value}" if flag else f"ClusterRuntime({value!r})"

        if address == "auto":
            what = "no running Ray cluster found"
            advice = (f"start one with `ray start --head`, pass its address ({spell('ray://HOST:10001')}), "
                      f"or use {spell('local')} to start a Ray on this machine")
        else:
            what = f"cannot connect to Ray ({reason})"
            advice = (f"check that the cluster is up and the address is right ({spell('ray://HOST:10001')} "
                      f"for a Ray client, {spell('HOST:6379')} on a node of the cluster), "
                      f"or use {spell('local')} to start a Ray on this machine")
        super().__init__(f"{spell(address)}: {what}; {advice}", address=address, reason=reason, flag=flag)


class RayTransport(Transport):
    """One Ray actor per engine host.

    ``address``: None uses the Ray this process is already connected to, else starts a local
    one; ``"local"`` starts a local one (loopback only, :mod:`pappus.cluster.local`); anything
    else (``"auto"``, ``"ray://HOST:10001"``, ``"HOST:6379"``) is handed to ``ray.init``.
    Ray is shut down at the end only when this transport started or connected it.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, max_concurrency: int = 1000, **init_kwargs: Any) -> None:
        from .local import require_ray, start_local_ray

        self.ray = require_ray()
        self.address = address
        self.max_concurrency = max_concurrency
        self.owns = False
        if address in (None, "local"):
            if address == "local" or not self.ray.is_initialized():
                if self.ray.is_initialized():
                    raise PappusError("Ray is already initialised in this process: pass address=None to use it")
                start_local_ray(**init_kwargs)
                self.owns = True
        else:
            if not self.ray.is_initialized():
                why = unreachable(str(address))
                if why:  # fail in seconds, where Ray would retry for minutes
                    raise RayUnavailable(str(address), why)
                try:
                    self.ray.init(address=address, **{"log_to_driver": False, **init_kwargs})
                except ConnectionError as exc:  # Ray's text names its own --address flag
                    raise RayUnavailable(str(address), _first_line(exc)) from exc
                self.owns = True

    def describe(self) -> str:
        return f"ray {self.address or 'local'}"

    def totals(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.ray.cluster_resources().items()}

    def put_blob(self, data: bytes) -> Any:
        return self.ray.put(bytes(data))

    def spawn(self, label: str, engine: str, host_kwargs: dict[str, Any], placement: Placement) -> ActorHandle:
        global _ray_actor_class
        if _ray_actor_class is None:
            _ray_actor_class = self.ray.remote(_RayEngineActor)
        raw = _ray_actor_class.options(max_restarts=0, max_concurrency=self.max_concurrency,
                                       **placement.ray_options()).remote(engine, label, host_kwargs,
                                                                         placement.claim_index_of)
        return _RayActor(self, label, raw)

    def shutdown(self) -> None:
        if self.owns:
            with contextlib.suppress(Exception):
                self.ray.shutdown()
