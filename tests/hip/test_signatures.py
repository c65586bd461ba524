"""Core's registration checks against what the reader finds in real code objects."""

from __future__ import annotations

import copy

import pytest

from pappus.config.parser import parse_function
from pappus.config.signatures import check_function_against_libraries
from pappus_hip.codeobject import read_library

MATMUL = {
    "schema": "pappus/function@1",
    "library": "lib",
    "kernels": ["matmul_at_i64"],
    "blueprint": {
        "inputs": ["A"],
        "buffers": {"A": {"Sizeof": "A"}, "B": {"Sizeof": "A"}},
        "outputs": ["B"],
        "control_flow": [
            {"ExecKernel": {"name": "matmul_at_i64", "args": [{"Ptr": "A"}, {"Sizeof": "A"}, {"Ptr": "B"}],
                            "grid": [8, 8, 1], "block": [16, 16, 1], "shared_mem_bytes": 0}},
        ],
    },
}


def check(doc, info, **kw):
    return [str(e) for e in check_function_against_libraries(parse_function(doc), {"lib": info}, **kw)]


def with_launch(name, args, block=(16, 16, 1)):
    doc = copy.deepcopy(MATMUL)
    doc["kernels"] = [name]
    doc["blueprint"]["control_flow"][0]["ExecKernel"].update(name=name, args=args, block=list(block))
    return doc


@pytest.mark.parametrize("version,form", [(4, "bundle"), (5, "raw-gfx90a")])
def test_matmul_config_is_accepted(code_objects, version, form):
    info = read_library(code_objects.get("clean", version, form), "gfx90a")
    assert check(MATMUL, info) == []


def test_wrong_argument_count_and_sizes_are_rejected(code_objects):
    info = read_library(code_objects.get("clean", 5, "bundle"), "gfx90a")
    errors = check(with_launch("matmul_at_i64", [{"Ptr": "A"}, {"Ptr": "B"}]), info)
    assert errors == ["blueprint.control_flow[0].ExecKernel.args: kernel 'matmul_at_i64' takes 3 arguments, 2 given"]
    errors = check(with_launch("matmul_at_i64", [{"Ptr": "A"}, {"Constant": {"type": "u32", "value": 4}},
                                                 {"Ptr": "B"}]), info)
    assert errors == ["blueprint.control_flow[0].ExecKernel.args[1]: u32 is 4 bytes but the kernel expects 8 bytes"]
    errors = check(with_launch("matmul_at_i64", [{"Sizeof": "A"}, {"Sizeof": "A"}, {"Ptr": "B"}]), info)
    assert errors == ["blueprint.control_flow[0].ExecKernel.args[0]: Sizeof passes a u64 but the kernel expects a pointer"]


def test_scalar_and_struct_arguments(code_objects):
    info = read_library(code_objects.get("clean", 4, "raw-gfx90a"), "gfx90a")
    good = [{"Ptr": "B"}, {"Constant": {"type": "i32", "value": 1}}, {"Constant": {"type": "f32", "value": 2.5}},
            {"Constant": {"type": "u64", "value": 0}}, {"Constant": {"type": "i8", "value": 3}},
            {"Constant": {"type": "f64", "value": 1.0}}]
    errors = check(with_launch("scalars", good, block=(1, 1, 1)), info)
    # the 16-byte struct cannot be spelled as one constant: exactly that argument is refused
    assert errors == ["blueprint.control_flow[0].ExecKernel.args[3]: u64 is 8 bytes but the kernel expects 16 bytes"]


def test_block_over_the_kernel_maximum(code_objects):
    info = read_library(code_objects.get("clean", 4, "raw-gfx90a"), "gfx90a")
    args = [{"Ptr": "B"}, {"Constant": {"type": "i32", "value": 7}}]
    assert check(with_launch("bounded_fill", args, block=(256, 1, 1)), info) == []
    errors = check(with_launch("bounded_fill", args, block=(32, 16, 1)), info)
    assert errors == ["blueprint.control_flow[0].ExecKernel.block: 512 threads per block exceed the "
                      "kernel's maximum of 256"]


@pytest.mark.parametrize("version,form", [(4, "bundle"), (4, "raw-gfx90a"), (5, "bundle"), (5, "raw-gfx90a")])
def test_malloc_and_printf_kernels_are_refused(code_objects, version, form):
    mal = read_library(code_objects.get("malloc", version, form), "gfx90a")
    doc = with_launch("uses_malloc", [{"Ptr": "B"}, {"Sizeof": "A"}], block=(1, 1, 1))
    assert check(doc, mal) == ["kernels[0]: kernel 'uses_malloc' calls device malloc, but the malloc heap "
                               "limit is 0; rebuild it without malloc or raise the limit"]
    assert check(doc, mal, heap_limit=1 << 20) == []  # an operator may raise the limit
    pf = read_library(code_objects.get("printf", version, form), "gfx90a")
    errors = check(with_launch("uses_printf", [{"Ptr": "A"}], block=(1, 1, 1)), pf)
    assert errors == ["kernels[0]: kernel 'uses_printf' uses host calls (printf or similar), which pappus does not allow"]
