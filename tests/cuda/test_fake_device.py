"""CudaDevice against a fake driver: the whole engine path (pool, interpreter, marshalling, faults,
reset) without a GPU. The real-GPU versions of these checks are in test_device.py."""

from __future__ import annotations

import hashlib
import struct
import threading

import numpy as np
import pytest

from pappus.errors import BackendUnavailable, DeviceError, KernelFault, LibraryError
from pappus.interfaces import LibraryImage
from pappus.plan import Launch
from pappus.pool import BufferPool
from pappus_cuda.cubin import read_library
from pappus_cuda.device import CudaDevice

from .fakecuda import FakeDriver
from .matmul_check import check_matmul_through_the_interpreter


def image(data: bytes) -> LibraryImage:
    return LibraryImage(hashlib.sha256(data).hexdigest(), data)


@pytest.fixture
def opened():
    def make(**options):
        fake = FakeDriver(**{k: options.pop(k) for k in list(options) if k in ("driver_version", "move_pool_after_reset",
                                                                                 "min_heap", "devices",
                                                                                 "pageable_memory_access", "ats")})
        options.setdefault("scrub_on_chip", False)  # scrub kernels need a real GPU (test_device, conformance)
        dev = CudaDevice(_driver=fake, **options)
        info = dev.open()
        return fake, dev, info
    return make


def test_open_reports_device_and_heap_limit(opened):
    fake, dev, info = opened()
    assert info.name == "Fake H100"
    assert info.details["arch"] == "sm_90" and dev.arch == "sm_90"
    assert info.heap_limit == 0 and dev.heap_limit == 0
    assert info.limits.max_shared_bytes == 232448
    assert info.free_memory == 64 << 30


def test_heap_limit_minimum_is_reported_not_hidden(opened):
    fake, dev, info = opened(min_heap=4096)
    # 0 is refused: the smallest accepted request is kept and the read-back value reported
    assert info.heap_limit == 4096
    assert any("failed" in n for n in dev.heap_limit_notes)


def test_a_gpu_whose_kernels_reach_host_memory_is_refused_before_any_context(monkeypatch):
    monkeypatch.delenv("PAPPUS_ALLOW_HOST_MEMORY_ACCESS", raising=False)
    fake = FakeDriver(pageable_memory_access=1)
    with pytest.raises(DeviceError, match="uvm_disable_hmm=1") as info:
        CudaDevice(_driver=fake, scrub_on_chip=False).open()
    assert info.value.fields["status"] == "host_memory_reachable"
    assert "cuDevicePrimaryCtxRetain" not in fake.calls and fake.ctx is None
    with pytest.raises(DeviceError, match="ATS.*cannot be turned off"):
        CudaDevice(_driver=FakeDriver(pageable_memory_access=1, ats=1), scrub_on_chip=False).open()


@pytest.mark.parametrize("how", ["option", "env"])
def test_an_operator_may_accept_a_gpu_that_reaches_host_memory(opened, monkeypatch, how):
    monkeypatch.delenv("PAPPUS_ALLOW_HOST_MEMORY_ACCESS", raising=False)
    if how == "env":
        monkeypatch.setenv("PAPPUS_ALLOW_HOST_MEMORY_ACCESS", "1")
        _, _, info = opened(pageable_memory_access=1)
    else:
        _, _, info = opened(pageable_memory_access=1, allow_host_memory_access=True)
    assert info.details["pageable_memory_access"] is True and info.details["host_memory_access_allowed"] is True


def test_a_gpu_that_cannot_reach_host_memory_says_so(opened, monkeypatch):
    monkeypatch.delenv("PAPPUS_ALLOW_HOST_MEMORY_ACCESS", raising=False)
    _, _, info = opened()
    assert info.details["pageable_memory_access"] is False and info.details["host_memory_access_allowed"] is False


def test_old_driver_is_never_driven(opened):
    with pytest.raises(BackendUnavailable, match="older than the CUDA 13.0"):
        CudaDevice(_driver=FakeDriver(driver_version=12080)).open()


def test_missing_device_index():
    with pytest.raises(DeviceError, match="device 3 does not exist"):
        CudaDevice(device_index=3, _driver=FakeDriver()).open()


def test_reserve_clears_fresh_memory(opened):
    fake, dev, _ = opened()
    base = dev.reserve(1 << 16)
    out = bytearray(1 << 16)
    dev.read(base, memoryview(out))
    assert out == bytes(1 << 16)  # the fake hands out 0xa5-filled memory


def test_matmul_through_the_interpreter_matches_numpy(opened, code_objects):
    _, dev, info = opened()
    check_matmul_through_the_interpreter(dev, info, code_objects.get("clean", "sm_90"))


@pytest.mark.parametrize("mode", ["pointers", "buffer"])
def test_scalar_and_struct_arguments_reach_the_kernel(opened, code_objects, mode):
    fake, dev, _ = opened(launch_params=mode)
    kernel = dev.get_kernel(dev.load_module(image(code_objects.get("clean", "sm_90"))), "scalars")
    struct24 = struct.pack("<qdi4x", -5, 2.5, 7)
    args = (struct.pack("<Q", 0xDEAD), struct.pack("<i", -3), struct.pack("<f", 1.5), struct.pack("<d", 0.25),
            struct24, struct.pack("<b", -1))
    dev.launch(Launch("scalars", kernel, (1, 1, 1), (1, 1, 1), 0, args))
    dev.synchronize()
    assert fake.scalars_seen == (0xDEAD, -3, 1.5, 0.25, struct24, -1)


@pytest.mark.parametrize("mode", ["pointers", "buffer"])
def test_each_launch_of_a_kernel_carries_its_own_arguments(opened, code_objects, mode):
    """One parameter block per kernel, refilled per launch: the driver copies it at enqueue (the
    fake, like the driver, takes the bytes when cuLaunchKernel is called)."""
    fake, dev, _ = opened(launch_params=mode)
    kernel = dev.get_kernel(dev.load_module(image(code_objects.get("clean", "sm_90"))), "scalars")

    def args(i: int) -> tuple[bytes, ...]:
        return (struct.pack("<Q", 0x1000 * i), struct.pack("<i", -i), struct.pack("<f", i / 2),
                struct.pack("<d", i / 4), struct.pack("<qdi4x", i, 0.5, 7), struct.pack("<b", i))

    for i in (1, 2, 3):
        dev.launch(Launch("scalars", kernel, (1, 1, 1), (1, 1, 1), 0, args(i)))
    with pytest.raises(DeviceError, match="argument 5 of kernel 'scalars' is 2 bytes"):
        dev.launch(Launch("scalars", kernel, (1, 1, 1), (1, 1, 1), 0, args(4)[:5] + (b"\0\0",)))
    dev.launch(Launch("scalars", kernel, (1, 1, 1), (1, 1, 1), 0, args(2)))  # after a refused one
    dev.synchronize()
    assert [raw for name, _, raw in fake.launches] == [b"".join(args(i)) for i in (1, 2, 3, 2)]
    assert fake.scalars_seen == (0x2000, -2, 1.0, 0.5, args(2)[4], 2)


def test_wrong_argument_sizes_never_reach_the_driver(opened, code_objects):
    fake, dev, _ = opened()
    kernel = dev.get_kernel(dev.load_module(image(code_objects.get("clean", "sm_90"))), "matmul_at_i64")
    with pytest.raises(DeviceError, match="argument 1 of kernel 'matmul_at_i64' is 4 bytes"):
        dev.launch(Launch("matmul_at_i64", kernel, (1, 1, 1), (1, 1, 1), 0, (b"\0" * 8, b"\0" * 4, b"\0" * 8)))
    with pytest.raises(DeviceError, match="takes 3 arguments"):
        dev.launch(Launch("matmul_at_i64", kernel, (1, 1, 1), (1, 1, 1), 0, (b"\0" * 8,)))
    assert fake.launches == []


def test_module_load_validates_again_and_checks_the_hash(opened, code_objects):
    fake, dev, _ = opened()
    data = code_objects.get("clean", "sm_90")
    with pytest.raises(LibraryError, match="sha256"):
        dev.load_module(LibraryImage("0" * 64, data))
    with pytest.raises(LibraryError, match="cannot run on sm_90"):
        dev.load_module(image(code_objects.get("clean", "sm_80")[:0] + _sm80_only(code_objects)))


def _sm80_only(code_objects) -> bytes:
    # an sm_75 cubin (malloc kernel) cannot run on sm_90
    return code_objects.get("malloc", "sm_75")


def test_fatbin_loads_exactly_the_entry_for_this_gpu(opened, code_objects):
    fake, dev, _ = opened()
    module = dev.load_module(image(code_objects.get("clean", "sm_80", "sm_90", "compute_90")))
    assert module.kind == "cubin" and module.info.target == "sm_90"
    loaded = next(iter(fake.ctx.modules.values()))
    assert read_library(loaded).target == "sm_90"  # the bytes given to the driver are the sm_90 cubin


def test_fault_is_sticky_and_reset_refuses_in_process(opened, code_objects):
    fake, dev, _ = opened()
    base = dev.reserve(1 << 16)
    pool = BufferPool(dev, base, 1 << 16, scrub_before_use=True)
    pool.allocate(256)
    module = dev.load_module(image(code_objects.get("fault", "sm_90")))
    oob = dev.get_kernel(module, "oob_write")
    fill = dev.get_kernel(module, "fill_u8")
    dev.launch(Launch("oob_write", oob, (1, 1, 1), (1, 1, 1), 0,
                      (struct.pack("<Q", base), struct.pack("<Q", 1 << 40), struct.pack("<q", 1))))
    with pytest.raises(KernelFault) as info:
        dev.synchronize()
    assert info.value.fields["status"] == "CUDA_ERROR_ILLEGAL_ADDRESS"
    assert info.value.fields["kernel"] == "oob_write"
    assert "illegal_address" in info.value.fields["reasons"]
    assert not dev.healthy
    with pytest.raises(KernelFault, match="unusable"):  # the pool's release memset fails too, naming the cause
        pool.release()
    # A real driver keeps the error for the whole process (measured: tests/cuda/test_device.py):
    # reset() says so at once, without driving the driver; the engine replaces the process.
    calls = len(fake.calls)
    with pytest.raises(NotImplementedError, match="CUDA_ERROR_ILLEGAL_ADDRESS"):
        dev.reset()
    assert len(fake.calls) == calls and not dev.healthy
    with pytest.raises(KernelFault, match="unusable"):
        dev.launch(Launch("fill_u8", fill, (1, 1, 1), (64, 1, 1), 0,
                          (struct.pack("<Q", base), struct.pack("<Q", 64), b"\x07")))


def test_a_fault_reported_at_a_later_launch_names_the_kernels_since_the_last_synchronize(opened, code_objects):
    """Launches are asynchronous: a driver may report a kernel's fault at the next launch. The
    fault then names every kernel since the last synchronize, not only the one being launched."""
    _, dev, _ = opened()
    base = dev.reserve(1 << 16)
    module = dev.load_module(image(code_objects.get("fault", "sm_90")))
    oob, fill = dev.get_kernel(module, "oob_write"), dev.get_kernel(module, "fill_u8")
    dev.launch(Launch("oob_write", oob, (1, 1, 1), (1, 1, 1), 0,
                      (struct.pack("<Q", base), struct.pack("<Q", 1 << 40), struct.pack("<q", 1))))
    with pytest.raises(KernelFault) as info:
        dev.launch(Launch("fill_u8", fill, (1, 1, 1), (64, 1, 1), 0,
                          (struct.pack("<Q", base), struct.pack("<Q", 64), b"\x07")))
    assert info.value.fields["status"] == "CUDA_ERROR_ILLEGAL_ADDRESS" and info.value.fields["api"] == "cuLaunchKernel"
    assert info.value.fields["kernel"] == "oob_write, fill_u8"
    assert not dev.healthy


def test_reset_of_a_healthy_device_makes_a_new_context_and_pool(opened, code_objects):
    fake, dev, _ = opened()
    base = dev.reserve(1 << 16)
    module = dev.load_module(image(code_objects.get("fault", "sm_90")))
    fill = dev.get_kernel(module, "fill_u8")
    assert dev.reset() == base  # same pool address
    assert dev.healthy and dev.resets == 1 and dev.last_reset_seconds is not None
    assert "cuDevicePrimaryCtxReset" in fake.calls
    # modules reload lazily; the kernel handle still works
    dev.launch(Launch("fill_u8", fill, (1, 1, 1), (64, 1, 1), 0,
                      (struct.pack("<Q", base), struct.pack("<Q", 64), b"\x07")))
    dev.synchronize()
    out = bytearray(64)
    dev.read(base, memoryview(out))
    assert out == b"\x07" * 64


def test_reset_that_moves_the_pool_returns_the_new_base(opened, code_objects):
    fake, dev, _ = opened(move_pool_after_reset=True)
    old = dev.reserve(1 << 16)
    new = dev.reset()  # the executor rebuilds its BufferPool on this base
    assert new == dev.base != old
    assert dev.healthy


def test_own_context_mode(opened):
    fake, dev, info = opened(context="own")
    assert info.details["context"] == "own"
    dev.reserve(4096)
    assert dev.reset() == dev.base


def recording_opt_ins(fake: FakeDriver) -> list[tuple[int, int]]:
    """The fake's cuFuncSetAttribute, which also records each (attribute, value) set."""
    calls: list[tuple[int, int]] = []
    setter = fake.cuFuncSetAttribute

    def record(fn, attr, value):
        calls.append((attr, value))
        return setter(fn, attr, value)

    fake.cuFuncSetAttribute = record
    return calls


def test_large_dynamic_shared_memory_opts_in(opened, code_objects):
    fake, dev, _ = opened()
    calls = recording_opt_ins(fake)
    kernel = dev.get_kernel(dev.load_module(image(code_objects.get("clean", "sm_90"))), "noop")
    dev.launch(Launch("noop", kernel, (1, 1, 1), (1, 1, 1), 100_000, ()))
    dev.launch(Launch("noop", kernel, (1, 1, 1), (1, 1, 1), 1000, ()))
    dev.launch(Launch("noop", kernel, (1, 1, 1), (1, 1, 1), 0, ()))
    assert calls == [(8, 100_000)]


def test_dynamic_shared_memory_opts_in_below_48k_when_static_memory_takes_part(opened, code_objects):
    # Without an opt-in the driver allows 48 KiB less the kernel's static shared memory:
    # block_sum's 1 KiB static tile leaves 47 KiB, so 48 KiB of dynamic memory needs one.
    fake, dev, _ = opened()
    calls = recording_opt_ins(fake)
    kernel = dev.get_kernel(dev.load_module(image(code_objects.get("clean", "sm_90"))), "block_sum")
    def run(base: int) -> list[float]:
        dev.write(base, memoryview(np.arange(512, dtype=np.float32).tobytes()))
        args = (struct.pack("<Q", base), struct.pack("<Q", base + 4096))
        dev.launch(Launch("block_sum", kernel, (2, 1, 1), (256, 1, 1), 48 * 1024, args))
        dev.synchronize()
        out = bytearray(8)
        dev.read(base + 4096, memoryview(out))
        return np.frombuffer(out, dtype=np.float32).tolist()

    expected = [float(sum(range(256))), float(sum(range(256, 512)))]
    assert run(dev.reserve(1 << 16)) == expected
    assert calls == [(8, 48 * 1024)]
    # a new context has opted nothing in: the kernel, reloaded there, opts in again
    assert run(dev.reset()) == expected
    assert calls == [(8, 48 * 1024)] * 2


def write_then_read(dev: CudaDevice, payload: bytes) -> bytes:
    dev.write(dev.base, memoryview(payload))
    out = bytearray(len(payload))
    dev.read(dev.base, memoryview(out))
    return bytes(out)


def test_two_devices_in_one_thread_each_use_their_own_context():
    # CUDA keeps one current context per thread, whichever device object made it current:
    # opening B (a new context, pushed onto this thread) must not send A's calls into B's.
    fake = FakeDriver()
    a = CudaDevice(_driver=fake, scrub_on_chip=False, context="own")
    b = CudaDevice(_driver=fake, scrub_on_chip=False, context="own")
    a.open()
    a.reserve(4096)
    b.open()
    b.reserve(4096)
    assert write_then_read(a, b"a" * 64) == b"a" * 64
    assert write_then_read(b, b"b" * 64) == b"b" * 64
    assert write_then_read(a, b"A" * 64) == b"A" * 64
    a.close()
    b.close()


def test_a_device_opened_again_is_made_current_again_in_every_thread():
    fake = FakeDriver()
    dev = CudaDevice(_driver=fake, scrub_on_chip=False, context="own")
    dev.open()
    dev.reserve(4096)
    results: list[object] = []

    def in_thread() -> None:
        try:
            results.append(write_then_read(dev, b"t" * 32))
        except Exception as exc:  # reported to the test thread
            results.append(exc)

    # one thread, kept alive across the re-open (its current context is the one that goes)
    worker_go, worker_done = threading.Event(), threading.Event()
    stop = False

    def loop() -> None:
        while True:
            worker_go.wait()
            worker_go.clear()
            if stop:
                return
            in_thread()
            worker_done.set()

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        worker_go.set()
        assert worker_done.wait(10)
        worker_done.clear()
        dev.close()  # its context is destroyed; the open below makes a new one
        dev.open()
        dev.reserve(4096)
        worker_go.set()
        assert worker_done.wait(10)
    finally:
        stop = True
        worker_go.set()
        thread.join(10)
    assert results == [b"t" * 32, b"t" * 32], results
    dev.close()


def test_close_releases_everything(opened):
    fake, dev, _ = opened()
    dev.reserve(4096)
    dev.close()
    with pytest.raises(DeviceError, match="not open"):
        dev.memset(0, 0, 1)
