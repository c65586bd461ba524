"""The pool and the interpreter on the reference host device."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest

from pappus.config import check_function_against_libraries, parse_function
from pappus.devices.host import HostDevice, HostDriver
from pappus.errors import DeviceError, InvalidInput, KernelFault, OutOfMemory
from pappus.interfaces import LibraryImage
from pappus.interpreter import run_invocation
from pappus.plan import Plan
from pappus.pool import BufferPool

from .helpers import HOST_LIB, copy_config, fault_config, fill_config, matmul_config


class CountingDevice(HostDevice):
    """The host device, recording memsets (to check zeroing happens once, on the right range)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.memsets: list[tuple[int, int]] = []

    def memset(self, address, value, nbytes):
        self.memsets.append((address - self.base, nbytes))
        super().memset(address, value, nbytes)


@pytest.fixture
def device():
    d = CountingDevice(memory_bytes=1 << 22)
    d.open()
    return d


def setup(device, doc, pool_bytes=1 << 20, scrub=False, pool=None):
    if pool is None:
        pool = BufferPool(device, device.reserve(pool_bytes), pool_bytes, scrub_before_use=scrub)
    info = HostDriver().inspect_library(HOST_LIB)
    cfg = parse_function(doc)
    assert check_function_against_libraries(cfg, {"m": info}) == []
    plan = Plan(cfg, {k: v.params for k, v in info.kernels.items()})
    module = device.load_module(LibraryImage(hashlib.sha256(HOST_LIB).hexdigest(), HOST_LIB))
    handles = {ref.name: device.get_kernel(module, ref.name) for ref in cfg.kernels}
    return pool, plan, handles


def test_pool_alignment_and_bump(device):
    pool = BufferPool(device, device.reserve(4096), 4096, alignment=256)
    assert pool.allocate(1) == 0
    assert pool.allocate(10) == 256
    assert pool.allocate(0) == 512
    assert pool.allocate(256) == 512
    with pytest.raises(ValueError):
        BufferPool(device, 0, 10, alignment=3)


def test_pool_out_of_memory_names_buffer_and_sizes(device):
    pool = BufferPool(device, device.reserve(4096), 4096)
    pool.allocate(3000, "A")
    with pytest.raises(OutOfMemory) as info:
        pool.allocate(2000, "B")
    err = info.value
    assert err.buffer == "B" and err.requested == 2000 and err.available == 4096 - 3072 and err.pool_size == 4096
    assert "'B'" in str(err) and "2000" in str(err)


def test_layout_failure_leaves_nothing_allocated(device):
    pool = BufferPool(device, device.reserve(4096), 4096)
    with pytest.raises(OutOfMemory):
        pool.layout([("A", 1000), ("B", 5000)])
    assert pool.top == 0


def test_release_zeroes_high_water_in_one_memset(device):
    pool = BufferPool(device, device.reserve(1 << 16), 1 << 16)
    pool.allocate(100)
    pool.allocate(1000)
    device.memory[:2000] = 7
    device.memsets.clear()
    pool.release()
    assert device.memsets == [(0, 256 + 1000)]
    assert not device.memory[:1256].any()
    assert pool.top == 0 and pool.high_water == 0


def test_scrub_before_use_covers_stray_writes(device):
    pool = BufferPool(device, device.reserve(1 << 16), 1 << 16, scrub_before_use=True)
    pool.allocate(512)
    device.memory[5000:5100] = 9  # a stray write past the invocation's buffers
    pool.release()
    off = pool.allocate(8192)
    assert off == 0
    assert not device.memory[:8192].any()


def test_alternate_windows_take_turns_and_never_share_a_page(device):
    pool = BufferPool(device, device.reserve(1 << 16), 1 << 16, alternate=4096)
    assert pool.layout([("A", 100), ("B", 5000)]) == [0, 256]  # the first window: the pool's start
    device.memory[:5256] = 7
    device.memsets.clear()
    pool.release()
    assert device.memsets == [(0, 5256)] and not device.memory[:5256].any()
    assert pool.layout([("A", 100)]) == [8192]  # the next: the first page past the last window
    assert pool.span(8192, 100) == pool.base + 8192
    with pytest.raises(DeviceError):  # below this window: not this invocation's
        pool.span(0, 8)
    device.memsets.clear()
    pool.release()
    assert device.memsets == [(8192, 100)]  # only this window is zeroed
    assert pool.layout([("A", 100)]) == [0]  # and back
    pool.release()
    pool.release()  # nothing handed out: it stays where it is
    assert pool.layout([("A", 1)]) == [4096]


def test_an_alternate_window_that_does_not_fit_moves_to_the_start(device):
    pool = BufferPool(device, device.reserve(1 << 16), 1 << 16, alternate=4096)
    pool.layout([("A", 40000)])
    pool.release()
    assert pool.low == 40960
    assert pool.layout([("A", 30000)]) == [0]  # 40960 + 30000 is past the end
    pool.release()
    with pytest.raises(OutOfMemory):
        pool.layout([("A", 1 << 17)])
    assert (pool.low, pool.top, pool.high_water) == (32768, 32768, 32768)  # unchanged
    with pytest.raises(ValueError):
        BufferPool(device, 0, 1 << 16, alternate=3000)
    with pytest.raises(ValueError):
        BufferPool(device, 0, 1 << 16, alternate=4096, scrub_before_use=True)


def test_matmul_with_repeat_matches_numpy(device):
    pool, plan, handles = setup(device, matmul_config(repeat=5))
    a = np.arange(64 * 64, dtype=np.int64).reshape(64, 64) - 100
    out = run_invocation(device, pool, plan, {"A": a.tobytes()}, handles)
    b = np.frombuffer(out["B"], dtype=np.int64).reshape(64, 64)
    assert (b == a @ a.T + 10).all()
    assert not device.memory.any(), "pool must be zero after the invocation"


def test_repeat_count_from_input(device):
    doc = matmul_config(repeat={"FromInput": {"input": "cfg", "index": 0, "type": "u32"}})
    doc["blueprint"]["inputs"] = ["A", {"name": "cfg", "size": 4}]
    pool, plan, handles = setup(device, doc)
    a = np.eye(8, dtype=np.int64)
    out = run_invocation(device, pool, plan, {"A": a.tobytes(), "cfg": struct.pack("<I", 7)}, handles)
    assert (np.frombuffer(out["B"], np.int64).reshape(8, 8) == a + 14).all()
    out = run_invocation(device, pool, plan, {"A": a.tobytes(), "cfg": struct.pack("<I", 0)}, handles)
    assert (np.frombuffer(out["B"], np.int64).reshape(8, 8) == a).all()


def test_zeroing_on_error_path(device):
    pool, plan, handles = setup(device, fault_config(address=3))
    with pytest.raises(KernelFault) as info:
        run_invocation(device, pool, plan, {}, handles)
    assert info.value.address == 3 and info.value.kernel == "write_at"
    assert pool.top == 0 and device.memsets, "the pool is released (zeroed) on the error path"


def test_next_invocation_sees_zeros(device):
    pool, fill_plan, handles = setup(device, fill_config(4096, 0xAB))
    out = run_invocation(device, pool, fill_plan, {}, handles)
    assert out["X"] == b"\xab" * 4096
    _, copy_plan, copy_handles = setup(device, copy_config(4096), pool=pool)
    out = run_invocation(device, pool, copy_plan, {}, copy_handles)
    assert out["X"] == bytes(4096), "a later invocation must not see what an earlier one wrote"


@pytest.mark.parametrize("inputs,fragment", [
    ({}, "inputs.A: is missing"),
    ({"A": b"x" * 8, "Z": b""}, "inputs.Z: is not an input"),
])
def test_invalid_inputs(device, inputs, fragment):
    pool, plan, handles = setup(device, matmul_config())
    with pytest.raises(InvalidInput) as info:
        run_invocation(device, pool, plan, inputs, handles)
    assert fragment in str(info.value)


def test_declared_input_size_enforced(device):
    doc = matmul_config(repeat={"FromInput": {"input": "cfg", "index": 0}})
    doc["blueprint"]["inputs"] = ["A", {"name": "cfg", "size": 8}]
    pool, plan, handles = setup(device, doc)
    with pytest.raises(InvalidInput) as info:
        run_invocation(device, pool, plan, {"A": bytes(8), "cfg": bytes(4)}, handles)
    assert "inputs.cfg: has 4 bytes; the function declares exactly 8" in str(info.value)


def test_dynamic_bounds_checked_before_running(device):
    doc = matmul_config(repeat={"FromInput": {"input": "cfg", "index": 0}})
    doc["blueprint"]["inputs"] = ["A", {"name": "cfg", "size": 8}]
    pool, plan, handles = setup(device, doc)
    launches_before = device.launches
    with pytest.raises(InvalidInput) as info:
        run_invocation(device, pool, plan, {"A": bytes(8), "cfg": struct.pack("<Q", 2**40)}, handles)
    assert "repetitions exceed" in str(info.value)
    assert device.launches == launches_before, "nothing may run when a bound fails"


def test_shared_memory_worked_out_per_call_counts_the_kernels_static_part(device):
    """Registration checks a constant amount plus the code object's static shared memory; an
    amount read from an input is checked the same way when the invocation is resolved (a
    driver would refuse the launch, after the earlier kernels had run)."""
    doc = matmul_config(repeat=1)
    doc["blueprint"]["inputs"] = ["A", {"name": "cfg", "size": 8}]
    doc["blueprint"]["control_flow"][0]["ExecKernel"]["shared_mem_bytes"] = {"FromInput": {"input": "cfg", "index": 0}}
    _, plan, _ = setup(device, doc)
    limit = plan.device_limits.max_shared_bytes
    static = Plan(plan.config, plan.signatures, static_shared={"matmul_at_i64": 1024})

    def resolve(p, dynamic):
        return p.resolve({"A": bytes(8), "cfg": struct.pack("<Q", dynamic)})

    resolve(static, limit - 1024)
    resolve(plan, limit - 1023)  # without a static part the same amount fits
    with pytest.raises(InvalidInput) as info:
        resolve(static, limit - 1023)
    assert info.value.errors[0].path == "blueprint.control_flow[0].ExecKernel.shared_mem_bytes"
    assert f"{limit - 1023} dynamic + 1024 static bytes of shared memory exceed the device limit of {limit}" in \
        str(info.value)


def test_input_larger_than_pool_is_out_of_memory(device):
    pool, plan, handles = setup(device, matmul_config(), pool_bytes=1 << 16)
    with pytest.raises(OutOfMemory) as info:
        run_invocation(device, pool, plan, {"A": bytes(1 << 16)}, handles)
    assert info.value.buffer == "B"


def test_value_argument_read_from_an_input(device):
    """Value passes an integer worked out per invocation: here the increment comes from cfg."""
    doc = matmul_config(repeat=1)
    doc["blueprint"]["inputs"] = ["A", {"name": "cfg", "size": 8}]
    body = doc["blueprint"]["control_flow"][1]["Repeat"]["body"][0]["ExecKernel"]
    body["args"][2] = {"Value": {"type": "i64", "value": {"FromInput": {"input": "cfg", "index": 0, "type": "i64"}}}}
    pool, plan, handles = setup(device, doc)
    a = np.eye(4, dtype=np.int64)
    for inc in (5, 11):
        out = run_invocation(device, pool, plan, {"A": a.tobytes(), "cfg": struct.pack("<q", inc)}, handles)
        assert (np.frombuffer(out["B"], np.int64).reshape(4, 4) == a + inc).all()
    with pytest.raises(InvalidInput) as info:  # negative counts are refused before anything runs
        run_invocation(device, pool, plan, {"A": a.tobytes(), "cfg": struct.pack("<q", -1)}, handles)
    assert "Value.value" in str(info.value) and "negative" in str(info.value)


def test_resolutions_are_shared_only_when_sizes_alone_decide(device):
    """A plan whose sizes, launches and values depend on input sizes only reuses the resolution
    of earlier inputs of the same sizes (and the packed program for the same placement); one
    that reads input contents (FromInput) resolves every invocation afresh."""
    pool, plan, handles = setup(device, matmul_config(repeat=5))
    assert plan.sizes_only
    small = plan.resolve({"A": bytes(8 * 8 * 8)})
    assert plan.resolve({"A": bytearray(8 * 8 * 8)}) is small
    large = plan.resolve({"A": bytes(16 * 16 * 8)})
    assert large is not small and large.sizes["B"] == 16 * 16 * 8 and small.sizes["B"] == 8 * 8 * 8
    offsets = dict(small.offsets)
    program = plan.program(small, pool.base, handles, offsets)
    assert plan.program(small, pool.base, handles, dict(offsets)) is program
    moved = plan.program(small, pool.base + 4096, handles, offsets)
    assert moved is not program and moved != program

    doc = matmul_config(repeat={"FromInput": {"input": "cfg", "index": 0, "type": "u32"}})
    doc["blueprint"]["inputs"] = ["A", {"name": "cfg", "size": 4}]
    _, dynamic, _ = setup(device, doc, pool=pool)
    assert not dynamic.sizes_only
    first = dynamic.resolve({"A": bytes(64), "cfg": struct.pack("<I", 7)})
    second = dynamic.resolve({"A": bytes(64), "cfg": struct.pack("<I", 3)})
    assert first is not second and first.steps != second.steps


def test_a_refused_resolution_is_never_reused(device):
    """Inputs that fail a bound are refused every time, even after valid inputs of other sizes."""
    pool, plan, handles = setup(device, matmul_config(), pool_bytes=1 << 16)
    plan.resolve({"A": bytes(64)})
    for _ in range(2):
        with pytest.raises(InvalidInput):
            plan.resolve({"A": bytes(64), "Z": b""})
        with pytest.raises(OutOfMemory):
            run_invocation(device, pool, plan, {"A": bytes(1 << 16)}, handles)
