"""The CUDA DeviceAPI on cuda-bindings: one NVIDIA GPU as one engine (or one worker) drives it.

Every driver call goes through :func:`pappus_cuda.runtime.checked`, so callers see values or pappus
errors, never ``(CUresult, value)`` tuples. Kernel arguments arrive packed per parameter
(:class:`pappus.plan.Launch`, each exactly its parameter's size); :class:`PackedArgs` lays them
out at the offsets the cubin's ``EIATTR_KPARAM_INFO`` records give and hands ``cuLaunchKernel``
either the ``kernelParams`` pointer array (default) or one ``CU_LAUNCH_PARAM_BUFFER_POINTER``
buffer through ``extra``.

Faults are sticky in CUDA: after ``CUDA_ERROR_ILLEGAL_ADDRESS`` (and the other kernel exceptions)
every call in the context fails. The device then reports ``healthy = False``; :meth:`CudaDevice.reset`
destroys the context (``cuDevicePrimaryCtxReset`` or ``cuCtxDestroy``), makes a fresh one and
reserves the pool again. If the pool cannot be had at the same address the reset raises, and the
engine replaces the device (the multiprocess engine replaces the worker process).
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass
from typing import Any

from pappus.devices.binding import env_index
from pappus.devices.gpu import DriverCalls, GpuDevice, LoadedKernel, LoadedModule, limits_from
from pappus.errors import BackendUnavailable, DeviceError, KernelFault, PappusError
from pappus.host_access import host_access_allowed, refuse_reachable_host_memory
from pappus.interfaces import DeviceInfo
from pappus.kernels import DeviceLimits, KernelInfo, KernelParam, LibraryInfo
from pappus.plan import Launch

from . import cubin, runtime

# CU_LAUNCH_PARAM_* sentinels of cuda.h: ((void*)0x01), ((void*)0x02), ((void*)0x00)
LAUNCH_PARAM_BUFFER_POINTER, LAUNCH_PARAM_BUFFER_SIZE, LAUNCH_PARAM_END = 1, 2, 0
#: Dynamic shared memory a kernel gets without opting in (cuFuncSetAttribute).
DEFAULT_DYNAMIC_SHARED = 48 * 1024


def configured_device() -> int:
    return env_index("PAPPUS_CUDA_DEVICE")


# --- kernel-argument marshalling ------------------------------------------------------------


@dataclass(frozen=True)
class ParamLayout:
    """Where each parameter lives in the parameter buffer, and the buffer's size."""

    sizes: tuple[int, ...]
    offsets: tuple[int, ...]
    span: int

    @classmethod
    def of(cls, params: tuple[KernelParam, ...]) -> ParamLayout:
        """Offsets from the code object (cubin and PTX always give them); a parameter without one
        is placed at its natural alignment (its size rounded up to a power of two, at most 16)
        after the previous one, as the CUDA ABI places scalars and vectors."""
        offsets: list[int] = []
        end = 0
        for p in params:
            if p.size <= 0:
                raise DeviceError(f"a kernel parameter of {p.size} bytes", api="cuLaunchKernel", status="bad_signature")
            align = min(16, 1 << (p.size - 1).bit_length())
            offset = p.offset if p.offset is not None else (end + align - 1) & ~(align - 1)
            if offset < end:
                raise DeviceError(f"kernel parameters overlap at offset {offset}", api="cuLaunchKernel",
                                  status="bad_signature")
            offsets.append(offset)
            end = offset + p.size
        # The buffer's size is where the last parameter ends, not rounded up: the driver refuses
        # a larger one (CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES for one byte more; H100, driver 580).
        return cls(tuple(p.size for p in params), tuple(offsets), end)


class PackedArgs:
    """A launch's arguments in the two forms ``cuLaunchKernel`` accepts.

    ``buffer`` holds every argument at its parameter offset (the ``extra`` form); ``pointers``
    is the ``kernelParams`` array of ``void*``, entry *i* pointing at argument *i* inside that
    same buffer. The driver copies the parameters when the launch is enqueued (as every CUDA
    program's launch from stack variables relies on), so a kernel keeps one of these and
    :meth:`fill` refills it for each launch: allocating the ctypes arrays anew cost more than
    the rest of a launch's Python.
    """

    __slots__ = ("kernel", "layout", "buffer", "pointers", "size", "extra", "_slots")

    def __init__(self, kernel: str, layout: ParamLayout, args: tuple[bytes, ...] | None = None) -> None:
        self.kernel = kernel
        self.layout = layout
        self.buffer = ctypes.create_string_buffer(max(layout.span, 1))
        base = ctypes.addressof(self.buffer)
        self.pointers = (ctypes.c_void_p * max(len(layout.sizes), 1))(*(base + o for o in layout.offsets))
        self.size = ctypes.c_size_t(layout.span)
        self.extra = (ctypes.c_void_p * 5)(LAUNCH_PARAM_BUFFER_POINTER, base, LAUNCH_PARAM_BUFFER_SIZE,
                                           ctypes.addressof(self.size), LAUNCH_PARAM_END)
        self._slots = tuple(zip(layout.sizes, (base + o for o in layout.offsets), strict=True))
        if args is not None:
            self.fill(args)

    def fill(self, args: tuple[bytes, ...]) -> PackedArgs:
        """Put one launch's arguments in place (every parameter is written: nothing of the last
        launch's is left); refuses a wrong count or size, naming the argument."""
        if len(args) != len(self._slots):
            raise DeviceError(f"kernel {self.kernel!r} takes {len(self._slots)} arguments, the launch has {len(args)}",
                              api="cuLaunchKernel", status="bad_arguments", kernel=self.kernel)
        for i, (raw, (size, address)) in enumerate(zip(args, self._slots, strict=True)):
            if len(raw) != size:
                raise DeviceError(f"argument {i} of kernel {self.kernel!r} is {len(raw)} bytes; the kernel's "
                                  f"parameter is {size}", api="cuLaunchKernel", status="bad_arguments",
                                  kernel=self.kernel)
            ctypes.memmove(address, raw, size)
        return self

    def raw(self) -> bytes:
        """The parameter buffer as the kernel sees its parameter bank (for tests and debugging)."""
        return self.buffer.raw[:self.layout.span]

    @property
    def kernel_params(self) -> int | None:
        """Address of the ``void*[]`` for ``kernelParams`` (None for a kernel without parameters)."""
        return ctypes.addressof(self.pointers) if self.layout.sizes else None

    @property
    def extra_address(self) -> int:
        """Address of the ``extra`` array (0 for a kernel without parameters)."""
        return ctypes.addressof(self.extra) if self.layout.sizes else 0


# --- handles --------------------------------------------------------------------------------


@dataclass(eq=False)
class CudaKernel(LoadedKernel):
    """What :meth:`CudaDevice.launch` needs besides the function: the parameter layout, and what
    the kernel may use on chip."""

    layout: ParamLayout
    #: Dynamic shared bytes the driver function allows in this context, as last read or set (it
    #: only grows: other handles of the same function opt in too). Without an opt-in the driver
    #: allows 48 KiB less the kernel's static shared memory; 0: not read yet.
    dynamic_shared_limit: int = 0
    #: (static shared bytes, local bytes per thread) as the driver reports them, read at first launch
    usage: tuple[int, int] | None = None
    #: the parameter block every launch of this kernel refills (made at its first launch)
    packed: PackedArgs | None = None


# --- the device -------------------------------------------------------------------------------


def _sticky(error: PappusError) -> bool:
    """Whether ``error`` leaves the context unusable: a sticky status, or one the bindings do not
    know (a driver newer than them), which may be a new sticky fault: assumed to be."""
    return error.fields.get("status") in runtime.STICKY_STATUSES or bool(error.fields.get("unknown_status"))


class CudaDevice(GpuDevice):
    """One NVIDIA GPU through the CUDA driver API.

    Options: ``device_index`` (``device`` too; ``PAPPUS_CUDA_DEVICE``, default 0), ``context``
    (``"primary"``, the default, shares the device's primary context as the runtime API and
    cuda.core do; ``"own"`` creates a private context), ``heap_limit`` (device malloc heap, default
    0), ``arch`` (override the sm_XX used to pick fatbin entries), ``launch_params``
    (``"pointers"``: kernelParams, the default; ``"buffer"``: one packed buffer through ``extra``),
    ``allow_writable_globals`` (default False), ``scrub_on_chip`` (default True: clear the registers
    after every invocation, and shared and local memory after kernels that used them, see
    ``onchip.py``), ``allow_host_memory_access`` (default: ``PAPPUS_ALLOW_HOST_MEMORY_ACCESS``, else
    False: a device whose kernels can reach pageable host memory, HMM or ATS, is refused; see
    ``pappus.host_access``).
    """

    calls = DriverCalls(vendor="CUDA", mem_info="cuMemGetInfo", alloc="cuMemAlloc", free="cuMemFree",
                        memset="cuMemsetD8", copy_in="cuMemcpyHtoD", copy_out="cuMemcpyDtoH",
                        synchronize="cuCtxSynchronize", load_module="cuModuleLoadData",
                        get_function="cuModuleGetFunction", unload_module="cuModuleUnload", launch="cuLaunchKernel",
                        not_found="CUDA_ERROR_NOT_FOUND", out_of_memory="CUDA_ERROR_OUT_OF_MEMORY")

    def __init__(self, device_index: int | None = None, *, device: int | None = None, context: str = "primary",
                 heap_limit: int = 0, arch: str | None = None, launch_params: str = "pointers",
                 allow_writable_globals: bool = False, scrub_on_chip: bool = True,
                 allow_host_memory_access: bool | str | None = None, _driver: Any = None, **_: Any) -> None:
        super().__init__()
        index = device_index if device_index is not None else device
        self.index = configured_device() if index is None else int(index)
        if context not in ("primary", "own"):
            raise ValueError(f"context must be 'primary' or 'own', not {context!r}")
        if launch_params not in ("pointers", "buffer"):
            raise ValueError(f"launch_params must be 'pointers' or 'buffer', not {launch_params!r}")
        self.context_mode = context
        self.launch_params = launch_params
        self.heap_limit_request = int(heap_limit)
        self.arch_override = arch
        self.allow_writable_globals = allow_writable_globals
        self.scrub_on_chip = scrub_on_chip
        self.allow_host_memory_access = host_access_allowed(allow_host_memory_access)
        self.pageable_memory_access: bool | None = None  # as the device reports it at open
        self._scrubber: Any = None  # onchip.OnChipScrubber of the current context, made on first use
        self._dirty_shared = False  # a kernel since the last scrub used shared memory
        self._dirty_local = 0  # the largest local frame (bytes per thread) used since the last scrub
        self._dirty_registers = False  # a kernel ran since the last scrub (every kernel uses registers)
        self._driver = _driver
        self._fault: PappusError | None = None
        self._dev: Any = None
        self._ctx: Any = None
        self._retains = 0
        self.arch: str | None = None
        self.heap_limit_notes: list[str] = []
        self.resets = 0
        self.last_reset_seconds: float | None = None

    # --- plumbing ----------------------------------------------------------------------------

    @property
    def driver(self) -> Any:
        if self._driver is None:
            try:
                self._driver = runtime.load_driver()
            except ImportError:
                raise BackendUnavailable("cuda", runtime.NOT_INSTALLED) from None
        return self._driver

    def _call(self, api: str, *args: Any, **facts: Any) -> Any:
        try:
            return runtime.checked(self.driver, api, *args, **facts)
        except PappusError as exc:
            if _sticky(exc):
                self._healthy = False
                if self._fault is None:
                    self._fault = exc
            raise

    def _make_current(self) -> None:
        self._call("cuCtxSetCurrent", self._ctx)

    def _check_usable(self) -> None:
        """After a sticky error every call fails: say so, with the error that made it sticky."""
        if self._healthy:
            return
        fault = self._fault
        status = fault.fields.get("status") if fault else None
        message = (f"the CUDA context is unusable after {status or 'a fault'} until the device is reset"
                   + (f" ({fault.message})" if fault else ""))
        if isinstance(fault, KernelFault):
            raise KernelFault(message, kernel=fault.fields.get("kernel"), reasons=fault.fields.get("reasons"),
                              status=status, api="sticky")
        raise DeviceError(message, api="sticky", status=status or "unhealthy")

    # --- DeviceAPI: lifecycle ----------------------------------------------------------------

    def open(self) -> DeviceInfo:
        driver = self.driver
        bind, package = runtime.bindings_version(driver)
        drv = runtime.split_cuda_version(int(self._call("cuDriverGetVersion")))
        if drv[0] < bind[0]:
            raise BackendUnavailable("cuda", f"the NVIDIA driver supports CUDA {drv[0]}.{drv[1]}, older than the CUDA "
                                     f"{bind[0]}.{bind[1]} of cuda-bindings {package}; install cuda-bindings "
                                     f"{drv[0]}.x or a newer driver")
        self._call("cuInit", 0)
        count = int(self._call("cuDeviceGetCount"))
        if count == 0:
            raise DeviceError("no NVIDIA GPU visible (0 devices)", api="cuDeviceGetCount", status="CUDA_ERROR_NO_DEVICE")
        if not 0 <= self.index < count:
            raise DeviceError(f"device {self.index} does not exist ({count} visible)", api="cuDeviceGet",
                              status="CUDA_ERROR_INVALID_DEVICE")
        self._dev = self._call("cuDeviceGet", self.index)
        self._check_host_memory_access()
        self._create_context()
        self._opened = True
        try:
            self._ensure_current()
            # The heap limit is set before anything of a tenant is loaded or launched.
            self.heap_limit = self.set_malloc_heap_limit(self.heap_limit_request)
            free, total = self._call("cuMemGetInfo")
            arch, name = runtime.device_arch_and_name(driver, self.index)
            self.arch = self.arch_override or arch
            limits = self._limits()
        except BaseException:
            self.close()
            raise
        return DeviceInfo(
            name=name or f"NVIDIA GPU {self.index}", total_memory=int(total), free_memory=int(free), limits=limits,
            heap_limit=self.heap_limit,
            details={"device": self.index, "arch": arch, "driver_cuda": f"{drv[0]}.{drv[1]}",
                     "cuda_bindings": package, "context": self.context_mode,
                     "heap_limit_requested": self.heap_limit_request, "heap_limit_notes": list(self.heap_limit_notes),
                     "pageable_memory_access": self.pageable_memory_access,
                     "host_memory_access_allowed": self.allow_host_memory_access},
        )

    def _check_host_memory_access(self) -> None:
        """Refuse a GPU whose kernels can reach the worker's pageable host memory (HMM, ATS), unless
        allowed: tenants would not be isolated from each other there (``pappus.host_access``)."""
        attr = self.driver.CUdevice_attribute
        self.pageable_memory_access = bool(int(self._call(
            "cuDeviceGetAttribute", attr.CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS, self._dev)))
        ats = self.pageable_memory_access and bool(int(self._call(
            "cuDeviceGetAttribute", attr.CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES, self._dev)))
        remedy = ("This device reaches it through the host's page tables (ATS), which cannot be turned off"
                  if ats else "Turn HMM off: 'options nvidia_uvm uvm_disable_hmm=1' in /etc/modprobe.d/, then "
                  "reload nvidia_uvm")
        refuse_reachable_host_memory(device=f"CUDA device {self.index}", reachable=self.pageable_memory_access,
                                     allowed=self.allow_host_memory_access,
                                     attribute="CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS", remedy=remedy)

    def _create_context(self) -> None:
        if self.context_mode == "primary":
            self._ctx = self._call("cuDevicePrimaryCtxRetain", self._dev)
            self._retains += 1
            return
        try:  # CUDA 13 / cuCtxCreate_v4: (params, flags, dev)
            self._ctx = self._call("cuCtxCreate", None, 0, self._dev)
        except DeviceError as exc:
            if exc.fields.get("status") != "binding_error":
                raise
            self._ctx = self._call("cuCtxCreate", 0, self._dev)  # cuda-bindings 12: (flags, dev)

    def _destroy_context(self) -> None:
        if self._ctx is None:
            return
        if self.context_mode == "primary":
            while self._retains:
                self._retains -= 1
                try:
                    runtime.checked(self.driver, "cuDevicePrimaryCtxRelease", self._dev)
                except PappusError:
                    break
        else:
            try:
                runtime.checked(self.driver, "cuCtxDestroy", self._ctx)
            except PappusError:
                pass
        self._ctx = None

    def _limits(self) -> DeviceLimits:
        attr = self.driver.CUdevice_attribute
        return limits_from(lambda name: self._call("cuDeviceGetAttribute", getattr(attr, name), self._dev), (
            "CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK", "CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X",
            "CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y", "CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z",
            "CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X", "CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y",
            "CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z", "CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN"),
            default_shared=DEFAULT_DYNAMIC_SHARED)

    # --- DeviceAPI: memory, modules and kernels (GpuDevice) ---------------------------------------

    def reserve(self, nbytes: int) -> int:
        base = super().reserve(nbytes)
        if self.scrub_on_chip:  # what an earlier context left on the chip: shared memory, 1 KiB frames, registers
            self._dirty_shared, self._dirty_local, self._dirty_registers = True, 1024, True
            self.clear_private_state()
        return base

    def _inspect(self, data: bytes) -> tuple[bytes, LibraryInfo, str]:
        # For a fatbin, the one entry chosen for this GPU.
        found = cubin.inspect(data, self.arch, allow_writable_globals=self.allow_writable_globals)
        return found.image, found.library, found.kind

    def _kernel(self, module: LoadedModule, name: str, info: KernelInfo, function: Any) -> CudaKernel:
        return CudaKernel(name=name, module=module, params=info.params, function=function,
                          generation=self._generation, layout=ParamLayout.of(info.params))

    def _kernel_reloaded(self, kernel: LoadedKernel) -> None:
        if isinstance(kernel, CudaKernel):  # a new context has not opted the kernel in yet
            kernel.dynamic_shared_limit = 0

    def function_attribute(self, kernel: CudaKernel, name: str) -> int:
        """A CU_FUNC_ATTRIBUTE_* of a kernel (e.g. "SHARED_SIZE_BYTES"), as the driver reports it."""
        self._require_open()
        attr = getattr(self.driver.CUfunction_attribute, f"CU_FUNC_ATTRIBUTE_{name}")
        return int(self._call("cuFuncGetAttribute", attr, kernel.function, kernel=kernel.name))

    # --- DeviceAPI: launching --------------------------------------------------------------------

    def pack(self, kernel: CudaKernel, args: tuple[bytes, ...]) -> PackedArgs:
        return PackedArgs(kernel.name, kernel.layout, args)

    def launch(self, launch: Launch) -> None:
        self._require_open()
        kernel: CudaKernel = self._launch_kernel(launch)
        if kernel.packed is None:
            kernel.packed = PackedArgs(kernel.name, kernel.layout)
        packed = kernel.packed.fill(launch.args)
        shared = int(launch.shared_mem_bytes)
        if shared > kernel.dynamic_shared_limit:  # opt in: the default is 48 KiB less the static part
            # The limit is the driver function's, which other handles of the same kernel share
            # (one module, looked up once): read it, and only ever raise it.
            attr = self.driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
            limit = int(self._call("cuFuncGetAttribute", attr, kernel.function, kernel=kernel.name))
            if shared > limit:
                self._call("cuFuncSetAttribute", kernel.function, attr, shared, kernel=kernel.name)
                limit = shared
            kernel.dynamic_shared_limit = limit
        names = self._enqueued(kernel.name)  # the kernel keeps its parameter block
        gx, gy, gz = launch.grid
        bx, by, bz = launch.block
        if self.launch_params == "buffer":
            params, extra = None, packed.extra_address
        else:
            params, extra = packed.kernel_params, 0
        if self.scrub_on_chip:
            if kernel.usage is None:
                kernel.usage = (self.function_attribute(kernel, "SHARED_SIZE_BYTES"),
                                self.function_attribute(kernel, "LOCAL_SIZE_BYTES"))
            static_shared, local = kernel.usage
            self._dirty_shared = self._dirty_shared or static_shared + shared > 0
            self._dirty_local = max(self._dirty_local, local)
            self._dirty_registers = True
        self._call("cuLaunchKernel", kernel.function, gx, gy, gz, bx, by, bz, shared, 0, params, extra,
                   kernel=names)
        self.launches += 1

    def clear_private_state(self) -> None:
        """After an invocation: clear the registers, shared and local memory its kernels used
        (``onchip.py``)."""
        if not (self._dirty_shared or self._dirty_local or self._dirty_registers) or not self.scrub_on_chip:
            return
        self._require_open()
        if self._scrubber is None:
            from .onchip import OnChipScrubber

            self._scrubber = OnChipScrubber(self)
        self._scrubber.run(self._dirty_shared, self._dirty_local, self._dirty_registers)
        self._dirty_shared, self._dirty_local, self._dirty_registers = False, 0, False

    def synchronize(self) -> None:
        self._require_open()
        try:
            self._call("cuCtxSynchronize", kernel=self._launched_since_sync())
        finally:
            self._synchronized()

    # --- heap limit ------------------------------------------------------------------------------

    def set_malloc_heap_limit(self, nbytes: int) -> int:
        """``cuCtxSetLimit(CU_LIMIT_MALLOC_HEAP_SIZE, n)``, read back with ``cuCtxGetLimit``.

        The driver may round the request up or refuse 0; whatever it reports is returned (and is
        what DeviceInfo.heap_limit shows). The guarantee that tenant kernels get no heap does not
        rest on this number: kernels that call malloc are refused at registration (uses_heap).
        """
        self._require_open()
        limit = self.driver.CUlimit.CU_LIMIT_MALLOC_HEAP_SIZE
        request = int(nbytes)
        self.heap_limit_notes = []
        try:
            self._call("cuCtxSetLimit", limit, request)
        except DeviceError as exc:
            if request != 0:
                raise
            # The driver refuses 0: keep the smallest limit it accepts.
            self.heap_limit_notes.append(f"cuCtxSetLimit(MALLOC_HEAP_SIZE, 0) failed: {exc.fields.get('status')}")
            for candidate in (1, 4096, 65536, 1 << 20):
                try:
                    self._call("cuCtxSetLimit", limit, candidate)
                except DeviceError:
                    continue
                self.heap_limit_notes.append(f"using the smallest accepted request, {candidate} bytes")
                break
        self.heap_limit_request = request
        self.heap_limit = int(self._call("cuCtxGetLimit", limit))
        if self.heap_limit != request:
            self.heap_limit_notes.append(f"requested {request} bytes, the driver reports {self.heap_limit}")
        return self.heap_limit

    # --- recovery ---------------------------------------------------------------------------------

    def reset(self) -> int:
        """Destroy the context and make a new one: heap limit and pool again. Modules reload lazily
        on next use. Returns the pool's base, which may have moved: the executor rebuilds its pool
        on it."""
        if not self._opened:
            raise DeviceError("the CUDA device is not open", api="reset", status="not_open")
        status = self._fault.fields.get("status") if self._fault is not None else None
        if self._fault is not None and _sticky(self._fault):
            # Measured on driver 580 (CUDA 13.0, H100): after a sticky error the driver refuses
            # both a reset primary context (cuDevicePrimaryCtxReset + Retain) and a new own
            # context (cuCtxCreate) in this process, with the same error; trying costs ~0.5 s.
            # Only a new process can use the GPU again (Backend.faults_end_process).
            raise NotImplementedError(f"after {status} this process can no longer use the GPU; "
                                      "the engine replaces the worker process")
        started = time.perf_counter()
        pool_bytes = self.pool_bytes
        self._synchronized()
        self._generation += 1  # every module, kernel and per-thread current context is now stale
        self._pool, self.base, self._scrubber = None, 0, None
        try:
            if self.context_mode == "primary":
                self._call("cuDevicePrimaryCtxReset", self._dev)
                self._ctx = self._call("cuDevicePrimaryCtxRetain", self._dev)
                self._retains += 1
            else:
                try:
                    runtime.checked(self.driver, "cuCtxDestroy", self._ctx)
                except PappusError:
                    pass  # a context with a sticky error may refuse; a new one is made regardless
                self._ctx = None
                self._create_context()
            self._healthy, self._fault = True, None
            self._context_replaced()
            self._ensure_current()
            self.set_malloc_heap_limit(self.heap_limit_request)
            if pool_bytes:
                self._allocate_pool(pool_bytes)
        except PappusError:
            self._healthy = False
            raise
        self.resets += 1
        self.last_reset_seconds = time.perf_counter() - started
        return self.base

    def close(self) -> None:
        if self._ctx is None and not self._opened:
            return
        try:
            if self._healthy and self._ctx is not None:
                try:
                    self._release_modules_and_pool()
                    if self._scrubber is not None:
                        self._scrubber.close()
                except PappusError:
                    pass
        finally:
            self._destroy_context()
            self._pool, self.base, self._opened, self._scrubber = None, 0, False, None
            self._context_replaced()
            self._modules.clear()
            self._synchronized()


def create_device(**options: Any) -> CudaDevice:
    return CudaDevice(**options)
