"""pappus CPU backend: HIP kernels compiled for the host CPU, run in sandboxed child processes.

Importing this package is cheap: nothing is compiled or spawned until a device is opened or a
library is built.
"""

from __future__ import annotations

__all__ = ["CpuDriver", "CpuDevice", "build_library"]


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    if name == "CpuDriver":
        from .driver import CpuDriver

        return CpuDriver
    if name == "CpuDevice":
        from .device import CpuDevice

        return CpuDevice
    if name == "build_library":
        from .build import build_library

        return build_library
    raise AttributeError(f"module 'pappus_cpu' has no attribute {name!r}")
