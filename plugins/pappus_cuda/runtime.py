"""cuda-bindings, imported lazily and driven only through one checked call.

* :func:`load_driver` imports ``cuda.bindings.driver`` on first use (pappus works without it).
* :func:`checked` turns the bindings' ``(CUresult, value...)`` tuples into values or pappus errors:
  :class:`KernelFault` for the statuses that mean a kernel faulted (they are *sticky*: the context
  is unusable afterwards), :class:`DeviceError` otherwise, always with the status name.
* :func:`probe` answers whether an NVIDIA GPU is usable here; :func:`availability` runs it in a
  short-lived subprocess so that asking never initialises CUDA in the caller's process (CUDA does
  not survive ``fork`` after ``cuInit``, and engines fork workers).
* A driver older than the bindings (cuda-bindings 13 on a CUDA 12 driver) is never driven past
  ``cuDriverGetVersion``: the newer bindings may resolve entry points whose signatures the old
  driver does not have.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from pappus.devices.binding import IsolatedProbe, checked_call
from pappus.devices.binding import status_name as _status_name
from pappus.errors import DeviceError, KernelFault
from pappus.host_access import ALLOW_ENV, host_access_allowed

NOT_INSTALLED = "cuda-bindings is not installed (pip install 'pappus[cuda]')"
NO_DRIVER = "libcuda.so.1 not found (no NVIDIA driver)"

#: CUresult names that mean a kernel faulted. All of them are sticky: every later call in the
#: context returns the same error until the context is destroyed (reset()).
FAULT_STATUSES = {
    "CUDA_ERROR_ILLEGAL_ADDRESS": "illegal_address",
    "CUDA_ERROR_LAUNCH_FAILED": "launch_failed",
    "CUDA_ERROR_ASSERT": "assert",
    "CUDA_ERROR_ILLEGAL_INSTRUCTION": "illegal_instruction",
    "CUDA_ERROR_MISALIGNED_ADDRESS": "misaligned_address",
    "CUDA_ERROR_INVALID_ADDRESS_SPACE": "invalid_address_space",
    "CUDA_ERROR_INVALID_PC": "invalid_pc",
    "CUDA_ERROR_HARDWARE_STACK_ERROR": "hardware_stack_error",
    "CUDA_ERROR_LAUNCH_TIMEOUT": "launch_timeout",
    "CUDA_ERROR_TENSOR_MEMORY_LEAK": "tensor_memory_leak",
}
#: Not kernel faults, but the context is gone all the same.
STICKY_STATUSES = frozenset(FAULT_STATUSES) | {"CUDA_ERROR_ECC_UNCORRECTABLE", "CUDA_ERROR_CONTEXT_IS_DESTROYED",
                                                 "CUDA_ERROR_UNKNOWN"}

_DESCRIPTIONS = {
    "CUDA_ERROR_NO_DEVICE": "no CUDA-capable device is detected",
    "CUDA_ERROR_INSUFFICIENT_DRIVER": "the NVIDIA driver is older than the CUDA version the bindings need",
    "CUDA_ERROR_NOT_INITIALIZED": "CUDA is not initialised",
    "CUDA_ERROR_INVALID_DEVICE": "invalid device ordinal",
    "CUDA_ERROR_NO_BINARY_FOR_GPU": "the code object has no code for this GPU",
    "CUDA_ERROR_INVALID_IMAGE": "the driver rejected the code object",
    "CUDA_ERROR_INVALID_PTX": "the driver could not compile the PTX",
    "CUDA_ERROR_UNSUPPORTED_PTX_VERSION": "the PTX is newer than this driver understands",
    "CUDA_ERROR_NOT_FOUND": "no such kernel in the module",
    "CUDA_ERROR_OUT_OF_MEMORY": "out of device memory",
    "CUDA_ERROR_INVALID_VALUE": "invalid argument",
    "CUDA_ERROR_UNSUPPORTED_LIMIT": "the driver does not support this limit",
    "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES": "too many resources requested for the launch (registers or threads)",
    "CUDA_ERROR_ILLEGAL_ADDRESS": "a kernel accessed an illegal address",
    "CUDA_ERROR_LAUNCH_FAILED": "a kernel failed (an exception on the device)",
    "CUDA_ERROR_ASSERT": "a kernel's device-side assert failed",
    "CUDA_ERROR_ILLEGAL_INSTRUCTION": "a kernel executed an illegal instruction (e.g. __trap())",
    "CUDA_ERROR_MISALIGNED_ADDRESS": "a kernel accessed a misaligned address",
    "CUDA_ERROR_LAUNCH_TIMEOUT": "a kernel ran past the display watchdog",
    "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH": "the kernel driver and libcuda.so versions differ",
    "CUDA_ERROR_OPERATING_SYSTEM": "the operating system refused a CUDA call",
}


def load_driver() -> Any:
    """The ``cuda.bindings.driver`` module (cuda-python's ``cuda.cuda`` for old installs)."""
    try:
        from cuda.bindings import driver  # noqa: PLC0415 - imported lazily on purpose
    except ImportError:
        from cuda import cuda as driver  # type: ignore[no-redef]  # cuda-python < 12.6

    return driver


def bindings_installed() -> bool:
    try:
        load_driver()
    except Exception:
        return False
    return True


def bindings_version(driver: Any = None) -> tuple[tuple[int, ...], str]:
    """(CUDA version the bindings were generated for, as (major, minor); cuda-bindings' version)."""
    dist = "?"
    try:
        from importlib.metadata import version

        dist = version("cuda-bindings")
    except Exception:
        try:
            from importlib.metadata import version

            dist = version("cuda-python")
        except Exception:
            pass
    try:
        num = int(getattr(driver if driver is not None else load_driver(), "CUDA_VERSION", 0))
        if num > 0:
            return (num // 1000, (num % 1000) // 10), dist
    except Exception:
        pass
    parts = [int(p) for p in dist.split(".")[:2] if p.isdigit()]
    return (tuple(parts) if len(parts) == 2 else (0, 0)), dist


def split_cuda_version(value: int) -> tuple[int, int]:
    """CUDA's version encoding: 1000 * major + 10 * minor (12080 -> (12, 8))."""
    return value // 1000, (value % 1000) // 10


def _fmt(version: tuple[int, ...]) -> str:
    return ".".join(str(v) for v in version)


# --- checked calls ------------------------------------------------------------------------------


def status_name(err: Any) -> tuple[str, int]:
    """(name, value) of a CUresult, from the enum alone (no driver call)."""
    return _status_name(err, lambda value: load_driver().CUresult(value).name, "CUresult({})")


def error_for(api: str, err: Any, **facts: Any) -> DeviceError | KernelFault | None:
    """The pappus error for a CUresult (None for CUDA_SUCCESS)."""
    name, code = status_name(err)
    if code == 0:
        return None
    what = _DESCRIPTIONS.get(name, "")
    message = f"{api} failed: {name} ({code})" + (f": {what}" if what else "")
    if name in FAULT_STATUSES:
        kernel = facts.get("kernel")
        if kernel and api in ("cuCtxSynchronize", "cuLaunchKernel"):
            message = f"kernel {kernel!r} faulted: {name}" + (f" ({what})" if what else "")
        extra = {k: v for k, v in facts.items() if k not in ("reasons", "api", "status", "kernel", "code")}
        return KernelFault(message, kernel=kernel, reasons=[FAULT_STATUSES[name]], api=api, status=name,
                           code=code, **extra)
    return DeviceError(message, api=api, status=name, code=code,
                       **{k: v for k, v in facts.items() if k not in ("api", "status", "code")})


def checked(driver: Any, api: str, *args: Any, **facts: Any) -> Any:
    """Call ``driver.<api>(*args)``; return its value(s) or raise a pappus error.

    The bindings return ``(err,)``, ``(err, value)`` or ``(err, v1, v2)``: this returns None, the
    value, or the tuple of values. Any exception from the binding itself (a missing library, a
    wrong argument type) becomes a DeviceError naming the API.
    """
    return checked_call(driver, api, args, facts, error_for, "cuda-bindings")


# --- availability ---------------------------------------------------------------------------------


@dataclass
class ProbeResult:
    """What the CUDA driver answers, without going past the version check."""

    installed: bool
    available: bool = False
    reason: str = ""
    bindings: str = ""  # CUDA version the bindings target, e.g. "13.0"
    package: str = ""  # cuda-bindings distribution version
    driver: str = ""  # CUDA version the driver supports, e.g. "12.8"
    driver_older: bool = False
    status: str = ""
    device_count: int = 0
    archs: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    shared_optin: list[int] = field(default_factory=list)  # max shared bytes per block, opted in
    #: per device: kernels can reach pageable host memory (HMM, ATS); engines refuse it unless allowed
    pageable_memory_access: list[bool] = field(default_factory=list)


def _no_driver(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}"
    return ("DynamicLibNotFound" in text or "libcuda" in text or "dlopen" in text
            or "display driver" in text or "cannot open shared object" in text)


def probe() -> ProbeResult:
    """Ask the CUDA driver, in this process, whether a GPU is usable; never raises."""
    try:
        driver = load_driver()
    except ImportError:
        return ProbeResult(installed=False, reason=NOT_INSTALLED)
    except Exception as exc:
        return ProbeResult(installed=False, reason=f"cuda-bindings failed to import: {type(exc).__name__}: {exc}")
    result = ProbeResult(installed=True)
    bind, result.package = bindings_version(driver)
    result.bindings = _fmt(bind[:2])
    try:
        err, value = driver.cuDriverGetVersion()
    except Exception as exc:
        if _no_driver(exc):
            result.reason = NO_DRIVER
        else:
            result.reason = f"the CUDA driver (libcuda.so.1) cannot be used: {type(exc).__name__}: {exc}"
        return result
    name, code = status_name(err)
    if code != 0:
        result.reason = f"cuDriverGetVersion failed: {name} ({code})"
        return result
    drv = split_cuda_version(int(value))
    result.driver = _fmt(drv)
    if drv[0] < bind[0]:
        result.driver_older = True
        result.reason = (f"the NVIDIA driver supports CUDA {result.driver}, older than the CUDA {result.bindings} "
                         f"that cuda-bindings {result.package} is built for; install cuda-bindings "
                         f"{drv[0]}.x (pip install 'cuda-bindings~={drv[0]}.0') or a newer driver")
        return result
    try:
        (err,) = driver.cuInit(0)
    except Exception as exc:
        result.reason = f"cuInit failed in the binding: {type(exc).__name__}: {exc}"
        return result
    name, code = status_name(err)
    if code != 0:
        result.status = name
        what = _DESCRIPTIONS.get(name, "")
        result.reason = f"cuInit failed: {name}" + (f" ({what})" if what else "")
        return result
    try:
        count = int(checked(driver, "cuDeviceGetCount"))
    except Exception as exc:
        result.reason = str(exc)
        return result
    if count == 0:
        result.reason = "no NVIDIA GPU visible (0 devices)"
        return result
    result.device_count = count
    for index in range(count):
        try:
            arch, dev_name = device_arch_and_name(driver, index)
        except Exception as exc:
            arch, dev_name = "", f"? ({type(exc).__name__})"
        result.archs.append(arch)
        result.names.append(dev_name)
        try:
            dev = checked(driver, "cuDeviceGet", index)
            optin = driver.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
            result.shared_optin.append(int(checked(driver, "cuDeviceGetAttribute", optin, dev)))
        except Exception:
            result.shared_optin.append(0)
        try:
            pageable = driver.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS
            result.pageable_memory_access.append(bool(int(checked(driver, "cuDeviceGetAttribute", pageable, dev))))
        except Exception:
            result.pageable_memory_access.append(False)
    result.available = True
    result.reason = (f"{count} NVIDIA GPU(s), device 0: {result.names[0]} ({result.archs[0] or 'arch unknown'}); "
                     f"driver CUDA {result.driver}, cuda-bindings {result.package}")
    reach = [str(i) for i, yes in enumerate(result.pageable_memory_access) if yes]
    if reach:
        result.reason += (f"; kernels on device {', '.join(reach)} can reach pageable host memory (HMM or ATS): "
                          + (f"allowed here by {ALLOW_ENV}, tenants are not isolated from each other"
                             if host_access_allowed(None) else
                             f"engines refuse it unless allowed ({ALLOW_ENV}=1; see docs/security.md)"))
    return result


def device_arch_and_name(driver: Any, index: int) -> tuple[str, str]:
    """("sm_90", "NVIDIA H100 80GB HBM3") of a device, through the checked call."""
    dev = checked(driver, "cuDeviceGet", index)
    attr = driver.CUdevice_attribute
    major = int(checked(driver, "cuDeviceGetAttribute", attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev))
    minor = int(checked(driver, "cuDeviceGetAttribute", attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev))
    raw = checked(driver, "cuDeviceGetName", 256, dev)
    name = raw.split(b"\0", 1)[0].decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return f"sm_{major}{minor}", name


_PROBE = IsolatedProbe(label="CUDA", module="pappus_cuda.runtime", result=ProbeResult, probe=lambda: probe(),
                       search_path=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       inline_env="PAPPUS_CUDA_PROBE", installed=lambda: bindings_installed(),
                       not_installed=NOT_INSTALLED)
_main = _PROBE.main  # the probe subprocess's entry
#: :func:`probe` in a fresh interpreter (``PAPPUS_CUDA_PROBE=inline`` runs it here instead)
probe_isolated = _PROBE.isolated
probe_cached = _PROBE.cached  # the isolated answer, asked once per process
#: whether the CUDA backend can run here, and exactly why not; never raises, never prints
availability = _PROBE.availability
