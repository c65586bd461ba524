"""No host escape (backends whose kernels run on the host): kernel code cannot make system
calls, nor touch memory past its buffers; each attempt is stopped and reported, and the engine
serves again."""

from __future__ import annotations

import struct

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


OWNER, PROBER = "library-owner", "library-prober"
LIBRARY_SECRET = 0x5EC2E7A55EC2E7A5


def test_another_tenants_library_is_out_of_reach(harness):
    """A kernel given the address of another tenant's library data (a constant in its code
    object, which outlives every invocation in the cached module) reads nothing there."""
    owner = harness.function(OWNER, "where_is_secret", [launch("where_is_secret", [{"Ptr": "out"}], grid=1, block=1)],
                             buffers={"out": 16}, outputs=["out"], library="sandbox")
    address, secret = struct.unpack("<QQ", harness.invoke(OWNER, owner)["out"])
    assert secret == LIBRARY_SECRET, f"the owner's kernel read {secret:#x} from its own library"
    prober = harness.function(PROBER, f"read_{address:x}", [launch("read_address", [const("u64", address), {"Ptr": "out"}],
                                                                   grid=1, block=1)],
                              buffers={"out": 8}, outputs=["out"])
    try:
        (found,) = struct.unpack("<Q", harness.invoke(PROBER, prober)["out"])
    except pappus.KernelFault:
        found = None
    assert found != LIBRARY_SECRET, (f"another tenant's kernel read the owner's library data at {address:#x}: "
                                     "a run reaches every loaded library, not only its function's")
    assert harness.invoke(OWNER, owner)["out"][8:] == struct.pack("<Q", LIBRARY_SECRET)
    check_bystander(harness, "after_library_probe")
