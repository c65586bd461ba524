"""Leftover-data probes (LeftoverLocals, CVE-2023-4969, and its CPU-backend equivalents) on
every engine: after one tenant ran, another reads uninitialised stack (the child's own stack
and fiber stacks), static and dynamic shared memory, module globals and pool buffers, also
after the writer faulted or was killed at its deadline.

Each probe has a positive control: the same probe inside the writer's own invocation (one
process) does see the data, so a zero across invocations means the data is gone, not that the
probe cannot see it. Multiprocess engines run with one worker, so writer and reader share the
same device (the worst case)."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest

from pappus.errors import DeadlineExceeded, KernelFault

from .conftest import ENGINES, Built, count, function, make_runtime

THREADS = 64
DYN_WORDS = 8192
PATTERN = 0xA5C3E1F7
OUT_WORDS = 4 * THREADS + 4


def u32(v: int) -> dict[str, Any]:
    return {"Constant": {"type": "u32", "value": v}}


def _launch(mode: int) -> dict[str, Any]:
    return {"ExecKernel": {"name": "leftover", "args": [u32(mode), u32(PATTERN), {"Constant": {"type": "u64",
                                                                                                  "value": DYN_WORDS}},
                                                         {"Ptr": "out"}],
                           "grid": [2], "block": [THREADS], "shared_mem_bytes": DYN_WORDS * 4}}


def _leftover_fn(*modes: int) -> dict[str, Any]:
    return {"schema": "pappus/function@1", "library": "k", "kernels": ["leftover"],
            "blueprint": {"buffers": {"out": OUT_WORDS * 8}, "outputs": ["out"],
                          "control_flow": [_launch(m) for m in modes]}}


BIG = 1 << 20
FILL_BIG = function("fill_u8", [{"Ptr": "B"}, {"Sizeof": "B"}, {"Constant": {"type": "u8", "value": 0xA5}}],
                    buffers={"B": BIG}, outputs=["B"], grid=[4], block=[64])
PROBE_BIG = function("count_u8", [{"Ptr": "X"}, {"Sizeof": "X"}, {"Constant": {"type": "u8", "value": 0xA5}},
                                  {"Ptr": "out"}], buffers={"X": 2 * BIG, "out": 16}, outputs=["out"])
PROBE_INPUT = function("count_u8", [{"Ptr": "X"}, {"Sizeof": "X"}, {"Constant": {"type": "u8", "value": 0xA5}},
                                    {"Ptr": "out"}], inputs=["X"], buffers={"out": 16}, outputs=["out"])
FAULT_BIG = function("fill_then_fault", [{"Ptr": "B"}, {"Sizeof": "B"}, {"Constant": {"type": "u8", "value": 0xA5}}],
                     buffers={"B": BIG}, outputs=["B"])
SPIN_BIG = function("fill_then_spin", [{"Ptr": "B"}, {"Sizeof": "B"}, {"Constant": {"type": "u8", "value": 0xA5}}],
                    buffers={"B": BIG}, outputs=["B"])


def _globals(*writes: int) -> dict[str, Any]:
    return {"schema": "pappus/function@1", "library": "k", "kernels": ["globals_rw"],
            "blueprint": {"buffers": {"out": 16}, "outputs": ["out"], "control_flow": [
                {"ExecKernel": {"name": "globals_rw", "args": [{"Constant": {"type": "u64", "value": w}}, {"Ptr": "out"}],
                                "grid": [1], "block": [1]}} for w in writes]}}


@pytest.fixture(scope="module", params=ENGINES)
def rt(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, attacks_lib: Built) -> Any:
    runtime = make_runtime(request.param, tmp_path_factory.mktemp("leftovers"), workers=1, pool_bytes=8 << 20)
    for tenant in ("writer", "reader"):
        runtime.register_library("k", attacks_lib.data, tenant=tenant)
        for name, doc in (("fill", _leftover_fn(0)), ("probe", _leftover_fn(1)), ("control", _leftover_fn(0, 1)),
                          ("fill_big", FILL_BIG), ("probe_big", PROBE_BIG), ("probe_input", PROBE_INPUT),
                          ("fault_big", FAULT_BIG), ("spin_big", SPIN_BIG), ("globals_write", _globals(1)),
                          ("globals_read", _globals(0)), ("globals_control", _globals(1, 0))):
            runtime.register_function(name, doc, tenant=tenant)
    yield runtime
    runtime.close(drain=False, timeout=10)


def counts(out: bytes) -> dict[str, int]:
    v = struct.unpack(f"<{OUT_WORDS}Q", out)
    per = np.array(v[: 4 * THREADS]).reshape(THREADS, 4)
    return {
        "stack_pattern": int(per[:, 0].sum()), "fiber_stack_pattern": int(per[:, 2].sum()),
        "shared_pattern": v[4 * THREADS], "shared_nonzero": v[4 * THREADS + 1],
        "dyn_pattern": v[4 * THREADS + 2], "dyn_nonzero": v[4 * THREADS + 3],
    }


def probe(rt: Any, tenant: str = "reader") -> dict[str, int]:
    count("attack: leftover probes")
    return counts(rt.invoke("probe", {}, tenant=tenant)["out"])


def assert_clean(c: dict[str, int], after: str) -> None:
    leaked = {k: v for k, v in c.items() if v}
    assert not leaked, f"after {after}, the probe read: {leaked}"


def test_positive_control_the_probe_sees_data_within_one_invocation(rt: Any) -> None:
    c = counts(rt.invoke("control", {}, tenant="writer")["out"])
    assert c["stack_pattern"] > 0 and c["fiber_stack_pattern"] > 0, c
    assert c["shared_pattern"] == 1024 and c["dyn_pattern"] == DYN_WORDS, c
    count("attack: leftover probes")


def test_stack_and_shared_memory_do_not_survive_the_invocation(rt: Any) -> None:
    for _ in range(3):
        rt.invoke("fill", {}, tenant="writer")
        assert_clean(probe(rt), "another tenant's fill")
        rt.invoke("fill", {}, tenant="writer")
        assert_clean(probe(rt, "writer"), "the same tenant's fill (same module)")
    rt.invoke("control", {}, tenant="writer")
    assert_clean(probe(rt), "a fill and probe in one invocation")


def test_module_globals_do_not_survive_the_invocation(rt: Any) -> None:
    control = struct.unpack("<2Q", rt.invoke("globals_control", {}, tenant="writer")["out"])
    assert control == (0x5151515151515151, 0x5252525252525252), "positive control: written, then read"
    for tenant in ("writer", "reader"):
        rt.invoke("globals_write", {}, tenant="writer")
        got = struct.unpack("<2Q", rt.invoke("globals_read", {}, tenant=tenant)["out"])
        assert got == (7, 3), f"{tenant} read {got}, not the load-time values"
        count("attack: leftover probes")


def probe_big(rt: Any) -> tuple[int, int]:
    count("attack: leftover probes")
    nonzero, same = struct.unpack("<2Q", rt.invoke("probe_big", {}, tenant="reader")["out"])
    return nonzero, same


def test_positive_control_the_buffer_probe_counts(rt: Any) -> None:
    data = bytes([0xA5]) * 1000 + bytes(24) + bytes([1]) * 7
    assert struct.unpack("<2Q", rt.invoke("probe_input", {"X": data}, tenant="reader")["out"]) == (1007, 1000)


def test_pool_buffers_are_zero_for_the_next_tenant(rt: Any) -> None:
    out = rt.invoke("fill_big", {}, tenant="writer")["B"]
    assert out == bytes([0xA5]) * BIG
    assert probe_big(rt) == (0, 0)


def test_pool_buffers_are_zero_after_the_writer_faulted(rt: Any) -> None:
    with pytest.raises(KernelFault):
        rt.invoke("fault_big", {}, tenant="writer")
    assert probe_big(rt) == (0, 0)


def test_pool_buffers_are_zero_after_the_writer_was_killed_at_its_deadline(rt: Any) -> None:
    with pytest.raises(DeadlineExceeded):
        rt.invoke("spin_big", {}, tenant="writer", deadline=0.5)
    assert probe_big(rt) == (0, 0)
    assert_clean(probe(rt), "a writer killed at its deadline")


# A function whose buffers span no bytes at all (its only input is empty) still runs its
# kernel: nothing of the pool is its own, so nothing of it may be reachable. It writes where
# the next tenant's buffer will be; the next tenant must find that buffer zeroed.
PLANT_PAST_EMPTY = function("write_at", [{"Ptr": "X"}, {"Constant": {"type": "i64", "value": 4096}}],
                            inputs=["X"], outputs=[])


def test_a_function_with_no_pool_bytes_reaches_no_pool_memory(rt: Any) -> None:
    rt.register_function("plant_past_empty", PLANT_PAST_EMPTY, tenant="writer")
    try:
        rt.invoke("plant_past_empty", {"X": b""}, tenant="writer")
    except KernelFault as exc:  # fenced: the write faults
        assert "out_of_bounds" in exc.fields.get("reasons", []), exc
    nonzero, _ = probe_big(rt)
    assert nonzero == 0, "a kernel with an empty pool window left data for the next tenant"


# The fence is page-granular: a kernel can write past its last buffer up to the end of that
# page. Those bytes must not reach the next tenant either.
PLANT_IN_LAST_PAGE = function("write_at", [{"Ptr": "X"}, {"Constant": {"type": "i64", "value": 2000}}],
                              buffers={"X": 1000}, outputs=[])


def test_bytes_past_the_last_buffer_in_its_page_are_zeroed(rt: Any) -> None:
    rt.register_function("plant_in_last_page", PLANT_IN_LAST_PAGE, tenant="writer")
    rt.invoke("plant_in_last_page", {}, tenant="writer")
    nonzero, _ = probe_big(rt)
    assert nonzero == 0, "bytes written past the last buffer, inside its page, reached the next tenant"
