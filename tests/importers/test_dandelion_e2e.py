"""Dandelion configs of both generations, written here, run end to end on the CPU backend with
the HIP sources of examples/, and validated against AMD code objects built from the same
sources with hipcc (skipped with the reason where hipcc is absent)."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

import pappus
from pappus.config import check_function_against_libraries, parse_function
from pappus.importers import import_dandelion, narrow_constants

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def load_ref(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"ref_{name}", EXAMPLES / name / "reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def launch(grid, block, shared=0):
    out = {f"grid_dim_{a}": g for a, g in zip("xyz", grid, strict=True)}
    out.update({f"block_dim_{a}": b for a, b in zip("xyz", block, strict=True)})
    out["shared_mem_bytes"] = {"Absolute": shared}
    return out


ABS = lambda n: {"Absolute": n}  # noqa: E731


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """matmul.so, and inference.hip built twice under two module names (a two-module function)."""
    from pappus_cpu.build import build_library

    out = tmp_path_factory.mktemp("dandelion-e2e")
    (mm,) = [p for p in build_library(EXAMPLES / "matmul" / "matmul.hip", out / "mm", ["cpu"]) if p.suffix == ".so"]
    (inf,) = [p for p in build_library(EXAMPLES / "inference" / "inference.hip", out / "inf", ["cpu"])
              if p.suffix == ".so"]
    libs = out / "libs"
    libs.mkdir()
    shutil.copy(mm, libs / "matmul.so")
    shutil.copy(inf, libs / "conv.so")
    shutil.copy(inf, libs / "post.so")
    return libs


def thesis_matmul() -> dict:
    """Listing 4.1 of the thesis, for the A x A^T kernel of examples/matmul (grid read from cfg)."""
    return {
        "module_path": "matmul.so",
        "kernels": ["matmul_at"],
        "blueprint": {
            "inputs": ["cfg", "A"],
            "buffers": {"B": {"Sizeof": "A"}},
            "outputs": ["B"],
            "control_flow": [
                {"ExecKernel": ["matmul_at", [{"Ptr": "A"}, {"Sizeof": "A"}, {"Ptr": "B"}],
                                {"grid_dim_x": {"FromInput": {"bufname": "cfg", "idx": 0}},
                                 "grid_dim_y": {"FromInput": {"bufname": "cfg", "idx": 0}},
                                 "grid_dim_z": ABS(1), "block_dim_x": ABS(16), "block_dim_y": ABS(16),
                                 "block_dim_z": ABS(1), "shared_mem_bytes": ABS(0)}]},
            ],
        },
    }


def modules_inference() -> dict:
    """The inference layer from two modules, nested Repeat with the outer count from cfg,
    upstream's bare-integer Constants."""
    body = [
        {"ExecKernel": ["conv5x5", [{"Ptr": "img"}, {"Ptr": "W"}, {"Ptr": "tmp"}, {"Constant": 224}],
                        launch([ABS(7), ABS(7), ABS(1)], [ABS(32), ABS(32), ABS(1)])]},
        {"ExecKernel": ["relu", [{"Ptr": "tmp"}, {"Constant": 50176}],
                        launch([ABS(196), ABS(1), ABS(1)], [ABS(256), ABS(1), ABS(1)])]},
        {"ExecKernel": ["maxpool2", [{"Ptr": "tmp"}, {"Ptr": "out"}, {"Constant": 224}],
                        launch([ABS(7), ABS(7), ABS(1)], [ABS(16), ABS(16), ABS(1)])]},
    ]
    return {
        "modules": [{"module_name": "conv", "path": "conv.so"}, {"module_name": "post", "path": "post.so"}],
        "kernels": [{"module_name": "conv", "kernel_name": "conv5x5"},
                    {"module_name": "post", "kernel_name": "relu"},
                    {"module_name": "post", "kernel_name": "maxpool2"}],
        "blueprint": {
            "inputs": ["cfg", "img", "W"],
            "buffers": {"tmp": {"Sizeof": "img"}, "out": {"Absolute": 112 * 112 * 4}},
            "outputs": ["out"],
            "control_flow": [{"Repeat": [{"FromInput": {"bufname": "cfg", "idx": 0}},
                                         [{"Repeat": [ABS(2), body]}]]}],
        },
    }


@pytest.mark.parametrize("engine", ["cpu-sequential", "cpu-multiprocess"])
def test_thesis_generation_matmul_runs_on_cpu(built, tmp_path, engine):
    cfg_path = built / "matmul_thesis.json"
    cfg_path.write_text(json.dumps(thesis_matmul()))
    with pappus.Runtime(engine=engine, state_dir=tmp_path) as rt:
        rec = rt.register_function("mm", cfg_path, format="dandelion")
        assert rec.source_format == "dandelion"
        inputs = load_ref("matmul").make_inputs(3)
        inputs["cfg"] = struct.pack("<Q", 8)  # 8 x 8 blocks of 16 x 16 threads: 128 x 128
        out = rt.invoke("mm", inputs)
        assert out == load_ref("matmul").reference(inputs)


@pytest.mark.parametrize("engine", ["cpu-sequential", "cpu-multiprocess"])
def test_modules_generation_two_modules_nested_repeat_runs_on_cpu(built, tmp_path, engine):
    cfg_path = built / "inference_modules.json"
    cfg_path.write_text(json.dumps(modules_inference()))
    ref = load_ref("inference")
    with pappus.Runtime(engine=engine, state_dir=tmp_path) as rt:
        rt.register_function("inf", cfg_path, format="dandelion")
        libs = {r.name for r in rt.registry.list_libraries("default")}
        assert libs == {"conv", "post"}
        inputs = ref.make_inputs(5, repeat=3)
        out = rt.invoke("inf", inputs)
        want = np.frombuffer(ref.reference(inputs)["out"], np.float32)
        assert np.allclose(np.frombuffer(out["out"], np.float32), want, rtol=1e-4, atol=1e-4)
        with pytest.raises(pappus.InvalidInput):  # cfg is declared as 8 bytes by the import
            rt.invoke("inf", {**inputs, "cfg": b"\x01"})


@pytest.mark.rocm
def test_same_configs_validate_against_hipcc_code_objects(tmp_path):
    if shutil.which("hipcc") is None:
        pytest.skip("hipcc is not installed (ROCm toolchain absent)")
    from pappus_hip.build import build_hsaco
    from pappus_hip.driver import HipDriver

    libs = tmp_path / "libs"
    libs.mkdir()
    (mm,) = build_hsaco(EXAMPLES / "matmul" / "matmul.hip", tmp_path / "mm", ["gfx90a"])
    (inf,) = build_hsaco(EXAMPLES / "inference" / "inference.hip", tmp_path / "inf", ["gfx90a"])
    shutil.copy(mm, libs / "matmul.so")  # the configs' module paths; the bytes are gfx90a code objects
    shutil.copy(inf, libs / "conv.so")
    shutil.copy(inf, libs / "post.so")
    driver = HipDriver(arch="gfx90a")
    for doc in (thesis_matmul(), modules_inference()):
        result = import_dandelion(doc, modules_dir=libs)
        infos = {name: driver.inspect_library(Path(p).read_bytes()) for name, p in result.libraries.items()}
        config, _ = narrow_constants(result.config, infos)
        assert check_function_against_libraries(parse_function(config), infos) == []
    # and a wrong config is caught against the real metadata: one argument too few
    bad = thesis_matmul()
    bad["blueprint"]["control_flow"][0]["ExecKernel"][1].pop()
    result = import_dandelion(bad, modules_dir=libs)
    infos = {name: driver.inspect_library(Path(p).read_bytes()) for name, p in result.libraries.items()}
    errors = check_function_against_libraries(parse_function(result.config), infos)
    assert any("takes 3 arguments, 2 given" in str(e) for e in errors)
