"""Run the app under uvicorn, with a graceful shutdown.

On SIGTERM or SIGINT the server stops accepting connections, lets in-flight requests finish
(invocations drain) for up to ``drain_timeout`` seconds, then closes the runtime without
draining: queued invocations fail with ``EngineClosed`` (503) and running ones are stopped,
so every request still gets an answer. Then the runtime is closed and the process exits 0.
A second signal exits at once. Exit status: 0 after a graceful stop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

from ..errors import PappusError
from ..runtime import Runtime
from ..tenants import TenantStore
from .limits import check_no_auth_bind
from .settings import ServeSettings

log = logging.getLogger("pappus.serve")


def build_runtime(settings: ServeSettings) -> Runtime:
    registry_root = settings.state_dir
    from ..registry import Registry

    registry = Registry(registry_root)
    store = TenantStore(registry=registry, base_quotas=settings.base_quotas())
    return Runtime(engine=settings.engine, state_dir=registry.root, workers=settings.workers,
                   spare_workers=settings.spare_workers, queue_size=settings.queue_size,
                   heap_limit=settings.heap_limit, pool_bytes=settings.pool_bytes, deadline=settings.deadline,
                   tenants=store)


class ListenError(PappusError):
    """The server's address cannot be bound (in use, not ours, not an address of this host)."""


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    # proto=IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it every keep-alive response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", host=host, port=port,
                          errno=exc.errno) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _has_tenants(runtime: Any) -> bool:
    tenants = getattr(runtime, "tenants", None)
    try:
        return tenants is None or bool(tenants.list_tenants())
    except Exception:  # a store that cannot be read is reported where it is used
        return True


def run(settings: ServeSettings, *, out: TextIO | None = None,
        runtime_factory: Callable[[ServeSettings], Any] | None = None,
        describe: Callable[[Any], str] | None = None) -> int:
    """Serve until a signal. Prints ``pappus: serving on http://HOST:PORT ...`` once ready.

    ``runtime_factory`` builds what requests run on (default: a local :class:`Runtime` whose
    engine starts now, so a backend that cannot start fails here, clearly); ``describe`` says
    what that is in the ready line (default: the engine).
    """
    import uvicorn

    from .app import create_app

    out = out or sys.stdout
    check_no_auth_bind(settings.host, settings.no_auth)
    runtime = (runtime_factory or _local_runtime)(settings)
    try:
        sock = bind(settings.host, settings.port)
    except BaseException:
        runtime.close(drain=False, timeout=5)
        raise
    app = create_app(runtime, settings, start_engine=False)
    config = uvicorn.Config(app, log_level=settings.log_level, access_log=settings.access_log, lifespan="on",
                            timeout_graceful_shutdown=int(math.ceil(settings.drain_timeout)) + 10, server_header=False)
    server = _make_server(config, runtime, settings.drain_timeout, app.state.api)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    auth = "no authentication, every caller is tenant 'default'" if settings.no_auth else "bearer tokens"
    if not settings.no_auth and not _has_tenants(runtime):
        auth += "; no tenant yet, so every request gets 401: pappus tenant add NAME (taken up at once)"
    what = describe(runtime) if describe else f"engine {settings.engine}"
    print(f"pappus: serving on http://{shown}:{port} ({what}, {auth})", file=out, flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        runtime.close(drain=False, timeout=5)
    return 0 if server.started else 1


def _local_runtime(settings: ServeSettings) -> Runtime:
    runtime = build_runtime(settings)
    try:
        runtime.engine()
    except BaseException:
        runtime.close(drain=False, timeout=5)
        raise
    return runtime


def _make_server(config: Any, runtime: Runtime, drain_timeout: float, api: Any) -> Any:
    """A uvicorn.Server that bounds the drain: past ``drain_timeout`` the runtime is closed
    without draining, so every waiting request is answered instead of cut off."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # A second signal (of either kind) stops at once; a handled signal is not re-raised
            # after the shutdown (uvicorn's default), so a graceful stop exits 0.
            if self.should_exit:
                self.force_exit = True
            self.should_exit = True

        async def shutdown(self, sockets: Any = None) -> None:
            api.draining = True
            loop = asyncio.get_running_loop()

            def stop_draining() -> None:
                log.warning("drain timeout (%g s) passed: failing what is left", drain_timeout)
                threading.Thread(target=runtime.close, kwargs={"drain": False, "timeout": 5.0},
                                 daemon=True).start()

            timer = loop.call_later(drain_timeout, stop_draining)
            try:
                await super().shutdown(sockets)
            finally:
                timer.cancel()

    return Server(config)
