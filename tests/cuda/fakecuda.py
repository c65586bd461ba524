"""A fake ``cuda.bindings.driver`` for testing CudaDevice without a GPU.

It answers the calls CudaDevice makes with ``(CUresult, value...)`` tuples, as the real bindings do,
keeps "device memory" in host bytearrays, and runs a few kernels in Python. Launch arguments are
read back the way the driver reads them: through the ``kernelParams`` pointer array, or from the
``extra`` buffer at the offsets of the kernel's parameter bank, using this table's own sizes and
offsets (taken from cuobjdump, not from pappus' reader). Faults are sticky until the context is
reset, as in CUDA.
"""

from __future__ import annotations

import ctypes
import enum
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np


class CUresult(enum.IntEnum):
    CUDA_SUCCESS = 0
    CUDA_ERROR_INVALID_VALUE = 1
    CUDA_ERROR_OUT_OF_MEMORY = 2
    CUDA_ERROR_NO_DEVICE = 100
    CUDA_ERROR_INVALID_DEVICE = 101
    CUDA_ERROR_INVALID_CONTEXT = 201
    CUDA_ERROR_INVALID_IMAGE = 200
    CUDA_ERROR_NOT_FOUND = 500
    CUDA_ERROR_ILLEGAL_ADDRESS = 700
    CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701
    CUDA_ERROR_ILLEGAL_INSTRUCTION = 715
    CUDA_ERROR_LAUNCH_FAILED = 719


OK = CUresult.CUDA_SUCCESS

#: kernel name -> (param sizes, param offsets) as cuobjdump --dump-elf prints them for clean.hip/fault.hip
SIGNATURES = {
    "matmul_at_i64": ((8, 8, 8), (0, 8, 16)),
    "scalars": ((8, 4, 4, 8, 24, 1), (0, 8, 12, 16, 24, 48)),
    "oob_write": ((8, 8, 8), (0, 8, 16)),
    "fill_u8": ((8, 8, 1), (0, 8, 16)),
    "trap_now": ((8,), (0,)),
    "noop": ((), ()),
    "block_sum": ((8, 8), (0, 8)),
}

#: static shared bytes per kernel (CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES), as clean.hip declares them
STATIC_SHARED = {"block_sum": 1024}
DEFAULT_SHARED = 48 * 1024  # what a block may use in all without opting in
OPTIN_SHARED = 232_448  # CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN of an H100


@dataclass
class Context:
    handle: int
    allocations: dict[int, bytearray] = field(default_factory=dict)
    sticky: CUresult | None = None
    heap_limit: int = 8 * 1024 * 1024
    modules: dict[int, bytes] = field(default_factory=dict)
    #: CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES set in this context, by function
    max_dynamic_shared: dict[Any, int] = field(default_factory=dict)


class FakeDriver:
    CUDA_VERSION = 13000

    def __init__(self, *, driver_version: int = 13000, devices: int = 1, move_pool_after_reset: bool = False,
                 min_heap: int = 0, pageable_memory_access: int = 0, ats: int = 0) -> None:
        self.driver_version = driver_version
        self.devices = devices
        self.move_pool_after_reset = move_pool_after_reset
        self.min_heap = min_heap
        self.pageable_memory_access, self.ats = pageable_memory_access, ats
        self.CUresult = CUresult
        self.CUlimit = SimpleNamespace(CU_LIMIT_MALLOC_HEAP_SIZE=2)
        self.CUdevice_attribute = SimpleNamespace(**{name: name for name in (
            "CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR", "CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR",
            "CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK", "CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X",
            "CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y", "CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z",
            "CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X", "CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y",
            "CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z", "CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN",
            "CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS", "CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES")})
        self.CUfunction_attribute = SimpleNamespace(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES=8,
                                                    CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES=1)
        self.initialised = False
        #: every live context by handle; which one is current is per thread, as in CUDA
        self.contexts: dict[int, Context] = {}
        self.primary: int | None = None
        self._thread = threading.local()
        self.generation = 0
        self.calls: list[str] = []
        self.launches: list[tuple[str, tuple[int, ...], bytes]] = []
        self.kernels: dict[str, Callable[..., CUresult]] = {
            "matmul_at_i64": self._matmul, "scalars": self._scalars, "oob_write": self._oob_write,
            "fill_u8": self._fill, "trap_now": lambda *a: CUresult.CUDA_ERROR_LAUNCH_FAILED, "noop": lambda *a: OK,
            "block_sum": self._block_sum,
        }
        self.grid = (1, 1, 1)  # of the launch running now (block_sum reads it)
        self.scalars_seen: tuple[Any, ...] | None = None
        self.next_base = 0x7F00_0000_0000

    # --- helpers -----------------------------------------------------------------------------

    @property
    def ctx(self) -> Context | None:
        """The calling thread's current context (None if none, or if it was destroyed)."""
        return self.contexts.get(getattr(self._thread, "current", None))

    def _new_context(self) -> int:
        self.generation += 1
        handle = 0x1000 + self.generation
        self.contexts[handle] = Context(handle=handle)
        return handle

    def _live(self) -> CUresult:
        if not self.initialised or self.ctx is None:
            return CUresult.CUDA_ERROR_INVALID_CONTEXT
        return self.ctx.sticky or OK

    def _view(self, address: int, n: int) -> memoryview | None:
        assert self.ctx is not None
        for base, buf in self.ctx.allocations.items():
            if base <= address and address + n <= base + len(buf):
                return memoryview(buf)[address - base:address - base + n]
        return None

    # --- init, device, context ----------------------------------------------------------------

    def cuDriverGetVersion(self):
        return OK, self.driver_version

    def cuInit(self, flags):
        self.initialised = True
        return (OK,)

    def cuDeviceGetCount(self):
        return OK, self.devices

    def cuDeviceGet(self, index):
        return (OK, index) if 0 <= index < self.devices else (CUresult.CUDA_ERROR_INVALID_DEVICE, None)

    def cuDeviceGetAttribute(self, attr, dev):
        values = {"CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR": 9, "CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR": 0,
                  "CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN": 232448,
                  "CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS": self.pageable_memory_access,
                  "CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES": self.ats}
        return OK, values.get(attr, 1024)

    def cuDeviceGetName(self, length, dev):
        return OK, b"Fake H100\0"

    def cuDevicePrimaryCtxRetain(self, dev):
        if self.primary not in self.contexts:
            self.primary = self._new_context()
        return OK, self.primary

    def cuDevicePrimaryCtxRelease(self, dev):
        return (OK,)

    def cuDevicePrimaryCtxReset(self, dev):
        self.calls.append("cuDevicePrimaryCtxReset")
        self.contexts.pop(self.primary, None)
        self.primary = None
        if self.move_pool_after_reset:
            self.next_base += 1 << 30
        return (OK,)

    def cuCtxCreate(self, *args):
        handle = self._new_context()
        self._thread.current = handle  # a new context is pushed onto the calling thread
        return OK, handle

    def cuCtxDestroy(self, ctx):
        self.contexts.pop(ctx, None)
        return (OK,)

    def cuCtxSetCurrent(self, ctx):
        if ctx not in self.contexts:
            return (CUresult.CUDA_ERROR_INVALID_CONTEXT,)
        self._thread.current = ctx
        return (OK,)

    def cuCtxSetLimit(self, limit, value):
        err = self._live()
        if err:
            return (err,)
        if value < self.min_heap:
            return (CUresult.CUDA_ERROR_INVALID_VALUE,)
        self.ctx.heap_limit = max(value, self.min_heap)
        return (OK,)

    def cuCtxGetLimit(self, limit):
        err = self._live()
        return (err, None) if err else (OK, self.ctx.heap_limit)

    def cuCtxSynchronize(self):
        return (self._live(),)

    # --- memory ----------------------------------------------------------------------------------

    def cuMemGetInfo(self):
        return OK, 64 << 30, 80 << 30

    def cuMemAlloc(self, n):
        err = self._live()
        if err:
            return err, None
        # past everything live contexts hold: two contexts never share an address
        base = self.next_base + sum(len(b) for c in self.contexts.values() for b in c.allocations.values())
        self.ctx.allocations[base] = bytearray(b"\xa5" * n)  # not zero: the device must clear it
        return OK, base

    def cuMemFree(self, ptr):
        if self.ctx:
            self.ctx.allocations.pop(int(ptr), None)
        return (OK,)

    def cuMemsetD8(self, address, value, n):
        err = self._live()
        if err:
            return (err,)
        view = self._view(int(address), n)
        if view is None:
            return (CUresult.CUDA_ERROR_INVALID_VALUE,)
        view[:] = bytes([value]) * n
        return (OK,)

    def cuMemcpyHtoD(self, dst, src, n):
        err = self._live()
        if err:
            return (err,)
        view = self._view(int(dst), n)
        if view is None:
            return (CUresult.CUDA_ERROR_INVALID_VALUE,)
        view[:] = memoryview(src).cast("B")[:n]
        return (OK,)

    def cuMemcpyDtoH(self, dst, src, n):
        err = self._live()
        if err:
            return (err,)
        view = self._view(int(src), n)
        if view is None:
            return (CUresult.CUDA_ERROR_INVALID_VALUE,)
        memoryview(dst).cast("B")[:n] = view
        return (OK,)

    # --- modules and launches ----------------------------------------------------------------------

    def cuModuleLoadData(self, image):
        err = self._live()
        if err:
            return err, None
        handle = 0x5000 + len(self.ctx.modules) + 1
        self.ctx.modules[handle] = bytes(image)
        return OK, handle

    def cuModuleUnload(self, handle):
        if self.ctx:
            self.ctx.modules.pop(handle, None)
        return (OK,)

    def cuModuleGetFunction(self, module, name):
        err = self._live()
        if err:
            return err, None
        name = name.decode()
        if name not in self.kernels:
            return CUresult.CUDA_ERROR_NOT_FOUND, None
        return OK, (module, name)

    def _max_dynamic_shared(self, fn) -> int:
        """As the driver documents it: 48 KiB less the static shared memory until set."""
        assert self.ctx is not None
        return self.ctx.max_dynamic_shared.get(fn, DEFAULT_SHARED - STATIC_SHARED.get(fn[1], 0))

    def cuFuncSetAttribute(self, fn, attr, value):
        err = self._live()
        if err:
            return (err,)
        if attr == self.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES:
            if value < 0 or value + STATIC_SHARED.get(fn[1], 0) > OPTIN_SHARED:
                return (CUresult.CUDA_ERROR_INVALID_VALUE,)
            self.ctx.max_dynamic_shared[fn] = value
        return (OK,)

    def cuFuncGetAttribute(self, attr, fn):
        if attr == self.CUfunction_attribute.CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES:
            return OK, STATIC_SHARED.get(fn[1], 0)
        if attr == self.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES:
            return OK, self._max_dynamic_shared(fn)
        return OK, 0

    def cuLaunchKernel(self, fn, gx, gy, gz, bx, by, bz, shared, stream, kernel_params, extra):
        err = self._live()
        if err:
            return (err,)
        if not isinstance(extra, int):
            raise TypeError("an integer is required")  # what cuda-bindings 13 says for a non-int extra
        _module, name = fn
        if shared > self._max_dynamic_shared(fn):  # the launch a missing opt-in gets on a GPU
            return (CUresult.CUDA_ERROR_INVALID_VALUE,)
        sizes, offsets = SIGNATURES[name]
        if kernel_params and extra:
            return (CUresult.CUDA_ERROR_INVALID_VALUE,)
        if sizes and kernel_params:
            ptrs = (ctypes.c_void_p * len(sizes)).from_address(kernel_params)
            raw = [ctypes.string_at(ptrs[i], size) for i, size in enumerate(sizes)]
            block = b""
        elif sizes and extra:
            arr = (ctypes.c_void_p * 5).from_address(extra)
            assert arr[0] == 1 and arr[2] == 2 and (arr[4] or 0) == 0, list(arr)
            span = ctypes.c_size_t.from_address(arr[3]).value
            if span > offsets[-1] + sizes[-1]:  # one byte past the last parameter, on an H100 (driver 580)
                return (CUresult.CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES,)
            block = ctypes.string_at(arr[1], span)
            raw = [block[o:o + s] for o, s in zip(offsets, sizes, strict=True)]
        elif sizes:
            return (CUresult.CUDA_ERROR_INVALID_VALUE,)
        else:
            raw, block = [], b""
        self.launches.append((name, (gx, gy, gz, bx, by, bz, shared), b"".join(raw)))
        self.grid = (gx, gy, gz)
        result = self.kernels[name](*raw)
        if result in (CUresult.CUDA_ERROR_ILLEGAL_ADDRESS, CUresult.CUDA_ERROR_LAUNCH_FAILED):
            self.ctx.sticky = result  # reported at the next synchronising call, as on a GPU
            return (OK,)
        return (result,)

    # --- the kernels ---------------------------------------------------------------------------------

    def _matmul(self, a, size, b):
        a, size, b = (struct.unpack("<Q", x)[0] for x in (a, size, b))
        n = int(round((size // 8) ** 0.5))
        va, vb = self._view(a, size), self._view(b, size)
        if va is None or vb is None:
            return CUresult.CUDA_ERROR_ILLEGAL_ADDRESS
        A = np.frombuffer(va, dtype=np.int64).reshape(n, n)
        np.frombuffer(vb, dtype=np.int64).reshape(n, n)[:] = A @ A.T
        return OK

    def _scalars(self, out, i, f, d, s, c):
        self.scalars_seen = (struct.unpack("<Q", out)[0], struct.unpack("<i", i)[0], struct.unpack("<f", f)[0],
                             struct.unpack("<d", d)[0], s, struct.unpack("<b", c)[0])
        return OK

    def _oob_write(self, p, index, value):
        p, index = struct.unpack("<Q", p)[0], struct.unpack("<Q", index)[0]
        view = self._view(p + 8 * index, 8)
        if view is None:
            return CUresult.CUDA_ERROR_ILLEGAL_ADDRESS
        view[:] = value
        return OK

    def _block_sum(self, inp, out):
        """One sum per block of 256 floats (clean.hip's block_sum, 256 threads a block)."""
        inp, out = struct.unpack("<Q", inp)[0], struct.unpack("<Q", out)[0]
        blocks = self.grid[0]
        vin, vout = self._view(inp, blocks * 1024), self._view(out, blocks * 4)
        if vin is None or vout is None:
            return CUresult.CUDA_ERROR_ILLEGAL_ADDRESS
        sums = np.frombuffer(vin, dtype=np.float32).reshape(blocks, 256).sum(axis=1, dtype=np.float32)
        np.frombuffer(vout, dtype=np.float32)[:] = sums
        return OK

    def _fill(self, p, n, v):
        p, n = struct.unpack("<Q", p)[0], struct.unpack("<Q", n)[0]
        view = self._view(p, n)
        if view is None:
            return CUresult.CUDA_ERROR_ILLEGAL_ADDRESS
        view[:] = v * n
        return OK
