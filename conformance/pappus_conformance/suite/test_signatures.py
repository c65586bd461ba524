"""Signatures: a launch that does not fit the kernel's real signature is refused at registration.

The backend's driver reads each kernel's parameters from the library itself (count and sizes,
each parameter's own: an 8-byte argument does not fit a 4-byte parameter); a function whose
launches pass the wrong number of arguments, an argument of the wrong size, or name a kernel the
library does not have is refused with every such problem at once, each at its field, and is never
stored, so nothing of it can run. A launch that fits registers and runs, and every argument
arrives bit-exact: each width and kind, at the offset the kernel's ABI gives it (a backend that
builds an argument buffer itself must follow the code object's offsets, padding included). A
kind the driver reports is the parameter's true kind, or "bytes" where the format does not say.
"""

from __future__ import annotations

import struct

import pytest

import pappus
from pappus.kernels import ParamKind

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


#: echo_scalars(uint8_t* out, i8, u16, i32, f32, u64, f64, i16, u8, u32): each scalar's value,
#: its dtype, and the kind the kernel declares it with
ECHO_SCALARS = [("i8", -7), ("u16", 0xBEEF), ("i32", -0x12345678), ("f32", -1.5e-3), ("u64", 0xF0E1D2C3B4A59687),
                ("f64", 6.02214076e23), ("i16", -0x1234), ("u8", 0xA5)]
ECHO_VALUE = 0xC0FFEE11  # the last argument, a u32 read from an input at run time (Value)
ECHO_FORMAT = "<bHifQdhBI"
_KIND_OF = {"i": ParamKind.INT, "u": ParamKind.UINT, "f": ParamKind.FLOAT}


def test_scalars_of_every_width_and_kind_arrive_bit_exact(harness):
    args = [{"Ptr": "out"}, *(const(dtype, value) for dtype, value in ECHO_SCALARS),
            {"Value": {"type": "u32", "value": {"FromInput": {"input": "cfg", "index": 0, "type": "u32"}}}}]
    size = struct.calcsize(ECHO_FORMAT)
    fn = harness.function(TENANT, "echo", [launch("echo_scalars", args, grid=1, block=1)],
                          inputs=[{"name": "cfg", "size": 4}], buffers={"out": size}, outputs=["out"])
    expected = struct.pack(ECHO_FORMAT, *(value for _, value in ECHO_SCALARS), ECHO_VALUE)
    got = harness.invoke(TENANT, fn, {"cfg": struct.pack("<I", ECHO_VALUE)})["out"]
    if got != expected:
        names = [dtype for dtype, _ in ECHO_SCALARS] + ["u32 (Value)"]
        received = struct.unpack(ECHO_FORMAT, got)
        wrong = [f"args[{i + 1}] {name}: sent {sent!r}, kernel got {seen!r}"
                 for i, (name, sent, seen) in enumerate(zip(names, struct.unpack(ECHO_FORMAT, expected), received,
                                                            strict=True)) if sent != seen]
        pytest.fail("arguments arrived changed: " + "; ".join(wrong))


def test_each_reported_kind_is_the_true_one_or_unknown(pappus_toolchain, suite_libraries):
    """A wrong kind would let a launch pass a value the kernel reads as something else (a
    constant where it takes a pointer, an integer's bits as a float) or refuse a right one.
    Static: it runs where the backend's device is not (a GPU backend's CI without a GPU)."""
    info = pappus_toolchain.driver.inspect_library(suite_libraries["suite"].read_bytes())
    kernel = info.kernel("echo_scalars")
    assert kernel is not None, f"echo_scalars is not in the suite library (it has {sorted(info.kernels)})"
    declared = [(8, ParamKind.POINTER)] + [(struct.calcsize("<" + dtype_format), _KIND_OF[dtype[0]])
                                           for (dtype, _), dtype_format in zip([*ECHO_SCALARS, ("u32", 0)],
                                                                               ECHO_FORMAT[1:], strict=True)]
    reported = [(p.size, p.kind) for p in kernel.params]
    assert [size for size, _ in reported] == [size for size, _ in declared], reported
    wrong = [f"params[{i}]: declared {kind.value}, reported {seen.value}"
             for i, ((_, kind), (_, seen)) in enumerate(zip(declared, reported, strict=True))
             if seen not in (kind, ParamKind.BYTES)]
    assert not wrong, wrong
    offsets = [p.offset for p in kernel.params]
    if None not in offsets:  # where the format records offsets, no two parameters overlap
        ends = [off + size for off, (size, _) in zip(offsets, reported, strict=True)]
        assert all(offsets[i] >= ends[i - 1] for i in range(1, len(offsets))), list(zip(offsets, ends, strict=True))
