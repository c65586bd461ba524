"""The HIP driver: reads AMDGPU code objects statically, for the target the device will run."""

from __future__ import annotations

from pappus.devices.binding import env_flag, env_index
from pappus.interfaces import Driver
from pappus.kernels import DeviceLimits, LibraryInfo

from . import codeobject
from .device import configured_arch


class HipDriver(Driver):
    """``inspect_library`` for ``.hsaco`` files (clang offload bundles or raw AMDGPU ELF).

    The target is, in order: ``arch`` given here; the architecture of the first visible AMD GPU
    (asked once, in a subprocess, and only when the runtime is at least as new as hip-python);
    ``PAPPUS_HIP_ARCH``; ``gfx90a``. ``PAPPUS_HIP_ALLOW_WRITABLE_GLOBALS=1`` accepts code objects
    with ``__device__``/``__constant__`` variables (they then carry data between invocations).
    """

    def __init__(self, arch: str | None = None, *, allow_writable_globals: bool | None = None) -> None:
        self.arch = arch
        self._allow = allow_writable_globals

    @property
    def allow_writable_globals(self) -> bool:
        if self._allow is not None:
            return self._allow
        return env_flag("PAPPUS_HIP_ALLOW_WRITABLE_GLOBALS")

    def target(self) -> str:
        return self.arch or native_target()

    def inspect_library(self, data: bytes) -> LibraryInfo:
        return codeobject.read_library(data, self.target(), allow_writable_globals=self.allow_writable_globals)

    def device_limits(self) -> DeviceLimits:
        return DeviceLimits()


def native_target() -> str:
    """The build target for code that runs here: the visible GPU's target id (``gfx90a:sramecc+:
    xnack-``, which hipcc takes as it is), else ``PAPPUS_HIP_ARCH``, else gfx90a: what the
    conformance suite and the benchmarks build their kernels for."""
    return device_arch() or configured_arch()


def device_arch() -> str | None:
    """gcnArchName of device 0 (``PAPPUS_HIP_DEVICE`` picks another) when a usable AMD GPU is
    visible, else None. Never initialises HIP in this process."""
    from . import runtime

    if not runtime.hip_installed():
        return None
    result = runtime.probe_cached()
    if not result.available or not result.archs:
        return None
    index = env_index("PAPPUS_HIP_DEVICE")
    return result.archs[index] if index < len(result.archs) and result.archs[index] else None
