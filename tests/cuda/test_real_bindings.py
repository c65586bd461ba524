"""CudaDevice through the real cuda-bindings, against a stub libcuda.so.1 (csrc/stub_libcuda.c).

The other CUDA tests without a GPU drive the backend through fakecuda.py, which mirrors our own
assumptions about the bindings. Here the bindings are the real ``cuda.bindings.driver``: their
argument conversions, the C ABI and the versioned entry points they resolve through
``cuGetProcAddress_v2`` (cuMemAlloc_v2, cuCtxCreate_v4, ...). Only the driver is a stub: host
memory, a current context per thread, sticky faults, the dynamic shared memory default and
opt-in, and a few known kernels whose effects it performs on the host (stub_libcuda.c says what
it models and why).

cuda-bindings loads libcuda once per process and the stub keeps its state per process, so each
scenario runs in a fresh interpreter with ``LD_LIBRARY_PATH`` naming the stub (cuda.pathfinder
finds the driver by the system search, which honours it). The scenarios are the functions
registered with ``@scenario`` below; the child imports this module, runs one, and exits 0, or
prints the traceback and exits 1. Without xdist all selected scenarios start at once.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import os
import shutil
import struct
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
STUB_SOURCE = HERE / "csrc" / "stub_libcuda.c"
PREBUILT = HERE / "prebuilt"
CHILD_TIMEOUT = 120

# CUresult values
ILLEGAL_ADDRESS, LAUNCH_FAILED = 700, 719
UNKNOWN_STATUS = 1234  # in no CUresult of cuda-bindings 12 or 13
# CUdevice_attribute values
CC_MAJOR, CC_MINOR, PAGEABLE_MEMORY_ACCESS = 75, 76, 88
OPTIN_SHARED = 232448  # the stub's MAX_SHARED_MEMORY_PER_BLOCK_OPTIN (an H100's)


# --- building and running -------------------------------------------------------------------


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")


@pytest.fixture(scope="session")
def stub_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the stub as libcuda.so.1, built once per session."""
    if importlib.util.find_spec("cuda") is None or importlib.util.find_spec("cuda.bindings") is None:
        pytest.skip("cuda-bindings is not installed (pip install 'pappus[cuda]')")
    cc = _compiler()
    if cc is None:
        pytest.skip("no C compiler (cc) on PATH: the stub libcuda.so.1 is built at test time")
    out = tmp_path_factory.mktemp("stub-libcuda")
    cmd = [cc, "-std=gnu11", "-O1", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-fvisibility=hidden",
           "-pthread", "-Wl,-soname,libcuda.so.1", str(STUB_SOURCE), "-o", str(out / "libcuda.so.1")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return out


def _child_env(stub: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("PAPPUS_CUDA_DEVICE", "PAPPUS_ALLOW_HOST_MEMORY_ACCESS", "PAPPUS_CUDA_PROBE", "PAPPUS_CUDA_ARCH",
                 "CUDA_PYTHON_CUDA_PER_THREAD_DEFAULT_STREAM"):
        env.pop(name, None)
    env["LD_LIBRARY_PATH"] = os.pathsep.join([str(stub), *filter(None, [env.get("LD_LIBRARY_PATH")])])
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT / "core"), str(ROOT / "plugins"),
                                         *filter(None, [env.get("PYTHONPATH")])])
    return env


def _run_child(stub: Path, name: str) -> subprocess.CompletedProcess[str]:
    code = f"import test_real_bindings as t; t._child({name!r})"
    try:
        return subprocess.run([sys.executable, "-c", code], env=_child_env(stub), cwd=str(ROOT), text=True,
                              capture_output=True, timeout=CHILD_TIMEOUT, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        return subprocess.CompletedProcess(exc.cmd, -1, out, f"{err}\nscenario {name!r} timed out after {CHILD_TIMEOUT} s")


class Runs:
    """Scenario runs; without xdist every selected scenario starts at once, each in its process."""

    def __init__(self, stub: Path, names: list[str]) -> None:
        self.stub = stub
        self.futures: dict[str, Future[subprocess.CompletedProcess[str]]] = {}
        if names and not os.environ.get("PYTEST_XDIST_WORKER"):
            pool = ThreadPoolExecutor(max_workers=max(2, min(len(names), (os.cpu_count() or 2) * 2)))
            for name in names:
                self.futures[name] = pool.submit(_run_child, stub, name)
            pool.shutdown(wait=False)

    def check(self, name: str) -> None:
        future = self.futures.get(name)
        proc = future.result() if future is not None else _run_child(self.stub, name)
        if proc.returncode != 0:
            pytest.fail(f"scenario {name!r} failed in its process (exit {proc.returncode}):\n"
                        f"{proc.stderr[-8000:]}{proc.stdout[-2000:]}", pytrace=False)


@pytest.fixture(scope="session")
def runs(stub_dir: Path, request: pytest.FixtureRequest) -> Runs:
    selected = [item.callspec.params["name"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_through_the_real_bindings"
                and getattr(item, "module", None) is sys.modules[__name__] and hasattr(item, "callspec")]
    return Runs(stub_dir, selected)


SCENARIOS: dict[str, Callable[..., None]] = {}


def scenario(*variants: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a scenario, once per variant (``name[variant]`` calls it with the variant)."""

    def register(fn: Callable[..., None]) -> Callable[..., None]:
        for variant in variants or (None,):
            SCENARIOS[fn.__name__ + (f"[{variant}]" if variant else "")] = fn
        return fn

    return register


# --- in the child: the stub's controls ----------------------------------------------------------


class LaunchRecord(ctypes.Structure):
    """struct stub_launch of stub_libcuda.c."""

    _fields_ = [("name", ctypes.c_char * 64), ("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3),
                ("shared", ctypes.c_uint), ("mode", ctypes.c_int), ("ctx", ctypes.c_int), ("device", ctypes.c_int),
                ("buffer_size", ctypes.c_ulonglong), ("param_bytes", ctypes.c_uint),
                ("params", ctypes.c_ubyte * 256)]


class Stub:
    """The stub libcuda.so.1 this process's cuda-bindings use, through its stub_* functions."""

    def __init__(self) -> None:
        # The soname the bindings dlopen: the same library (LD_LIBRARY_PATH names only the stub).
        self.lib = ctypes.CDLL("libcuda.so.1")
        self.lib.stub_set_memory.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
        self.lib.stub_set_min_heap.argtypes = [ctypes.c_size_t, ctypes.c_int]
        self.lib.stub_log.restype = ctypes.c_size_t
        self.lib.stub_launch_size.restype = ctypes.c_size_t
        assert self.lib.stub_launch_size() == ctypes.sizeof(LaunchRecord), "LaunchRecord does not match the stub"

    def log(self) -> list[str]:
        """Every driver call so far as ``name=CUresult``."""
        buf = ctypes.create_string_buffer(1 << 20)
        n = self.lib.stub_log(buf, len(buf))
        return buf.raw[:n].decode().splitlines()

    def calls(self, name: str, result: int | None = 0) -> int:
        """How many calls of ``name`` returned ``result`` (any result with None)."""
        return sum(1 for line in self.log() if line.split("=")[0] == name
                   and (result is None or line.split("=")[1] == str(result)))

    def launches(self) -> list[LaunchRecord]:
        out = []
        for i in range(self.lib.stub_launch_count()):
            record = LaunchRecord()
            assert self.lib.stub_launch(i, ctypes.byref(record)) == 0
            out.append(record)
        return out

    def counts(self) -> dict[str, int]:
        values = [ctypes.c_int() for _ in range(4)]
        self.lib.stub_counts(*[ctypes.byref(v) for v in values])
        return dict(zip(("contexts", "allocations", "modules", "sticky"), (v.value for v in values), strict=True))

    def __getattr__(self, name: str) -> Any:  # stub_set_memory(...) as set_memory(...)
        return getattr(self.lib, f"stub_{name}")


def _child(name: str) -> None:
    """Entry of a scenario's process."""
    try:
        fn = SCENARIOS[name]
        variant = name.partition("[")[2].rstrip("]")
        stub = Stub()
        fn(stub, variant) if variant else fn(stub)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)  # no atexit handlers: a faulted process ends as the engine would end it


# --- in the child: helpers ----------------------------------------------------------------------


def _image(data: bytes) -> Any:
    from pappus.interfaces import LibraryImage

    return LibraryImage(hashlib.sha256(data).hexdigest(), data)


def _prebuilt(stem: str) -> bytes:
    return (PREBUILT / f"{stem}.fatbin").read_bytes()


def _device(**options: Any) -> Any:
    from pappus_cuda.device import CudaDevice

    options.setdefault("scrub_on_chip", False)  # the scrub kernels have their own scenarios
    return CudaDevice(**options)


def _launch(dev: Any, kernel: Any, grid: tuple[int, int, int], block: tuple[int, int, int], shared: int,
            *args: bytes) -> None:
    from pappus.plan import Launch

    dev.launch(Launch(kernel.name, kernel, grid, block, shared, tuple(args)))


def _q(value: int) -> bytes:
    return struct.pack("<Q", value)


def _read(dev: Any, address: int, n: int) -> bytes:
    out = bytearray(n)
    dev.read(address, memoryview(out))
    return bytes(out)


def _fill(dev: Any, kernel: Any, address: int, n: int, value: int) -> None:
    """fault.hip's fill_u8 over n bytes, one thread a byte."""
    _launch(dev, kernel, ((n + 63) // 64, 1, 1), (64, 1, 1), 0, _q(address), _q(n), bytes([value]))


def _raises(exc_type: type[BaseException] | tuple[type[BaseException], ...], fn: Callable[[], Any]) -> Any:
    try:
        fn()
    except exc_type as exc:
        return exc
    raise AssertionError(f"{fn} did not raise {exc_type}")


# --- scenarios ----------------------------------------------------------------------------------


@scenario()
def open_reports_the_driver_memory_limits_and_heap(stub: Stub) -> None:
    from importlib.metadata import version

    from pappus.errors import DeviceError
    from pappus_cuda import runtime

    stub.set_memory(3 << 30, 4 << 30)
    stub.set_device_count(2)
    dev = _device()
    info = dev.open()
    assert info.name == "Stub H100 0 (libcuda stub)", info
    assert info.details["arch"] == "sm_90" and info.details["driver_cuda"] == "13.0", info.details
    assert info.details["cuda_bindings"] == version("cuda-bindings"), info.details
    assert (info.free_memory, info.total_memory) == (3 << 30, 4 << 30)
    assert info.limits.max_block_threads == 1024 and info.limits.max_block_dims == (1024, 1024, 64)
    assert info.limits.max_grid_dims == (2**31 - 1, 65535, 65535) and info.limits.max_shared_bytes == OPTIN_SHARED
    # the stub rounds heap requests below 4 MiB up, as measured on an H100: what it reports is kept
    assert info.heap_limit == dev.heap_limit == 4 << 20
    assert dev.heap_limit_notes == ["requested 0 bytes, the driver reports 4194304"]
    assert dev.set_malloc_heap_limit(8 << 20) == 8 << 20
    assert dev.memory_info() == (3 << 30, 4 << 30)
    assert stub.calls("cuCtxSetLimit") == 2 and stub.calls("cuCtxGetLimit") == 2
    dev.close()
    assert stub.counts()["contexts"] == 0

    # a driver that refuses 0: the smallest accepted request is kept, and said
    stub.set_min_heap(4096, 1)
    dev = _device(device_index=1)
    info = dev.open()
    assert info.name == "Stub H100 1 (libcuda stub)" and info.heap_limit == 4096
    assert dev.heap_limit_notes == ["cuCtxSetLimit(MALLOC_HEAP_SIZE, 0) failed: CUDA_ERROR_INVALID_VALUE",
                                    "using the smallest accepted request, 4096 bytes",
                                    "requested 0 bytes, the driver reports 4096"], dev.heap_limit_notes
    dev.reserve(4096)
    kernel = dev.get_kernel(dev.load_module(_image(_prebuilt("fault"))), "fill_u8")
    _fill(dev, kernel, dev.base, 64, 1)
    dev.synchronize()
    assert stub.launches()[-1].device == 1  # the context is device 1's
    dev.close()
    exc = _raises(DeviceError, lambda: _device(device_index=2).open())
    assert "device 2 does not exist (2 visible)" in str(exc)

    result = runtime.probe()
    assert result.available and result.archs == ["sm_90", "sm_90"], result
    assert result.shared_optin == [OPTIN_SHARED] * 2 and result.driver == "13.0", result


@scenario()
def old_driver_is_never_driven_and_reachable_host_memory_is_refused(stub: Stub) -> None:
    from pappus.errors import BackendUnavailable, DeviceError
    from pappus_cuda import runtime

    stub.set_driver_version(12080)
    exc = _raises(BackendUnavailable, lambda: _device().open())
    assert "supports CUDA 12.8, older than the CUDA 13." in str(exc), exc
    assert stub.log() == ["cuDriverGetVersion=0"], stub.log()
    assert runtime.probe().driver_older

    stub.set_driver_version(13000)
    stub.set_attribute(PAGEABLE_MEMORY_ACCESS, 1)
    exc = _raises(DeviceError, lambda: _device().open())
    assert exc.fields["status"] == "host_memory_reachable", exc
    assert not any(line.startswith(("cuDevicePrimaryCtxRetain", "cuCtxCreate")) for line in stub.log())
    dev = _device(allow_host_memory_access=True)
    assert dev.open().details["pageable_memory_access"] is True
    dev.close()


@scenario()
def executor_sizes_the_pool_from_free_memory(stub: Stub) -> None:
    from pappus.engine.executor import Executor, ExecutorConfig

    stub.set_memory(64 << 20, 80 << 20)
    ex = Executor(lambda: _device(), ExecutorConfig(share=4))
    info = ex.start()
    try:
        assert info.free_memory == 64 << 20
        assert ex.device is not None and ex.device.pool_bytes == int((64 << 20) * 0.9) // 4 & ~0xFFFF
        assert stub.counts()["allocations"] == 1
    finally:
        ex.close()
    assert stub.counts() == {"contexts": 0, "allocations": 0, "modules": 0, "sticky": 0}


@scenario()
def memory_reserve_write_read_memset(stub: Stub) -> None:
    import numpy as np

    from pappus.errors import DeviceError

    stub.set_memory(8 << 20, 16 << 20)
    dev = _device()
    dev.open()
    exc = _raises(DeviceError, lambda: dev.reserve(9 << 20))
    assert exc.fields["status"] == "CUDA_ERROR_OUT_OF_MEMORY" and stub.calls("cuMemAlloc_v2", None) == 0
    base = dev.reserve(1 << 20)
    assert _read(dev, base, 1 << 20) == bytes(1 << 20)  # the stub hands out 0xa5: the pool was cleared
    dev.write(base + 10, memoryview(b"read-only bytes"))
    assert _read(dev, base + 10, 15) == b"read-only bytes"
    values = np.arange(256, dtype=np.float32)
    dev.write(base + 4096, memoryview(values.data))
    out = np.zeros(256, dtype=np.float32)
    dev.read(base + 4096, memoryview(out.data))
    assert np.array_equal(out, values)
    dev.memset(base + 4096, 0x1FF, 8)  # one byte of the value
    assert _read(dev, base + 4094, 12) == b"\0\0" + b"\xff" * 8 + bytes(values[2:3].tobytes()[:2])
    before = len(stub.log())
    for bad in (lambda: dev.write(base + (1 << 20) - 4, memoryview(b"12345678")),
                lambda: dev.memset(base - 1, 0, 2)):
        assert _raises(DeviceError, bad).fields["status"] == "out_of_pool"
    assert len(stub.log()) == before  # refused before the driver
    assert _raises(DeviceError, lambda: dev.reserve(4096)).fields["status"] == "already_reserved"
    dev.close()


@scenario("pointers", "buffer")
def by_value_arguments_reach_the_kernel(stub: Stub, mode: str) -> None:
    dev = _device(launch_params=mode)
    dev.open()
    base = dev.reserve(1 << 20)
    kernel = dev.get_kernel(dev.load_module(_image(_prebuilt("clean"))), "scalars")
    assert stub.last_module_kind() == 1  # the fatbin's sm_90 cubin, not the bundle
    big = struct.pack("<qdi4x", -5, 2.5, 7)
    args = (_q(base), struct.pack("<i", -3), struct.pack("<f", 1.5), struct.pack("<d", 20.25), big,
            struct.pack("<b", -1))
    _launch(dev, kernel, (1, 1, 1), (1, 1, 1), 0, *args)
    dev.synchronize()
    assert struct.unpack("<q", _read(dev, base, 8))[0] == -3 + 1 + 20 - 5 + 2 + 7 - 1
    record = stub.launches()[-1]
    assert record.name == b"scalars" and record.mode == (1 if mode == "pointers" else 2)
    # the parameter bank at the offsets cuobjdump gives: 0, 8, 12, 16, 24, 48
    bank = bytearray(49)
    for offset, raw in zip((0, 8, 12, 16, 24, 48), args, strict=True):
        bank[offset:offset + len(raw)] = raw
    assert bytes(record.params[:record.param_bytes]) == bytes(bank)
    if mode == "buffer":
        assert record.buffer_size == 49  # where the last parameter ends: the driver refuses more

    fill = dev.get_kernel(dev.load_module(_image(_prebuilt("fault"))), "fill_u8")
    _launch(dev, fill, (2, 1, 1), (64, 1, 1), 0, _q(base), _q(100), b"\x07")
    noop = dev.get_kernel(dev.load_module(_image(_prebuilt("clean"))), "noop")
    _launch(dev, noop, (3, 2, 1), (8, 4, 2), 0)
    dev.synchronize()
    assert _read(dev, base, 128) == b"\x07" * 100 + bytes(28)
    records = stub.launches()[-2:]
    assert [(r.name, tuple(r.grid), tuple(r.block), r.shared) for r in records] == [
        (b"fill_u8", (2, 1, 1), (64, 1, 1), 0), (b"noop", (3, 2, 1), (8, 4, 2), 0)]
    dev.close()


@scenario("pointers", "buffer")
def matmul_through_the_interpreter(stub: Stub, mode: str) -> None:
    from matmul_check import check_matmul_through_the_interpreter

    dev = _device(launch_params=mode)
    check_matmul_through_the_interpreter(dev, dev.open(), _prebuilt("clean"))
    dev.close()


def _block_sum(dev: Any, kernel: Any, base: int, shared: int) -> list[float]:
    import numpy as np

    dev.write(base, memoryview(np.arange(512, dtype=np.float32).tobytes()))
    _launch(dev, kernel, (2, 1, 1), (256, 1, 1), shared, _q(base), _q(base + 4096))
    dev.synchronize()
    return np.frombuffer(_read(dev, base + 4096, 8), dtype=np.float32).tolist()


SUMS = [float(sum(range(256))), float(sum(range(256, 512)))]


@scenario()
def dynamic_shared_memory_opts_in_per_context(stub: Stub) -> None:
    from pappus.errors import DeviceError

    dev = _device()
    dev.open()
    base = dev.reserve(1 << 20)
    module = dev.load_module(_image(_prebuilt("clean")))
    kernel = dev.get_kernel(module, "block_sum")
    assert dev.function_attribute(kernel, "SHARED_SIZE_BYTES") == 1024
    # block_sum's 1 KiB static tile leaves 47 KiB without an opt-in: 48 KiB needs one
    assert _block_sum(dev, kernel, base, 48 * 1024) == SUMS
    assert _block_sum(dev, kernel, base, 48 * 1024) == SUMS
    assert stub.calls("cuFuncSetAttribute") == 1
    first = stub.launches()[-1].ctx
    # a healthy reset makes a new context (the stub's pool moves): the kernel opts in again there
    new_base = dev.reset()
    assert new_base != base and _read(dev, new_base, 4096) == bytes(4096)
    assert _block_sum(dev, kernel, new_base, 48 * 1024) == SUMS
    assert stub.calls("cuFuncSetAttribute") == 2 and stub.launches()[-1].ctx != first
    # more than the device allows next to the static tile: refused by the driver, device still usable
    exc = _raises(DeviceError, lambda: _block_sum(dev, kernel, new_base, OPTIN_SHARED))
    assert exc.fields["status"] == "CUDA_ERROR_INVALID_VALUE" and exc.fields["api"] == "cuFuncSetAttribute"
    assert dev.healthy and _block_sum(dev, kernel, new_base, 100_000) == SUMS
    dev.close()


@scenario()
def shared_memory_from_an_input_counts_the_static_tile(stub: Stub) -> None:
    # A launch's dynamic shared memory read from an input is checked when the invocation is
    # resolved, with the kernel's static part (block_sum's 1 KiB tile) added, as registration
    # checks a constant amount: refused at its field before any launch, not by the driver.
    import struct
    import tempfile

    import numpy as np

    import pappus
    from pappus.errors import InvalidInput

    tmp = Path(tempfile.mkdtemp(prefix="pappus-stub-"))
    (tmp / "k.fatbin").write_bytes(_prebuilt("clean"))
    rt = pappus.Runtime(engine="cuda-sequential", state_dir=tmp / "state", pool_bytes=1 << 20)
    try:
        rt.register_library("m", tmp / "k.fatbin")
        rt.register_function("sums", {
            "schema": "pappus/function@1", "library": "m", "kernels": ["block_sum"],
            "blueprint": {"inputs": ["X", {"name": "cfg", "size": 8}], "buffers": {"S": 8}, "outputs": ["S"],
                          "control_flow": [{"ExecKernel": {
                              "name": "block_sum", "args": [{"Ptr": "X"}, {"Ptr": "S"}], "grid": [2], "block": [256],
                              "shared_mem_bytes": {"FromInput": {"input": "cfg", "index": 0}}}}]}})
        x = np.arange(512, dtype=np.float32).tobytes()

        def sums(shared: int) -> list[float]:
            out = rt.invoke("sums", {"X": x, "cfg": struct.pack("<Q", shared)})
            return np.frombuffer(out["S"], dtype=np.float32).tolist()

        assert sums(OPTIN_SHARED - 1024) == SUMS
        # (the launches happen in the engine's worker process, whose stub this one cannot see;
        # without the check the driver refuses the opt-in there: a DeviceError, not this)
        error = _raises(InvalidInput, lambda: sums(OPTIN_SHARED - 1023))
        assert "ExecKernel.shared_mem_bytes" in str(error) and "+ 1024 static bytes" in str(error), error
        assert sums(100_000) == SUMS  # and the engine serves on
    finally:
        rt.close()
        shutil.rmtree(tmp, ignore_errors=True)


@scenario()
def dynamic_shared_memory_opt_in_is_the_functions_not_the_handles(stub: Stub) -> None:
    # Two functions of one tenant that launch the same kernel of the same library get two
    # handles of one driver function (the executor's ModuleCache loads the module once). The
    # opt-in is an attribute of the driver's function: a smaller opt-in through one handle must
    # not take away what the other handle opted in to.
    dev = _device()
    dev.open()
    base = dev.reserve(1 << 20)
    module = dev.load_module(_image(_prebuilt("clean")))
    big, small = dev.get_kernel(module, "block_sum"), dev.get_kernel(module, "block_sum")
    assert big.function is small.function or int(big.function) == int(small.function)
    assert _block_sum(dev, big, base, 100_000) == SUMS
    assert _block_sum(dev, small, base, 60_000) == SUMS
    assert _block_sum(dev, big, base, 100_000) == SUMS
    dev.close()


@scenario()
def scrub_kernels_run_with_their_grids_and_arguments(stub: Stub) -> None:
    dev = _device(scrub_on_chip=True)
    dev.open()
    base = dev.reserve(1 << 20)  # scrubs what an earlier context left: shared, 1 KiB frames, registers
    reserve_scrubs = stub.launches()
    assert [r.name for r in reserve_scrubs] == [b"pappus_scrub_shared", b"pappus_scrub_local_1k",
                                                b"pappus_scrub_registers"]
    sms = 4  # the stub's MULTIPROCESSOR_COUNT
    # (grid, block, dynamic shared, last parameter): one maximal block per SM for shared memory;
    # 256-thread blocks, as many as fit (the stub: 2048 threads an SM), for 1 KiB frames; one
    # 255-register block per SM for the registers
    expected = [(sms * 1, 1024, OPTIN_SHARED, struct.pack("<I", OPTIN_SHARED)),
                (sms * 8, 256, 0, struct.pack("<I", 1024 // 4))]
    for record, (grid, block, shared, last) in zip(reserve_scrubs, expected, strict=False):
        assert (tuple(record.grid), tuple(record.block), record.shared) == ((grid, 1, 1), (block, 1, 1), shared)
        params = bytes(record.params[:record.param_bytes])
        arrived, complete, count, spin = struct.unpack_from("<QQIxxxxq", params)
        assert complete == arrived + 4 and count == grid and spin == 2_000_000_000
        assert params[32:] == last
    registers = reserve_scrubs[2]
    assert tuple(registers.grid) == (sms, 1, 1) and tuple(registers.block) == (256, 1, 1)
    assert stub.calls("cuFuncSetAttribute") == 1  # the shared scrub's opt-in to all shared memory

    module = dev.load_module(_image(_prebuilt("clean")))
    _block_sum(dev, dev.get_kernel(module, "block_sum"), base, 0)  # static shared memory
    dev.clear_private_state()
    _launch(dev, dev.get_kernel(module, "noop"), (1, 1, 1), (1, 1, 1), 0)
    dev.synchronize()
    dev.clear_private_state()
    names = [r.name for r in stub.launches()[len(reserve_scrubs):]]
    assert names == [b"block_sum", b"pappus_scrub_shared", b"pappus_scrub_registers", b"noop",
                     b"pappus_scrub_registers"], names
    dev.close()
    assert stub.counts() == {"contexts": 0, "allocations": 0, "modules": 0, "sticky": 0}


@scenario("oob_write-primary", "oob_write-own", "trap_now-primary", "at_sync-primary")
def sticky_fault_ends_the_device(stub: Stub, variant: str) -> None:
    from pappus.errors import DeviceError, KernelFault
    from pappus.pool import BufferPool

    how, _, context = variant.partition("-")
    dev = _device(context=context)
    dev.open()
    base = dev.reserve(1 << 20)
    pool = BufferPool(dev, base, 1 << 20, scrub_before_use=True)
    pool.allocate(256)
    module = dev.load_module(_image(_prebuilt("fault")))
    fill = dev.get_kernel(module, "fill_u8")
    if how == "oob_write":
        _launch(dev, dev.get_kernel(module, "oob_write"), (1, 1, 1), (1, 1, 1), 0, _q(base), _q(1 << 40), _q(1))
        kernel, status, reason = "oob_write", "CUDA_ERROR_ILLEGAL_ADDRESS", "illegal_address"
    elif how == "trap_now":
        _launch(dev, dev.get_kernel(module, "trap_now"), (1, 1, 1), (1, 1, 1), 0, _q(base))
        kernel, status, reason = "trap_now", "CUDA_ERROR_LAUNCH_FAILED", "launch_failed"
    else:  # a fault the driver reports at the synchronize, after a kernel that itself was fine
        _fill(dev, fill, base, 64, 3)
        stub.fail_next_sync(ILLEGAL_ADDRESS)
        kernel, status, reason = "fill_u8", "CUDA_ERROR_ILLEGAL_ADDRESS", "illegal_address"
    fault = _raises(KernelFault, dev.synchronize)
    assert (fault.fields["status"], fault.fields["kernel"], fault.fields["reasons"]) == (status, kernel, [reason])
    assert fault.fields["api"] == "cuCtxSynchronize" and not dev.healthy
    assert stub.counts()["sticky"] in (ILLEGAL_ADDRESS, LAUNCH_FAILED)
    calls = len(stub.log())
    for after in (pool.release, lambda: _read(dev, base, 8), lambda: _fill(dev, fill, base, 64, 1)):
        exc = _raises(KernelFault, after)  # named after the fault, without asking the driver
        assert "unusable" in str(exc) and exc.fields["status"] == status
    exc = _raises(NotImplementedError, dev.reset)  # the process must end (Backend.faults_end_process)
    assert status in str(exc)
    assert len(stub.log()) == calls
    dev.close()  # gives the context back without unloading into it
    assert stub.log()[calls:] == (["cuDevicePrimaryCtxRelease_v2=0"] if context == "primary" else
                                  ["cuCtxDestroy_v2=0"])
    assert stub.counts()["contexts"] == 0
    # ... and this process gets no new context (the driver refuses, as measured on an H100)
    _raises((KernelFault, DeviceError), lambda: _device(context=context).open())


@scenario()
def a_status_the_bindings_do_not_know_ends_the_device(stub: Stub) -> None:
    """A driver newer than cuda-bindings can answer a status CUresult lacks; the bindings raise
    ValueError converting it. That answer may be a new sticky fault: never a healthy device."""
    from pappus.errors import DeviceError

    dev = _device()
    dev.open()
    base = dev.reserve(1 << 20)
    module = dev.load_module(_image(_prebuilt("fault")))
    _fill(dev, dev.get_kernel(module, "fill_u8"), base, 64, 3)
    stub.fail_next_sync(UNKNOWN_STATUS)
    error = _raises(DeviceError, dev.synchronize)
    assert error.fields["status"] == f"CUresult({UNKNOWN_STATUS})" and error.fields["unknown_status"], error
    assert error.fields["api"] == "cuCtxSynchronize" and not dev.healthy
    _raises(DeviceError, lambda: _read(dev, base, 8))  # named after that status, driver not asked
    _raises(NotImplementedError, dev.reset)  # assumed sticky: the engine replaces the process
    dev.close()
    assert stub.counts()["contexts"] == 0


@scenario("cuda-sequential", "cuda-multiprocess")
def engine_replaces_the_worker_after_a_fault(stub: Stub, engine: str) -> None:
    import tempfile

    import numpy as np

    import pappus
    from pappus.errors import KernelFault

    tmp = Path(tempfile.mkdtemp(prefix="pappus-stub-"))
    (tmp / "k.fatbin").write_bytes(_prebuilt("clean"))
    (tmp / "f.fatbin").write_bytes(_prebuilt("fault"))
    rt = pappus.Runtime(engine=engine, state_dir=tmp / "state", workers=2, pool_bytes=1 << 20)
    try:
        rt.register_library("m", tmp / "k.fatbin")
        rt.register_library("f", tmp / "f.fatbin")
        rt.register_function("mm", {
            "schema": "pappus/function@1", "library": "m", "kernels": ["matmul_at_i64"],
            "blueprint": {"inputs": ["A"], "buffers": {"B": {"Sizeof": "A"}}, "outputs": ["B"],
                          "control_flow": [{"ExecKernel": {"name": "matmul_at_i64",
                                                           "args": [{"Ptr": "A"}, {"Sizeof": "A"}, {"Ptr": "B"}],
                                                           "grid": [4, 4, 1], "block": [16, 16, 1]}}]}})
        rt.register_function("boom", {
            "schema": "pappus/function@1", "library": "f", "kernels": ["oob_write"],
            "blueprint": {"inputs": [], "buffers": {"X": 64}, "outputs": ["X"], "control_flow": [
                {"ExecKernel": {"name": "oob_write", "args": [
                    {"Ptr": "X"}, {"Constant": {"type": "u64", "value": 1 << 40}},
                    {"Constant": {"type": "i64", "value": 1}}], "grid": [1], "block": [1]}}]}})
        a = np.arange(64 * 64, dtype=np.int64).reshape(64, 64) % 17

        def mm() -> None:
            out = rt.invoke("mm", {"A": a.tobytes()})
            assert np.array_equal(np.frombuffer(out["B"], dtype=np.int64).reshape(64, 64), a @ a.T)

        mm()
        before = set(rt.engine(engine).worker_pids())
        fault = _raises(KernelFault, lambda: rt.invoke("boom", {}))
        assert fault.fields["status"] == "CUDA_ERROR_ILLEGAL_ADDRESS" and fault.fields["kernel"] == "oob_write"
        mm()
        after = set(rt.engine(engine).worker_pids())
        assert before - after, (before, after)  # the worker that faulted is gone
    finally:
        rt.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _own_device_with_fill(stub: Stub) -> tuple[Any, Any, int]:
    dev = _device(context="own")
    dev.open()
    dev.reserve(1 << 16)
    fill = dev.get_kernel(dev.load_module(_image(_prebuilt("fault"))), "fill_u8")
    _fill(dev, fill, dev.base, 64, 1)
    dev.synchronize()
    return dev, fill, stub.launches()[-1].ctx


class Worker:
    """One thread, kept alive between the calls it runs for the caller."""

    def __init__(self) -> None:
        self.jobs: list[Callable[[], Any] | None] = []
        self.results: list[Any] = []
        self.go, self.done = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            self.go.wait()
            self.go.clear()
            job = self.jobs.pop()
            if job is None:
                return
            try:
                self.results.append(job())
            except BaseException as exc:  # re-raised in the calling thread
                self.results.append(exc)
            self.done.set()

    def run(self, fn: Callable[[], Any]) -> Any:
        self.jobs.append(fn)
        self.go.set()
        assert self.done.wait(30), "the worker thread did not answer"
        self.done.clear()
        result = self.results.pop()
        if isinstance(result, BaseException):
            raise result
        return result

    def stop(self) -> None:
        self.jobs.append(None)
        self.go.set()
        self.thread.join(30)


@scenario()
def each_thread_makes_the_devices_context_current(stub: Stub) -> None:
    a, fill_a, ctx_a = _own_device_with_fill(stub)
    b, fill_b, ctx_b = _own_device_with_fill(stub)  # made in this thread too: cuCtxCreate made it current
    assert ctx_a != ctx_b

    def use(dev: Any, fill: Any, value: int) -> tuple[bytes, int, int]:
        _fill(dev, fill, dev.base, 64, value)
        dev.synchronize()
        return _read(dev, dev.base, 64), stub.launches()[-1].ctx, stub.current_context()

    # interleaved in one thread, each device's calls go to its own context
    assert use(a, fill_a, 2) == (b"\x02" * 64, ctx_a, ctx_a)
    assert use(b, fill_b, 3) == (b"\x03" * 64, ctx_b, ctx_b)
    assert use(a, fill_a, 4) == (b"\x04" * 64, ctx_a, ctx_a)
    # threads that never made any context current
    worker, other = Worker(), Worker()
    try:
        assert worker.run(lambda: use(b, fill_b, 5)) == (b"\x05" * 64, ctx_b, ctx_b)
        assert other.run(lambda: use(a, fill_a, 6)) == (b"\x06" * 64, ctx_a, ctx_a)
        assert worker.run(lambda: use(a, fill_a, 7)) == (b"\x07" * 64, ctx_a, ctx_a)
        b.close()  # its context, current in this thread, goes
        assert use(a, fill_a, 8) == (b"\x08" * 64, ctx_a, ctx_a)

        # the device closed and opened again, or reset: the worker still has the old context
        # current, which is gone
        for how in ("reopen", "reset", "reopen"):
            assert worker.run(partial(use, a, fill_a, 9))[0] == b"\x09" * 64
            if how == "reset":
                a.reset()
            else:
                a.close()
                a.open()
                a.reserve(1 << 16)
                fill_a = a.get_kernel(a.load_module(_image(_prebuilt("fault"))), "fill_u8")
            data, ctx, current = worker.run(partial(use, a, fill_a, 10))
            assert data == b"\x0a" * 64 and ctx == current and ctx != ctx_a, (how, ctx, ctx_a)
            ctx_a = ctx
    finally:
        worker.stop()
        other.stop()
    a.close()
    assert stub.counts() == {"contexts": 0, "allocations": 0, "modules": 0, "sticky": 0}


@scenario("primary", "own")
def close_gives_back_everything(stub: Stub, context: str) -> None:
    from pappus.errors import DeviceError

    dev = _device(context=context, scrub_on_chip=True)
    dev.open()
    base = dev.reserve(1 << 16)
    module = dev.load_module(_image(_prebuilt("fault")))
    dev.get_kernel(dev.load_module(_image(_prebuilt("clean"))), "noop")
    fill = dev.get_kernel(module, "fill_u8")
    _fill(dev, fill, base, 64, 1)
    dev.synchronize()
    dev.clear_private_state()
    mark = len(stub.log())
    base = dev.reset()  # a healthy reset: a second context (and, primary, a second retain)
    _fill(dev, fill, base, 64, 1)  # reloads its module there
    dev.synchronize()
    dev.clear_private_state()
    dev.close()
    # in the context close() gave back, every allocation was freed and every module unloaded first
    since = stub.log()[mark:]
    for made, gone in (("cuMemAlloc_v2=0", "cuMemFree_v2=0"), ("cuModuleLoadData=0", "cuModuleUnload=0")):
        assert since.count(made) == since.count(gone) > 0, (made, since)
    assert since.index("cuModuleUnload=0") < len(since) - 1
    if context == "primary":
        assert stub.calls("cuDevicePrimaryCtxRelease_v2") == stub.calls("cuDevicePrimaryCtxRetain") == 2
    else:
        assert stub.calls("cuCtxDestroy_v2") == stub.calls("cuCtxCreate_v4") == 2
    assert stub.counts() == {"contexts": 0, "allocations": 0, "modules": 0, "sticky": 0}
    exc = _raises(DeviceError, lambda: dev.memset(base, 0, 1))
    assert exc.fields["status"] == "not_open"


@scenario()
def a_newer_gpu_gets_the_ptx_entry(stub: Stub) -> None:
    stub.set_attribute(CC_MAJOR, 12)
    stub.set_attribute(CC_MINOR, 0)
    dev = _device()
    assert dev.open().details["arch"] == "sm_120"
    base = dev.reserve(1 << 16)
    module = dev.load_module(_image(_prebuilt("fault")))
    assert module.kind == "ptx" and stub.last_module_kind() == 2
    _fill(dev, dev.get_kernel(module, "fill_u8"), base, 64, 9)
    dev.synchronize()
    assert _read(dev, base, 64) == b"\x09" * 64
    dev.close()


# --- the test ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_through_the_real_bindings(runs: Runs, name: str) -> None:
    runs.check(name)
