"""Signatures: a launch that does not fit the kernel's real signature is refused at registration.

The backend's driver reads each kernel's parameters from the library itself (count and sizes,
each parameter's own: an 8-byte argument does not fit a 4-byte parameter); a function whose
launches pass the wrong number of arguments, an argument of the wrong size, or name a kernel the
library does not have is refused with every such problem at once, each at its field, and is never
stored, so nothing of it can run. A launch that fits registers and runs.
"""

from __future__ import annotations

import pytest

import pappus

from .kit import SECRET, affine_inputs, const, launch, register_affine

TENANT = "signatures-tenant"
BUFFERS = {"out": 512 * 8}
INPUTS = [{"name": "a", "size": 512 * 8}]


def affine_launch(args: list) -> dict:
    return launch("affine", args)


def refused(h, name: str, launches: list[dict]) -> list[tuple[str, str]]:
    """Register ``launches`` as function ``name``; the (path, message) of each problem reported."""
    with pytest.raises(pappus.ValidationError) as info:
        h.function(TENANT, name, launches, inputs=INPUTS, buffers=BUFFERS, outputs=["out"])
    assert name not in {f.name for f in h.rt.list_functions(tenant=TENANT)}, "a refused function was stored"
    with pytest.raises(pappus.NotFound):
        h.invoke(TENANT, name, affine_inputs(1)[0])
    return [(e.path, e.message) for e in info.value.errors]


def test_a_fitting_launch_registers_and_runs(harness):
    fn = register_affine(harness, "fits", TENANT)
    inputs, expected = affine_inputs(2)
    assert harness.invoke(TENANT, fn, inputs)["out"] == expected


def test_too_few_and_too_many_arguments_are_refused(harness):
    full = [{"Ptr": "a"}, {"Ptr": "out"}, const("u64", 512), const("i64", 3)]
    for name, args in (("too_few", full[:3]), ("too_many", [*full, const("i64", 0)])):
        problems = refused(harness, name, [affine_launch(args)])
        assert [p for p, _ in problems] == ["blueprint.control_flow[0].ExecKernel.args"], problems
        assert "4" in problems[0][1] and str(len(args)) in problems[0][1], problems


def test_an_argument_of_the_wrong_size_is_refused_at_its_index(harness):
    # affine(const int64_t* a, int64_t* out, size_t count, int64_t k): count is 8 bytes, k too
    args = [{"Ptr": "a"}, {"Ptr": "out"}, const("u32", 512), const("i16", 3)]
    problems = refused(harness, "narrow", [affine_launch(args)])
    assert sorted(p for p, _ in problems) == ["blueprint.control_flow[0].ExecKernel.args[2]",
                                              "blueprint.control_flow[0].ExecKernel.args[3]"], problems


def test_a_narrow_parameter_takes_exactly_its_width(harness):
    # fill_secret(uint8_t* p, size_t n, uint32_t pattern): the pattern is 4 bytes, where a driver
    # that sizes every parameter as an 8-byte word would take a u64 and refuse the u32
    def fill(pattern: dict) -> dict:
        return launch("fill_secret", [{"Ptr": "out"}, {"Sizeof": "out"}, pattern])

    fn = harness.function(TENANT, "fill_u32", [fill(const("u32", SECRET))], buffers={"out": 64}, outputs=["out"])
    assert harness.invoke(TENANT, fn)["out"] == bytes((SECRET >> 8 * (i & 3) & 0xFF) | 1 for i in range(64))
    for name, dtype in (("wide", "u64"), ("narrow", "u8")):
        problems = refused(harness, f"fill_{name}", [fill(const(dtype, 7))])
        assert [p for p, _ in problems] == ["blueprint.control_flow[0].ExecKernel.args[2]"], problems
        assert dtype in problems[0][1], problems


def test_a_kernel_the_library_lacks_is_refused(harness):
    problems = refused(harness, "missing", [launch("no_such_kernel", [{"Ptr": "out"}])])
    assert any("no_such_kernel" in message for _, message in problems), problems


def test_every_mismatch_of_a_function_is_reported_at_once(harness):
    good = [{"Ptr": "a"}, {"Ptr": "out"}, const("u64", 512), const("i64", 3)]
    launches = [affine_launch(good), affine_launch(good[:2]), affine_launch([*good[:3], const("u8", 1)])]
    problems = refused(harness, "twice_wrong", launches)
    assert sorted(p for p, _ in problems) == ["blueprint.control_flow[1].ExecKernel.args",
                                              "blueprint.control_flow[2].ExecKernel.args[3]"], problems
