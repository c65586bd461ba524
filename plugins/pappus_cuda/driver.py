"""The CUDA driver: reads cubin, PTX and fatbin libraries statically, for the GPU that will run them."""

from __future__ import annotations

import os

from pappus.devices.binding import env_flag, env_index
from pappus.interfaces import Driver
from pappus.kernels import DeviceLimits, LibraryInfo

from . import cubin


def configured_arch() -> str | None:
    """``PAPPUS_CUDA_ARCH`` (e.g. sm_90), or None."""
    return os.environ.get("PAPPUS_CUDA_ARCH", "").strip() or None


class CudaDriver(Driver):
    """``inspect_library`` for ``.cubin``, ``.ptx`` and ``.fatbin`` files.

    The target (which fatbin entry is validated; whether a cubin can run at all) is, in order:
    ``arch`` given here; ``PAPPUS_CUDA_ARCH``; the architecture of the visible GPU
    (``PAPPUS_CUDA_DEVICE``, default 0; asked once, in a subprocess); none, in which case any
    architecture is accepted and the newest cubin of a fatbin is read.
    ``PAPPUS_CUDA_ALLOW_WRITABLE_GLOBALS=1`` accepts code with ``__device__`` variables (they
    then carry data from one invocation to the next).
    """

    def __init__(self, arch: str | None = None, *, allow_writable_globals: bool | None = None) -> None:
        self.arch = arch
        self._allow = allow_writable_globals

    @property
    def allow_writable_globals(self) -> bool:
        if self._allow is not None:
            return self._allow
        return env_flag("PAPPUS_CUDA_ALLOW_WRITABLE_GLOBALS")

    def target(self) -> str | None:
        return self.arch or configured_arch() or device_arch()

    def inspect_library(self, data: bytes) -> LibraryInfo:
        return cubin.read_library(data, self.target(), allow_writable_globals=self.allow_writable_globals)

    def device_limits(self) -> DeviceLimits:
        """48 KiB of shared memory per block (what every GPU gives without opting in), or what the
        visible GPU gives with opt-in (the device opts a kernel in when a launch asks for more)."""
        return DeviceLimits(max_shared_bytes=device_shared_optin() or 48 * 1024)


def _probe() -> object | None:
    from . import runtime

    if not runtime.bindings_installed():
        return None
    result = runtime.probe_cached()
    return result if result.available else None


def device_shared_optin() -> int | None:
    result = _probe()
    if result is None:
        return None
    optin = getattr(result, "shared_optin", [])
    index = _index()
    return optin[index] if index < len(optin) and optin[index] > 0 else None


def _index() -> int:
    return env_index("PAPPUS_CUDA_DEVICE")


def device_arch() -> str | None:
    """sm_XX of the visible GPU when one is usable, else None. Never initialises CUDA in this process."""
    from . import runtime

    if not runtime.bindings_installed():
        return None
    result = runtime.probe_cached()
    if not result.available or not result.archs:
        return None
    index = _index()
    return result.archs[index] if index < len(result.archs) and result.archs[index] else None


def native_target() -> str:
    """The build target for code that runs here: ``PAPPUS_CUDA_ARCH``, else the visible GPU's
    sm_XX. Without either there is nothing to build for; a fatbin of chosen targets
    (``pappus build --targets sm_80,sm_90``) is the way to build elsewhere."""
    from pappus.errors import FieldError, ValidationError

    arch = configured_arch() or device_arch()
    if arch is None:
        raise ValidationError(FieldError("target", "no NVIDIA GPU is visible and PAPPUS_CUDA_ARCH is not set: "
                                         "name the target (e.g. sm_90)"), what="arguments")
    return arch
