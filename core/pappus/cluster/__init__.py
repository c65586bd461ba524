"""Scale-out: pappus engines as Ray actors, one per device, behind one dispatcher.

    from pappus.cluster import ClusterRuntime
    rt = ClusterRuntime("ray://head:10001")          # or "auto", "local", None (see below)
    rt.register_library("matmul", "matmul.so")       # validated here, once, statically
    rt.register_function("matmul", "matmul.json")
    out = rt.invoke("matmul", {"A": a_bytes})         # runs on some actor, same errors as local
    rt.close()

- ``runtime``    :class:`ClusterRuntime`: the registry and validation of a local
                 :class:`pappus.Runtime` in the driver, per-actor bounded fair queues, routing
                 (module-cache affinity, then least loaded), the at-most-once retry rule
- ``router``     which actor an invocation goes to (pure logic, no Ray)
- ``host``       :class:`EngineHost`: what runs inside an actor (a local ``pappus.Runtime``,
                 its engine, a sha256-verified blob cache, installed function specs)
- ``transport``  the seam between the two: :class:`RayTransport` (one Ray actor per device)
                 and :class:`InProcessTransport` (hosts in this process, for tests without Ray)
- ``placement``  the Ray resources an actor asks for, per backend
- ``local``      start a local Ray (one node or several) that talks over loopback only
- ``serve``      ``pappus serve --cluster ADDRESS``

Importing this package does not import Ray; :class:`ClusterRuntime` does when it starts a
:class:`RayTransport` (``pip install 'pappus[ray]'``). docs/cluster.md has the design and the
guarantees.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .host import EngineHost
    from .placement import Placement
    from .runtime import ClusterFuture, ClusterRuntime
    from .transport import ActorLost, InProcessTransport, RayTransport, RayUnavailable

__all__ = ["ActorLost", "ClusterFuture", "ClusterRuntime", "EngineHost", "InProcessTransport", "Placement",
           "RayTransport", "RayUnavailable"]

_HOMES = {"ClusterRuntime": "runtime", "ClusterFuture": "runtime", "EngineHost": "host", "Placement": "placement",
          "ActorLost": "transport", "InProcessTransport": "transport", "RayTransport": "transport",
          "RayUnavailable": "transport"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'pappus.cluster' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{home}", __name__), name)
