"""The CUDA backend on a real NVIDIA GPU. Skipped, with the reason, where check() says unavailable.

Run on a GPU machine (no network needed once the venv or wheelhouse is there):

    PAPPUS_CUDA_DEVICE_REPORT=out/cuda-device-report.json pytest -q -rs tests/cuda/test_device.py

Code objects are built with nvcc or NVRTC when one is there, else taken from tests/cuda/prebuilt/
(fatbins with sm_80/sm_90 cubins and compute_80 PTX; make_prebuilt.py rebuilds them). Measured
figures (heap-limit minimum, what malloc returns under it, recovery time, ...) are printed and
written to $PAPPUS_CUDA_DEVICE_REPORT as JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pappus.config import check_function_against_libraries, parse_function
from pappus.errors import DeviceError, KernelFault
from pappus.host_access import ALLOW_ENV
from pappus.interfaces import LibraryImage
from pappus.interpreter import run_invocation
from pappus.plan import Launch, Plan
from pappus.pool import BufferPool

from .conftest import KERNELS
from .matmul_check import matmul_doc

pytestmark = pytest.mark.gpu

HERE = Path(__file__).resolve().parent
POOL = 64 << 20
REPORT: dict[str, Any] = {}


def _record(key: str, value: Any) -> None:
    REPORT[key] = value
    print(f"[cuda-device] {key} = {value}")
    path = os.environ.get("PAPPUS_CUDA_DEVICE_REPORT")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(REPORT, indent=2, default=str) + "\n")


@pytest.fixture(scope="module")
def gpu() -> str:
    from pappus_cuda.plugin import check

    avail = check()
    if not avail:
        pytest.skip(f"no CUDA device: {avail.reason}")
    _record("availability", avail.reason)
    return avail.reason


@pytest.fixture(scope="module")
def objects(gpu: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """clean / fault / heap_probe code objects for this GPU: built here if a compiler exists."""
    from pappus_cuda.build import BuildError, build_cuda, find_nvcc, nvrtc_available
    from pappus_cuda.runtime import probe_cached

    arch = (probe_cached().archs or ["sm_90"])[0]
    out = tmp_path_factory.mktemp("cuda-device-objects")
    found: dict[str, bytes] = {}
    for stem in ("clean", "fault", "heap_probe"):
        data = None
        if find_nvcc() or nvrtc_available() is None:
            try:
                data = build_cuda(KERNELS / f"{stem}.hip", out, [arch])[0].read_bytes()
            except BuildError as exc:
                print(f"[cuda-device] building {stem} for {arch} failed ({exc}); using the prebuilt fatbin")
        if data is None:
            data = (HERE / "prebuilt" / f"{stem}.fatbin").read_bytes()
        found[stem] = data
    _record("objects", {k: len(v) for k, v in found.items()})
    return found


def image(data: bytes) -> LibraryImage:
    return LibraryImage(hashlib.sha256(data).hexdigest(), data)


@pytest.fixture(autouse=True)
def host_memory_access_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests here measure other properties, so they run on a GPU whose kernels can reach host
    memory too (its devices, workers and child processes inherit this);
    test_what_a_kernel_reaches_of_host_memory says whether this GPU is one."""
    monkeypatch.setenv(ALLOW_ENV, "1")


@pytest.fixture
def device(gpu: str):
    from pappus_cuda.device import CudaDevice

    dev = CudaDevice(device_index=int(os.environ.get("PAPPUS_CUDA_DEVICE", "0") or 0))
    info = dev.open()
    try:
        yield dev, info
    finally:
        dev.close()


def tiled_doc(n: int) -> dict[str, Any]:
    blocks = (n + 15) // 16
    return {
        "schema": "pappus/function@1", "library": "m", "kernels": ["matmul_tiled_f32"],
        "blueprint": {"inputs": ["A", "B"], "buffers": {"C": {"Sizeof": "A"}}, "outputs": ["C"],
                      "control_flow": [{"ExecKernel": {
                          "name": "matmul_tiled_f32",
                          "args": [{"Ptr": "A"}, {"Ptr": "B"}, {"Ptr": "C"}, {"Constant": {"type": "i32", "value": n}}],
                          "grid": [blocks, blocks, 1], "block": [16, 16, 1]}}]},
    }


def _plan(doc: dict[str, Any], data: bytes, info: Any) -> tuple[Any, Any]:
    from pappus_cuda.cubin import read_library

    lib = read_library(data, info.details["arch"])
    cfg = parse_function(doc)
    assert check_function_against_libraries(cfg, {"m": lib}, device=info.limits) == []
    return cfg, Plan(cfg, {k: v.params for k, v in lib.kernels.items()}, device_limits=info.limits)


# --- tests --------------------------------------------------------------------------------------


def test_open_pool_from_free_memory_and_limits(device):
    from pappus.engine.executor import Executor, ExecutorConfig
    from pappus_cuda.device import CudaDevice

    dev, info = device
    _record("device", {"name": info.name, **{k: v for k, v in info.details.items()}})
    assert info.free_memory > 0 and info.total_memory >= info.free_memory
    assert info.limits.max_block_threads >= 1024 and info.limits.max_shared_bytes >= 48 * 1024
    _record("limits", info.limits)
    dev.close()
    # the executor sizes the pool from cuMemGetInfo, never a hard-coded size
    ex = Executor(lambda: CudaDevice(), ExecutorConfig(share=4))
    started = time.perf_counter()
    got = ex.start()
    try:
        _record("executor_start_seconds", round(time.perf_counter() - started, 4))
        assert ex.capacity == int(got.free_memory * 0.9) // 4 & ~0xFFFF
        _record("pool_bytes_share_4", ex.capacity)
    finally:
        ex.close()


def test_heap_limit_read_back(device, objects):
    dev, info = device
    _record("heap_limit_after_request_0", info.heap_limit)
    _record("heap_limit_notes", dev.heap_limit_notes)
    assert info.heap_limit is not None and info.heap_limit >= 0
    for request in (1, 4096, 1 << 20):
        _record(f"heap_limit_after_request_{request}", dev.set_malloc_heap_limit(request))
    dev.set_malloc_heap_limit(0)


@pytest.mark.parametrize("request_bytes", [0, 1 << 20])
def test_what_device_malloc_returns_under_the_limit(gpu, objects, request_bytes):
    """heap_probe calls malloc, so registration refuses it; here it is loaded directly to measure."""
    from pappus_cuda.device import CudaDevice

    dev = CudaDevice(context="own", heap_limit=request_bytes)
    dev.open()
    try:
        base = dev.reserve(1 << 20)
        k = dev.get_kernel(dev.load_module(image(objects["heap_probe"])), "heap_probe")
        args = (struct.pack("<Q", base), struct.pack("<Q", 16), struct.pack("<Q", 4096), struct.pack("<Q", 64))
        dev.launch(Launch("heap_probe", k, (1, 1, 1), (1, 1, 1), 0, args))
        dev.synchronize()
        out = bytearray(24)
        dev.read(base, memoryview(out))
        ok, ptr, got = struct.unpack("<QQQ", out)
        _record(f"malloc_under_limit_{request_bytes}", {"heap_limit_read_back": dev.heap_limit,
                                                        "malloc(16)_succeeded": bool(ok), "pointer": hex(ptr),
                                                        "bytes_from_64_mallocs_of_4096": got})
        if request_bytes:
            assert ok  # a real heap works, so the probe itself is sound
    finally:
        dev.close()


def test_matmul_through_the_interpreter_matches_numpy(device, objects):
    dev, info = device
    data = objects["clean"]
    pool = BufferPool(dev, dev.reserve(POOL), POOL, scrub_before_use=not dev.bounds_writes)
    module = dev.load_module(image(data))
    rng = np.random.default_rng(7)

    cfg, plan = _plan(matmul_doc(), data, info)
    handles = {"matmul_at_i64": dev.get_kernel(module, "matmul_at_i64")}
    timings = []
    for n in (16, 64, 128, 128):
        a = rng.integers(-1000, 1000, size=(n, n), dtype=np.int64)
        started = time.perf_counter()
        out = run_invocation(dev, pool, plan, {"A": a.tobytes()}, handles)
        timings.append(time.perf_counter() - started)
        assert np.array_equal(np.frombuffer(out["B"], dtype=np.int64).reshape(n, n), a @ a.T)
    _record("matmul_i64_128_hot_seconds", round(timings[-1], 6))

    cfg, plan = _plan(tiled_doc(100), data, info)
    handles = {"matmul_tiled_f32": dev.get_kernel(module, "matmul_tiled_f32")}
    a = rng.standard_normal((100, 100), dtype=np.float32)
    b = rng.standard_normal((100, 100), dtype=np.float32)
    out = run_invocation(dev, pool, plan, {"A": a.tobytes(), "B": b.tobytes()}, handles)
    assert np.allclose(np.frombuffer(out["C"], dtype=np.float32).reshape(100, 100), a @ b, rtol=1e-4, atol=1e-3)


def test_buffers_are_zero_between_invocations(device, objects):
    dev, info = device
    data = objects["fault"]
    pool = BufferPool(dev, dev.reserve(POOL), POOL, scrub_before_use=True)
    module = dev.load_module(image(data))
    handles = {n: dev.get_kernel(module, n) for n in ("fill_u8", "copy_u8")}
    fill = parse_function({"schema": "pappus/function@1", "library": "m", "kernels": ["fill_u8"],
                           "blueprint": {"inputs": [], "buffers": {"X": 1 << 16}, "outputs": [],
                                         "control_flow": [{"ExecKernel": {"name": "fill_u8", "args": [
                                             {"Ptr": "X"}, {"Sizeof": "X"}, {"Constant": {"type": "u8", "value": 171}}],
                                             "grid": [256], "block": [256]}}]}})
    copy = parse_function({"schema": "pappus/function@1", "library": "m", "kernels": ["copy_u8"],
                           "blueprint": {"inputs": [], "buffers": {"S": 1 << 16, "X": 1 << 16}, "outputs": ["X"],
                                         "control_flow": [{"ExecKernel": {"name": "copy_u8", "args": [
                                             {"Ptr": "X"}, {"Ptr": "S"}, {"Sizeof": "S"}],
                                             "grid": [256], "block": [256]}}]}})
    from pappus_cuda.cubin import read_library

    sigs = {k: v.params for k, v in read_library(data, info.details["arch"]).kernels.items()}
    run_invocation(dev, pool, Plan(fill, sigs), {}, handles)
    out = run_invocation(dev, pool, Plan(copy, sigs), {}, handles)
    assert out["X"] == bytes(1 << 16)  # nothing of the first invocation is readable


def test_static_shared_size_matches_the_driver(device, objects):
    from pappus_cuda.cubin import read_library

    dev, info = device
    data = objects["clean"]
    lib = read_library(data, info.details["arch"])
    module = dev.load_module(image(data))
    seen = {}
    for name in ("block_sum", "matmul_tiled_f32", "noop"):
        driver_says = dev.function_attribute(dev.get_kernel(module, name), "SHARED_SIZE_BYTES")
        seen[name] = {"pappus": lib.kernels[name].static_shared_bytes, "driver": driver_says}
    _record("static_shared_bytes", seen)
    for name, v in seen.items():
        assert v["driver"] in (v["pappus"], v["pappus"] + 1024), name


def test_dynamic_shared_memory_past_what_static_memory_leaves(device, objects):
    # block_sum has 1 KiB of static shared memory, so without an opt-in the driver allows
    # 47 KiB of dynamic memory: 48 KiB (which registration accepts) must still launch.
    dev, _ = device
    kernel = dev.get_kernel(dev.load_module(image(objects["clean"])), "block_sum")
    base = dev.reserve(1 << 20)
    dev.write(base, memoryview(np.arange(512, dtype=np.float32).tobytes()))
    dev.launch(Launch("block_sum", kernel, (2, 1, 1), (256, 1, 1), 48 * 1024,
                      (struct.pack("<Q", base), struct.pack("<Q", base + 4096))))
    dev.synchronize()
    out = bytearray(8)
    dev.read(base + 4096, memoryview(out))
    assert np.frombuffer(out, dtype=np.float32).tolist() == [float(sum(range(256))), float(sum(range(256, 512)))]


@pytest.mark.parametrize("mode", ["pointers", "buffer"])
def test_by_value_arguments_in_both_launch_modes(gpu, objects, mode):
    # "buffer" passes the parameter block whole (CU_LAUNCH_PARAM_BUFFER_*) with its size: 49,
    # where scalars' last parameter ends (the driver refuses 50 or more).
    from pappus_cuda.device import CudaDevice

    dev = CudaDevice(launch_params=mode)
    dev.open()
    try:
        base = dev.reserve(1 << 20)
        kernel = dev.get_kernel(dev.load_module(image(objects["clean"])), "scalars")
        args = (struct.pack("<Q", base), struct.pack("<i", -3), struct.pack("<f", 1.5), struct.pack("<d", 20.25),
                struct.pack("<qdi4x", -5, 2.5, 7), struct.pack("<b", -1))
        dev.launch(Launch("scalars", kernel, (1, 1, 1), (1, 1, 1), 0, args))
        dev.synchronize()
        out = bytearray(8)
        dev.read(base, memoryview(out))
        assert struct.unpack("<q", out)[0] == -3 + 1 + 20 + -5 + 2 + 7 + -1
    finally:
        dev.close()


@pytest.mark.parametrize("mode", ["pointers", "buffer"])
def test_launches_queued_behind_a_long_one_keep_their_own_arguments(gpu, objects, mode):
    """Each kernel refills one parameter block per launch (device.py, PackedArgs): the driver must
    have copied a launch's arguments by the time cuLaunchKernel returns. 200 launches queued
    behind a fill of 512 MiB each write their own value to their own 256 bytes."""
    from pappus_cuda.device import CudaDevice

    dev = CudaDevice(launch_params=mode)
    dev.open()
    try:
        big = 512 << 20
        base = dev.reserve(big + (1 << 20))
        fill = dev.get_kernel(dev.load_module(image(objects["fault"])), "fill_u8")
        dev.launch(Launch("fill_u8", fill, (big // 256, 1, 1), (256, 1, 1), 0,
                          (struct.pack("<Q", base + (1 << 20)), struct.pack("<Q", big), b"\x01")))
        for i in range(200):
            dev.launch(Launch("fill_u8", fill, (1, 1, 1), (256, 1, 1), 0,
                              (struct.pack("<Q", base + 256 * i), struct.pack("<Q", 256), bytes([i % 255 + 1]))))
        dev.synchronize()
        out = bytearray(256 * 200)
        dev.read(base, memoryview(out))
        assert out == b"".join(bytes([i % 255 + 1]) * 256 for i in range(200))
    finally:
        dev.close()


def _fault_in_child(context: str, fault_object: bytes, kernel: str) -> dict[str, Any]:
    """In a fresh process (a sticky fault may end CUDA for the whole process): fault, then try
    ``reset()`` and, if it recovers, show the device works and the new pool is zero."""
    from pappus_cuda.device import CudaDevice

    dev = CudaDevice(context=context)
    dev.open()
    base = dev.reserve(POOL)
    pool = BufferPool(dev, base, dev.pool_bytes, scrub_before_use=True)
    pool.allocate(4096)
    module = dev.load_module(image(fault_object))
    args = {"oob_write": (struct.pack("<Q", base), struct.pack("<Q", 1 << 40), struct.pack("<q", 1)),
            "trap_now": (struct.pack("<Q", base),)}[kernel]
    dev.launch(Launch(kernel, dev.get_kernel(module, kernel), (1, 1, 1), (1, 1, 1), 0, args))
    try:
        dev.synchronize()
        return {"fault": None}
    except KernelFault as exc:
        fault = exc
    result: dict[str, Any] = {"status": fault.fields.get("status"), "kernel": fault.fields.get("kernel"),
                              "healthy_after_fault": dev.healthy}
    try:
        pool.release()
        result["release_after_fault"] = "succeeded"
    except KernelFault:
        result["release_after_fault"] = "refused (KernelFault)"  # zeroing cannot pretend to succeed
    started = time.perf_counter()
    try:
        new_base = dev.reset()
    except (NotImplementedError, DeviceError, KernelFault) as exc:
        result["reset"] = f"{type(exc).__name__}: {exc}"
        return result
    result["reset_seconds"] = round(time.perf_counter() - started, 4)
    module = dev.load_module(image(fault_object))
    dev.launch(Launch("fill_u8", dev.get_kernel(module, "fill_u8"), (1, 1, 1), (256, 1, 1), 0,
                      (struct.pack("<Q", new_base), struct.pack("<Q", 256), b"\x05")))
    dev.synchronize()
    out = bytearray(512)
    dev.read(new_base, memoryview(out))
    result["reset"] = "recovered"
    result["works_after_reset"] = out[:256] == b"\x05" * 256 and out[256:] == bytes(256)
    dev.close()
    return result


def _read_host_memory_from_a_kernel(clean: bytes) -> dict[str, Any]:
    """Whether the device is refused by default, and what a kernel handed the address of an array
    on this process's heap (as a tenant that learnt one would use it) reads there."""
    from pappus_cuda.device import CudaDevice

    result: dict[str, Any] = {}
    probe = CudaDevice()
    try:
        probe.open()
        result["default_open"] = "opened"
    except DeviceError as exc:
        result["default_open"] = f"refused: {exc.fields.get('status')}"
    finally:
        probe.close()
    dev = CudaDevice(allow_host_memory_access=True)
    info = dev.open()
    result["pageable_memory_access"] = info.details["pageable_memory_access"]
    base = dev.reserve(1 << 20)
    host = np.arange(256, dtype=np.float32)
    result["expected_sum"] = float(host.sum())
    kernel = dev.get_kernel(dev.load_module(image(clean)), "block_sum")
    dev.launch(Launch("block_sum", kernel, (1, 1, 1), (256, 1, 1), 0,
                      (struct.pack("<Q", host.ctypes.data), struct.pack("<Q", base))))
    try:
        dev.synchronize()
        out = bytearray(4)
        dev.read(base, memoryview(out))
        result["kernel_read"] = struct.unpack("<f", out)[0]
    except KernelFault as exc:
        result["kernel_read"] = f"fault: {exc.fields.get('status')}"
    try:
        dev.close()
    except Exception as exc:  # after a sticky fault: the process ends anyway
        result["close"] = repr(exc)
    return result


def test_what_a_kernel_reaches_of_host_memory(gpu, objects, monkeypatch):
    """HMM or ATS: where the device says kernels can reach pageable host memory, one does read
    the worker's heap, and the device is refused unless the operator allows it (host_access.py);
    where it says they cannot, the same read faults and the device opens."""
    monkeypatch.delenv(ALLOW_ENV)
    result = _in_child(_read_host_memory_from_a_kernel, objects["clean"])
    _record("host_memory_access", result)
    if result["pageable_memory_access"]:
        assert result["kernel_read"] == result["expected_sum"], result
        assert result["default_open"] == "refused: host_memory_reachable", result
    else:
        assert str(result["kernel_read"]).startswith("fault"), result
        assert result["default_open"] == "opened", result


def _fresh_process_uses_the_gpu() -> dict[str, Any]:
    from pappus_cuda.device import CudaDevice

    started = time.perf_counter()
    dev = CudaDevice()
    dev.open()
    base = dev.reserve(POOL)
    dev.memset(base, 0x5A, 4096)
    out = bytearray(4096)
    dev.read(base, memoryview(out))
    dev.close()
    return {"ok": out == b"\x5a" * 4096, "open_reserve_clear_seconds": round(time.perf_counter() - started, 4)}


def _in_child(fn: Any, *args: Any) -> Any:
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


@pytest.mark.parametrize("context", ["primary", "own"])
@pytest.mark.parametrize("kernel", ["oob_write", "trap_now"])
def test_sticky_fault_then_reset_or_a_new_process(gpu, objects, kernel, context):
    result = _in_child(_fault_in_child, context, objects["fault"], kernel)
    _record(f"fault_{kernel}_{context}", result)
    expected = {"oob_write": {"CUDA_ERROR_ILLEGAL_ADDRESS"},
                "trap_now": {"CUDA_ERROR_LAUNCH_FAILED", "CUDA_ERROR_ILLEGAL_INSTRUCTION"}}[kernel]
    assert result.get("status") in expected, result
    assert result["healthy_after_fault"] is False and result["release_after_fault"].startswith("refused"), result
    if result["reset"] == "recovered":
        assert result["works_after_reset"], result
    else:  # this process's CUDA is gone (Backend.faults_end_process): a new process must work
        fresh = _in_child(_fresh_process_uses_the_gpu)
        _record(f"fresh_process_after_{kernel}_{context}", fresh)
        assert fresh["ok"], fresh


@pytest.mark.parametrize("engine", ["cuda-sequential", "cuda-multiprocess"])
def test_runtime_end_to_end_with_a_fault(gpu, objects, tmp_path, engine):
    import pappus

    lib = tmp_path / "k.fatbin"
    lib.write_bytes(objects["clean"])
    faults = tmp_path / "f.fatbin"
    faults.write_bytes(objects["fault"])
    rt = pappus.Runtime(engine=engine, state_dir=tmp_path / "state", workers=2, pool_bytes=POOL)
    try:
        rt.register_library("m", lib)
        rt.register_library("f", faults)
        rt.register_function("mm", matmul_doc())
        rt.register_function("boom", {
            "schema": "pappus/function@1", "library": "f", "kernels": ["oob_write"],
            "blueprint": {"inputs": [], "buffers": {"X": 64}, "outputs": ["X"], "control_flow": [
                {"ExecKernel": {"name": "oob_write", "args": [{"Ptr": "X"}, {"Constant": {"type": "u64", "value": 1 << 40}},
                                                              {"Constant": {"type": "i64", "value": 1}}],
                                "grid": [1], "block": [1]}}]}})
        a = np.arange(64 * 64, dtype=np.int64).reshape(64, 64) % 17
        out = rt.invoke("mm", {"A": a.tobytes()})
        assert np.array_equal(np.frombuffer(out["B"], dtype=np.int64).reshape(64, 64), a @ a.T)
        # the driver serves, faults and recovers in workers locked down after open, and scoped before
        # it (engine/lockdown.py; the scope needs Landlock ABI 6, which the GPU machine's kernel may lack)
        slots = [slot for slot in rt.engine(engine).slots if slot.alive]
        states = [slot.details["worker_lockdown"] for slot in slots]
        _record(f"{engine}_worker_lockdown", states)
        _record(f"{engine}_worker_scope", [slot.details["worker_scope"] for slot in slots])
        assert states and all(s.startswith("seccomp deny-list (EPERM): execve,") for s in states), states
        with pytest.raises(KernelFault):
            rt.invoke("boom", {})
        started = time.perf_counter()
        out = rt.invoke("mm", {"A": a.tobytes()})
        _record(f"{engine}_first_invocation_after_fault_seconds", round(time.perf_counter() - started, 4))
        assert np.array_equal(np.frombuffer(out["B"], dtype=np.int64).reshape(64, 64), a @ a.T)
    finally:
        rt.close()
