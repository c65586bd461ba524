"""The matmul function of tests/cuda/kernels/clean.hip, and its run through the pool and the
interpreter on an open CudaDevice: shared by the tests that drive a device through Python fakes
of the bindings, through the real bindings against a stub driver, and on a GPU."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from pappus.config import check_function_against_libraries, parse_function
from pappus.interfaces import LibraryImage
from pappus.interpreter import run_invocation
from pappus.plan import Plan
from pappus.pool import BufferPool
from pappus_cuda.cubin import read_library


def matmul_doc(kernel: str = "matmul_at_i64") -> dict[str, Any]:
    return {
        "schema": "pappus/function@1", "library": "m", "kernels": [kernel],
        "blueprint": {"inputs": ["A"], "buffers": {"B": {"Sizeof": "A"}}, "outputs": ["B"],
                      "control_flow": [{"ExecKernel": {"name": kernel,
                                                       "args": [{"Ptr": "A"}, {"Sizeof": "A"}, {"Ptr": "B"}],
                                                       "grid": [8, 8, 1], "block": [16, 16, 1]}}]},
    }


def check_matmul_through_the_interpreter(dev: Any, info: Any, data: bytes) -> None:
    """B = A A^T of ``data`` (clean.hip for sm_90) on ``dev``, opened as ``info``: the outputs
    match numpy, the pool is released after every invocation and reads zero afterwards."""
    pool = BufferPool(dev, dev.reserve(1 << 20), 1 << 20, scrub_before_use=True)
    lib = read_library(data, "sm_90")
    cfg = parse_function(matmul_doc())
    assert check_function_against_libraries(cfg, {"m": lib}) == []
    module = dev.load_module(LibraryImage(hashlib.sha256(data).hexdigest(), data))
    handles = {"matmul_at_i64": dev.get_kernel(module, "matmul_at_i64")}
    plan = Plan(cfg, {k: v.params for k, v in lib.kernels.items()}, device_limits=info.limits)
    rng = np.random.default_rng(1)
    for n in (16, 32):
        a = rng.integers(-100, 100, size=(n, n), dtype=np.int64)
        out = run_invocation(dev, pool, plan, {"A": a.tobytes()}, handles)
        assert np.array_equal(np.frombuffer(out["B"], dtype=np.int64).reshape(n, n), a @ a.T)
        assert pool.top == 0  # released (zeroed) after every invocation
    rest = bytearray(1 << 14)
    dev.read(dev.base, memoryview(rest))
    assert rest == bytes(len(rest))
