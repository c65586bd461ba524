"""Clearing what kernels leave on the GPU outside the pool: shared memory, local memory, registers.

A GPU keeps shared memory, per-thread local memory (local arrays, spilled registers, the
stack) and the register file from one kernel to the next; a later tenant's kernel that reads
one before writing it sees the earlier tenant's data. On an H100 (``tools/cuda_onchip_probe.py``,
4 blocks of 128 threads) a tenant found all 8,192 of the previous tenant's shared words, all
131,072 of its private words and one register word a thread; after these scrubs, none. The
pool's memset cannot reach them: only kernels can.

``OnChipScrubber`` runs the kernels of ``scrub/scrub.ptx`` (generated from ``scrub.cu``) after
an invocation whose kernels used shared or local memory, as the driver reports them
(``CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES``/``LOCAL_SIZE_BYTES`` plus dynamic shared memory):

* shared: one block per SM with the most dynamic shared memory a block may have, so every SM's
  shared memory is written;
* local: blocks of 256 threads, as many as the driver says fit per SM at once, on every SM, each
  thread zeroing its own frame of 1, 4 or 16 KiB (the smallest that covers the largest frame
  used): every warp slot's local memory;
* registers (after every invocation: every kernel uses them): one block of 256 threads per SM at
  255 registers a thread, which takes an SM's whole register file, each thread loading zeros
  into every register the compiler can give a kernel (R0-R252: ptxas keeps the top two of any
  allocation for itself; tests/cuda/test_scrub_kernels.py checks this in the machine code).

All three only cover everything if all their blocks are resident at once; each block waits (bounded)
for all the others, and counts itself complete only if it saw them. Fewer complete blocks than
launched is reported as a ``DeviceError`` (the engine then replaces the device or its worker).
"""

from __future__ import annotations

import ctypes
import struct
from importlib import resources
from typing import Any

from pappus.errors import DeviceError

LOCAL_VARIANTS = ((1024, "pappus_scrub_local_1k"), (4096, "pappus_scrub_local_4k"),
                  (16384, "pappus_scrub_local_16k"))
LOCAL_BLOCK = 256
SHARED_BLOCK = 1024
REGISTERS = "pappus_scrub_registers"
REGISTER_BLOCK = 256  # at 255 registers a thread (allocated as 256): 64K registers, an SM's whole file
REGISTER_WORDS = 256  # zero words each thread loads (REG_WORDS in scrub.cu)
SPIN_CLOCKS = 2_000_000_000  # ~1 s at GPU clocks: how long a block waits for the others


def scrub_ptx() -> bytes:
    return resources.files("pappus_cuda").joinpath("scrub/scrub.ptx").read_bytes() + b"\0"


class OnChipScrubber:
    """Scrub kernels loaded into one context, with their grid sizes (made again after a reset)."""

    def __init__(self, device: Any) -> None:
        self.device = device
        call = device._call
        drv = device.driver
        attr = drv.CUdevice_attribute
        self.sms = int(call("cuDeviceGetAttribute", attr.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, device._dev))
        self.shared_bytes = int(call("cuDeviceGetAttribute",
                                     attr.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, device._dev))
        self.module = call("cuModuleLoadData", scrub_ptx())
        self.functions = {name: call("cuModuleGetFunction", self.module, name.encode())
                          for name in ["pappus_scrub_shared", REGISTERS, *(n for _, n in LOCAL_VARIANTS)]}
        shared_fn = self.functions["pappus_scrub_shared"]
        call("cuFuncSetAttribute", shared_fn, drv.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
             self.shared_bytes)
        self.grids = {"pappus_scrub_shared": self.sms * self._per_sm(shared_fn, SHARED_BLOCK, self.shared_bytes)}
        for _, name in LOCAL_VARIANTS:
            self.grids[name] = self.sms * self._per_sm(self.functions[name], LOCAL_BLOCK, 0)
        self.grids[REGISTERS] = self.sms * self._per_sm(self.functions[REGISTERS], REGISTER_BLOCK, 0)
        self.counters = int(call("cuMemAlloc", 256))  # arrived, complete
        self.zeros = int(call("cuMemAlloc", REGISTER_WORDS * 4))  # what the register scrub loads
        call("cuMemsetD8", self.zeros, 0, REGISTER_WORDS * 4)

    def _per_sm(self, fn: Any, block: int, shared: int) -> int:
        n = int(self.device._call("cuOccupancyMaxActiveBlocksPerMultiprocessor", fn, block, shared))
        if n < 1:
            raise DeviceError("a scrub kernel cannot be resident at all", api="cuOccupancyMaxActiveBlocksPerMultiprocessor",
                              status="scrub_unavailable")
        return n

    def local_variant(self, frame_bytes: int) -> tuple[int, str]:
        for size, name in LOCAL_VARIANTS:
            if frame_bytes <= size:
                return size, name
        return LOCAL_VARIANTS[-1]

    def run(self, shared: bool, local_bytes: int, registers: bool = True) -> None:
        """Scrub shared memory (if ``shared``), the first ``local_bytes`` of every thread's local
        memory (if > 0) and the register file (if ``registers``); synchronous. Raises
        DeviceError if a scrub could not cover every SM."""
        if shared:
            self._launch("pappus_scrub_shared", SHARED_BLOCK, self.shared_bytes, ctypes.c_uint32(self.shared_bytes))
        if local_bytes > 0:
            size, name = self.local_variant(local_bytes)
            self._launch(name, LOCAL_BLOCK, 0, ctypes.c_uint32(size // 4))
        if registers:
            self._launch(REGISTERS, REGISTER_BLOCK, 0, ctypes.c_uint64(self.zeros))

    def _launch(self, name: str, block: int, dyn: int, last: ctypes._SimpleCData) -> None:
        """One scrub kernel over its whole grid; ``last`` is its last parameter (shared bytes,
        local words per thread, or the zeros the register scrub loads)."""
        call = self.device._call
        expected = self.grids[name]
        call("cuMemsetD32", self.counters, 0, 2)
        # kernelParams: arrived*, complete*, expected u32, spin i64, then `last`
        values = [ctypes.c_uint64(self.counters), ctypes.c_uint64(self.counters + 4), ctypes.c_uint32(expected),
                  ctypes.c_int64(SPIN_CLOCKS), last]
        pointers = (ctypes.c_void_p * len(values))(*[ctypes.addressof(v) for v in values])
        call("cuLaunchKernel", self.functions[name], expected, 1, 1, block, 1, 1, dyn, 0, ctypes.addressof(pointers),
             0, kernel=name)
        call("cuCtxSynchronize", kernel=name)
        out = bytearray(8)
        call("cuMemcpyDtoH", out, self.counters, 8)
        arrived, complete = struct.unpack("<II", out)
        if complete != expected:
            raise DeviceError(f"{name}: only {complete} of {expected} blocks were resident together; on-chip "
                              "memory may keep a previous tenant's data", api=name, status="scrub_incomplete",
                              arrived=arrived, complete=complete, expected=expected)

    def close(self) -> None:
        try:
            self.device._call("cuMemFree", self.counters)
            self.device._call("cuMemFree", self.zeros)
            self.device._call("cuModuleUnload", self.module)
        except Exception:
            pass
