"""No host escape (backends whose kernels run on the host): kernel code cannot make system
calls, nor touch memory past its buffers; each attempt is stopped and reported, and the engine
serves again."""

from __future__ import annotations

import pytest

import pappus

from .kit import affine_inputs, const, launch, register_affine

TENANT = "escaping-tenant"
ATTEMPTS = ["try_open", "try_socket", "try_fork", "try_exec", "try_mprotect_exec"]
#: Far past the function's buffers, yet inside the harness's 64 MiB pool (whose windows start at
#: its base): a kernel reaches it only where the device does not fence a run to its buffers.
FAR = 16 * 1024 * 1024
FAR_ACCESS = {
    "read": lambda: launch("read_at", [{"Ptr": "X"}, const("u64", FAR), {"Ptr": "out"}], grid=1, block=1),
    "write": lambda: launch("write_at", [{"Ptr": "X"}, const("u64", FAR)], grid=1, block=1),
}


def check_bystander(harness, name: str) -> None:
    honest = register_affine(harness, name, "bystander")
    inputs, expected = affine_inputs(5)
    assert harness.invoke("bystander", honest, inputs)["out"] == expected


@pytest.mark.parametrize("kernel", ATTEMPTS)
def test_attempt_is_stopped(harness, kernel):
    fn = harness.function(TENANT, kernel, [{"name": kernel, "args": [{"Ptr": "out"}], "grid": [1], "block": [1]}],
                          buffers={"out": 8}, outputs=["out"], library="sandbox")
    with pytest.raises(pappus.KernelFault) as info:
        out = harness.invoke(TENANT, fn)
        pytest.fail(f"{kernel} returned normally: {out['out'][:1]!r} (1 = it worked, 2 = it was refused)")
    if isinstance(info.value, pappus.SandboxViolation):
        assert info.value.syscall, "a sandbox violation names the system call"
    check_bystander(harness, f"after_{kernel}")


@pytest.mark.parametrize("access", list(FAR_ACCESS))
def test_memory_past_the_buffers_is_out_of_reach(harness, access):
    fn = harness.function(TENANT, f"{access}_far", [FAR_ACCESS[access]()], buffers={"X": 4096, "out": 8},
                          outputs=["out"])
    with pytest.raises(pappus.KernelFault):
        harness.invoke(TENANT, fn)
        pytest.fail(f"a {access} {FAR} bytes past the kernel's buffer, inside the pool, went through: the run "
                    "is not fenced to its buffers")
    check_bystander(harness, f"after_{access}_far")
