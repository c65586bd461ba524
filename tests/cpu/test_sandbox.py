"""Kernel code cannot make system calls, escape its buffers, or outlive its deadline; every
failure is typed, names its cause, and leaves the device serving the next tenant correctly."""

from __future__ import annotations

import struct
import threading
import time

import numpy as np
import pytest

from pappus.errors import KernelFault, SandboxViolation

from .conftest import Built, Harness, single

OUT = {"buffers": {"out": 64}, "outputs": ["out"]}


def run_k(h: Harness, lib: Built, kernel: str, args: list, **kw: object) -> dict[str, bytes]:
    """One launch of ``kernel`` with a 64-byte output buffer ``out``."""
    return h.run(single(kernel, args, **{**OUT, **kw}), {"k": lib}, {})


@pytest.mark.parametrize("kernel,syscalls", [
    ("do_open", {"openat"}),
    ("do_fopen", {"openat", "brk", "mmap"}),  # fopen may allocate its FILE before opening
    ("do_proc_mem", {"openat"}),
    ("do_fork", {"clone", "clone3", "fork"}),
    ("do_execve", {"execve"}),
    ("do_socket", {"socket"}),
    ("do_ptrace", {"ptrace"}),
    ("do_mprotect_exec", {"mprotect"}),
])
def test_system_calls_are_stopped(harness: Harness, sandbox_lib: Built, kernel: str, syscalls: set[str]) -> None:
    with pytest.raises(SandboxViolation) as info:
        run_k(harness, sandbox_lib, kernel, [{"Ptr": "out"}])
    err = info.value
    assert err.syscall in syscalls, err
    assert err.kernel == kernel
    assert err.signal == "SIGSYS"
    assert err.syscall in str(err)


def test_even_harmless_system_calls_are_stopped(harness: Harness, sandbox_lib: Built) -> None:
    with pytest.raises(SandboxViolation) as info:
        run_k(harness, sandbox_lib, "do_syscall", [{"Constant": {"type": "i64", "value": 39}}, {"Ptr": "out"}])
    assert info.value.syscall in ("getpid", "syscall_39") or info.value.syscall_number == 39


@pytest.mark.parametrize("fd", [0, 1, 2, 3, 100])
def test_reading_any_descriptor_is_stopped(harness: Harness, sandbox_lib: Built, fd: int) -> None:
    with pytest.raises(SandboxViolation) as info:
        run_k(harness, sandbox_lib, "do_read", [{"Constant": {"type": "i32", "value": fd}}, {"Ptr": "out"}])
    assert info.value.syscall == "read"


def test_mprotect_to_none_only_takes_access_away(harness: Harness, sandbox_lib: Built) -> None:
    """The one mprotect the child allows (to PROT_NONE): the kernel loses its own buffer."""
    with pytest.raises(KernelFault) as info:
        run_k(harness, sandbox_lib, "do_mprotect_none", [{"Ptr": "out"}])
    assert not isinstance(info.value, SandboxViolation)
    assert info.value.signal == "SIGSEGV"


def test_a_violation_leaves_the_device_serving(harness: Harness, sandbox_lib: Built) -> None:
    with pytest.raises(SandboxViolation):
        run_k(harness, sandbox_lib, "do_open", [{"Ptr": "out"}])
    out = run_k(harness, sandbox_lib, "fill_u8", [{"Ptr": "out"}, {"Sizeof": "out"}, {"Constant": {"type": "u8", "value": 9}}])
    assert out["out"] == b"\x09" * 64
    assert harness.device.healthy


def leftovers(h: Harness, lib: Built, size: int) -> bytes:
    """Copies a never-written scratch buffer S to the output: any stale byte would show."""
    cfg = single("copy_bytes", [{"Ptr": "X"}, {"Ptr": "S"}, {"Sizeof": "S"}], buffers={"S": size, "X": size},
                 outputs=["X"], block=(64, 1, 1))
    return h.run(cfg, {"k": lib}, {})["X"]


def test_write_past_the_functions_buffers_faults_with_the_address(harness: Harness, sandbox_lib: Built) -> None:
    pool = harness.pool
    offset = 64 * 1024 + 8  # past the 64-byte buffer and past the page it sits in
    with pytest.raises(KernelFault) as info:
        run_k(harness, sandbox_lib, "write_at", [{"Ptr": "out"}, {"Constant": {"type": "i64", "value": offset}}])
    err = info.value
    assert err.kernel == "write_at"
    assert err.signal == "SIGSEGV"
    assert err.address == pool.base + offset
    assert "out_of_bounds" in err.reasons
    assert leftovers(harness, sandbox_lib, 256 * 1024) == bytes(256 * 1024)


def test_write_past_the_pool_faults(harness: Harness, sandbox_lib: Built) -> None:
    pool = harness.pool
    offset = pool.size + 16  # in the guard page after the pool
    with pytest.raises(KernelFault) as info:
        run_k(harness, sandbox_lib, "write_at", [{"Ptr": "out"}, {"Constant": {"type": "i64", "value": offset}}])
    assert info.value.address == pool.base + offset
    assert "out_of_bounds" in info.value.reasons
    for offset in (-4096 + 8, -(64 << 20), pool.size + (300 << 20)):  # before it, and far from it
        with pytest.raises(KernelFault) as info:
            run_k(harness, sandbox_lib, "write_at", [{"Ptr": "out"}, {"Constant": {"type": "i64", "value": offset}}])
        assert info.value.address == pool.base + offset
        assert "out_of_bounds" in info.value.reasons


def test_next_tenant_after_a_fault_sees_zeros_and_correct_results(harness: Harness, sandbox_lib: Built,
                                                                  build: object) -> None:
    # tenant A fills its buffer, then faults in the same invocation
    cfg = {
        "schema": "pappus/function@1", "library": "k", "kernels": ["fill_u8", "write_at"],
        "blueprint": {"inputs": [], "buffers": {"X": 4096}, "outputs": ["X"], "control_flow": [
            {"ExecKernel": {"name": "fill_u8", "args": [{"Ptr": "X"}, {"Sizeof": "X"}, {"Constant": {"type": "u8", "value": 0xAB}}],
                            "grid": [1], "block": [32]}},
            {"ExecKernel": {"name": "write_at", "args": [{"Ptr": "X"}, {"Constant": {"type": "i64", "value": 1 << 20}}],
                            "grid": [1], "block": [1]}}]}}
    with pytest.raises(KernelFault) as info:
        harness.run(cfg, {"k": sandbox_lib}, {})
    assert info.value.kernel == "write_at"
    # tenant B
    assert leftovers(harness, sandbox_lib, 8192) == bytes(8192)
    out = run_k(harness, sandbox_lib, "fill_u8", [{"Ptr": "out"}, {"Sizeof": "out"}, {"Constant": {"type": "u8", "value": 3}}])
    assert out["out"] == b"\x03" * 64


def test_stray_write_inside_the_pool_past_the_buffers_faults(build: object, sandbox_lib: Built) -> None:
    """Core passes each program's extent: the pool past the invocation's buffers is fenced off,
    so a stray write there faults instead of landing, and nothing stays for the next tenant."""
    h = Harness(bind=False)
    try:
        with pytest.raises(KernelFault) as info:
            run_k(h, sandbox_lib, "write_at", [{"Ptr": "out"}, {"Constant": {"type": "i64", "value": 100_000}}])
        assert "outside its buffers" in str(info.value)
        assert leftovers(h, sandbox_lib, 256 * 1024) == bytes(256 * 1024)
    finally:
        h.close()


def test_trap_assert_and_abort_are_kernel_faults(harness: Harness, sandbox_lib: Built) -> None:
    for how in (0, 1, 2):
        with pytest.raises(KernelFault) as info:
            harness.run(single("trap", [{"Constant": {"type": "i32", "value": how}}]), {"k": sandbox_lib}, {})
        assert info.value.reasons == ["trap"], (how, info.value)
        assert not isinstance(info.value, SandboxViolation)


def test_integer_division_by_zero(harness: Harness, sandbox_lib: Built) -> None:
    with pytest.raises(KernelFault) as info:
        run_k(harness, sandbox_lib, "divide", [{"Constant": {"type": "i32", "value": 1}},
                                               {"Constant": {"type": "i32", "value": 0}}, {"Ptr": "out"}])
    assert info.value.signal == "SIGFPE"
    assert "arithmetic" in info.value.reasons


def test_stack_overflow_hits_the_guard(harness: Harness, sandbox_lib: Built) -> None:
    with pytest.raises(KernelFault) as info:
        run_k(harness, sandbox_lib, "recurse", [{"Constant": {"type": "i32", "value": 100_000}}, {"Ptr": "out"}])
    assert info.value.signal == "SIGSEGV"
    assert "stack_overflow" in info.value.reasons


def test_dynamic_shared_memory_overflow_faults(harness: Harness, sandbox_lib: Built) -> None:
    with pytest.raises(KernelFault) as info:
        harness.run(single("dyn_overflow", [{"Constant": {"type": "i32", "value": 64}}], shared=256),
                    {"k": sandbox_lib}, {})
    assert "shared_out_of_bounds" in info.value.reasons


def test_a_kernel_that_ends_its_process_early_fails(harness: Harness, sandbox_lib: Built) -> None:
    with pytest.raises(KernelFault) as info:
        run_k(harness, sandbox_lib, "quit", [{"Ptr": "out"}])
    assert info.value.reasons == ["early_exit"]


def test_an_infinite_loop_is_ended_by_abort_from_another_thread(harness: Harness, sandbox_lib: Built) -> None:
    device = harness.device
    timer = threading.Timer(0.3, device.abort)
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KernelFault) as info:
            run_k(harness, sandbox_lib, "spin", [{"Ptr": "out"}])
    finally:
        timer.cancel()
    assert time.monotonic() - started < 5
    assert info.value.signal == "SIGKILL"
    assert info.value.kernel == "spin"
    out = run_k(harness, sandbox_lib, "fill_u8", [{"Ptr": "out"}, {"Sizeof": "out"}, {"Constant": {"type": "u8", "value": 1}}])
    assert out["out"] == b"\x01" * 64


def test_abort_when_nothing_runs_does_not_hurt_the_next_run(harness: Harness, sandbox_lib: Built) -> None:
    harness.device.abort()
    out = run_k(harness, sandbox_lib, "fill_u8", [{"Ptr": "out"}, {"Sizeof": "out"}, {"Constant": {"type": "u8", "value": 2}}])
    assert out["out"] == b"\x02" * 64


def globals_run(h: Harness, lib: Built, write: int, twice: bool = False) -> list[int]:
    launch = {"ExecKernel": {"name": "globals", "args": [{"Constant": {"type": "i32", "value": write}}, {"Ptr": "out"}],
                             "grid": [1], "block": [1]}}
    second = {"ExecKernel": {"name": "globals", "args": [{"Constant": {"type": "i32", "value": 0}}, {"Ptr": "out2"}],
                             "grid": [1], "block": [1]}}
    cfg = {"schema": "pappus/function@1", "library": "k", "kernels": ["globals"],
           "blueprint": {"inputs": [], "buffers": {"out": 12, "out2": 12}, "outputs": ["out", "out2"],
                         "control_flow": [launch, second] if twice else [launch]}}
    out = h.run(cfg, {"k": lib}, {})
    return list(struct.unpack("<3i", out["out"])) + (list(struct.unpack("<3i", out["out2"])) if twice else [])


def test_module_globals_and_statics_start_from_their_load_time_values(harness: Harness, sandbox_lib: Built) -> None:
    # positive control: inside one invocation the second launch sees the first one's writes
    assert globals_run(harness, sandbox_lib, 1, twice=True) == [7, 3, 0, 99, 77, 55]
    # the next invocation (another tenant) sees the load-time image again
    assert globals_run(harness, sandbox_lib, 1) == [7, 3, 0]
    assert globals_run(harness, sandbox_lib, 0) == [7, 3, 0]


def private_run(h: Harness, lib: Built, kernels: list[str]) -> list[int]:
    flow = [{"ExecKernel": {"name": k, "args": [{"Ptr": "out"}], "grid": [1], "block": [1]}} for k in kernels]
    cfg = {"schema": "pappus/function@1", "library": "k", "kernels": sorted(set(kernels)),
           "blueprint": {"inputs": [], "buffers": {"out": 8}, "outputs": ["out"], "control_flow": flow}}
    return list(struct.unpack("<2i", h.run(cfg, {"k": lib}, {})["out"]))


def test_leftover_locals_probe_sees_zeros(harness: Harness, sandbox_lib: Built) -> None:
    # positive control: fill then probe in one invocation -> the probe finds the stack leftovers
    # (each kernel's __shared__ array is its own static, so that one reads zeros either way)
    stack, _shared = private_run(harness, sandbox_lib, ["fill_private", "probe_private"])
    assert stack > 3000
    # tenant A fills, tenant B probes: nothing
    private_run(harness, sandbox_lib, ["fill_private"])
    assert private_run(harness, sandbox_lib, ["probe_private"]) == [0, 0]


def test_dynamic_shared_memory_starts_zeroed_for_the_next_tenant(harness: Harness, sandbox_lib: Built) -> None:
    n = 1024
    arg = {"Constant": {"type": "i32", "value": n}}
    fill = {"ExecKernel": {"name": "fill_dyn", "args": [arg], "grid": [1], "block": [1], "shared_mem_bytes": n * 4}}
    probe = {"ExecKernel": {"name": "probe_dyn", "args": [arg, {"Ptr": "out"}], "grid": [1], "block": [1],
                            "shared_mem_bytes": n * 4}}

    def run(flow: list) -> int:
        cfg = {"schema": "pappus/function@1", "library": "k", "kernels": ["fill_dyn", "probe_dyn"],
               "blueprint": {"inputs": [], "buffers": {"out": 8}, "outputs": ["out"], "control_flow": flow}}
        return struct.unpack_from("<i", harness.run(cfg, {"k": sandbox_lib}, {})["out"])[0]

    assert run([fill, probe]) == n  # positive control: one arena for every launch of an invocation
    run([fill])
    assert run([probe]) == 0


def test_faults_do_not_leak_into_concurrent_state(harness: Harness, sandbox_lib: Built) -> None:
    """Interleave faulting and clean tenants: every clean one sees zeros and its own data."""
    for i in range(10):
        with pytest.raises(KernelFault):
            run_k(harness, sandbox_lib, "write_at", [{"Ptr": "out"}, {"Constant": {"type": "i64", "value": 1 << 22}}])
        data = leftovers(harness, sandbox_lib, 4096 * (i + 1))
        assert not np.frombuffer(data, dtype=np.uint8).any()
