"""``pappus serve --cluster ADDRESS``: the same HTTP API, invocations run by engine actors.

The app (:func:`pappus.serve.create_app`) only needs what ``pappus.Runtime`` offers, and
:class:`~pappus.cluster.ClusterRuntime` offers the same (registry, tenants, ``invoke_async``,
``dispatcher.engines`` for health and metrics: one "engine" per actor). This is
:func:`pappus.serve.server.run` with the runtime built here; everything else (binding, the
no-auth loopback rule, graceful shutdown, drain timeout) is the server's own.
"""

from __future__ import annotations

from typing import Any, TextIO

from ..serve.settings import ServeSettings


def build_cluster_runtime(settings: ServeSettings, address: str, *, actors: int | None = None,
                          prefetch: int = 1) -> Any:
    from ..registry import Registry
    from ..tenants import TenantStore
    from .runtime import ClusterRuntime
    from .transport import RayUnavailable

    registry = Registry(settings.state_dir)
    store = TenantStore(registry=registry, base_quotas=settings.base_quotas())
    try:
        return ClusterRuntime(address, engine=settings.engine, actors=actors, state_dir=registry.root,
                              workers=settings.workers, queue_size=settings.queue_size, prefetch=prefetch,
                              heap_limit=settings.heap_limit, pool_bytes=settings.pool_bytes,
                              deadline=settings.deadline, tenants=store)
    except RayUnavailable as exc:  # the same advice, in the flag's terms
        raise RayUnavailable(exc.address, exc.reason, flag="--cluster") from exc.__cause__


def run_cluster(settings: ServeSettings, address: str, *, actors: int | None = None, prefetch: int = 1,
                out: TextIO | None = None) -> int:
    """Serve until a signal, as ``pappus serve`` does, over a :class:`ClusterRuntime`."""
    from ..serve.server import run

    def describe(runtime: Any) -> str:
        infos = runtime.actors()
        ready = [a for a in infos if a.state == "ready"]
        count = f"{len(infos)} actors" if len(ready) == len(infos) else f"{len(ready)} of {len(infos)} actors ready"
        nodes = len({a.node for a in ready if a.node})
        return f"cluster {address}: {count} of {settings.engine} on {nodes} node(s)"

    return run(settings, out=out, describe=describe,
               runtime_factory=lambda s: build_cluster_runtime(s, address, actors=actors, prefetch=prefetch))
