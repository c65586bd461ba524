"""numpy reference for examples/batched: the inference layer over a batch of images."""

from __future__ import annotations

import numpy as np

N = 224


def make_inputs(seed: int = 0, batch: int = 4, n: int = N) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    img = rng.standard_normal((batch, n, n), dtype=np.float32)
    w = rng.standard_normal((5, 5), dtype=np.float32) / 5
    return {"img": img.tobytes(), "W": w.tobytes()}


def reference(inputs: dict[str, bytes], n: int = N) -> dict[str, bytes]:
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("_inference_reference",
                                                  Path(__file__).resolve().parent.parent / "inference" / "reference.py")
    assert spec and spec.loader
    inference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(inference)
    img = np.frombuffer(inputs["img"], dtype=np.float32).reshape(-1, n, n)
    w = np.frombuffer(inputs["W"], dtype=np.float32).reshape(5, 5)
    return {"out": inference.layer(img, w).astype(np.float32).tobytes()}
