"""Bounded execution: a kernel that never ends is stopped at its deadline, really stopped, and
the engine goes on serving."""

from __future__ import annotations

import time

import pytest

import pappus

from .kit import affine_inputs, launch, leftovers, register_affine, register_reader

TENANT = "looping-tenant"
GRACE_S = 3.0


@pytest.fixture(scope="module")
def looper(harness):
    return harness.function(TENANT, "loop", [launch("spin_writing", [{"Ptr": "X"}, {"Sizeof": "X"}], grid=2,
                                                    block=64)], buffers={"X": 1 << 16}, outputs=["X"])


@pytest.mark.parametrize("deadline", [0.2, 1.0])
def test_deadline_is_kept(harness, looper, deadline):
    t0 = time.monotonic()
    with pytest.raises(pappus.DeadlineExceeded) as info:
        harness.invoke(TENANT, looper, deadline=deadline)
    elapsed = time.monotonic() - t0
    assert info.value.deadline == deadline
    assert elapsed < deadline + GRACE_S, f"took {elapsed:.2f} s for a {deadline} s deadline"


def test_stopped_kernel_stops_writing(harness, looper):
    reader = register_reader(harness, "reader_after_loop")
    for _ in range(3):
        with pytest.raises(pappus.DeadlineExceeded):
            harness.invoke(TENANT, looper, deadline=0.3)
        assert leftovers(harness, reader) == 0


def test_serves_after_deadlines(harness, looper):
    fn = register_affine(harness, "after_loop", "other-tenant")
    for i in range(3):
        with pytest.raises(pappus.DeadlineExceeded):
            harness.invoke(TENANT, looper, deadline=0.2)
        inputs, expected = affine_inputs(i)
        assert harness.invoke("other-tenant", fn, inputs)["out"] == expected
