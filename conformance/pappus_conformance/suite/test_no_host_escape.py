"""No host escape (backends whose kernels run on the host): kernel code cannot make system
calls; each attempt is stopped and reported, and the engine serves again."""

from __future__ import annotations

import pytest

import pappus

from .kit import affine_inputs, register_affine

TENANT = "escaping-tenant"
ATTEMPTS = ["try_open", "try_socket", "try_fork", "try_exec", "try_mprotect_exec"]


@pytest.mark.parametrize("kernel", ATTEMPTS)
def test_attempt_is_stopped(harness, kernel):
    fn = harness.function(TENANT, kernel, [{"name": kernel, "args": [{"Ptr": "out"}], "grid": [1], "block": [1]}],
                          buffers={"out": 8}, outputs=["out"], library="sandbox")
    with pytest.raises(pappus.KernelFault) as info:
        out = harness.invoke(TENANT, fn)
        pytest.fail(f"{kernel} returned normally: {out['out'][:1]!r} (1 = it worked, 2 = it was refused)")
    if isinstance(info.value, pappus.SandboxViolation):
        assert info.value.syscall, "a sandbox violation names the system call"
    honest = register_affine(harness, f"after_{kernel}", "bystander")
    inputs, expected = affine_inputs(5)
    assert harness.invoke("bystander", honest, inputs)["out"] == expected
