"""core's registration-time checks against signatures read from real cubins and PTX."""

from __future__ import annotations

import pytest

from pappus.config import check_function_against_libraries, parse_function
from pappus.kernels import DeviceLimits
from pappus_cuda.cubin import read_library


def fn(kernel: str, args: list, *, shared: int = 0, library: str = "k", kernels: list | None = None) -> object:
    return parse_function({
        "schema": "pappus/function@1", "library": library, "kernels": kernels or [kernel],
        "blueprint": {"inputs": ["A"], "buffers": {"B": {"Sizeof": "A"}}, "outputs": ["B"],
                      "control_flow": [{"ExecKernel": {"name": kernel, "args": args, "grid": [1], "block": [1],
                                                       "shared_mem_bytes": shared}}]},
    })


def c(dtype: str, value) -> dict:
    return {"Constant": {"type": dtype, "value": value}}


MATMUL = [{"Ptr": "A"}, {"Sizeof": "A"}, {"Ptr": "B"}]


@pytest.fixture(params=[("sm_90",), ("compute_80",)], ids=["cubin", "ptx"])
def libs(request, code_objects):
    t = request.param
    return {"k": read_library(code_objects.get("clean", *t)), "m": read_library(code_objects.get("malloc", *t)),
            "p": read_library(code_objects.get("printf", *t)), "x": read_library(code_objects.get("mixed", *t))}


def errors(cfg, libs, **kw):
    return [str(e) for e in check_function_against_libraries(cfg, libs, **kw)]


def test_right_configs_are_accepted(libs):
    assert errors(fn("matmul_at_i64", MATMUL), libs) == []
    assert errors(fn("matmul_tiled_f32", [{"Ptr": "A"}, {"Ptr": "A"}, {"Ptr": "B"}, c("i32", 16)]), libs) == []
    assert errors(fn("dyn_sum", [{"Ptr": "A"}, {"Ptr": "B"}, c("u32", 32)], shared=128), libs) == []
    assert errors(fn("axpy", [c("f32", 2.0), {"Ptr": "A"}, {"Ptr": "B"}, c("u32", 4)], library="x"), libs) == []
    assert errors(fn("noop", []), libs) == []


def test_wrong_argument_counts(libs):
    (e,) = errors(fn("matmul_at_i64", MATMUL[:2]), libs)
    assert "takes 3 arguments, 2 given" in e
    (e,) = errors(fn("noop", [c("u8", 1)]), libs)
    assert "takes 0 arguments, 1 given" in e


def test_wrong_argument_sizes(libs):
    (e,) = errors(fn("matmul_at_i64", [{"Ptr": "A"}, c("u32", 64), {"Ptr": "B"}]), libs)
    assert "args[1]" in e and "u32 is 4 bytes" in e
    (e,) = errors(fn("matmul_tiled_f32", [{"Ptr": "A"}, {"Ptr": "A"}, {"Ptr": "B"}, {"Sizeof": "A"}]), libs)
    assert "args[3]" in e and "Sizeof passes a u64" in e
    # the by-value 24-byte struct and the char
    (e1, e2) = errors(fn("scalars", [{"Ptr": "B"}, c("i32", 1), c("f32", 1.0), c("f64", 1.0), c("i64", 1),
                                     c("i32", 1)]), libs)
    assert "args[4]" in e1 and "24 bytes" in e1
    assert "args[5]" in e2 and "expects 1 bytes" in e2


def test_ptx_knows_float_parameters(code_objects):
    libs = {"k": read_library(code_objects.get("clean", "compute_80"))}
    args = [{"Ptr": "B"}, c("i32", 1), c("i32", 1), c("f64", 1.0), c("i64", 1), c("u8", 1)]
    found = errors(fn("scalars", args), libs)
    assert any("args[2]" in e and "integer" in e for e in found), found


def test_heap_and_hostcall_kernels_are_refused(libs):
    (e,) = errors(fn("uses_malloc", [{"Ptr": "B"}, {"Sizeof": "B"}], library="m"), libs)
    assert "calls device malloc" in e and "heap limit is 0" in e
    (e,) = errors(fn("uses_printf", [{"Ptr": "A"}], library="p"), libs)
    assert "host calls" in e
    (e,) = errors(fn("grab", [{"Ptr": "B"}, {"Sizeof": "B"}], library="x"), libs)
    assert "malloc" in e
    # a heap limit above 0 is the operator's explicit choice
    assert errors(fn("uses_malloc", [{"Ptr": "B"}, {"Sizeof": "B"}], library="m"), libs, heap_limit=1 << 20) == []


def test_unknown_kernel_and_shared_memory_limits(libs):
    (e,) = errors(fn("nope", []), libs)
    assert "kernel 'nope' is not in library 'k'" in e
    (e,) = errors(fn("block_sum", [{"Ptr": "A"}, {"Ptr": "B"}], shared=48 * 1024), libs,
                  device=DeviceLimits(max_shared_bytes=48 * 1024))
    assert "1024 static bytes" in e
