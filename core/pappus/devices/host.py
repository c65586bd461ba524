"""The reference DeviceAPI on host memory (numpy): for tests of the pool, interpreter and engines.

Honest about what it is: it isolates nothing. "Device memory" is a numpy array in the calling
process and kernels are a fixed table of trusted numpy functions shipped with pappus. A host
library is a small JSON document naming kernels from that table, so no tenant code is ever
loaded. It exists so core can be tested end to end without a compiler or a GPU; the CPU
fallback backend (``pappus_cpu``) is the one that runs real kernels in a sandbox.
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DeadlineExceeded, KernelFault, LibraryError
from ..hookspecs import hookimpl
from ..interfaces import (
    Availability,
    Backend,
    DeviceAPI,
    DeviceInfo,
    DeviceSpec,
    Driver,
    LibraryImage,
    capabilities,
)
from ..kernels import DeviceLimits, KernelInfo, KernelParam, LibraryInfo, ParamKind
from ..plan import Launch

HOST_FORMAT = "pappus-host/1"
BASE_ADDRESS = 0x7F00_0000_0000  # fake device addresses: catch offset/address mix-ups

P = KernelParam(8, ParamKind.POINTER)
U64 = KernelParam(8, ParamKind.UINT)
I64 = KernelParam(8, ParamKind.INT)
F32 = KernelParam(4, ParamKind.FLOAT)


@dataclass(frozen=True)
class HostKernel:
    params: tuple[KernelParam, ...]
    fn: Callable[..., None]


class _Memory:
    """Typed views of device memory by address, with bounds checks that become KernelFaults."""

    def __init__(self, device: HostDevice) -> None:
        self.device = device

    def view(self, address: int, nbytes: int, dtype: Any = np.uint8) -> np.ndarray:
        mem = self.device.memory
        start = address - self.device.base
        if mem is None or start < 0 or start + nbytes > len(mem) or nbytes < 0:
            raise KernelFault(f"access of {nbytes} bytes at {address:#x} is outside device memory",
                              address=address, reasons=["out_of_bounds"])
        return mem[start:start + nbytes].view(dtype)


def _matmul_at_i64(mem: _Memory, launch: Launch, a: int, size: int, b: int) -> None:
    """B = A x A^T for a square int64 matrix A of ``size`` bytes (the thesis workload)."""
    n = int(round((size // 8) ** 0.5))
    if n * n * 8 != size:
        raise KernelFault(f"matmul: {size} bytes is not a square int64 matrix", kernel="matmul_at_i64")
    A = mem.view(a, size, np.int64).reshape(n, n)
    mem.view(b, size, np.int64).reshape(n, n)[:] = A @ A.T


def _fill_u8(mem: _Memory, launch: Launch, ptr: int, size: int, value: int) -> None:
    mem.view(ptr, size)[:] = value & 0xFF


def _copy(mem: _Memory, launch: Launch, dst: int, src: int, size: int) -> None:
    mem.view(dst, size)[:] = mem.view(src, size)


def _add_i64(mem: _Memory, launch: Launch, ptr: int, size: int, value: int) -> None:
    mem.view(ptr, size, np.int64)[:] += value


def _scale_f32(mem: _Memory, launch: Launch, ptr: int, size: int, factor: float) -> None:
    mem.view(ptr, size, np.float32)[:] *= np.float32(factor)


def _sleep_ms(mem: _Memory, launch: Launch, ms: int) -> None:
    time.sleep(ms / 1000.0)


def _fault(mem: _Memory, launch: Launch, address: int) -> None:
    mem.view(address, 8)[:] = 0xFF  # faults unless the address is inside device memory


KERNELS: dict[str, HostKernel] = {
    "matmul_at_i64": HostKernel((P, U64, P), _matmul_at_i64),
    "fill_u8": HostKernel((P, U64, KernelParam(1, ParamKind.UINT)), _fill_u8),
    "copy_bytes": HostKernel((P, P, U64), _copy),
    "add_i64": HostKernel((P, U64, I64), _add_i64),
    "scale_f32": HostKernel((P, U64, F32), _scale_f32),
    "sleep_ms": HostKernel((U64,), _sleep_ms),
    "write_at": HostKernel((U64,), _fault),
}

_UNPACK = {ParamKind.POINTER: "Q", ParamKind.UINT: "Q", ParamKind.INT: "q"}


def host_library(kernels: list[str]) -> bytes:
    """The bytes of a host library exposing ``kernels`` from the built-in table."""
    return json.dumps({"format": HOST_FORMAT, "kernels": kernels}).encode()


class HostDriver(Driver):
    def inspect_library(self, data: bytes) -> LibraryInfo:
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise LibraryError("not a host library (expected JSON with format 'pappus-host/1')") from None
        if not isinstance(doc, dict) or doc.get("format") != HOST_FORMAT:
            raise LibraryError("not a host library (expected JSON with format 'pappus-host/1')")
        names = doc.get("kernels")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise LibraryError("'kernels' must be a list of built-in host kernel names")
        unknown = [n for n in names if n not in KERNELS]
        if unknown:
            raise LibraryError(f"unknown host kernels: {', '.join(unknown)} (available: {', '.join(KERNELS)})")
        return LibraryInfo(
            format=HOST_FORMAT,
            target="host",
            kernels={n: KernelInfo(name=n, params=KERNELS[n].params) for n in names},
            size=len(data),
        )


class HostDevice(DeviceAPI):
    """Device memory is a numpy array; kernels are the built-in table. No isolation."""

    bounds_writes = True  # kernels only touch memory through bounds-checked views

    def __init__(self, memory_bytes: int = 64 * 1024 * 1024, **_: Any) -> None:
        self.memory_bytes = memory_bytes
        self.memory: np.ndarray | None = None
        self.base = BASE_ADDRESS
        self._mem = _Memory(self)
        self._aborted = threading.Event()
        self.loads = 0
        self.launches = 0

    def open(self) -> DeviceInfo:
        return DeviceInfo(name="host (numpy, no isolation)", total_memory=self.memory_bytes,
                          free_memory=self.memory_bytes, limits=DeviceLimits())

    def reserve(self, nbytes: int) -> int:
        self.memory = np.zeros(nbytes, dtype=np.uint8)
        return self.base

    def _slice(self, address: int, nbytes: int) -> np.ndarray:
        return self._mem.view(address, nbytes)

    def write(self, address: int, data: memoryview) -> None:
        self._slice(address, data.nbytes)[:] = np.frombuffer(data, dtype=np.uint8)

    def read(self, address: int, out: memoryview) -> None:
        np.frombuffer(out, dtype=np.uint8)[:] = self._slice(address, out.nbytes)

    def read_bytes(self, address: int, nbytes: int) -> bytes:
        return self._slice(address, nbytes).tobytes()

    def memset(self, address: int, value: int, nbytes: int) -> None:
        self._slice(address, nbytes)[:] = value

    def load_module(self, image: LibraryImage) -> Any:
        if hashlib.sha256(image.data).hexdigest() != image.sha256:
            raise LibraryError("library bytes do not match their registered sha256")
        self.loads += 1
        return HostDriver().inspect_library(image.data)

    def get_kernel(self, module: Any, name: str) -> Any:
        if name not in module.kernels:
            raise KernelFault(f"kernel {name!r} is not in the module", kernel=name)
        return KERNELS[name]

    def launch(self, launch: Launch) -> None:
        if self._aborted.is_set():
            raise DeadlineExceeded(0.0, kernel=launch.kernel)
        kernel: HostKernel = launch.handle
        values: list[Any] = []
        for param, raw in zip(kernel.params, launch.args, strict=True):
            if param.kind == ParamKind.FLOAT:
                values.append(struct.unpack("<f", raw)[0])
            elif param.size == 8:
                values.append(struct.unpack("<" + _UNPACK[param.kind], raw)[0])
            else:
                values.append(int.from_bytes(raw, "little"))
        self.launches += 1
        try:
            kernel.fn(self._mem, launch, *values)
        except KernelFault as exc:
            exc.fields.setdefault("kernel", launch.kernel)
            if exc.fields.get("kernel") is None:
                exc.fields["kernel"] = launch.kernel
            raise

    def synchronize(self) -> None:
        pass

    def reset(self) -> None:
        self._aborted.clear()

    @property
    def healthy(self) -> bool:
        return not self._aborted.is_set()  # an aborted device needs reset() before reuse

    def abort(self) -> None:
        self._aborted.set()

    def close(self) -> None:
        self.memory = None


def create_device(**options: Any) -> HostDevice:
    return HostDevice(**options)


HOST_BACKEND = Backend(
    name="host",
    description="reference device on host memory (numpy); trusted built-in kernels only, no isolation",
    driver=HostDriver(),
    device=lambda **options: DeviceSpec("pappus.devices.host:create_device", options),
    check=lambda: Availability(True, "always available; isolates nothing"),
    capabilities=capabilities("zeroing", "signatures"),
    library_suffixes=(".json",),
)


@hookimpl
def pappus_register_backends(registry: Any) -> None:
    registry.add(HOST_BACKEND)
