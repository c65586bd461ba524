"""Importing Dandelion GPU configs (thesis and modules generations) into pappus/function@1."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from pappus.config import (
    Absolute,
    ConstantArg,
    ExecKernel,
    FromInput,
    KernelRef,
    Limits,
    Repeat,
    Sizeof,
    SizeofArg,
    check_function_against_libraries,
    library_name_problem,
    parse_function,
)
from pappus.errors import ValidationError
from pappus.importers import (
    detect_dandelion,
    import_dandelion,
    narrow_constants,
    pappus_from_input_accepts,
    upstream_from_input_accepts,
)
from pappus.importers.dandelion import LAUNCH_FIELDS, library_name_for
from pappus.kernels import KernelInfo, KernelParam, LibraryInfo, ParamKind

from .conftest import DATA, load

# --- helpers --------------------------------------------------------------------------------


def launch(**over: Any) -> dict[str, Any]:
    out: dict[str, Any] = {key: {"Absolute": 1} for key in LAUNCH_FIELDS}
    out["shared_mem_bytes"] = {"Absolute": 0}
    out.update(over)
    return out


def exec_kernel(name: str = "k", args: list[Any] | None = None, **over: Any) -> dict[str, Any]:
    return {"ExecKernel": [name, args if args is not None else [{"Ptr": "cfg"}], launch(**over)]}


def modules_doc(flow: list[Any] | None = None, *, inputs: list[str] | None = None,
                buffers: dict[str, Any] | None = None, outputs: list[str] | None = None,
                kernels: list[str] | None = None) -> dict[str, Any]:
    """A small modules-generation config whose one module is a.hsaco of ``modules_tree``."""
    return {
        "modules": [{"module_name": "a.hsaco", "path": "a.hsaco"}],
        "kernels": [{"module_name": "a.hsaco", "kernel_name": k} for k in (kernels or ["k"])],
        "blueprint": {
            "inputs": inputs if inputs is not None else ["cfg"],
            "buffers": buffers or {},
            "outputs": outputs if outputs is not None else [],
            "control_flow": flow if flow is not None else [exec_kernel()],
        },
    }


def thesis_doc(flow: list[Any] | None = None, **kw: Any) -> dict[str, Any]:
    doc = modules_doc(flow, **kw)
    kernels = [k["kernel_name"] for k in doc.pop("kernels")]
    doc.pop("modules")
    return {"module_path": "a.hsaco", "kernels": kernels, **doc}


def errors_of(doc: Any, **kw: Any) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        import_dandelion(doc, **kw)
    return {e.path: e.message for e in info.value.errors}


# --- detection ------------------------------------------------------------------------------


def test_detects_both_generations_from_the_fixtures() -> None:
    assert detect_dandelion(load("thesis/listing_4_1.json")) == "thesis"
    assert detect_dandelion(load("thesis/cnn_loop.json")) == "thesis"
    assert detect_dandelion(load("modules/pipeline.json")) == "modules"
    assert detect_dandelion(load("modules/double_linear.json")) == "modules"


@pytest.mark.parametrize("doc", [
    {"schema": "pappus/function@1", "module_path": "a.hsaco", "kernels": [], "blueprint": {}},
    {"schema": "pappus/function@1", "modules": [], "kernels": [], "blueprint": {}},
    {"module_path": "a.hsaco", "modules": [], "kernels": [], "blueprint": {}},
    {"module_path": "a.hsaco", "kernels": []},
    {"library": "a", "kernels": ["k"], "blueprint": {}},
    [], "module_path", None,
])
def test_detection_is_unambiguous(doc: Any) -> None:
    assert detect_dandelion(doc) is None


def test_a_real_pappus_config_is_never_taken_for_dandelion() -> None:
    result = import_dandelion(DATA / "thesis" / "listing_4_1.json")
    assert detect_dandelion(result.config) is None
    errs = errors_of(result.config, modules_dir=DATA)
    assert "pappus config already" in errs[""]


def test_generation_can_be_forced() -> None:
    doc = load("thesis/listing_4_1.json")
    doc["modules"] = []  # ambiguous now; forcing thesis ignores 'modules' with a note
    assert detect_dandelion(doc) is None
    result = import_dandelion(doc, modules_dir=DATA / "thesis", generation="thesis")
    assert any(n.startswith("modules: ignored") for n in result.notes)
    with pytest.raises(ValueError):
        import_dandelion(doc, modules_dir=DATA, generation="v3")


# --- the thesis generation ------------------------------------------------------------------


def test_listing_4_1_imports_to_the_equivalent_pappus_config() -> None:
    result = import_dandelion(DATA / "thesis" / "listing_4_1.json")
    cfg = {"FromInput": {"input": "cfg", "index": 0, "type": "u64"}}
    assert result.generation == "thesis"
    assert result.config == {
        "schema": "pappus/function@1",
        "library": "matmul.hsaco",
        "kernels": ["matmul"],
        "blueprint": {
            "inputs": [{"name": "cfg", "size": 8}, "A"],
            "buffers": {"B": {"Sizeof": "A"}},
            "outputs": ["B"],
            "control_flow": [{"ExecKernel": {
                "name": "matmul",
                "args": [{"Ptr": "A"}, {"Sizeof": "A"}, {"Ptr": "B"}],
                "grid": [cfg, cfg, {"Absolute": 1}],
                "block": [{"Absolute": 32}, {"Absolute": 32}, {"Absolute": 1}],
                "shared_mem_bytes": {"Absolute": 0},
            }}],
        },
    }
    assert result.libraries == {"matmul.hsaco": (DATA / "thesis" / "matmul.hsaco").resolve()}
    assert result.module_paths == {"matmul.hsaco": "matmul.hsaco"}
    assert parse_function(result.config) == result.function
    assert any("exactly 8 bytes" in n for n in result.notes)


def test_thesis_nested_repeat_constants_and_sizeof() -> None:
    result = import_dandelion(DATA / "thesis" / "cnn_loop.json")
    fn = result.function
    assert fn.kernels == (KernelRef("conv_f", "mlops.hsaco"), KernelRef("relu_f", "mlops.hsaco"),
                          KernelRef("pool_f", "mlops.hsaco"))
    assert fn.blueprint.input("cfg").size == 32  # reads idx 0..3
    outer = fn.blueprint.control_flow[0]
    assert isinstance(outer, Repeat) and outer.times == FromInput("cfg", 3, "u64")
    conv, inner, pool = outer.body
    assert isinstance(conv, ExecKernel) and conv.args[3] == SizeofArg("filter")
    assert conv.grid == (FromInput("cfg", 1, "u64"), FromInput("cfg", 1, "u64"), Absolute(1))
    assert isinstance(inner, Repeat) and inner.times == Absolute(2)
    relu = inner.body[0]
    assert isinstance(relu, ExecKernel)
    assert relu.args[1] == ConstantArg("i64", -7)
    assert relu.shared_mem_bytes == Sizeof("filter")
    assert isinstance(pool, ExecKernel) and pool.args[2] == ConstantArg("i64", 2)
    assert any("'conv_f' is listed twice" in n for n in result.notes)
    assert any("Constant arguments are passed as i64" in n for n in result.notes)


# --- the modules generation -----------------------------------------------------------------


def test_multi_module_pipeline() -> None:
    result = import_dandelion(DATA / "modules" / "pipeline.json")
    libs = DATA / "modules" / "libs"
    assert list(result.libraries) == ["conv-kernels.hsaco", "relu.hsaco", "pool.hsaco"]
    assert result.libraries == {
        "conv-kernels.hsaco": (libs / "conv.hsaco").resolve(),
        "relu.hsaco": (libs / "relu.hsaco").resolve(),
        "pool.hsaco": (libs / "nested" / "pool.hsaco").resolve(),
    }
    assert result.module_names["conv-kernels.hsaco"] == "Conv Kernels.HSACO"
    assert result.function.libraries == tuple(result.libraries)
    assert result.function.kernel("maxpool") == KernelRef("maxpool", "pool.hsaco")
    assert result.weights == ("filter",)
    assert result.function.blueprint.input_names == ("cfg", "image", "filter")
    maxpool = result.function.blueprint.control_flow[0].body[2]  # type: ignore[union-attr]
    assert maxpool.args[2] == ConstantArg("i64", 2**63 - 1)
    notes = "\n".join(result.notes)
    assert "weights 'filter' become ordinary inputs" in notes
    assert "modules[3] ('spare.hsaco'): no kernel uses this module" in notes
    assert "dev/gpu since e292fa7" in notes  # Sizeof argument
    parse_function(result.config)


def test_double_linear_has_two_libraries_and_no_notes() -> None:
    result = import_dandelion(DATA / "modules" / "double_linear.json")
    assert list(result.libraries) == ["linear_0", "linear_1"]
    assert result.config["kernels"] == [{"name": "kern000", "library": "linear_0"},
                                        {"name": "kern001", "library": "linear_1"}]
    assert result.notes == []


def test_library_names_are_valid_deterministic_and_distinct(modules_tree: Path) -> None:
    names = ["A.hsaco", "a.hsaco", "..", "x/y.HSACO", "Ω" * 80, "-lead", "a" * 100, "a" * 100 + "!"]
    doc = modules_doc([exec_kernel("k0")], kernels=[f"k{i}" for i in range(len(names))])
    doc["modules"] = [{"module_name": n, "path": "a.hsaco"} for n in names]
    doc["kernels"] = [{"module_name": n, "kernel_name": f"k{i}"} for i, n in enumerate(names)]
    first = import_dandelion(doc, modules_dir=modules_tree)
    again = import_dandelion(doc, modules_dir=modules_tree)
    libs = list(first.libraries)
    assert libs == list(again.libraries)
    assert len(set(libs)) == len(names)
    assert all(library_name_problem(lib) is None for lib in libs)
    assert libs[:4] == ["a.hsaco", "a.hsaco-2", "module", "y.hsaco"]
    assert libs[6] == "a" * 64 and libs[7] == "a" * 62 + "-2"
    assert [first.module_names[lib] for lib in libs] == names


def test_library_name_for_fills_up_suffixes() -> None:
    taken: set[str] = set()
    got = [library_name_for("m.hsaco", taken) for _ in range(12)]
    assert got[0] == "m.hsaco" and got[1] == "m.hsaco-2" and got[11] == "m.hsaco-12"


# --- module paths ---------------------------------------------------------------------------


@pytest.mark.parametrize("path, fragment", [
    ("../x.hsaco", "climbs out of the modules directory with '..'"),
    ("sub/../../x.hsaco", "climbs out"),
    ("sub\\..\\x.hsaco", "climbs out"),
    ("/etc/passwd", "is an absolute path"),
    ("\\\\server\\share\\x.hsaco", "is an absolute path"),
    ("C:\\lib\\x.hsaco", "is an absolute path"),
    ("missing.hsaco", "does not exist"),
    ("sub", "is not a regular file"),
    ("", "must not be empty"),
    ("a\x00.hsaco", "must not contain NUL"),
])
def test_module_paths_stay_inside_the_modules_dir(modules_tree: Path, path: str, fragment: str) -> None:
    doc = modules_doc()
    doc["modules"][0]["path"] = path
    errs = errors_of(doc, modules_dir=modules_tree)
    assert list(errs) == ["modules[0].path"]
    assert fragment in errs["modules[0].path"]
    tdoc = thesis_doc()
    tdoc["module_path"] = path
    assert fragment in errors_of(tdoc, modules_dir=modules_tree)["module_path"]


def test_symlinks_out_of_the_modules_dir_are_refused(modules_tree: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.hsaco").write_bytes(b"x")
    os.symlink(outside / "evil.hsaco", modules_tree / "link.hsaco")
    os.symlink(outside, modules_tree / "linkdir")
    os.symlink("/nonexistent/dangling.hsaco", modules_tree / "dangling.hsaco")
    for path in ("link.hsaco", "linkdir/evil.hsaco", "dangling.hsaco"):
        doc = modules_doc()
        doc["modules"][0]["path"] = path
        msg = errors_of(doc, modules_dir=modules_tree)["modules[0].path"]
        assert "outside the modules directory" in msg, msg


def test_symlinks_inside_the_modules_dir_are_followed(modules_tree: Path) -> None:
    os.symlink(modules_tree / "sub" / "b.hsaco", modules_tree / "alias.hsaco")
    doc = modules_doc()
    doc["modules"][0]["path"] = "alias.hsaco"
    result = import_dandelion(doc, modules_dir=modules_tree)
    assert result.libraries["a.hsaco"] == (modules_tree / "sub" / "b.hsaco").resolve()


def test_modules_dir_defaults_to_the_config_directory(data: Path) -> None:
    text = (data / "thesis" / "listing_4_1.json").read_text()
    assert import_dandelion(str(data / "thesis" / "listing_4_1.json")).libraries
    # Text, bytes and dicts have no directory: one must be given.
    for source in (text, text.encode(), json.loads(text)):
        msg = errors_of(source)["module_path"]
        assert "give a modules directory" in msg
        assert import_dandelion(source, modules_dir=data / "thesis").config["library"] == "matmul.hsaco"


def test_unused_modules_are_still_checked(modules_tree: Path) -> None:
    doc = modules_doc()
    doc["modules"].append({"module_name": "spare", "path": "../spare.hsaco"})
    assert "climbs out" in errors_of(doc, modules_dir=modules_tree)["modules[1].path"]


# --- kernels and modules --------------------------------------------------------------------


def test_unknown_kernel_and_module_names(modules_tree: Path) -> None:
    doc = modules_doc([exec_kernel("nope")])
    doc["kernels"].append({"module_name": "b.hsaco", "kernel_name": "other"})
    errs = errors_of(doc, modules_dir=modules_tree)
    assert errs["blueprint.control_flow[0].ExecKernel[0]"] == "kernel 'nope' is not listed in 'kernels'"
    assert errs["kernels[1].module_name"].startswith("module 'b.hsaco' is not declared in 'modules'")
    tdoc = thesis_doc([exec_kernel("nope")])
    assert "not listed" in errors_of(tdoc, modules_dir=modules_tree)["blueprint.control_flow[0].ExecKernel[0]"]


def test_every_kernel_in_an_undeclared_module(modules_tree: Path) -> None:
    doc = modules_doc()
    doc["kernels"][0]["module_name"] = "zzz"
    assert list(errors_of(doc, modules_dir=modules_tree)) == ["kernels[0].module_name"]
    tdoc = thesis_doc()
    tdoc["module_path"] = 5
    assert list(errors_of(tdoc, modules_dir=modules_tree)) == ["module_path"]


def test_one_kernel_name_in_two_modules_is_ambiguous(modules_tree: Path) -> None:
    doc = modules_doc()
    doc["modules"].append({"module_name": "b", "path": "sub/b.hsaco"})
    doc["kernels"].append({"module_name": "b", "kernel_name": "k"})
    assert "upstream keys kernels by name alone" in errors_of(doc, modules_dir=modules_tree)["kernels[1].kernel_name"]


def test_a_module_declared_twice(modules_tree: Path) -> None:
    doc = modules_doc()
    doc["modules"].append({"module_name": "a.hsaco", "path": "sub/b.hsaco"})
    assert "declared twice" in errors_of(doc, modules_dir=modules_tree)["modules[1].module_name"]


@pytest.mark.parametrize("mutate, path, fragment", [
    (lambda d: d.__setitem__("modules", {"a": "b"}), "modules", "must be an array"),
    (lambda d: d["modules"].__setitem__(0, "a.hsaco"), "modules[0]", "must be an object"),
    (lambda d: d["modules"][0].pop("path"), "modules[0].path", "is required"),
    (lambda d: d["modules"][0].__setitem__("path", 3), "modules[0].path", "must be a string"),
    (lambda d: d["kernels"].__setitem__(0, "k"), "kernels[0]", "must be an object"),
    (lambda d: d["kernels"][0].pop("kernel_name"), "kernels[0].kernel_name", "is required"),
    (lambda d: d["kernels"][0].__setitem__("kernel_name", "1bad name"), "kernels[0].kernel_name",
     "not a valid kernel symbol name"),
    (lambda d: d.pop("blueprint"), "blueprint", "is required"),
    (lambda d: d["blueprint"].pop("control_flow"), "blueprint.control_flow", "is required"),
    (lambda d: d["blueprint"].__setitem__("inputs", "cfg"), "blueprint.inputs", "must be an array"),
    (lambda d: d["blueprint"].__setitem__("inputs", ["cfg", "cfg"]), "blueprint.inputs[1]", "listed twice"),
    (lambda d: d["blueprint"].__setitem__("inputs", ["cfg", "bad-name"]), "blueprint.inputs[1]",
     "not a valid pappus input name"),
    (lambda d: d["blueprint"].__setitem__("buffers", {"cfg": {"Absolute": 8}}), "blueprint.buffers.cfg",
     "upstream would silently replace the input"),
    (lambda d: d["blueprint"].__setitem__("outputs", ["ghost"]), "blueprint.outputs[0]",
     "'ghost' is not an input or buffer"),
    (lambda d: d["blueprint"].__setitem__("control_flow", []), "blueprint.control_flow",
     "must launch at least one kernel"),
    (lambda d: d["blueprint"].__setitem__("control_flow", {}), "blueprint.control_flow", "must be an array"),
])
def test_structural_errors(modules_tree: Path, mutate: Any, path: str, fragment: str) -> None:
    doc = modules_doc()
    mutate(doc)
    errs = errors_of(doc, modules_dir=modules_tree, generation="modules")
    assert path in errs, errs
    assert fragment in errs[path]


# --- malformed actions, arguments and sizes -------------------------------------------------


@pytest.mark.parametrize("action, path, fragment", [
    ({"ExecKernel": ["k", [{"Ptr": "cfg"}]]}, "blueprint.control_flow[0].ExecKernel", "an array of 3"),
    ({"ExecKernel": ["k", [], launch(), {}]}, "blueprint.control_flow[0].ExecKernel", "an array of 3"),
    ({"ExecKernel": {"name": "k"}}, "blueprint.control_flow[0].ExecKernel", "an array of 3"),
    ({"ExecKernel": [7, [], launch()]}, "blueprint.control_flow[0].ExecKernel[0]", "must be a kernel name"),
    ({"ExecKernel": ["k", {"Ptr": "cfg"}, launch()]}, "blueprint.control_flow[0].ExecKernel[1]",
     "must be an array of arguments"),
    ({"ExecKernel": ["k", [], [1, 2]]}, "blueprint.control_flow[0].ExecKernel[2]", "must be an object"),
    ({"ExecKernel": ["k", [{"Ptr": "cfg", "Sizeof": "cfg"}], launch()]},
     "blueprint.control_flow[0].ExecKernel[1][0]", "must be {\"Ptr\""),
    ({"ExecKernel": ["k", [{"Pointer": "cfg"}], launch()]},
     "blueprint.control_flow[0].ExecKernel[1][0]", "unknown argument kind 'Pointer'"),
    ({"ExecKernel": ["k", [{"Constant": 2**63}], launch()]},
     "blueprint.control_flow[0].ExecKernel[1][0].Constant", "upstream's Constant is an i64"),
    ({"ExecKernel": ["k", [{"Constant": True}], launch()]},
     "blueprint.control_flow[0].ExecKernel[1][0].Constant", "must be an integer"),
    ({"ExecKernel": ["k", [{"Sizeof": 3}], launch()]},
     "blueprint.control_flow[0].ExecKernel[1][0].Sizeof", "must name an input or buffer"),
    ({"Repeat": [{"Absolute": 2}]}, "blueprint.control_flow[0].Repeat", "an array of 2"),
    ({"Repeat": [{"Absolute": 2}, [], []]}, "blueprint.control_flow[0].Repeat", "an array of 2"),
    ({"Repeat": [{"Absolute": 2}, {"ExecKernel": []}]}, "blueprint.control_flow[0].Repeat[1]",
     "must be an array of actions"),
    ({"Repeat": [3, [exec_kernel()]]}, "blueprint.control_flow[0].Repeat[0]", "bare number"),
    ({"Loop": []}, "blueprint.control_flow[0]", "unknown action 'Loop'"),
    ({"ExecKernel": ["k", [], launch()], "Repeat": []}, "blueprint.control_flow[0]", "must be {\"ExecKernel\""),
    ("ExecKernel", "blueprint.control_flow[0]", "must be {\"ExecKernel\""),
])
def test_malformed_actions(modules_tree: Path, action: Any, path: str, fragment: str) -> None:
    errs = errors_of(modules_doc([action]), modules_dir=modules_tree)
    assert path in errs, errs
    assert fragment in errs[path]


@pytest.mark.parametrize("size, path, fragment", [
    ({"Absolute": -1}, "grid_dim_x.Absolute", "from 0 to 2^64-1"),
    ({"Absolute": 2**64}, "grid_dim_x.Absolute", "from 0 to 2^64-1"),
    ({"Absolute": 4.0}, "grid_dim_x.Absolute", "from 0 to 2^64-1"),
    ({"Absolute": 0}, "grid_dim_x", "must be at least 1"),
    ({"Sizeof": "ghost"}, "grid_dim_x.Sizeof", "'ghost' is not an input or buffer"),
    ({"FromInput": {"bufname": "cfg"}}, "grid_dim_x.FromInput.idx", "is required"),
    ({"FromInput": {"bufname": "ghost", "idx": 0}}, "grid_dim_x.FromInput.bufname", "not an input"),
    ({"FromInput": {"bufname": "cfg", "idx": -1}}, "grid_dim_x.FromInput.idx", "from 0 to 2^64-1"),
    ({"FromInput": ["cfg"]}, "grid_dim_x.FromInput", "[name, i]"),
    ({"FromInput": "cfg"}, "grid_dim_x.FromInput", "must be {\"bufname\""),
    ({"AbsoluteByBatch": 4}, "grid_dim_x.AbsoluteByBatch", "auto_batching"),
    ({"Relative": 4}, "grid_dim_x", "unknown Sizing variant 'Relative'"),
    ({"Absolute": 1, "Sizeof": "cfg"}, "grid_dim_x", "must be one of"),
    (4, "grid_dim_x", "bare number"),
])
def test_malformed_sizes(modules_tree: Path, size: Any, path: str, fragment: str) -> None:
    errs = errors_of(modules_doc([exec_kernel(grid_dim_x=size)]), modules_dir=modules_tree)
    full = "blueprint.control_flow[0].ExecKernel[2]." + path
    assert full in errs, errs
    assert fragment in errs[full]


def test_missing_launch_fields_and_unknown_ones(modules_tree: Path) -> None:
    lc = launch(grid_dim_w={"Absolute": 1})
    del lc["block_dim_z"]
    with pytest.raises(ValidationError) as info:
        import_dandelion(modules_doc([{"ExecKernel": ["k", [], lc]}]), modules_dir=modules_tree)
    assert [str(e) for e in info.value.errors] == [
        "blueprint.control_flow[0].ExecKernel[2].block_dim_z: is required"]


def test_serde_sequence_forms_are_accepted(modules_tree: Path) -> None:
    """serde reads a struct from an array of its fields: FromInput [name, idx], a launch of 7."""
    seq = [{"FromInput": ["cfg", 1]}, {"Absolute": 1}, {"Absolute": 1},
           {"Absolute": 64}, {"Absolute": 1}, {"Absolute": 1}, {"Absolute": 0}]
    result = import_dandelion(modules_doc([{"ExecKernel": ["k", [], seq]}]), modules_dir=modules_tree)
    launch_ = result.function.blueprint.control_flow[0]
    assert isinstance(launch_, ExecKernel)
    assert launch_.grid[0] == FromInput("cfg", 1, "u64") and launch_.block[0] == Absolute(64)
    assert result.function.blueprint.input("cfg").size == 16
    errs = errors_of(modules_doc([exec_kernel(grid_dim_x={"FromInput": ["cfg", "x"]})]),
                     modules_dir=modules_tree)
    assert "blueprint.control_flow[0].ExecKernel[2].grid_dim_x.FromInput[1]" in errs


def test_unknown_fields_are_ignored_with_a_note(modules_tree: Path) -> None:
    doc = thesis_doc([exec_kernel(grid_dim_w={"Absolute": 9})])
    doc["blueprint"]["weights"] = ["w"]  # not a thesis-era field: serde ignored it
    doc["comment"] = "hi"
    result = import_dandelion(doc, modules_dir=modules_tree)
    notes = "\n".join(result.notes)
    assert "comment: ignored" in notes
    assert "blueprint.weights: ignored" in notes
    assert "blueprint.control_flow[0].ExecKernel[2].grid_dim_w: ignored" in notes
    assert result.function.blueprint.input_names == ("cfg",)


# --- the example path of the brief, and errors all at once ----------------------------------


def test_errors_name_upstream_paths_all_at_once(data: Path) -> None:
    with pytest.raises(ValidationError) as info:
        import_dandelion(data / "errors" / "many_problems.json")
    paths = [e.path for e in info.value.errors]
    assert paths == [
        "modules[1].path",
        "modules[2].path",
        "modules[3].path",
        "kernels[1].module_name",
        "blueprint.buffers.out.FromInput.bufname",
        "blueprint.control_flow[0].ExecKernel",
        "blueprint.control_flow[1].Repeat",
        "blueprint.control_flow[2].ExecKernel[1][1].Constant",
        "blueprint.control_flow[2].ExecKernel[2].block_dim_z",
        "blueprint.control_flow[3].ExecKernel[0]",
        "blueprint.control_flow[3].ExecKernel[1][0].Ptr",
        "blueprint.control_flow[3].ExecKernel[2].grid_dim_x",
    ]
    text = str(info.value)
    assert text.startswith("invalid config: modules[1].path: '../x.hsaco' climbs out")
    assert info.value.to_dict()["errors"][3]["path"] == "kernels[1].module_name"


def test_a_thesis_error_config(data: Path) -> None:
    errs = errors_of(data / "errors" / "thesis_traversal.json")
    assert list(errs) == ["module_path"]


def test_pappus_checks_are_reported_at_upstream_paths(modules_tree: Path) -> None:
    flow = [
        exec_kernel(),
        exec_kernel(),
        exec_kernel(block_dim_x={"Absolute": 64}, block_dim_y={"Absolute": 32}),
        exec_kernel(grid_dim_y={"Absolute": 70000}),
    ]
    errs = errors_of(modules_doc(flow), modules_dir=modules_tree)
    assert errs["blueprint.control_flow[2].ExecKernel[2]"] == \
        "2048 threads per block exceed the device limit of 1024"
    assert errs["blueprint.control_flow[3].ExecKernel[2].grid_dim_y"] == \
        "70000 exceeds the device limit of 65535"


def test_repeat_nesting_limit(modules_tree: Path) -> None:
    flow: list[Any] = [exec_kernel()]
    for _ in range(17):
        flow = [{"Repeat": [{"Absolute": 1}, flow]}]
    errs = errors_of(modules_doc(flow), modules_dir=modules_tree)
    deep = "blueprint.control_flow[0]" + ".Repeat[1][0]" * 15 + ".Repeat[1]"
    assert errs == {deep: "Repeat nests deeper than 16 levels"}


def test_too_many_inputs_is_one_error(modules_tree: Path) -> None:
    inputs = [f"p{i}" for i in range(300)]
    doc = modules_doc([exec_kernel(args=[{"Ptr": n} for n in inputs[:50]])], inputs=inputs)
    errs = errors_of(doc, modules_dir=modules_tree, limits=Limits().with_overrides(max_inputs=256))
    assert list(errs) == ["blueprint.inputs"]
    assert "300 inputs exceed pappus's limit of 256" in errs["blueprint.inputs"]
    result = import_dandelion(doc, modules_dir=modules_tree)  # the default limit fits real ML models
    assert len(result.function.blueprint.inputs) == 300


# --- FromInput bounds: the upstream off-by-one ----------------------------------------------


def test_upstream_bounds_check_model() -> None:
    # A 16-byte input holds elements 0 and 1. Upstream refuses only idx*8 > 16.
    assert [upstream_from_input_accepts(16, i) for i in range(4)] == [True, True, True, False]
    assert [pappus_from_input_accepts(16, i) for i in range(4)] == [True, True, False, False]
    # A 12-byte input: upstream lets idx 1 read bytes 8..16 (4 of them past the end).
    assert upstream_from_input_accepts(12, 1) and not pappus_from_input_accepts(12, 1)
    # idx*8 wraps in 64 bits: idx 2**61 reads element 0 again in release builds.
    assert upstream_from_input_accepts(8, 2**61) and not pappus_from_input_accepts(8, 2**61)


def test_the_exact_boundary_upstream_accepts_and_pappus_rejects(modules_tree: Path) -> None:
    def with_idx(idx: int) -> dict[str, Any]:
        return modules_doc([exec_kernel(), exec_kernel(), exec_kernel(
            grid_dim_x={"FromInput": {"bufname": "cfg", "idx": idx}})])

    path = "blueprint.control_flow[2].ExecKernel[2].grid_dim_x.FromInput.idx"
    # idx 1 of a 16-byte input: bytes 8..16, accepted by both.
    ok = import_dandelion(with_idx(1), modules_dir=modules_tree, input_sizes={"cfg": 16})
    assert ok.function.blueprint.input("cfg").size == 16
    # idx 2 of a 16-byte input: bytes 16..24, past the end. Upstream's `16 > 16` is false.
    errs = errors_of(with_idx(2), modules_dir=modules_tree, input_sizes={"cfg": 16})
    assert errs == {path: "reads bytes 16..24 of input 'cfg', which has 16 bytes (declared in input_sizes); "
                          "upstream's check (idx*8 > size) lets this read through and reads past the "
                          "input, pappus refuses it"}
    # idx 3: both refuse (upstream only at run time).
    assert "FromInputOutOfBounds" in errors_of(with_idx(3), modules_dir=modules_tree,
                                               input_sizes={"cfg": 16})[path]


def test_upstreams_own_inference_test_relies_on_the_off_by_one(data: Path) -> None:
    """hip_tests.rs gives 'cfg' a 3*8-byte item but test_gpu_inference.json repeats FromInput idx 3."""
    errs = errors_of(data / "thesis" / "cnn_loop.json", input_sizes={"cfg": 24})
    msg = errs["blueprint.control_flow[0].Repeat[0].FromInput.idx"]
    assert msg.startswith("reads bytes 24..32 of input 'cfg', which has 24 bytes")
    assert "lets this read through" in msg
    assert upstream_from_input_accepts(24, 3)
    # Without a declared size the import declares the 32 bytes the reads need.
    assert import_dandelion(data / "thesis" / "cnn_loop.json").function.blueprint.input("cfg").size == 32


def test_declared_sizes_cover_every_from_input_position(modules_tree: Path) -> None:
    flow = [{"Repeat": [{"FromInput": {"bufname": "n", "idx": 4}}, [exec_kernel(
        grid_dim_z={"FromInput": {"bufname": "cfg", "idx": 2}},
        shared_mem_bytes={"FromInput": {"bufname": "cfg", "idx": 6}})]]}]
    doc = modules_doc(flow, inputs=["cfg", "n", "data"], buffers={"out": {"FromInput": {"bufname": "n", "idx": 0}}})
    result = import_dandelion(doc, modules_dir=modules_tree)
    specs = {s.name: s.size for s in result.function.blueprint.inputs}
    assert specs == {"cfg": 56, "n": 40, "data": None}
    bigger = import_dandelion(doc, modules_dir=modules_tree, input_sizes={"cfg": 64, "data": 3})
    assert {s.name: s.size for s in bigger.function.blueprint.inputs} == {"cfg": 64, "n": 40, "data": 3}


def test_input_sizes_are_validated(modules_tree: Path) -> None:
    errs = errors_of(modules_doc(), modules_dir=modules_tree, input_sizes={"ghost": 8, "cfg": -1})
    assert errs == {"input_sizes.ghost": "'ghost' is not an input of this config",
                    "input_sizes.cfg": "must be a non-negative integer number of bytes"}


def test_huge_idx_is_refused_and_the_wrap_explained(modules_tree: Path) -> None:
    doc = modules_doc([exec_kernel(grid_dim_x={"FromInput": {"bufname": "cfg", "idx": 2**61}})])
    msg = errors_of(doc, modules_dir=modules_tree)["blueprint.control_flow[0].ExecKernel[2].grid_dim_x.FromInput.idx"]
    assert "more than the limit" in msg and "wraps to byte 0 in release builds" in msg


def test_from_input_reads_only_inputs(modules_tree: Path) -> None:
    doc = modules_doc(buffers={"tmp": {"Absolute": 8}},
                      flow=[exec_kernel(grid_dim_x={"FromInput": {"bufname": "tmp", "idx": 0}})])
    msg = errors_of(doc, modules_dir=modules_tree)["blueprint.control_flow[0].ExecKernel[2].grid_dim_x.FromInput.bufname"]
    assert "is a buffer" in msg


# --- buffers and weights --------------------------------------------------------------------


def test_buffer_sized_by_another_buffer_gets_a_note(modules_tree: Path) -> None:
    doc = modules_doc(buffers={"b": {"Sizeof": "a"}, "a": {"Absolute": 64}})
    result = import_dandelion(doc, modules_dir=modules_tree)
    assert any("blueprint.buffers.b: its size refers to buffer(s) 'a'" in n for n in result.notes)
    assert result.function.blueprint.buffer_sizes["b"] == Sizeof("a")


def test_weights_become_inputs_and_must_not_clash(modules_tree: Path) -> None:
    doc = modules_doc(inputs=["cfg"])
    doc["blueprint"]["weights"] = ["w0", "cfg"]
    errs = errors_of(doc, modules_dir=modules_tree)
    assert errs == {"blueprint.weights[1]": "'cfg' is both an input and a weight"}
    doc["blueprint"]["weights"] = ["w0"]
    result = import_dandelion(doc, modules_dir=modules_tree)
    assert result.weights == ("w0",)
    assert result.function.blueprint.input_names == ("cfg", "w0")


def test_duplicate_outputs_are_kept_once(modules_tree: Path) -> None:
    result = import_dandelion(modules_doc(outputs=["cfg", "cfg"]), modules_dir=modules_tree)
    assert result.function.blueprint.outputs == ("cfg",)
    assert any("blueprint.outputs[1]: output 'cfg' is listed twice" in n for n in result.notes)


def test_an_invalid_buffer_name_is_reported_once(modules_tree: Path) -> None:
    doc = modules_doc([exec_kernel(args=[{"Ptr": "my-buf"}])], buffers={"my-buf": {"Absolute": 8}})
    errs = errors_of(doc, modules_dir=modules_tree)
    assert list(errs) == ["blueprint.buffers.my-buf"]


def test_the_input_document_is_not_modified(modules_tree: Path) -> None:
    doc = modules_doc([exec_kernel(grid_dim_x={"FromInput": {"bufname": "cfg", "idx": 1}})])
    before = copy.deepcopy(doc)
    import_dandelion(doc, modules_dir=modules_tree)
    assert doc == before


def test_not_json_and_not_dandelion(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    assert "not valid JSON" in errors_of(bad)[""]
    assert "neither 'module_path'" in errors_of({"blueprint": {}})[""]
    assert "no 'blueprint'" in errors_of({"modules": []})[""]
    assert "both 'module_path'" in errors_of({"modules": [], "module_path": "x", "blueprint": {}})[""]
    assert "cannot read config" in errors_of(tmp_path / "absent.json")[""]


# --- narrowing constants to real signatures -------------------------------------------------


def test_narrow_constants_retypes_i64_to_the_parameter_width(modules_tree: Path) -> None:
    flow = [exec_kernel(args=[{"Ptr": "cfg"}, {"Constant": 5}, {"Constant": -3}, {"Constant": 2**40},
                              {"Constant": 7}, {"Constant": 1}])]
    result = import_dandelion(modules_doc(flow), modules_dir=modules_tree)
    params = (KernelParam(8, ParamKind.POINTER), KernelParam(4, ParamKind.INT), KernelParam(2, ParamKind.BYTES),
              KernelParam(4, ParamKind.UINT), KernelParam(8, ParamKind.INT), KernelParam(4, ParamKind.FLOAT))
    info = LibraryInfo(format="hsaco", target="gfx90a", kernels={"k": KernelInfo("k", params)})
    doc, notes = narrow_constants(result.config, {"a.hsaco": info})
    args = doc["blueprint"]["control_flow"][0]["ExecKernel"]["args"]
    assert args[1] == {"Constant": {"type": "i32", "value": 5}}
    assert args[2] == {"Constant": {"type": "i16", "value": -3}}
    assert args[3] == {"Constant": {"type": "i64", "value": 2**40}}  # does not fit u32: left for the check
    assert args[4] == {"Constant": {"type": "i64", "value": 7}}      # already 8 bytes
    assert args[5] == {"Constant": {"type": "i64", "value": 1}}      # a float parameter: not an integer
    assert len(notes) == 2 and "i64 5 passed as i32" in notes[0]
    parse_function(doc)
    assert result.config["blueprint"]["control_flow"][0]["ExecKernel"]["args"][1]["Constant"]["type"] == "i64"


def test_ptr_to_a_count_parameter_passes_the_count(modules_tree: Path) -> None:
    """Upstream's ML configs pass {"Ptr": "var_N"} to a 4-byte count parameter: pappus passes
    the number stored in var_N (upstream's intent), not the low half of a device address."""
    doc = modules_doc([exec_kernel(args=[{"Ptr": "x"}, {"Ptr": "var_0"}])], inputs=["x", "var_0"],
                      outputs=["x"])
    result = import_dandelion(doc, modules_dir=modules_tree)
    kernel = KernelInfo("k", (KernelParam(8, ParamKind.POINTER), KernelParam(4, ParamKind.INT)))
    info = LibraryInfo("amdgpu-elf", "gfx90a", {"k": kernel})
    lib = next(iter(result.libraries))
    config, notes = narrow_constants(result.config, {lib: info})
    args = config["blueprint"]["control_flow"][0]["ExecKernel"]["args"]
    assert args[0] == {"Ptr": "x"}
    assert args[1] == {"Value": {"type": "i32", "value": {"FromInput": {"input": "var_0", "index": 0, "type": "i64"}}}}
    assert {"name": "var_0", "size": 8} in config["blueprint"]["inputs"]
    assert any("low bytes of a device address" in n for n in notes)
    assert check_function_against_libraries(parse_function(config), {lib: info}) == []
