"""hip-python, imported lazily and driven only through one checked call.

* :func:`load_hip` imports ``hip.hip`` on first use (pappus works without hip-python).
* :func:`versions` compares the HIP runtime that hip-python opened (``hipRuntimeGetVersion``)
  with the HIP version the bindings were generated for. hip-python opens the unversioned
  ``libamdhip64.so`` and resolves symbols lazily, so it loads older runtimes too, where many bound
  symbols are missing (``RuntimeError: failed to dlsym``) and some enums and structs differ
  silently. A runtime older than the bindings is therefore never driven past the version check.
* :func:`checked` turns hip-python's ``(hipError_t, value...)`` tuples into values or pappus
  errors: :class:`KernelFault` for statuses that mean a kernel faulted, :class:`DeviceError`
  otherwise.
* :func:`probe` answers availability; :func:`availability` runs it in a short-lived subprocess,
  so that asking whether HIP is usable never initialises the HIP runtime in the caller's process
  (HIP does not survive ``fork`` after initialisation, and engines fork workers).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from pappus.devices.binding import IsolatedProbe, checked_call
from pappus.devices.binding import status_name as _status_name
from pappus.errors import DeviceError, KernelFault

NOT_INSTALLED = "hip-python is not installed (pip install 'pappus[hip]')"

#: hipError_t values that mean a kernel faulted (the context is then unusable until a reset).
#: Names of HIP's enum only (hip-python's hipError_t): CUDA's illegal-instruction,
#: misaligned-address, invalid-address-space, invalid-PC and hardware-stack statuses have no HIP
#: counterpart, so entries for them could never match.
FAULT_STATUSES = {
    "hipErrorIllegalAddress": "illegal_address",
    "hipErrorLaunchFailure": "launch_failure",
    "hipErrorAssert": "assert",
    "hipErrorLaunchTimeOut": "launch_timeout",
}

_DESCRIPTIONS = {
    "hipErrorNoDevice": "no AMD GPU visible",
    "hipErrorInvalidDevice": "invalid device",
    "hipErrorInsufficientDriver": "the installed amdgpu driver is too old for this runtime",
    "hipErrorNoBinaryForGpu": "the code object has no code for this GPU",
    "hipErrorInvalidImage": "the device rejected the code object",
    "hipErrorSharedObjectInitFailed": "the code object failed to load",
    "hipErrorNotFound": "no such kernel in the module",
    "hipErrorOutOfMemory": "out of device memory",
    "hipErrorInvalidValue": "invalid argument",
    "hipErrorUnsupportedLimit": "the runtime does not support this limit",
    "hipErrorIllegalAddress": "a kernel accessed an illegal address",
    "hipErrorLaunchFailure": "a kernel launch failed (usually a memory fault)",
    "hipErrorLaunchTimeOut": "a kernel ran past the device watchdog",
}


def load_hip() -> Any:
    """The ``hip.hip`` module of hip-python. Raises ImportError when it is not installed."""
    from hip import hip  # noqa: PLC0415 - imported lazily on purpose

    return hip


def hip_installed() -> bool:
    try:
        load_hip()
    except ImportError:
        return False
    except Exception:  # a broken installation counts as not usable
        return False
    return True


# --- versions -------------------------------------------------------------------------------


def split_hip_version(value: int) -> tuple[int, int, int]:
    """HIP_VERSION encoding: major * 10^7 + minor * 10^5 + patch (50221153 -> 5.2.21153)."""
    return value // 10_000_000, (value // 100_000) % 100, value % 100_000


def bindings_version() -> tuple[tuple[int, ...], str]:
    """(HIP version the bindings were generated for, hip-python's distribution version)."""
    import importlib

    dist = "?"
    try:
        from importlib.metadata import version

        dist = version("hip-python")
    except Exception:
        pass
    try:
        pkg = importlib.import_module("hip")
        tup = getattr(pkg, "HIP_VERSION_TUPLE", None)
        if tup and all(isinstance(v, int) for v in tup[:2]):
            return tuple(int(v) for v in tup[:3] if isinstance(v, int)), dist
        num = getattr(pkg, "HIP_VERSION", None)
        if isinstance(num, int) and num > 0:
            return split_hip_version(num), dist
    except Exception:
        pass
    parts = [int(p) for p in dist.split(".")[:2] if p.isdigit()]
    return (tuple(parts) if len(parts) == 2 else (0, 0)), dist


def _fmt(version: tuple[int, ...]) -> str:
    return ".".join(str(v) for v in version)


@dataclass
class ProbeResult:
    """What the HIP runtime answers, without going past the version check."""

    installed: bool
    available: bool = False
    reason: str = ""
    bindings: str = ""  # HIP version the bindings target, e.g. "7.15"
    package: str = ""  # hip-python distribution version
    runtime: str = ""  # e.g. "5.2.21153"
    runtime_older: bool = False
    status: str = ""  # hipGetDeviceCount's status name
    code: int | None = None
    device_count: int = 0
    archs: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)


def status_name(hip: Any, err: Any) -> tuple[str, int]:
    """(name, value) of a hipError_t, from the enum alone (no runtime call)."""
    return _status_name(err, lambda value: hip.hipError_t(value).name, "hipError({})")


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.split(b"\0", 1)[0].decode("utf-8", "replace")
    if isinstance(value, str):
        return value.split("\0", 1)[0]
    decode = getattr(value, "decode", None)
    if callable(decode):
        try:
            return str(decode("utf-8", "replace")).split("\0", 1)[0]
        except Exception:
            pass
    return str(value)


def probe() -> ProbeResult:
    """Ask the HIP runtime, in this process, whether a GPU is usable; never raises."""
    try:
        hip = load_hip()
    except ImportError:
        return ProbeResult(installed=False, reason=NOT_INSTALLED)
    except Exception as exc:
        return ProbeResult(installed=False, reason=f"hip-python failed to import: {type(exc).__name__}: {exc}")
    result = ProbeResult(installed=True)
    bind, result.package = bindings_version()
    result.bindings = _fmt(bind[:2])
    try:
        err, value = hip.hipRuntimeGetVersion()
        name, code = status_name(hip, err)
        if code != 0:
            result.reason = f"hipRuntimeGetVersion failed: {name} ({code})"
            return result
        runtime = split_hip_version(int(value))
    except Exception as exc:  # no libamdhip64.so, or a symbol missing
        result.reason = f"the HIP runtime (libamdhip64.so) cannot be used: {type(exc).__name__}: {exc}"
        return result
    result.runtime = _fmt(runtime)
    result.runtime_older = runtime[:2] < tuple(bind[:2])
    older = (f"runtime {result.runtime} is older than the bindings ({result.bindings}, hip-python "
             f"{result.package}); install the hip-python release that matches the ROCm runtime")
    try:
        err, count = hip.hipGetDeviceCount()
        result.status, result.code = status_name(hip, err)
    except Exception as exc:
        result.reason = f"hipGetDeviceCount failed: {type(exc).__name__}: {exc}"
        if result.runtime_older:
            result.reason += "; " + older
        return result
    if result.code != 0 or int(count) == 0:
        what = _DESCRIPTIONS.get(result.status, "the HIP runtime reports no usable device")
        if result.code == 0:
            result.reason = "no AMD GPU visible (0 devices)"
        else:
            result.reason = f"{result.status} ({result.code}): {what}"
        if result.runtime_older:
            result.reason += "; " + older
        return result
    result.device_count = int(count)
    if result.runtime_older:
        result.reason = f"{result.device_count} AMD GPU(s) visible, but the " + older
        return result
    for index in range(result.device_count):
        try:
            arch, name = device_arch_and_name(hip, index)
        except Exception as exc:  # still available; the driver falls back to configuration
            arch, name = "", f"? ({type(exc).__name__})"
        result.archs.append(arch)
        result.names.append(name)
    result.available = True
    first = f"{result.names[0]} ({result.archs[0] or 'arch unknown'})"
    result.reason = (f"{result.device_count} AMD GPU(s), device 0: {first}; runtime {result.runtime}, "
                     f"hip-python {result.package}")
    return result


def device_arch_and_name(hip: Any, index: int) -> tuple[str, str]:
    """gcnArchName and name of a device. Only for runtimes at least as new as the bindings."""
    try:
        res = hip.hipGetDeviceProperties(index)  # hip-python >= 7: returns (err, props)
        props = res[1] if isinstance(res, tuple) and len(res) > 1 else None
        err = res[0] if isinstance(res, tuple) else res
    except TypeError:  # hip-python 6.x: hipGetDeviceProperties(props, index) -> (err,)
        props = hip.hipDeviceProp_t()
        res = hip.hipGetDeviceProperties(props, index)
        err = res[0] if isinstance(res, tuple) else res
    checked_status(hip, "hipGetDeviceProperties", err)
    if props is None:
        raise DeviceError("hipGetDeviceProperties returned no properties", api="hipGetDeviceProperties",
                          status="binding_error")
    return _text(props.gcnArchName), _text(props.name)


# --- availability (subprocess) ----------------------------------------------------------------

_PROBE = IsolatedProbe(label="HIP", module="pappus_hip.runtime", result=ProbeResult, probe=lambda: probe(),
                       search_path=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       inline_env="PAPPUS_HIP_PROBE", installed=lambda: hip_installed(), not_installed=NOT_INSTALLED)
_main = _PROBE.main  # the probe subprocess's entry
#: :func:`probe` in a fresh interpreter (``PAPPUS_HIP_PROBE=inline`` runs it here instead)
probe_isolated = _PROBE.isolated
probe_cached = _PROBE.cached  # the isolated answer, asked once per process
#: whether the HIP backend can run here, and exactly why not; never raises, never prints
availability = _PROBE.availability


# --- checked calls ------------------------------------------------------------------------------


def error_for(hip: Any, api: str, err: Any, **facts: Any) -> DeviceError | KernelFault | None:
    """The pappus error for a hipError_t (None for hipSuccess)."""
    name, code = status_name(hip, err)
    if code == 0:
        return None
    what = _DESCRIPTIONS.get(name, "")
    message = f"{api} failed: {name} ({code})" + (f": {what}" if what else "")
    if name in FAULT_STATUSES:
        return KernelFault(message, reasons=[FAULT_STATUSES[name]], api=api, status=name,
                           **{k: v for k, v in facts.items() if k not in ("reasons", "api", "status")})
    return DeviceError(message, api=api, status=name, status_code=code, **facts)


def checked_status(hip: Any, api: str, err: Any, **facts: Any) -> None:
    """Raise the pappus error for a non-success hipError_t."""
    problem = error_for(hip, api, err, **facts)
    if problem is not None:
        raise problem


def checked(hip: Any, api: str, *args: Any, **facts: Any) -> Any:
    """Call ``hip.<api>(*args)``; return its value(s) or raise a pappus error.

    hip-python returns ``(err,)``, ``(err, value)`` or ``(err, v1, v2)``: this returns None, the
    value, or the tuple of values. A symbol missing from the runtime (``failed to dlsym``) and any
    other exception from the binding become a DeviceError naming the API.
    """
    return checked_call(hip, api, args, facts, lambda api, err, **f: error_for(hip, api, err, **f), "hip-python")
