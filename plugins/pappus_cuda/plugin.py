"""Registers the ``cuda`` backend (entry point ``cuda = "pappus_cuda.plugin"`` in group ``pappus``).

Importing this module is cheap and never imports cuda-bindings or touches a GPU.
"""

from __future__ import annotations

from typing import Any

from pappus.hookspecs import hookimpl
from pappus.interfaces import Availability, Backend, DeviceSpec, capabilities

from .build import build
from .driver import CudaDriver, native_target


def check() -> Availability:
    """Whether NVIDIA GPUs can be driven here, with the driver's exact answer when not."""
    from .runtime import availability

    return availability()


CUDA_BACKEND = Backend(
    name="cuda",
    description="NVIDIA GPUs through the CUDA driver API (cuda-bindings): cubin/PTX/fatbin, validated statically",
    driver=CudaDriver(),
    device=lambda **options: DeviceSpec("pappus_cuda.device:create_device", options),
    check=check,
    capabilities=capabilities("zeroing", "malloc_heap_limit", "signatures"),
    library_suffixes=(".cubin", ".ptx", ".fatbin"),
    build_targets=("sm_*", "compute_*"),
    build=build,
    native_target=native_target,
    faults_end_process=True,  # sticky errors: see device.py reset()
    known_gaps={
        "malloc_heap::test_small_limit_is_enforced": (
            "the driver's smallest device malloc heap is 4 MiB (cuCtxSetLimit rounds any smaller request up; "
            "measured on driver 580, H100): a limit below it cannot be enforced. Kernels that call malloc are "
            "refused at registration unless a heap is configured, and the limit reported is the driver's"),
    },
)


@hookimpl
def pappus_register_backends(registry: Any) -> None:
    registry.add(CUDA_BACKEND)
