"""Fault containment: a faulting invocation fails alone, with an error naming the cause; other
tenants' invocations complete correctly; the engine serves again within a bounded time; no data
of the faulting tenant is visible afterwards."""

from __future__ import annotations

import time
from concurrent.futures import wait

import pytest

import pappus

from .kit import (
    READER,
    affine_inputs,
    const,
    launch,
    leftovers,
    register_affine,
    register_reader,
    register_writer,
)

FAULTER = "faulty-tenant"
HONEST = "honest-tenant"
RECOVERY_BOUND_S = 10.0

FAULTS = {
    "write-past-pool": lambda: launch("write_at", [{"Ptr": "X0"}, const("u64", 1 << 40)], grid=1, block=1),
    "read-past-pool": lambda: launch("read_at", [{"Ptr": "X0"}, const("u64", 1 << 40), {"Ptr": "X0"}],
                                     grid=1, block=1),
    "null-dereference": lambda: launch("write_null", [const("u64", 0)], grid=1, block=1),
    "trap": lambda: launch("trap_now", [{"Ptr": "X0"}], grid=1, block=1),
}


@pytest.fixture(scope="module")
def honest(harness):
    return register_affine(harness, "honest", HONEST)


def check_honest(harness, honest, seed=0) -> None:
    inputs, expected = affine_inputs(seed)
    assert harness.invoke(HONEST, honest, inputs)["out"] == expected


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_fails_alone_with_cause(harness, honest, fault):
    fn = register_writer(harness, f"fault_{fault.replace('-', '_')}", [4096], then=FAULTS[fault](),
                         tenant=FAULTER)
    with pytest.raises(pappus.KernelFault) as info:
        harness.invoke(FAULTER, fn)
    err = info.value
    assert err.invocation, "the error names the invocation"
    assert str(err), "the error says what happened"
    t0 = time.monotonic()
    check_honest(harness, honest)
    assert time.monotonic() - t0 < RECOVERY_BOUND_S, "the engine must serve again promptly"


def test_others_complete_while_one_faults(harness, honest):
    fn = register_writer(harness, "fault_storm", [4096], then=FAULTS["write-past-pool"](), tenant=FAULTER)
    faults, honest_runs = [], []
    for i in range(12):
        faults.append(harness.invoke_async(FAULTER, fn))
        inputs, expected = affine_inputs(i)
        honest_runs.append((harness.invoke_async(HONEST, honest, inputs), expected))
    wait(faults + [f for f, _ in honest_runs], timeout=180)
    for f in faults:
        assert isinstance(f.exception(), pappus.KernelFault), f.exception()
    for f, expected in honest_runs:
        assert f.result()["out"] == expected, "another tenant's invocation was disturbed by a fault"


def test_no_data_of_faulting_tenant_afterwards(harness):
    reader = register_reader(harness, "reader_after_fault")
    fn = register_writer(harness, "fault_after_secret", [1 << 20], then=FAULTS["write-past-pool"](),
                         tenant=FAULTER)
    for _ in range(4):
        with pytest.raises(pappus.KernelFault):
            harness.invoke(FAULTER, fn)
        assert leftovers(harness, reader, tenant=READER) == 0


@pytest.mark.requires("watchdog")
def test_hang_fails_alone(harness, honest):
    fn = harness.function(FAULTER, "hang", [launch("spin_writing", [{"Ptr": "X"}, {"Sizeof": "X"}], grid=1,
                                                   block=32)], buffers={"X": 4096}, outputs=["X"])
    with pytest.raises(pappus.DeadlineExceeded):
        harness.invoke(FAULTER, fn, deadline=0.5)
    t0 = time.monotonic()
    check_honest(harness, honest, seed=3)
    assert time.monotonic() - t0 < RECOVERY_BOUND_S
