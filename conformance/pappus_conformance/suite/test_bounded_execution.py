"""Bounded execution: a kernel that never ends is stopped at its deadline, really stopped (by the
backend's own abort), and the engine goes on serving."""

from __future__ import annotations

import time
from concurrent.futures import wait

import pytest

import pappus

from .kit import affine_inputs, launch, leftovers, register_affine, register_reader

TENANT = "looping-tenant"
GRACE_S = 3.0


@pytest.fixture(scope="module")
def looper(harness):
    # The engine starts here: a deadline that passed while it started would never run the kernel.
    harness.rt.engine(harness.engine_name)
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


def test_the_backend_stops_the_kernel_itself(harness, looper):
    """The deadline is kept by the backend's abort, not by the engine's last resort.

    Where a device cannot stop a running kernel (its ``abort`` raises NotImplementedError, or
    returns while the kernel runs on), the engine still settles the invocation at its deadline,
    so its caller cannot tell; the kernel runs on meanwhile, until after a grace the engine takes
    itself out of service (sequential) or kills its worker (multiprocess). That fallback is for
    backends that do not claim ``watchdog``. Here every worker of the engine loops, so the next
    invocation waits for one of them to be free: by then the engine must still be in service,
    its device kept, no worker replaced.
    """
    engine = harness.rt.engine(harness.engine_name)
    respawns = engine.metrics.snapshot()["respawns"]
    fn = register_affine(harness, "after_all_loop", "other-tenant")
    loops = [harness.invoke_async(TENANT, looper, deadline=0.3) for _ in range(getattr(engine, "workers", 1))]
    wait(loops, timeout=60)
    for f in loops:
        assert isinstance(f.exception(timeout=0), pappus.DeadlineExceeded), f.exception(timeout=0)
    inputs, expected = affine_inputs(7)
    assert harness.invoke("other-tenant", fn, inputs)["out"] == expected
    assert engine.healthy, f"the engine went out of service after a deadline: {engine.unhealthy_reason}"
    assert harness.rt.engine(harness.engine_name) is engine, "the engine was replaced after a deadline"
    assert engine.metrics.snapshot()["respawns"] == respawns, \
        "a worker was killed after a deadline: its device did not stop the kernel"
