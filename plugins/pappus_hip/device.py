"""The HIP DeviceAPI on hip-python: one AMD GPU as one engine (or one worker) drives it.

Every HIP call goes through :func:`pappus_hip.runtime.checked`, so callers see values or pappus
errors, never ``(err, value)`` tuples. Kernel arguments arrive packed per parameter
(:class:`pappus.plan.Launch`); they are laid out at the offsets the code object's metadata gives
(the real kernarg layout, hidden arguments excluded: the runtime fills those) and passed through
``hipModuleLaunchKernel``'s ``extra`` (``HIP_LAUNCH_PARAM_BUFFER_POINTER``/``_SIZE``).

Unverified on AMD hardware: only NVIDIA GPUs are lent to this project. The code follows the HIP
API as documented and as hip-python binds it; the pure parts (marshalling, error mapping, module
bookkeeping) are tested against a fake runtime.
"""

from __future__ import annotations

import ctypes
import logging
import os
from dataclasses import dataclass
from typing import Any

from pappus.devices.binding import env_index
from pappus.devices.gpu import DriverCalls, GpuDevice, LoadedKernel, LoadedModule, limits_from
from pappus.errors import BackendUnavailable, DeviceError, KernelFault, PappusError
from pappus.host_access import host_access_allowed, refuse_reachable_host_memory
from pappus.interfaces import DeviceInfo
from pappus.kernels import DeviceLimits, KernelInfo, KernelParam, LibraryInfo
from pappus.plan import Launch

from . import codeobject, runtime
from .codeobject import TargetID

log = logging.getLogger("pappus.hip")

DEFAULT_ARCH = "gfx90a"

# hipLaunchParam sentinels (HIP headers: (void*)0x01, 0x02, 0x03)
_BUFFER_POINTER, _BUFFER_SIZE, _END = 1, 2, 3


def configured_arch() -> str:
    """The target when no device tells: ``PAPPUS_HIP_ARCH`` (default gfx90a)."""
    return os.environ.get("PAPPUS_HIP_ARCH", "").strip() or DEFAULT_ARCH


# --- kernel-argument marshalling ------------------------------------------------------------


def kernarg_layout(params: tuple[KernelParam, ...]) -> tuple[tuple[int, ...], int]:
    """(offset of each parameter, bytes of the explicit kernarg block).

    Offsets come from the metadata; a parameter without one (never in hipcc output) is placed at
    its natural alignment after the previous one, as the AMDGPU ABI does.
    """
    offsets: list[int] = []
    end = 0
    for p in params:
        if p.offset is not None:
            offset = p.offset
        else:
            align = min(8, 1 << (max(p.size, 1) - 1).bit_length())
            offset = (end + align - 1) & ~(align - 1)
        offsets.append(offset)
        end = max(end, offset + p.size)
    return tuple(offsets), (end + 7) & ~7


def pack_kernargs(kernel: str, params: tuple[KernelParam, ...], offsets: tuple[int, ...], span: int,
                  args: tuple[bytes, ...]) -> bytes:
    """The explicit kernarg block: each packed argument at its parameter's offset."""
    if len(args) != len(params):
        raise DeviceError(f"kernel {kernel!r} takes {len(params)} arguments, the launch has {len(args)}",
                          api="hipModuleLaunchKernel", status="bad_arguments", kernel=kernel)
    block = bytearray(span)
    for i, (param, raw, offset) in enumerate(zip(params, args, offsets, strict=True)):
        if len(raw) != param.size:
            raise DeviceError(f"argument {i} of kernel {kernel!r} is {len(raw)} bytes; the kernel's "
                              f"parameter is {param.size}", api="hipModuleLaunchKernel",
                              status="bad_arguments", kernel=kernel)
        block[offset:offset + param.size] = raw
    return bytes(block)


# --- handles --------------------------------------------------------------------------------


@dataclass(eq=False)
class HipKernel(LoadedKernel):
    """What :meth:`HipDevice.launch` needs besides the function: the kernel's kernarg layout."""

    offsets: tuple[int, ...]
    span: int


# --- the device -------------------------------------------------------------------------------


class HipDevice(GpuDevice):
    """One AMD GPU through hip-python. Options: ``device`` (index; ``PAPPUS_HIP_DEVICE``, default
    0), ``heap_limit`` (device malloc heap, default 0), ``arch`` (override the target id),
    ``allow_writable_globals`` (default False), ``allow_host_memory_access`` (default:
    ``PAPPUS_ALLOW_HOST_MEMORY_ACCESS``, else False: a device whose kernels can reach pageable host
    memory, XNACK on, is refused; see ``pappus.host_access``)."""

    calls = DriverCalls(vendor="HIP", mem_info="hipMemGetInfo", alloc="hipMalloc", free="hipFree",
                        memset="hipMemsetD8", copy_in="hipMemcpyHtoD", copy_out="hipMemcpyDtoH",
                        synchronize="hipDeviceSynchronize", load_module="hipModuleLoadData",
                        get_function="hipModuleGetFunction", unload_module="hipModuleUnload",
                        launch="hipModuleLaunchKernel", not_found="hipErrorNotFound",
                        out_of_memory="hipErrorOutOfMemory")

    def __init__(self, device: int | None = None, heap_limit: int = 0, arch: str | None = None,
                 allow_writable_globals: bool = False, allow_host_memory_access: bool | str | None = None,
                 _hip: Any = None, **_: Any) -> None:
        super().__init__()
        self.index = env_index("PAPPUS_HIP_DEVICE") if device is None else int(device)
        self.heap_limit_request = int(heap_limit)
        self.arch_override = arch
        self.allow_writable_globals = allow_writable_globals
        self.allow_host_memory_access = host_access_allowed(allow_host_memory_access)
        self.pageable_memory_access: bool | None = None  # as the device reports it at open (None: not asked)
        self._hip = _hip
        self._target: TargetID | None = None

    # --- plumbing ----------------------------------------------------------------------------

    @property
    def hip(self) -> Any:
        if self._hip is None:
            try:
                self._hip = runtime.load_hip()
            except ImportError:
                raise BackendUnavailable("hip", runtime.NOT_INSTALLED) from None
        return self._hip

    def _call(self, api: str, *args: Any, **facts: Any) -> Any:
        try:
            return runtime.checked(self.hip, api, *args, **facts)
        except KernelFault:
            # A faulted HIP context stays broken (sticky error) until hipDeviceReset: report
            # unhealthy so the executor calls reset() (or replaces this device).
            self._healthy = False
            raise
        except DeviceError as exc:
            if exc.fields.get("unknown_status"):  # a runtime newer than hip-python: maybe a fault
                self._healthy = False
            raise

    def _make_current(self) -> None:
        self._call("hipSetDevice", self.index)  # HIP's current device is per thread

    # --- DeviceAPI ---------------------------------------------------------------------------

    def open(self) -> DeviceInfo:
        hip = self.hip
        bind, package = runtime.bindings_version()
        rt = runtime.split_hip_version(int(self._call("hipRuntimeGetVersion")))
        if rt[:2] < tuple(bind[:2]):
            raise BackendUnavailable("hip", f"HIP runtime {'.'.join(map(str, rt))} is older than the "
                                     f"bindings ({'.'.join(map(str, bind[:2]))}, hip-python {package}); "
                                     "install the hip-python release that matches the ROCm runtime")
        count = int(self._call("hipGetDeviceCount"))
        if count == 0:
            raise DeviceError("no AMD GPU visible (0 devices)", api="hipGetDeviceCount", status="hipErrorNoDevice")
        if not 0 <= self.index < count:
            raise DeviceError(f"device {self.index} does not exist ({count} visible)", api="hipSetDevice",
                              status="hipErrorInvalidDevice")
        self._check_host_memory_access()
        self._opened = True
        self._ensure_current()
        # The heap limit is set before anything of a tenant is loaded or launched.
        self.heap_limit = self.set_malloc_heap_limit(self.heap_limit_request)
        free, total = self._call("hipMemGetInfo")
        try:
            arch, name = runtime.device_arch_and_name(hip, self.index)
        except PappusError:
            arch, name = "", f"AMD GPU {self.index}"
        self._target = self._choose_target(arch)
        limits = self._limits()
        return DeviceInfo(
            name=name or f"AMD GPU {self.index}", total_memory=int(total), free_memory=int(free),
            limits=limits, heap_limit=self.heap_limit,
            details={"device": self.index, "arch": arch or None, "target": str(self._target),
                     "runtime": ".".join(map(str, rt)), "hip_python": package,
                     "pageable_memory_access": self.pageable_memory_access,
                     "host_memory_access_allowed": self.allow_host_memory_access},
        )

    def _check_host_memory_access(self) -> None:
        """Refuse a GPU whose kernels can reach the worker's pageable host memory (XNACK on), unless
        allowed: tenants would not be isolated from each other there (``pappus.host_access``)."""
        name = "hipDeviceAttributePageableMemoryAccess"
        attr = getattr(getattr(self.hip, "hipDeviceAttribute_t", None), name, None)
        if attr is None:  # bindings older than the attribute: nothing to ask
            return
        self.pageable_memory_access = bool(int(self._call("hipDeviceGetAttribute", attr, self.index)))
        refuse_reachable_host_memory(device=f"HIP device {self.index}", reachable=self.pageable_memory_access,
                                     allowed=self.allow_host_memory_access, attribute=name,
                                     remedy="Turn XNACK off for the engine's processes (HSA_XNACK=0 in their "
                                     "environment)")

    def _choose_target(self, arch: str) -> TargetID:
        for text in (self.arch_override, arch, configured_arch()):
            if text:
                try:
                    return TargetID.parse(text)
                except ValueError:
                    continue
        return TargetID.parse(DEFAULT_ARCH)

    def _limits(self) -> DeviceLimits:
        attr = getattr(self.hip, "hipDeviceAttribute_t", None)
        return limits_from(lambda name: self._call("hipDeviceGetAttribute", getattr(attr, name), self.index), (
            "hipDeviceAttributeMaxThreadsPerBlock", "hipDeviceAttributeMaxBlockDimX", "hipDeviceAttributeMaxBlockDimY",
            "hipDeviceAttributeMaxBlockDimZ", "hipDeviceAttributeMaxGridDimX", "hipDeviceAttributeMaxGridDimY",
            "hipDeviceAttributeMaxGridDimZ", "hipDeviceAttributeMaxSharedMemoryPerBlock"))

    @property
    def target(self) -> TargetID:
        return self._target or self._choose_target("")

    def _inspect(self, data: bytes) -> tuple[bytes, LibraryInfo, str]:
        found = codeobject.inspect_code_object(data, self.target, allow_writable_globals=self.allow_writable_globals)
        return found.code_object.elf, found.library, "elf"

    def _kernel(self, module: LoadedModule, name: str, info: KernelInfo, function: Any) -> HipKernel:
        offsets, span = kernarg_layout(info.params)
        return HipKernel(name=name, module=module, params=info.params, function=function,
                         generation=self._generation, offsets=offsets, span=span)

    def launch(self, launch: Launch) -> None:
        self._require_open()
        kernel: HipKernel = self._launch_kernel(launch)
        block = pack_kernargs(kernel.name, kernel.params, kernel.offsets, kernel.span, launch.args)
        extra = None
        if block:
            buf = ctypes.create_string_buffer(block, len(block))
            size = ctypes.c_size_t(len(block))
            hip = self.hip
            config = (ctypes.c_void_p * 5)(
                getattr(hip, "HIP_LAUNCH_PARAM_BUFFER_POINTER", _BUFFER_POINTER), ctypes.addressof(buf),
                getattr(hip, "HIP_LAUNCH_PARAM_BUFFER_SIZE", _BUFFER_SIZE), ctypes.addressof(size),
                getattr(hip, "HIP_LAUNCH_PARAM_END", _END))
            arguments: Any = (buf, size, config)
            extra = ctypes.addressof(config)
        else:
            arguments = None
        names = self._enqueued(kernel.name, arguments)
        gx, gy, gz = launch.grid
        bx, by, bz = launch.block
        self._call("hipModuleLaunchKernel", kernel.function, gx, gy, gz, bx, by, bz,
                   launch.shared_mem_bytes, None, None, extra, kernel=names)
        self.launches += 1

    def synchronize(self) -> None:
        self._require_open()
        try:
            self._call("hipDeviceSynchronize", kernel=self._launched_since_sync())
        finally:
            self._synchronized()

    def set_malloc_heap_limit(self, nbytes: int) -> int:
        self._require_open()
        limit = self.hip.hipLimit_t.hipLimitMallocHeapSize
        self._call("hipDeviceSetLimit", limit, int(nbytes))
        self.heap_limit_request = int(nbytes)
        self.heap_limit = int(self._call("hipDeviceGetLimit", limit))
        return self.heap_limit

    def reset(self) -> int | None:
        """Recover after a fault: hipDeviceReset, then the heap limit and the pool again.

        Modules and kernel handles reload lazily on next use. HIP cannot promise the pool its old
        address: the new base is returned, and the executor rebuilds its pool on it.
        """
        if not self._opened:
            raise DeviceError("the HIP device is not open", api="hipDeviceReset", status="not_open")
        self._synchronized()
        self._generation += 1  # every module, kernel and per-thread current device is now stale
        old_base = self.pool_base
        self._pool, self.base = None, 0
        self._healthy = False
        self._ensure_current()
        self._call("hipDeviceReset")
        self._context_replaced()
        self._ensure_current()
        self.set_malloc_heap_limit(self.heap_limit_request)
        if self.pool_bytes:
            self._allocate_pool(self.pool_bytes)
            if self.base != old_base:
                log.info("HIP pool moved from %#x to %#x after reset", old_base, self.base)
        self._healthy = True
        return self.base if self.pool_bytes else None

    def close(self) -> None:
        if not self._opened:
            return
        try:
            if self._healthy:
                self._release_modules_and_pool()
            else:
                # HIP keeps the primary context, and its fault, in this process after we let go:
                # reset it (which frees everything in it) so the next device here starts clean.
                try:
                    self._ensure_current()
                except PappusError:
                    pass  # the reset applies to the thread's current device: try it anyway
                try:
                    self._call("hipDeviceReset")
                except PappusError:
                    log.warning("hipDeviceReset on close after a fault failed", exc_info=True)
        finally:
            self._pool, self.base, self._opened = None, 0, False
            self._context_replaced()
            self._modules.clear()
            self._synchronized()


def create_device(**options: Any) -> HipDevice:
    return HipDevice(**options)
