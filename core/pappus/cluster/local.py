"""A Ray on this machine only: one node (``pappus serve --cluster local``) or several (tests,
benchmarks), every address loopback.

Ray normally advertises a node by the address of its default route's interface, so even a
single-machine Ray would talk to itself over that address. Here every node, the driver and
every worker use 127.0.0.1 (:func:`loopback_only`), so nothing of a local cluster leaves the
loopback interface. Real clusters are started with ``ray start`` as usual and reached with an
address (``ray://HOST:10001``, ``HOST:6379`` or ``auto``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

from ..errors import PappusError

#: Object store per node: libraries and request bodies only, so a small one will do.
OBJECT_STORE_BYTES = 128 * 1024 * 1024
#: Requests and answers up to this size travel inline with the call (gRPC) instead of through
#: the object store: a 128 KiB matmul input took 3-9 ms through the store between two local
#: nodes and ~1.5 ms inline (Ray's default threshold is 100 KiB).
INLINE_BYTES = 4 * 1024 * 1024
SYSTEM_CONFIG = {"max_direct_call_object_size": INLINE_BYTES}
#: Read by Ray when it is imported: with it off, Ray takes 127.0.0.1 as this node's address.
_RAY_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def require_ray() -> Any:
    """Import ray, or say how to get it."""
    try:
        import ray
    except ImportError as exc:
        raise PappusError(f"the cluster runtime needs Ray ({exc}): pip install 'pappus[ray]'") from None
    return ray


def loopback_only() -> None:
    """Make Ray, in this process and in every process it starts from now on, use 127.0.0.1."""
    os.environ[_RAY_LOOPBACK_ENV] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:  # already imported: its constant was read from the old value
        constants.ENABLE_RAY_CLUSTER = False  # type: ignore[attr-defined]


def start_local_ray(num_cpus: int | None = None, *, object_store_bytes: int = OBJECT_STORE_BYTES,
                    log_to_driver: bool = False, **kwargs: Any) -> Any:
    """``ray.init`` of a fresh one-node Ray on loopback (no dashboard); returns its context."""
    loopback_only()
    ray = require_ray()
    kwargs.setdefault("_system_config", dict(SYSTEM_CONFIG))
    return ray.init(num_cpus=num_cpus, object_store_memory=object_store_bytes, include_dashboard=False,
                    log_to_driver=log_to_driver, **kwargs)


@contextlib.contextmanager
def local_cluster(nodes: int = 2, cpus_per_node: int = 1, *, resources: dict[str, float] | None = None,
                  object_store_bytes: int = OBJECT_STORE_BYTES, log_to_driver: bool = False) -> Iterator[Any]:
    """A Ray of ``nodes`` nodes on this machine (``ray.cluster_utils.Cluster``), connected.

    Each node is a raylet of its own with ``cpus_per_node`` CPUs: actors placed on different
    nodes are in different Ray nodes exactly as on a real cluster (own object store, own
    worker pool), only the cores are shared. Yields the Cluster; shuts everything down after.
    """
    loopback_only()
    ray = require_ray()
    from ray.cluster_utils import Cluster

    node_args: dict[str, Any] = {"num_cpus": cpus_per_node, "object_store_memory": object_store_bytes}
    if resources:
        node_args["resources"] = dict(resources)
    cluster = Cluster(initialize_head=True, head_node_args={**node_args, "include_dashboard": False,
                                                            "_system_config": dict(SYSTEM_CONFIG)})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(**node_args)
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=log_to_driver)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        cluster.shutdown()
