"""Configs and libraries for core tests (host backend: trusted numpy kernels, no compiler)."""

from __future__ import annotations

import copy
from typing import Any

from pappus.devices.host import host_library

HOST_LIB = host_library(["matmul_at_i64", "add_i64", "fill_u8", "copy_bytes", "sleep_ms", "write_at", "scale_f32"])


def matmul_config(repeat: Any = 3, library: str = "m") -> dict[str, Any]:
    """B = A A^T, then B += 2 ``repeat`` times."""
    return {
        "schema": "pappus/function@1",
        "library": library,
        "kernels": ["matmul_at_i64", "add_i64"],
        "blueprint": {
            "inputs": ["A"],
            "buffers": {"B": {"Sizeof": "A"}},
            "outputs": ["B"],
            "control_flow": [
                {"ExecKernel": {"name": "matmul_at_i64", "args": [{"Ptr": "A"}, {"Sizeof": "A"}, {"Ptr": "B"}],
                                "grid": [8, 8, 1], "block": [16, 16, 1]}},
                {"Repeat": {"times": repeat, "body": [
                    {"ExecKernel": {"name": "add_i64",
                                    "args": [{"Ptr": "B"}, {"Sizeof": "B"}, {"Constant": {"type": "i64", "value": 2}}],
                                    "grid": [1], "block": [1]}}]}},
            ],
        },
    }


def single_kernel(kernel: str, args: list[Any], buffers: dict[str, Any] | None = None,
                  inputs: list[Any] | None = None, outputs: list[str] | None = None) -> dict[str, Any]:
    return {
        "schema": "pappus/function@1",
        "library": "m",
        "kernels": [kernel],
        "blueprint": {
            "inputs": inputs or [],
            "buffers": buffers if buffers is not None else {"X": 64},
            "outputs": outputs if outputs is not None else ["X"],
            "control_flow": [{"ExecKernel": {"name": kernel, "args": args, "grid": [1], "block": [1]}}],
        },
    }


def sleep_config(ms: int) -> dict[str, Any]:
    return single_kernel("sleep_ms", [{"Constant": {"type": "u64", "value": ms}}])


def fault_config(address: int = 8) -> dict[str, Any]:
    return single_kernel("write_at", [{"Constant": {"type": "u64", "value": address}}])


def fill_config(size: int = 4096, value: int = 0xAB) -> dict[str, Any]:
    """Reads nothing, fills X: used to check that later invocations see zeros."""
    return single_kernel("fill_u8", [{"Ptr": "X"}, {"Sizeof": "X"}, {"Constant": {"type": "u8", "value": value}}],
                         buffers={"X": size})


def copy_config(size: int = 4096) -> dict[str, Any]:
    """Copies whatever is in scratch buffer S (never written) into output X: leftovers would show."""
    return single_kernel("copy_bytes", [{"Ptr": "X"}, {"Ptr": "S"}, {"Sizeof": "S"}],
                         buffers={"S": size, "X": size})


def mutate(doc: dict[str, Any], fn: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    fn(out)
    return out
