"""numpy reference for examples/inference: conv5x5 (zero padding) -> ReLU -> 2x2 max-pool.

Every repetition recomputes the layer from the same input, so the output of N repetitions is
the output of one. Accumulation follows the kernel's order in float32.
"""

from __future__ import annotations

import struct

import numpy as np

N = 224


def make_inputs(seed: int = 0, repeat: int = 1, n: int = N, with_cfg: bool = True) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    img = rng.standard_normal((n, n), dtype=np.float32)
    w = rng.standard_normal((5, 5), dtype=np.float32) / 5
    inputs = {"img": img.tobytes(), "W": w.tobytes()}
    if with_cfg:
        inputs["cfg"] = struct.pack("<Q", repeat)
    return inputs


def layer(img: np.ndarray, w: np.ndarray) -> np.ndarray:
    n = img.shape[-1]
    pad = np.zeros(img.shape[:-2] + (n + 4, n + 4), dtype=np.float32)
    pad[..., 2:-2, 2:-2] = img
    acc = np.zeros(img.shape, dtype=np.float32)
    for i in range(5):
        for j in range(5):
            acc += pad[..., i:i + n, j:j + n] * w[i, j]
    acc = np.maximum(acc, np.float32(0))
    m = n // 2
    blocks = acc[..., :2 * m, :2 * m].reshape(acc.shape[:-2] + (m, 2, m, 2))
    return blocks.max(axis=(-3, -1))


def reference(inputs: dict[str, bytes], n: int = N) -> dict[str, bytes]:
    img = np.frombuffer(inputs["img"], dtype=np.float32).reshape(-1, n, n)
    w = np.frombuffer(inputs["W"], dtype=np.float32).reshape(5, 5)
    out = layer(img, w)
    return {"out": out.astype(np.float32).tobytes()}
