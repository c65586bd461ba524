"""CpuDevice as a process manager: no leaked descriptors or processes, honest health, clean
failure when the template dies, modules of other tenants out of reach."""

from __future__ import annotations

import hashlib
import os
import signal
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from pappus.errors import DeviceError, KernelFault, LibraryError
from pappus.interfaces import LibraryImage
from pappus_cpu.device import CpuDevice

from ..conftest import child_pids, open_fds
from .conftest import Builder, Built, Harness, single

FILL = single("fill_u8", [{"Ptr": "out"}, {"Sizeof": "out"}, {"Constant": {"type": "u8", "value": 7}}],
              buffers={"out": 4096}, outputs=["out"], block=(64, 1, 1))


def grandchildren(pid: int) -> set[int]:
    out: set[int] = set()
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
            out.update(int(p) for p in text.split())
    except OSError:
        pass
    return out


def test_no_fds_or_processes_leak_across_200_invocations(build: Builder, sandbox_lib: Built) -> None:
    fds_before, kids_before = open_fds(), child_pids()
    h = Harness()
    try:
        assert h.run(FILL, {"k": sandbox_lib}, {})["out"] == b"\x07" * 4096
        fds_open = open_fds()
        for i in range(200):
            if i % 50 == 25:
                with pytest.raises(KernelFault):  # faults must not leak either
                    h.run(single("write_at", [{"Ptr": "out"}, {"Constant": {"type": "i64", "value": 1 << 21}}],
                                 buffers={"out": 64}), {"k": sandbox_lib}, {})
            else:
                assert h.run(FILL, {"k": sandbox_lib}, {})["out"] == b"\x07" * 4096
        assert open_fds() == fds_open
        template = h.device.template_pid
        assert template is not None
        assert len(grandchildren(template)) <= 2  # only the pre-forked children wait
        assert child_pids() - kids_before == {template}
    finally:
        h.close()
    assert open_fds() == fds_before
    assert child_pids() == kids_before


def test_open_reports_what_the_sandbox_really_has(harness: Harness) -> None:
    info = harness.info
    details = info.details
    assert info.heap_limit == 0
    assert details["landlock_abi"] >= 0
    assert "allow-list" in details["seccomp"]
    assert details["fiber_stacks"] == 1024
    if details["landlock_abi"]:
        assert details["landlock_active"] and "read-only" in details["landlock"]


def test_a_dead_template_fails_cleanly_and_reset_starts_a_new_one(build: Builder, sandbox_lib: Built) -> None:
    from pappus.pool import BufferPool

    fds_before, kids_before = open_fds(), child_pids()
    h = Harness()
    try:
        h.run(FILL, {"k": sandbox_lib}, {})
        old_template = h.device.template_pid
        os.kill(old_template, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while h.device.healthy and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not h.device.healthy
        with pytest.raises(DeviceError, match="template"):
            h.run(FILL, {"k": sandbox_lib}, {})
        assert not h.device.healthy
        # the executor's recovery: reset() starts a new template on the same pool memory
        base = h.device.reset()
        assert isinstance(base, int) and h.device.healthy
        assert h.device.template_pid != old_template
        h.pool = BufferPool(h.device, base, h.pool.size)
        h.device.bind_pool(h.pool)
        h.modules.clear()  # modules do not survive the template
        assert h.run(FILL, {"k": sandbox_lib}, {})["out"] == b"\x07" * 4096
        assert h.device.reset() is None  # healthy: nothing to do
    finally:
        h.close()
    h.close()  # idempotent
    assert open_fds() == fds_before
    assert child_pids() == kids_before


def test_a_template_killed_mid_run_leaves_no_writer_behind(build: Builder, sandbox_lib: Built) -> None:
    """The running child must be gone before the pool is released to the next tenant."""
    import threading

    from pappus.pool import BufferPool

    h = Harness()
    try:
        spin = single("spin", [{"Ptr": "out"}], buffers={"out": 4096}, outputs=["out"])
        killer = threading.Timer(0.3, lambda: os.kill(h.device.template_pid, signal.SIGKILL))
        killer.start()
        with pytest.raises(DeviceError):
            h.run(spin, {"k": sandbox_lib}, {})
        killer.join()
        base = h.device.reset()
        h.pool = BufferPool(h.device, base, h.pool.size)
        h.device.bind_pool(h.pool)
        h.modules.clear()
        time.sleep(0.1)  # a surviving writer would have had time to dirty the pool again
        copy = single("copy_bytes", [{"Ptr": "X"}, {"Ptr": "S"}, {"Sizeof": "S"}],
                      buffers={"S": 4096, "X": 4096}, outputs=["X"])
        assert h.run(copy, {"k": sandbox_lib}, {})["X"] == bytes(4096)
    finally:
        h.close()


def test_other_modules_are_unmapped_while_a_tenant_runs(build: Builder, sandbox_lib: Built, runtime_lib: Built) -> None:
    for hide in (True, False):
        h = Harness(hide_other_modules=hide)
        try:
            other = h.device.get_kernel(h.device.load_module(runtime_lib.image()), "block_sum")
            cfg = single("read_at", [{"Constant": {"type": "u64", "value": other.address}}, {"Ptr": "out"}],
                         buffers={"out": 8}, outputs=["out"])
            if hide:
                with pytest.raises(KernelFault) as info:
                    h.run(cfg, {"k": sandbox_lib}, {})
                assert info.value.address == other.address
            else:  # positive control: the same read works when the module stays mapped
                assert len(h.run(cfg, {"k": sandbox_lib}, {})["out"]) == 8
        finally:
            h.close()


def test_load_module_checks_the_hash_and_unload_drops_it(harness: Harness, sandbox_lib: Built) -> None:
    with pytest.raises(LibraryError, match="sha256"):
        harness.device.load_module(LibraryImage("0" * 64, sandbox_lib.data))
    module = harness.device.load_module(sandbox_lib.image())
    kernel = harness.device.get_kernel(module, "fill_u8")
    harness.device.unload_module(module)
    from pappus.plan import Launch

    with pytest.raises(DeviceError, match="unloaded"):
        harness.device.run((Launch("fill_u8", kernel, (1, 1, 1), (1, 1, 1), 0, (b"\0" * 8, b"\0" * 8, b"\0")),))
    with pytest.raises(DeviceError):
        harness.device.get_kernel(module, "fill_u8")


def test_get_kernel_refuses_names_outside_the_manifest(harness: Harness, sandbox_lib: Built) -> None:
    module = harness.device.load_module(sandbox_lib.image())
    with pytest.raises(DeviceError, match="not in the library"):
        harness.device.get_kernel(module, "no_such_kernel")


def test_launch_and_synchronize_run_a_one_launch_program(harness: Harness, sandbox_lib: Built) -> None:
    import struct

    from pappus.plan import Launch

    dev = harness.device
    kernel = dev.get_kernel(dev.load_module(sandbox_lib.image()), "fill_u8")
    base = harness.pool.base
    harness.pool.allocate(64)
    try:
        dev.launch(Launch("fill_u8", kernel, (1, 1, 1), (8, 1, 1), 0,
                          (struct.pack("<Q", base), struct.pack("<Q", 64), b"\x05")))
        dev.synchronize()
        out = bytearray(64)
        dev.read(base, memoryview(out))
        assert out == b"\x05" * 64
    finally:
        harness.pool.release()


def test_a_long_program_grows_the_command_region(harness: Harness, sandbox_lib: Built) -> None:
    flow = [{"ExecKernel": {"name": "fill_u8", "args": [{"Ptr": "out"}, {"Sizeof": "out"},
                                                        {"Constant": {"type": "u8", "value": i % 251}}],
                            "grid": [1], "block": [1]}} for i in range(20000)]
    cfg = {"schema": "pappus/function@1", "library": "k", "kernels": ["fill_u8"],
           "blueprint": {"inputs": [], "buffers": {"out": 16}, "outputs": ["out"], "control_flow": flow}}
    out = harness.run(cfg, {"k": sandbox_lib}, {})
    assert out["out"] == bytes([19999 % 251]) * 16


def test_device_spec_from_the_backend_builds_a_cpu_device() -> None:
    from pappus_cpu.plugin import CPU_BACKEND

    device = CPU_BACKEND.device(memory_bytes=1 << 20).create()
    assert isinstance(device, CpuDevice)
    assert device.memory_bytes == 1 << 20


def test_a_program_that_carries_its_extent_bounds_the_child(build: Builder, sandbox_lib: Built) -> None:
    """Forward compatible with core passing ``Program.extent`` (no bound pool needed)."""
    import struct

    from pappus.plan import Launch

    h = Harness(bind=False)
    try:
        dev = h.device
        kernel = dev.get_kernel(dev.load_module(sandbox_lib.image()), "write_at")

        class Program(tuple):  # what core's Plan.program would return
            extent: int

        base = h.pool.base
        h.pool.allocate(64)
        try:
            program = Program((Launch("write_at", kernel, (1, 1, 1), (1, 1, 1), 0,
                                      (struct.pack("<Q", base), struct.pack("<q", 8192))),))
            program.extent = 64
            with pytest.raises(KernelFault) as info:
                dev.run(program)
            assert info.value.address == base + 8192 and "out_of_bounds" in info.value.reasons
            program.extent = 16384  # the same write inside the extent is allowed
            dev.run(program)
        finally:
            h.pool.release()
    finally:
        h.close()


def test_a_run_is_fenced_below_its_window_too(sandbox_lib: Built) -> None:
    """The pool alternates windows: a run whose buffers start past the pool's start cannot
    reach what lies below them (the window of the run before it, perhaps still ending)."""
    from pappus.plan import Program

    h = Harness(bind=False)
    try:
        dev = h.device
        kernel = dev.get_kernel(dev.load_module(sandbox_lib.image()), "write_at")
        base = h.pool.base
        window = 3 * 4096
        for offset, allowed in ((window + 8, True), (window - 8, False), (8, False), (2 * window, False)):
            program = Program((_launch(kernel, struct.pack("<Q", base + window), struct.pack("<q", offset - window)),),
                              extent=2 * window - 64, start=window)
            if allowed:
                dev.run(program)
                continue
            with pytest.raises(KernelFault) as info:
                dev.run(program)
            assert info.value.address == base + offset and "out_of_bounds" in info.value.reasons, info.value
        dev.memset(base, 0, h.pool.size)
    finally:
        h.close()


def test_a_child_that_exited_while_nobody_looked_is_not_taken_for_a_lingering_one(sandbox_lib: Built,
                                                                                    caplog: Any) -> None:
    """A run's child is ending until its exit report is read. When the device then sits idle
    past the grace, the report is read before anyone is declared overdue: no kill, no warning."""
    import logging
    import time

    from pappus.plan import Program
    from pappus_cpu.device import EXIT_GRACE

    h = Harness(bind=False)
    try:
        dev = h.device
        kernel = dev.get_kernel(dev.load_module(sandbox_lib.image()), "write_at")
        base = h.pool.base
        program = Program((_launch(kernel, struct.pack("<Q", base), struct.pack("<q", 8)),), extent=4096)
        with caplog.at_level(logging.WARNING, logger="pappus.cpu"):
            for _ in range(2):
                dev.run(program)
                time.sleep(EXIT_GRACE + 0.15)
                dev.memset(base, 0, 4096)  # its window: waits for the report, which is there
        assert not [r for r in caplog.records if "did not exit" in r.getMessage()], caplog.text
    finally:
        h.close()


def _launch(kernel: Any, *args: bytes) -> Any:
    from pappus.plan import Launch

    return Launch(kernel.name, kernel, (1, 1, 1), (1, 1, 1), 0, args)


def test_a_function_of_many_modules_still_hides_every_other_module(sandbox_lib: Built, runtime_lib: Built) -> None:
    """The keep set is a bitmap of every module slot: however many modules a program uses,
    every other module is out of reach (there is no "too many: hide nothing")."""
    h = Harness()
    try:
        dev = h.device
        other = dev.get_kernel(dev.load_module(runtime_lib.image()), "block_sum")
        fills, read_at = [], None
        for i in range(70):  # distinct bytes: one module each
            data = sandbox_lib.data + b"\0" * (i + 1)
            module = dev.load_module(LibraryImage(hashlib.sha256(data).hexdigest(), data))
            fills.append(dev.get_kernel(module, "fill_u8"))
            read_at = read_at or dev.get_kernel(module, "read_at")
        assert read_at is not None
        base = h.pool.base + h.pool.allocate(64)
        try:
            program = tuple(_launch(k, struct.pack("<Q", base), struct.pack("<Q", 8), bytes([i])) for i, k in
                            enumerate(fills))
            dev.run(program)  # every module the program uses is there
            out = bytearray(8)
            dev.read(base, memoryview(out))
            assert out == bytes([69]) * 8
            with pytest.raises(KernelFault) as info:  # the module it does not use is not
                dev.run(program + (_launch(read_at, struct.pack("<Q", other.address), struct.pack("<Q", base)),))
            assert info.value.address == other.address
        finally:
            h.pool.release()
    finally:
        h.close()


def _objects_seen(dev: CpuDevice, kernel: Any, base: int) -> tuple[int, ...]:
    dev.run((_launch(kernel, struct.pack("<Q", base)),))
    out = bytearray(16)
    dev.read(base, memoryview(out))
    return struct.unpack("<QQ", out)


def test_a_kernel_sees_no_trace_of_other_modules_in_the_loaders_list(sandbox_lib: Built, runtime_lib: Built,
                                                                      heap_lib: Built) -> None:
    """Hidden modules leave the loader's list in the child (dl_iterate_phdr, _r_debug), so a
    kernel cannot count or locate other tenants' libraries; with hiding off they are listed."""
    for hide in (True, False):
        h = Harness(hide_other_modules=hide)
        try:
            dev = h.device
            kernel = dev.get_kernel(dev.load_module(sandbox_lib.image()), "loaded_objects")
            base = h.pool.base + h.pool.allocate(16)
            try:
                before = _objects_seen(dev, kernel, base)
                dev.load_module(runtime_lib.image())
                dev.load_module(heap_lib.image())
                after = _objects_seen(dev, kernel, base)
            finally:
                h.pool.release()
            if hide:
                assert after == before
            else:  # positive control
                assert after[0] >= before[0] + 2
        finally:
            h.close()


def test_a_library_soname_cannot_stand_in_for_another_load(build: Builder, sandbox_lib: Built,
                                                           runtime_lib: Built) -> None:
    """glibc hands out a loaded object whose DT_SONAME equals a requested name. The template
    loads every library as /proc/self/fd/N; a library whose SONAME is the name of the next load
    must not be returned in place of that library."""
    from pappus_cpu.driver import CpuDriver, loadable_image

    placeholder = "/proc/self/fd/XXXXXXXXXXXX"
    built = build(Path(__file__).parent / "kernels" / "sandbox.hip", "soname",
                  extra_flags=("-Wl,-soname," + placeholder,))
    assert built.data.count(placeholder.encode()) == 1
    h = Harness()
    try:
        pid = h.device.template_pid
        used = {int(f) for f in os.listdir(f"/proc/{pid}/fd")}
        free = [fd for fd in range(3, 4096) if fd not in used]
        name = f"/proc/self/fd/{free[1]}".encode()
        data = built.data.replace(placeholder.encode(), name + b"\0" * (len(placeholder) - len(name)))
        CpuDriver().inspect_library(data)  # a SONAME is allowed ...
        image = loadable_image(data)  # ... but not loaded as one
        assert len(image) == len(data) and image != data and loadable_image(image) == image
        assert loadable_image(sandbox_lib.data) == sandbox_lib.data  # no SONAME: unchanged
        dev = h.device
        dev.load_module(LibraryImage(hashlib.sha256(data).hexdigest(), data))  # at free[0]
        module = dev.load_module(runtime_lib.image())  # at free[1]: a module of its own
        dev.get_kernel(module, "block_sum")
    finally:
        h.close()
