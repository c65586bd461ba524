"""Cross-tenant zeroing: nothing one invocation wrote is readable by a later one.

Tenant A writes a secret into every byte it can reach; tenant B, on the same engine right
after, reads all of its buffers before writing and must see zeros — after A succeeded, trapped,
faulted or timed out, across sizes and alignments, past a high-water mark, under concurrency,
in shared and private memory and registers, and in module globals. B reads twice in a row: a pool may
alternate consecutive invocations between two windows (``DeviceAPI.alternate_windows``), and
then only the second read lands where A's buffers were.
"""

from __future__ import annotations

from concurrent.futures import wait

import pytest

import pappus

from .kit import (
    PROBE_BYTES,
    READER,
    WRITER,
    const,
    launch,
    leftovers,
    register_reader,
    register_writer,
)

ROUNDS = 4  # enough A-then-B rounds that every worker of a 2-worker engine serves a B after an A
PROBES = 2  # B reads this many times after each A: both windows of an alternating pool


@pytest.fixture(scope="module")
def reader(harness):
    return register_reader(harness, "reader")


def a_then_b(harness, writer: str, reader: str, expect: type[BaseException] | None = None, **kw) -> None:
    for _ in range(ROUNDS):
        if expect is None:
            harness.invoke(WRITER, writer, **kw)
        else:
            with pytest.raises(expect):
                harness.invoke(WRITER, writer, **kw)
        for _ in range(PROBES):
            assert leftovers(harness, reader) == 0, f"tenant B read bytes tenant A wrote ({writer})"


def test_after_success(harness, reader):
    a_then_b(harness, register_writer(harness, "w_ok", [4096, 65536]), reader)


def test_after_trap(harness, reader):
    then = launch("trap_now", [{"Ptr": "X0"}], grid=1, block=1)
    a_then_b(harness, register_writer(harness, "w_trap", [4096, 65536], then), reader, pappus.KernelFault)


def test_after_out_of_bounds_fault(harness, reader):
    then = launch("write_at", [{"Ptr": "X0"}, const("u64", 1 << 40)], grid=1, block=1)
    a_then_b(harness, register_writer(harness, "w_fault", [4096, 65536], then), reader, pappus.KernelFault)


@pytest.mark.requires("watchdog")
def test_after_timeout(harness, reader):
    then = launch("spin_writing", [{"Ptr": "X1"}, {"Sizeof": "X1"}], grid=1, block=32)
    writer = register_writer(harness, "w_hang", [4096, 65536], then)
    for _ in range(2):
        with pytest.raises(pappus.DeadlineExceeded):
            harness.invoke(WRITER, writer, deadline=0.5)
        # A kernel that was not really stopped would still be writing: B would see it.
        for _ in range(PROBES):
            assert leftovers(harness, reader) == 0


@pytest.mark.parametrize("sizes", [[1], [255, 257], [1, 3, 4099, 65539], [256] * 17, [1 << 20, 7]],
                         ids=["one-byte", "around-256", "odd", "many-aligned", "large-and-odd"])
def test_sizes_and_alignments(harness, reader, sizes):
    a_then_b(harness, register_writer(harness, f"w_sizes_{len(sizes)}_{sizes[0]}", sizes), reader)


def test_high_water_mark(harness, reader):
    big = register_writer(harness, "w_big", [PROBE_BYTES // 2])
    small = register_writer(harness, "w_small", [1024])
    for _ in range(ROUNDS):
        harness.invoke(WRITER, big)
        harness.invoke(WRITER, small)
        for _ in range(PROBES):
            assert leftovers(harness, reader) == 0


def test_concurrent_tenants(harness, reader):
    writers = [register_writer(harness, f"w_conc{i}", [8192 * (i + 1)], tenant=f"writer-{i}") for i in range(3)]
    futures, reads = [], []
    for _ in range(6):
        for i, w in enumerate(writers):
            futures.append(harness.invoke_async(f"writer-{i}", w))
        reads.append(harness.invoke_async(READER, reader))
    wait(futures + reads, timeout=120)
    for f in futures:
        f.result()
    import struct

    assert all(struct.unpack("<Q", f.result()["C"])[0] == 0 for f in reads)


@pytest.fixture(scope="module")
def scratch_writer(harness):
    """Tenant A: leaves its secret in shared memory, private memory and registers (suite.hip)."""
    return harness.function(WRITER, "scratch_fill", [launch("fill_scratch", [const("u32", 1), {"Ptr": "C"}],
                                                            grid=4, block=128)], buffers={"C": 8}, outputs=["C"])


def test_shared_and_private_memory(harness, scratch_writer):
    b = harness.function(READER, "scratch_probe", [launch("probe_scratch", [const("u32", 1), {"Ptr": "C"}],
                                                          grid=4, block=128)], buffers={"C": 8}, outputs=["C"])
    for _ in range(ROUNDS):
        harness.invoke(WRITER, scratch_writer)
        assert leftovers(harness, b) == 0, "shared or private memory kept another tenant's data"


def test_registers(harness, scratch_writer):
    b = harness.function(READER, "register_probe", [launch("probe_registers", [const("u32", 0), {"Ptr": "C"}],
                                                            grid=4, block=128)],
                         buffers={"C": 8}, outputs=["C"])
    for _ in range(ROUNDS):
        harness.invoke(WRITER, scratch_writer)
        assert leftovers(harness, b) == 0, "registers kept another tenant's data"


def test_module_globals(harness):
    try:
        a = harness.function(WRITER, "global_write", [launch("write_global", [const("u32", 0xFEED)], grid=1,
                                                             block=256)], buffers={"C": 8}, outputs=["C"],
                             library="globals")
        b = harness.function(READER, "global_read", [launch("read_global", [{"Ptr": "C"}], grid=1, block=256)],
                             buffers={"C": 8}, outputs=["C"], library="globals")
    except pappus.ValidationError as exc:
        # Refusing code objects with writable globals at registration satisfies the property.
        assert "global" in str(exc).lower(), exc
        return
    for _ in range(ROUNDS):
        harness.invoke(WRITER, a)
        assert leftovers(harness, b) == 0, "a module global kept another tenant's data"
