"""Long runs (marked slow): many tenants interleaving clean runs, faults, violations and traps
on one device; every clean tenant must see zeros and its own correct results."""

from __future__ import annotations

import random

import pytest

from pappus.errors import KernelFault

from ..conftest import open_fds
from .conftest import Builder, Built, Harness, single


@pytest.mark.slow
def test_a_thousand_mixed_tenants(build: Builder, sandbox_lib: Built) -> None:
    rng = random.Random(7)
    h = Harness()
    try:
        fds = None
        for i in range(1000):
            kind = rng.choice(["clean", "clean", "clean", "oob", "violation", "trap", "stray"])
            size = rng.choice([64, 4096, 65536, 300_000])
            if kind == "clean":
                value = rng.randrange(1, 256)
                cfg = {"schema": "pappus/function@1", "library": "k", "kernels": ["copy_bytes", "fill_u8"],
                       "blueprint": {"inputs": [], "buffers": {"S": size, "X": size, "Y": size}, "outputs": ["X", "Y"],
                                     "control_flow": [
                                         {"ExecKernel": {"name": "copy_bytes", "args": [{"Ptr": "X"}, {"Ptr": "S"}, {"Sizeof": "S"}],
                                                         "grid": [1], "block": [64]}},
                                         {"ExecKernel": {"name": "fill_u8", "args": [{"Ptr": "Y"}, {"Sizeof": "Y"},
                                                                                     {"Constant": {"type": "u8", "value": value}}],
                                                         "grid": [1], "block": [64]}}]}}
                out = h.run(cfg, {"k": sandbox_lib}, {})
                assert out["X"] == bytes(size), f"invocation {i} saw leftovers"
                assert out["Y"] == bytes([value]) * size
            elif kind == "stray":  # a write far past its buffer, but inside the pool: must fault
                with pytest.raises(KernelFault):
                    h.run(single("write_at", [{"Ptr": "out"}, {"Constant": {"type": "i64", "value": size * 3 + 8192}}],
                                 buffers={"out": size}), {"k": sandbox_lib}, {})
            else:
                kernel, args = {"oob": ("write_at", [{"Ptr": "out"}, {"Constant": {"type": "i64", "value": 1 << 26}}]),
                                "violation": ("do_socket", [{"Ptr": "out"}]),
                                "trap": ("trap", [{"Constant": {"type": "i32", "value": rng.randrange(3)}}])}[kind]
                with pytest.raises(KernelFault):
                    h.run(single(kernel, args, buffers={"out": size}), {"k": sandbox_lib}, {})
            if i == 10:
                fds = open_fds()
        assert open_fds() == fds
    finally:
        h.close()
