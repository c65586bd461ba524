"""The thesis workloads in examples/: built from their HIP source, run in the sandbox, checked
against their numpy references (exact for integers, a tolerance for float32)."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from .conftest import EXAMPLES, Builder, Harness, load_json


def reference_module(example: str) -> ModuleType:
    path = EXAMPLES / example / "reference.py"
    spec = importlib.util.spec_from_file_location(f"_ref_{example}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def libs(build: Builder) -> dict[str, object]:
    return {name: build(EXAMPLES / name / f"{name}.hip") for name in ("matmul", "inference", "batched")}


@pytest.mark.parametrize("config", ["matmul.json", "matmul_tiled.json"])
def test_matmul_matches_numpy(harness: Harness, libs: dict[str, object], config: str) -> None:
    ref = reference_module("matmul")
    for seed in (0, 1):
        inputs = ref.make_inputs(seed)
        out = harness.run(load_json(EXAMPLES / "matmul" / config), {"matmul": libs["matmul"]}, inputs)
        assert out["B"] == ref.reference(inputs)["B"]


@pytest.mark.parametrize("config", ["matmul.json", "matmul_tiled.json"])
@pytest.mark.parametrize("n", [1, 64, 200])
def test_matmul_other_sizes_follow_sizeof(harness: Harness, libs: dict[str, object], config: str, n: int) -> None:
    """The kernels derive n from Sizeof(A) and stride over the config's fixed 128 x 128 grid: a
    smaller and a larger matrix (not a multiple of the 16 x 16 tile) come out whole."""
    ref = reference_module("matmul")
    inputs = ref.make_inputs(3, n=n)
    out = harness.run(load_json(EXAMPLES / "matmul" / config), {"matmul": libs["matmul"]}, inputs)
    assert out["B"] == ref.reference(inputs)["B"]


@pytest.mark.parametrize("repeat", [1, 3])
def test_inference_matches_numpy(harness: Harness, libs: dict[str, object], repeat: int) -> None:
    ref = reference_module("inference")
    inputs = ref.make_inputs(seed=repeat, repeat=repeat)
    out = harness.run(load_json(EXAMPLES / "inference" / "inference.json"), {"inference": libs["inference"]}, inputs)
    got = np.frombuffer(out["out"], dtype=np.float32)
    want = np.frombuffer(ref.reference(inputs)["out"], dtype=np.float32)
    assert got.shape == (112 * 112,)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_inference_repeat_count_is_read_from_the_input(harness: Harness, libs: dict[str, object]) -> None:
    """FromInput drives the Repeat: cfg = 0 launches nothing, so the output stays zero."""
    ref = reference_module("inference")
    inputs = ref.make_inputs(seed=5, repeat=0)
    out = harness.run(load_json(EXAMPLES / "inference" / "inference.json"), {"inference": libs["inference"]}, inputs)
    assert not any(out["out"])
    inputs["cfg"] = struct.pack("<Q", 2)
    out = harness.run(load_json(EXAMPLES / "inference" / "inference.json"), {"inference": libs["inference"]}, inputs)
    assert any(out["out"])


def test_inference_fixed_repetitions(harness: Harness, libs: dict[str, object]) -> None:
    ref = reference_module("inference")
    inputs = ref.make_inputs(seed=7, with_cfg=False)
    out = harness.run(load_json(EXAMPLES / "inference" / "inference_fixed.json"), {"inference": libs["inference"]},
                      inputs)
    np.testing.assert_allclose(np.frombuffer(out["out"], dtype=np.float32),
                               np.frombuffer(ref.reference(inputs)["out"], dtype=np.float32), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 3])
def test_batched_matches_numpy(harness: Harness, libs: dict[str, object], batch: int) -> None:
    ref = reference_module("batched")
    inputs = ref.make_inputs(seed=batch, batch=batch)
    out = harness.run(load_json(EXAMPLES / "batched" / "batched.json"), {"batched": libs["batched"]}, inputs)
    got = np.frombuffer(out["out"], dtype=np.float32)
    assert got.shape == (batch * 112 * 112,)
    np.testing.assert_allclose(got, np.frombuffer(ref.reference(inputs)["out"], dtype=np.float32),
                               rtol=1e-5, atol=1e-5)


def test_examples_have_a_readme_line_each() -> None:
    text = (EXAMPLES / "README.md").read_text()
    for name in ("matmul", "inference", "batched"):
        assert f"{name}/" in text
        assert (EXAMPLES / name / "reference.py").is_file()


def test_example_configs_are_valid_against_their_kernels(libs: dict[str, object]) -> None:
    from pappus.config import check_function_against_libraries, parse_function
    from pappus_cpu.driver import CPU_LIMITS

    for path in sorted(Path(EXAMPLES).glob("*/*.json")):
        cfg = parse_function(str(path), device=CPU_LIMITS)
        lib = libs[cfg.library]
        assert check_function_against_libraries(cfg, {cfg.library: lib.info}, device=CPU_LIMITS) == [], path
