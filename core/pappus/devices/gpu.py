"""The part of a GPU DeviceAPI that does not depend on the vendor: pool, copies, modules, kernels.

HIP and CUDA (and any driver API built the same way) give pappus the same things under other
names: one allocation for the pool, byte copies and a byte memset on it, modules loaded from an
image, functions looked up by name, a context that is current per thread and that a reset
replaces, leaving every module and function handle stale. :class:`GpuDevice` implements those
mechanisms once, over :class:`DriverCalls` (the driver's names for them) and four methods a
backend writes: :meth:`~GpuDevice._call` (one checked driver call), :meth:`~GpuDevice._make_current`,
:meth:`~GpuDevice._inspect` (validate an image for this device) and :meth:`~GpuDevice._kernel`
(what a launch needs). Opening, launching, the heap limit, reset and close stay with the backend:
that is where the vendors differ.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import DeviceError, LibraryError, PappusError
from ..interfaces import DeviceAPI, LibraryImage
from ..kernels import DeviceLimits, KernelInfo, KernelParam, LibraryInfo
from ..plan import Launch


@dataclass(frozen=True)
class DriverCalls:
    """A driver API's names for what :class:`GpuDevice` does itself (calls and statuses)."""

    vendor: str  # "HIP": in messages ("the HIP device is not open")
    mem_info: str  # () -> (free, total)
    alloc: str  # (bytes) -> device pointer
    free: str  # (device pointer)
    memset: str  # (address, byte, count)
    copy_in: str  # (device address, host buffer, count)
    copy_out: str  # (host buffer, device address, count)
    synchronize: str  # () -> when everything enqueued on the device has finished
    load_module: str  # (image) -> module handle
    get_function: str  # (module handle, name as bytes) -> function handle
    unload_module: str  # (module handle)
    launch: str  # the launch call (names the API in errors about launch handles)
    not_found: str  # the status of a kernel the module does not have
    out_of_memory: str  # the status of an allocation that does not fit


@dataclass(eq=False)
class LoadedModule:
    """A loaded library: the validated image, what it declares, and the driver's module handle
    (of context generation ``generation``; a reset makes it stale, and it reloads on next use)."""

    sha256: str
    image: bytes
    info: LibraryInfo
    handle: Any
    generation: int
    kind: str = ""  # the image's format, where a backend has several (cubin, ptx)
    functions: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class LoadedKernel:
    """A kernel handle: its module, its parameters as the code object declares them, and the
    driver's function handle of context generation ``generation``."""

    name: str
    module: LoadedModule
    params: tuple[KernelParam, ...]
    function: Any
    generation: int


def bytes_view(data: Any) -> memoryview:
    """``data`` as a flat view of bytes (what the drivers' copy calls take)."""
    view = data if isinstance(data, memoryview) else memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def address_of(ptr: Any) -> int:
    """A device pointer as an int, whichever wrapper the bindings return it in."""
    if isinstance(ptr, int):
        return ptr
    try:
        return int(ptr)
    except TypeError:
        return int(ptr.as_c_void_p().value or 0)


def limits_from(read: Callable[[str], int], names: tuple[str, ...], default_shared: int | None = None
                ) -> DeviceLimits:
    """DeviceLimits from a device's attributes: ``names`` are the driver's attribute names for max
    threads per block, max block x/y/z, max grid x/y/z and max shared bytes per block, in that
    order; ``read`` reads one. An attribute that cannot be read, or reads as 0, keeps pappus'
    default (``default_shared`` for the shared bytes, if given)."""
    default = DeviceLimits()
    fallbacks = (default.max_block_threads, *default.max_block_dims, *default.max_grid_dims,
                 default.max_shared_bytes if default_shared is None else default_shared)

    def get(name: str, fallback: int) -> int:
        try:
            value = int(read(name))
            return value if value > 0 else fallback
        except Exception:
            return fallback

    values = [get(name, fallback) for name, fallback in zip(names, fallbacks, strict=True)]
    return DeviceLimits(max_block_threads=values[0], max_block_dims=(values[1], values[2], values[3]),
                        max_grid_dims=(values[4], values[5], values[6]), max_shared_bytes=values[7])


#: Per thread, the context that was made current last, as an epoch (one per context any
#: ``GpuDevice`` made). A driver keeps one current context per thread whatever object made it
#: current, so whether ours still is cannot be remembered per device.
_CURRENT = threading.local()
_EPOCHS = itertools.count(1)


class GpuDevice(DeviceAPI):
    """Pool, copies, module and kernel bookkeeping of a GPU driven through a driver API."""

    calls: ClassVar[DriverCalls]
    bounds_writes = False  # a GPU kernel can write anywhere in its context

    def __init__(self) -> None:
        self._epoch = 0  # of the context this device made current last; 0: a new one is due
        self._generation = 0  # of the context: a reset makes every handle of an older one stale
        self._opened = False
        self._healthy = True
        self._pool: Any = None
        self.base = 0
        self.pool_bytes = 0
        self.heap_limit: int | None = None
        self._pending: list[Any] = []  # launch argument buffers, alive until synchronize
        # kernels enqueued since the last synchronize, each once, and that list as a fault names it
        self._launched: dict[str, None] = {}
        self._launched_names: str | None = None
        self._modules: list[LoadedModule] = []
        self.loads = 0
        self.launches = 0

    # --- what a backend implements ---------------------------------------------------------------

    def _call(self, api: str, *args: Any, **facts: Any) -> Any:
        """One driver call: its value(s), or the pappus error its status maps to."""
        raise NotImplementedError

    def _make_current(self) -> None:
        """Make this device's context current in the calling thread."""
        raise NotImplementedError

    def _inspect(self, data: bytes) -> tuple[bytes, LibraryInfo, str]:
        """Validate a library for this device: (the exact image to load, what it declares, its kind)."""
        raise NotImplementedError

    def _kernel(self, module: LoadedModule, name: str, info: KernelInfo, function: Any) -> LoadedKernel:
        """The handle :meth:`launch` gets for kernel ``name`` of ``module``."""
        raise NotImplementedError

    def _check_usable(self) -> None:
        """Raise if the context can take no more calls (CUDA after a sticky fault); called by every
        operation after the device is open."""

    def _kernel_reloaded(self, kernel: LoadedKernel) -> None:
        """A kernel's function was looked up again in a new context: forget per-context settings."""

    # --- current context, per thread -------------------------------------------------------------

    def _ensure_current(self) -> None:
        """A context is current per thread: make ours current in every thread that drives it,
        again after another device's context was made current there."""
        if not self._epoch:
            self._epoch = next(_EPOCHS)
        if getattr(_CURRENT, "epoch", None) != self._epoch:
            self._make_current()
            _CURRENT.epoch = self._epoch

    def _context_replaced(self) -> None:
        """The device's context was destroyed or replaced (reset, close): every thread must make
        the next one current before using it."""
        self._epoch = 0

    def _require_open(self) -> None:
        if not self._opened:
            raise DeviceError(f"the {self.calls.vendor} device is not open", api="open", status="not_open")
        self._check_usable()
        self._ensure_current()

    # --- memory ----------------------------------------------------------------------------------

    def memory_info(self) -> tuple[int, int]:
        """(free, total) bytes as the driver reports them now."""
        self._require_open()
        free, total = self._call(self.calls.mem_info)
        return int(free), int(total)

    def reserve(self, nbytes: int) -> int:
        self._require_open()
        if self._pool is not None:
            raise DeviceError("the pool is already reserved", api=self.calls.alloc, status="already_reserved")
        if nbytes <= 0:
            raise DeviceError(f"cannot reserve a pool of {nbytes} bytes", api=self.calls.alloc, status="bad_size")
        return self._allocate_pool(int(nbytes))

    def _allocate_pool(self, nbytes: int) -> int:
        calls = self.calls
        free, _ = self._call(calls.mem_info)
        if nbytes > int(free):
            raise DeviceError(f"a pool of {nbytes} bytes does not fit in the device's {int(free)} free bytes",
                              api=calls.alloc, status=calls.out_of_memory, requested=nbytes, free=int(free))
        pool = self._call(calls.alloc, nbytes)
        self._pool, self.pool_bytes, self.base = pool, nbytes, address_of(pool)
        # Memory fresh from the allocator may hold what an earlier process or context left: clear it once.
        self._call(calls.memset, self.base, 0, nbytes)
        self._call(calls.synchronize)
        return self.base

    @property
    def pool_base(self) -> int:
        """The pool's current base (it moves when a reset reserves the pool again)."""
        return self.base

    def _check_range(self, address: int, nbytes: int, what: str) -> None:
        if self._pool is None or address < self.base or address + nbytes > self.base + self.pool_bytes:
            raise DeviceError(f"{what} of {nbytes} bytes at {address:#x} is outside the pool "
                              f"[{self.base:#x}, {self.base + self.pool_bytes:#x})", api=what, status="out_of_pool")

    def write(self, address: int, data: memoryview) -> None:
        self._require_open()
        view = bytes_view(data)
        n = view.nbytes
        if n == 0:
            return
        self._check_range(address, n, "write")
        self._call(self.calls.copy_in, address, view, n)

    def read(self, address: int, out: memoryview) -> None:
        self._require_open()
        view = bytes_view(out)
        n = view.nbytes
        if n == 0:
            return
        if view.readonly:
            raise DeviceError("read() needs a writable buffer", api=self.calls.copy_out, status="readonly_buffer")
        self._check_range(address, n, "read")
        self._call(self.calls.copy_out, view, address, n)

    def memset(self, address: int, value: int, nbytes: int) -> None:
        self._require_open()
        if nbytes == 0:
            return
        self._check_range(address, nbytes, "memset")
        self._call(self.calls.memset, address, value & 0xFF, nbytes)

    # --- modules and kernels ---------------------------------------------------------------------

    def load_module(self, image: LibraryImage) -> LoadedModule:
        self._require_open()
        if hashlib.sha256(image.data).hexdigest() != image.sha256:
            raise LibraryError("library bytes do not match their registered sha256")
        # Load exactly what validation read (not whatever entry of a bundle the driver would pick).
        loadable, info, kind = self._inspect(image.data)
        handle = self._call(self.calls.load_module, loadable)
        module = LoadedModule(image.sha256, loadable, info, handle, self._generation, kind)
        self._modules.append(module)
        self.loads += 1
        return module

    def _module_handle(self, module: LoadedModule) -> Any:
        if module.generation != self._generation:  # unloaded by a reset: load it again
            module.handle = self._call(self.calls.load_module, module.image)
            module.generation = self._generation
            module.functions.clear()
            if module not in self._modules:
                self._modules.append(module)
        return module.handle

    def _function(self, module: LoadedModule, name: str) -> Any:
        handle = self._module_handle(module)
        fn = module.functions.get(name)
        if fn is None:
            fn = module.functions[name] = self._call(self.calls.get_function, handle, name.encode("utf-8"),
                                                     kernel=name)
        return fn

    def get_kernel(self, module: Any, name: str) -> LoadedKernel:
        self._require_open()
        api = self.calls.get_function
        if not isinstance(module, LoadedModule):
            raise DeviceError(f"not a module of this device: {type(module).__name__}", api=api, status="bad_handle")
        info = module.info.kernel(name)
        if info is None:
            raise DeviceError(f"kernel {name!r} is not in the module", api=api, status=self.calls.not_found,
                              kernel=name)
        return self._kernel(module, name, info, self._function(module, name))

    def _launch_kernel(self, launch: Launch) -> Any:
        """The kernel handle of ``launch``, its function looked up again if a reset made it stale."""
        kernel = launch.handle
        if not isinstance(kernel, LoadedKernel):
            raise DeviceError(f"kernel {launch.kernel!r} has no handle of this device", api=self.calls.launch,
                              status="bad_handle", kernel=launch.kernel)
        if kernel.generation != self._generation:
            kernel.function = self._function(kernel.module, kernel.name)
            kernel.generation = self._generation
            self._kernel_reloaded(kernel)
        return kernel

    def unload_module(self, module: Any) -> None:
        if not isinstance(module, LoadedModule):
            return
        if module in self._modules:
            self._modules.remove(module)
        if module.generation == self._generation and module.handle is not None and self._opened and self._healthy:
            self._ensure_current()
            self._call(self.calls.unload_module, module.handle)
        module.handle = None
        module.generation = -1
        module.functions.clear()

    def _release_modules_and_pool(self) -> None:
        """On close, in a usable context: unload every module and free the pool (errors ignored:
        the context goes next, and everything in it with it)."""
        self._ensure_current()
        for module in list(self._modules):
            try:
                self.unload_module(module)
            except PappusError:
                pass
        if self._pool is not None:
            try:
                self._call(self.calls.free, self._pool)
            except PappusError:
                pass

    @property
    def healthy(self) -> bool:
        return self._healthy

    def _enqueued(self, kernel: str, arguments: Any = None) -> str | None:
        """Note a launch about to be enqueued (and keep its argument buffers alive until the next
        synchronize); returns what a fault reported now names: every kernel since the last
        synchronize, each once. Launches are asynchronous, so a launch or a synchronize may
        report any of them."""
        if arguments is not None:
            self._pending.append(arguments)
        if kernel not in self._launched:  # joined once per new name, not once per launch
            self._launched[kernel] = None
            self._launched_names = ", ".join(self._launched)
        return self._launched_names

    def _launched_since_sync(self) -> str | None:
        return self._launched_names

    def _synchronized(self) -> None:
        """The queue is empty (synchronized, or the context is gone): forget its launches."""
        self._pending.clear()
        self._launched.clear()
        self._launched_names = None
