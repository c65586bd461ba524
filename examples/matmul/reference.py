"""numpy reference for examples/matmul: B = A x A^T (int64, wrapping like the kernel)."""

from __future__ import annotations

import numpy as np

N = 128


def make_inputs(seed: int = 0, n: int = N) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    a = rng.integers(-1000, 1000, size=(n, n), dtype=np.int64)
    return {"A": a.tobytes()}


def reference(inputs: dict[str, bytes]) -> dict[str, bytes]:
    a = np.frombuffer(inputs["A"], dtype=np.int64)
    n = int(round(a.size ** 0.5))
    a = a.reshape(n, n)
    return {"B": (a @ a.T).astype(np.int64).tobytes()}
