"""Where an engine actor may run: the Ray resources it asks for, per backend.

One actor hosts one engine, and an engine owns one device, so an actor reserves exactly one
device's worth of resources and Ray never places two actors on the same device:

- CPU backends (``cpu``, ``host``): ``num_cpus`` = the engine's parallelism (1 for a sequential
  engine, ``workers`` for a multiprocess one), since every worker is a sandboxed process
  that keeps a core busy;
- NVIDIA (``cuda``): ``num_gpus=1``; Ray sets ``CUDA_VISIBLE_DEVICES``, so the actor's device 0
  is the one it was given;
- AMD (``hip``): a custom resource (``amd_gpu`` by default), which nodes advertise with
  ``ray start --resources '{"amd_gpu": N}'``. Ray hands out no device ids for custom resources,
  so the actor claims a free device index on its node itself (:func:`claim_device_index`: an
  exclusive lock file per index, held for the actor's life and released by the kernel when
  its process dies).

``Placement`` can be given explicitly to ``ClusterRuntime(placement=...)`` for anything else.
Actors are spread over nodes (``SPREAD``) so that a cluster of N one-device nodes gets one
actor per node.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field
from typing import Any

#: the custom resource AMD nodes advertise, one unit per device
AMD_RESOURCE = "amd_gpu"
_LOCK_DIR = "/tmp"


@dataclass(frozen=True)
class Placement:
    """Ray resources of one engine actor."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)
    #: "SPREAD" (one actor per node while nodes last) or "DEFAULT" (pack)
    strategy: str = "SPREAD"
    #: claim a device index on the node (custom-resource devices): the resource whose count
    #: bounds the indices; None when Ray assigns devices itself (num_gpus) or there are none
    claim_index_of: str | None = None

    def ray_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"num_cpus": self.num_cpus, "scheduling_strategy": self.strategy}
        if self.num_gpus:
            opts["num_gpus"] = self.num_gpus
        if self.resources:
            opts["resources"] = dict(self.resources)
        return opts

    def slots_in(self, totals: dict[str, float]) -> int:
        """How many actors the cluster's total resources hold (at least 1)."""
        counts = []
        if self.num_cpus:
            counts.append(int(totals.get("CPU", 0) // self.num_cpus))
        if self.num_gpus:
            counts.append(int(totals.get("GPU", 0) // self.num_gpus))
        for name, amount in self.resources.items():
            if amount:
                counts.append(int(totals.get(name, 0) // amount))
        return max(1, min(counts)) if counts else 1


def placement_for(backend: str, kind: str, workers: int = 2) -> Placement:
    """The default placement of an engine ``<backend>-<kind>`` (see the module docstring)."""
    parallel = max(1, workers) if kind == "multiprocess" else 1
    if backend == "cuda":
        return Placement(num_cpus=1.0, num_gpus=1.0)
    if backend in ("hip", "hsa"):
        return Placement(num_cpus=1.0, resources={AMD_RESOURCE: 1.0}, claim_index_of=AMD_RESOURCE)
    return Placement(num_cpus=float(parallel))


_held: list[int] = []  # lock file descriptors this process holds (one per claimed device)


def claim_device_index(count: int, tag: str = AMD_RESOURCE) -> int:
    """Claim the lowest free device index below ``count`` on this node, for this process's life.

    Raises RuntimeError when all are taken (Ray placed more actors than the node advertised).
    """
    for index in range(max(1, count)):
        path = os.path.join(_LOCK_DIR, f"pappus-{tag}-{index}.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        _held.append(fd)
        return index
    raise RuntimeError(f"all {count} {tag} devices of this node are claimed by other actors")
