"""Malloc-heap limits: device malloc gets no memory by default, exactly the configured heap
otherwise, kernels that need a heap are refused at registration where the backend can see it,
and the engine survives every case."""

from __future__ import annotations

import struct

import pytest

import pappus

from .kit import affine_inputs, const, launch, register_affine

TENANT = "heap-tenant"


def probe(h, name: str, nbytes: int) -> str:
    return h.function(TENANT, name, [launch("malloc_probe", [const("u64", nbytes), {"Ptr": "ok"}], grid=1, block=1)],
                      buffers={"ok": 8}, outputs=["ok"], library="heap")


def got_memory(h, name: str) -> bool:
    (flag,) = struct.unpack("<Q", h.invoke(TENANT, name)["ok"])
    assert flag in (0, 1), f"malloc probe wrote {flag}"
    return flag == 1


def engine_still_serves(h) -> None:
    fn = register_affine(h, "honest", TENANT)
    inputs, expected = affine_inputs(1)
    assert h.invoke(TENANT, fn, inputs)["out"] == expected


def test_default_limit_gives_no_memory(make_harness):
    h = make_harness(heap_limit=0)
    try:
        fn = probe(h, "probe_small", 64)
    except pappus.ValidationError as exc:
        text = str(exc).lower()
        assert "malloc" in text or "heap" in text, exc
    else:  # the backend could not see the malloc at registration: it must fail cleanly at run time
        try:
            assert not got_memory(h, fn), "device malloc returned memory with a heap limit of 0"
        except pappus.KernelFault:
            pass  # a clean, typed failure is acceptable; a crashed engine is not
    engine_still_serves(h)


def test_small_limit_is_enforced(make_harness):
    limit = 256 * 1024
    h = make_harness(heap_limit=limit)
    inside = probe(h, "probe_inside", 4096)
    outside = probe(h, "probe_outside", 4 * limit)
    for _ in range(3):
        assert got_memory(h, inside), f"malloc(4096) failed under a {limit}-byte heap"
        assert not got_memory(h, outside), f"malloc({4 * limit}) succeeded under a {limit}-byte heap"
    engine_still_serves(h)


def test_heap_is_per_invocation(make_harness):
    """Each invocation starts with the whole heap: memory one took is not lost to the next."""
    limit = 256 * 1024
    h = make_harness(heap_limit=limit)
    half = probe(h, "probe_half", limit // 2)
    assert all(got_memory(h, half) for _ in range(6))


@pytest.mark.parametrize("nbytes", [0, 1])
def test_tiny_allocations_do_not_crash(make_harness, nbytes):
    h = make_harness(heap_limit=0)
    try:
        fn = probe(h, f"probe_{nbytes}", nbytes)
        got_memory(h, fn)
    except (pappus.ValidationError, pappus.KernelFault):
        pass
    engine_still_serves(h)
