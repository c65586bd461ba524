"""Exporting pappus functions to Dandelion configs: what fits upstream's model, and what does not."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

from pappus.errors import ValidationError
from pappus.importers import detect_dandelion, export_dandelion, import_dandelion

from .conftest import DATA


def pappus_doc(*, args: list[Any] | None = None, grid: list[Any] | None = None,
               buffers: dict[str, Any] | None = None, inputs: list[Any] | None = None,
               kernels: list[Any] | None = None, flow: list[Any] | None = None,
               **top: Any) -> dict[str, Any]:
    launch = {"name": "k", "args": args if args is not None else [{"Ptr": "x"}],
              "grid": grid or [{"Absolute": 4}], "block": [{"Absolute": 64}]}
    return {
        "schema": "pappus/function@1",
        "library": "lib-a",
        "kernels": kernels or ["k"],
        "blueprint": {
            "inputs": inputs if inputs is not None else ["x"],
            "buffers": buffers or {},
            "outputs": [],
            "control_flow": flow or [{"ExecKernel": launch}],
        },
        **top,
    }


PATHS = {"lib-a": "a.hsaco", "lib-b": "sub/b.hsaco"}


def export_errors(doc: dict[str, Any], **kw: Any) -> dict[str, str]:
    kw.setdefault("module_paths", PATHS)
    with pytest.raises(ValidationError) as info:
        export_dandelion(doc, **kw)
    return {e.path: e.message for e in info.value.errors}


def test_a_fitting_function_exports_to_both_generations() -> None:
    doc = pappus_doc(args=[{"Ptr": "x"}, {"Sizeof": "x"}, {"Constant": {"type": "i64", "value": -5}}],
                     grid=[{"FromInput": {"input": "cfg", "index": 1}}, 2],
                     inputs=[{"name": "cfg", "size": 16}, "x"], buffers={"y": {"Sizeof": "x"}})
    later = export_dandelion(doc, module_paths=PATHS)
    thesis = export_dandelion(doc, generation="thesis", module_paths=PATHS)
    assert detect_dandelion(later) == "modules" and detect_dandelion(thesis) == "thesis"
    assert later["modules"] == [{"module_name": "lib-a", "path": "a.hsaco"}]
    assert later["kernels"] == [{"module_name": "lib-a", "kernel_name": "k"}]
    assert thesis["module_path"] == "a.hsaco" and thesis["kernels"] == ["k"]
    assert later["blueprint"] == thesis["blueprint"] == {
        "inputs": ["cfg", "x"],
        "buffers": {"y": {"Sizeof": "x"}},
        "outputs": [],
        "control_flow": [{"ExecKernel": ["k", [{"Ptr": "x"}, {"Sizeof": "x"}, {"Constant": -5}], {
            "grid_dim_x": {"FromInput": {"bufname": "cfg", "idx": 1}},
            "grid_dim_y": {"Absolute": 2},
            "grid_dim_z": {"Absolute": 1},
            "block_dim_x": {"Absolute": 64},
            "block_dim_y": {"Absolute": 1},
            "block_dim_z": {"Absolute": 1},
            "shared_mem_bytes": {"Absolute": 0},
        }]}],
    }


def test_module_names_and_weights_can_be_given() -> None:
    doc = pappus_doc(inputs=["x", "w"], kernels=["k", {"name": "j", "library": "lib-b"}])
    out = export_dandelion(doc, module_paths=PATHS, module_names={"lib-a": "A.hsaco"}, weights=["w"])
    assert out["modules"] == [{"module_name": "A.hsaco", "path": "a.hsaco"},
                              {"module_name": "lib-b", "path": "sub/b.hsaco"}]
    assert out["kernels"][1] == {"module_name": "lib-b", "kernel_name": "j"}
    assert out["blueprint"]["inputs"] == ["x"] and out["blueprint"]["weights"] == ["w"]
    assert list(out["blueprint"])[:2] == ["inputs", "weights"]
    errs = export_errors(doc, weights=["ghost"], generation="thesis")
    assert errs["weights.ghost"] == "'ghost' is not an input of this function"
    assert "thesis-era config has one module_path" in errs["kernels"]
    assert errs["weights"] == "thesis-era configs have no weights"


@pytest.mark.parametrize("size, fragment", [
    ({"Mul": [{"Sizeof": "x"}, 2]}, "Mul has no upstream equivalent"),
    ({"Add": [{"Sizeof": "x"}, 8]}, "Add has no upstream equivalent"),
    ({"CeilDiv": [{"Sizeof": "x"}, 256]}, "CeilDiv has no upstream equivalent"),
])
def test_arithmetic_sizes_do_not_fit(size: Any, fragment: str) -> None:
    errs = export_errors(pappus_doc(buffers={"y": size}, grid=[size]))
    assert fragment in errs["blueprint.buffers.y"]
    assert fragment in errs["blueprint.control_flow[0].ExecKernel.grid[0]"]


def test_from_input_must_be_u64() -> None:
    doc = pappus_doc(grid=[{"FromInput": {"input": "cfg", "index": 0, "type": "u32"}}],
                     inputs=[{"name": "cfg", "size": 4}, "x"])
    errs = export_errors(doc)
    assert errs == {"blueprint.control_flow[0].ExecKernel.grid[0].FromInput.type":
                    "upstream's FromInput reads only u64, not u32"}


def test_constants_must_be_8_bytes_and_keep_their_bytes() -> None:
    args = [{"Constant": {"type": "u64", "value": 2**64 - 1}}, {"Constant": {"type": "f64", "value": 1.5}},
            {"Constant": {"type": "u64", "value": 7}}]
    out = export_dandelion(pappus_doc(args=args), module_paths=PATHS)
    consts = [a["Constant"] for a in out["blueprint"]["control_flow"][0]["ExecKernel"][1]]
    assert consts[0] == -1
    assert struct.pack("<q", consts[1]) == struct.pack("<d", 1.5)
    assert consts[2] == 7
    for dtype, value in (("i32", 1), ("u8", 1), ("f32", 0.5), ("i16", -1)):
        errs = export_errors(pappus_doc(args=[{"Constant": {"type": dtype, "value": value}}]))
        assert "upstream passes every Constant as 8 bytes" in \
            errs["blueprint.control_flow[0].ExecKernel.args[0].Constant.type"]


def test_declared_input_sizes_are_lost_unless_allowed() -> None:
    doc = pappus_doc(inputs=[{"name": "cfg", "size": 64}, {"name": "x", "size": 4}],
                     grid=[{"FromInput": {"input": "cfg", "index": 1}}])
    errs = export_errors(doc)
    assert set(errs) == {"blueprint.inputs[0].size", "blueprint.inputs[1].size"}
    assert "an import would declare 16" in errs["blueprint.inputs[0].size"]
    assert "an import would declare none" in errs["blueprint.inputs[1].size"]
    out = export_dandelion(doc, module_paths=PATHS, allow_lossy=True)
    assert out["blueprint"]["inputs"] == ["cfg", "x"]


def test_deployment_fields_are_lost_unless_allowed() -> None:
    doc = pappus_doc(deadline=2.0, engine="hip-sequential", description="demo")
    assert set(export_errors(doc)) == {"deadline", "engine", "description"}
    assert "deadline" not in export_dandelion(doc, module_paths=PATHS, allow_lossy=True)


def test_buffers_sized_by_buffers_or_sizing_inputs_do_not_fit() -> None:
    errs = export_errors(pappus_doc(buffers={"a": 64, "b": {"Sizeof": "a"}, "x": 128}))
    assert "may refer only to inputs" in errs["blueprint.buffers.b"]
    assert "sizes the buffer of an input" in errs["blueprint.buffers.x"]
    # Sizing an input's buffer by the input itself is what pappus does anyway.
    out = export_dandelion(pappus_doc(buffers={"x": {"Sizeof": "x"}}), module_paths=PATHS)
    assert out["blueprint"]["buffers"] == {}


@pytest.mark.parametrize("paths, path, fragment", [
    ({}, "module_paths.lib-a", "no module path given"),
    ({"lib-a": "/abs/a.hsaco"}, "module_paths.lib-a", "must be relative"),
    ({"lib-a": "../a.hsaco"}, "module_paths.lib-a", "must not contain '..'"),
    ({"lib-a": ""}, "module_paths.lib-a", "non-empty"),
])
def test_module_paths_are_checked(paths: dict[str, str], path: str, fragment: str) -> None:
    assert fragment in export_errors(pappus_doc(), module_paths=paths)[path]


def test_everything_is_reported_at_once() -> None:
    doc = pappus_doc(buffers={"y": {"Mul": [2, 3]}}, args=[{"Constant": {"type": "i8", "value": 1}}],
                     kernels=["k", {"name": "j", "library": "lib-c"}], deadline=1.0)
    errs = export_errors(doc, generation="thesis")
    assert set(errs) == {"module_paths.lib-c", "kernels", "deadline", "blueprint.buffers.y",
                         "blueprint.control_flow[0].ExecKernel.args[0].Constant.type"}


def test_invalid_pappus_configs_and_arguments() -> None:
    with pytest.raises(ValidationError):
        export_dandelion({"schema": "pappus/function@1"}, module_paths={})
    with pytest.raises(ValueError):
        export_dandelion(pappus_doc(), generation="v3", module_paths=PATHS)
    errs = export_errors(pappus_doc(kernels=["k", {"name": "j", "library": "lib-b"}]),
                         module_names={"lib-a": "same", "lib-b": "same"})
    assert errs == {"module_names": "two libraries would get the same module name"}


def test_exported_configs_import_again(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.hsaco").write_bytes(b"a")
    (tmp_path / "sub" / "b.hsaco").write_bytes(b"b")
    for rel in ("modules/pipeline.json", "modules/double_linear.json", "thesis/cnn_loop.json"):
        first = import_dandelion(DATA / rel)
        out = export_dandelion(first.config, generation=first.generation, module_paths=first.module_paths,
                               module_names=first.module_names, weights=first.weights)
        again = import_dandelion(out, modules_dir=(DATA / rel).parent)
        assert again.function == first.function
        assert again.libraries == first.libraries
