"""Every class of config error is found at registration, located, and reported all at once."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from pappus.config import function_schema, parse_function
from pappus.config.limits import Limits
from pappus.errors import ValidationError
from pappus.kernels import DeviceLimits

from .helpers import matmul_config, mutate


def errors_of(doc, **kw) -> list[str]:
    with pytest.raises(ValidationError) as info:
        parse_function(doc, **kw)
    return [str(e) for e in info.value.errors]


def assert_error(doc, path: str, fragment: str, **kw) -> None:
    errs = errors_of(doc, **kw)
    hits = [e for e in errs if e.startswith(path + ":") and fragment in e]
    assert hits, f"expected {path}: ...{fragment}... in {errs}"


def test_valid_config_parses_and_matches_schema():
    doc = matmul_config()
    cfg = parse_function(doc)
    assert cfg.library == "m"
    assert [k.name for k in cfg.kernels] == ["matmul_at_i64", "add_i64"]
    assert cfg.blueprint.buffers == (("A", cfg.blueprint.buffers[0][1]), ("B", cfg.blueprint.buffers[1][1]))
    jsonschema.validate(doc, function_schema())


def test_design_md_example_is_valid():
    doc = {
        "schema": "pappus/function@1", "library": "matmul", "kernels": ["matmul_para"],
        "blueprint": {
            "inputs": ["A"], "buffers": {"A": {"Sizeof": "A"}, "B": {"Sizeof": "A"}}, "outputs": ["B"],
            "control_flow": [
                {"ExecKernel": {"name": "matmul_para", "args": [{"Ptr": "A"}, {"Sizeof": "A"}, {"Ptr": "B"}],
                                "grid": [8, 8, 1], "block": [16, 16, 1], "shared_mem_bytes": 0}},
                {"Repeat": {"times": {"Absolute": 1}, "body": []}},
            ],
        },
    }
    parse_function(doc)
    jsonschema.validate(doc, function_schema())


@pytest.mark.parametrize("path,fragment,change", [
    ("extra", "unknown field", lambda d: d.update(extra=1)),
    ("blueprint.oops", "unknown field", lambda d: d["blueprint"].update(oops=[])),
    ("schema", "must be 'pappus/function@1'", lambda d: d.update(schema="pappus/function@2")),
    ("kernels", "is required", lambda d: d.pop("kernels")),
    ("kernels[1]", "listed twice", lambda d: d.update(kernels=["matmul_at_i64", "matmul_at_i64", "add_i64"])),
    ("kernels[0]", "not a valid kernel symbol", lambda d: d.update(kernels=["bad name!", "matmul_at_i64", "add_i64"])),
    ("blueprint.inputs[1]", "listed twice", lambda d: d["blueprint"].update(inputs=["A", "A"])),
    ("blueprint.buffers.B.Sizeof", "'Q' is not an input or buffer",
     lambda d: d["blueprint"]["buffers"].update(B={"Sizeof": "Q"})),
    ("blueprint.outputs[0]", "not an input or buffer", lambda d: d["blueprint"].update(outputs=["Z"])),
    ("blueprint.control_flow[0].ExecKernel.name", "not listed in 'kernels'",
     lambda d: d["blueprint"]["control_flow"][0]["ExecKernel"].update(name="nope")),
    ("blueprint.control_flow[0].ExecKernel.args[2].Ptr", "'C' is not an input or buffer",
     lambda d: d["blueprint"]["control_flow"][0]["ExecKernel"]["args"].__setitem__(2, {"Ptr": "C"})),
    ("blueprint.control_flow[0].ExecKernel.grid[0]", "at least 1",
     lambda d: d["blueprint"]["control_flow"][0]["ExecKernel"].update(grid=[0, 1, 1])),
    ("blueprint.control_flow[0].ExecKernel.grid[1]", "exceeds the device limit",
     lambda d: d["blueprint"]["control_flow"][0]["ExecKernel"].update(grid=[1, 2**32, 1])),
    ("blueprint.control_flow[0].ExecKernel.block", "threads per block exceed",
     lambda d: d["blueprint"]["control_flow"][0]["ExecKernel"].update(block=[64, 64, 1])),
    ("blueprint.control_flow[1].Repeat.times", "repetitions exceed",
     lambda d: d["blueprint"]["control_flow"][1]["Repeat"].update(times=10**9)),
    ("blueprint.buffers.B.Mul", "overflows 64 bits",
     lambda d: d["blueprint"]["buffers"].update(B={"Mul": [2**40, 2**40]})),
    ("blueprint.buffers.B", "does not fit in 64 bits", lambda d: d["blueprint"]["buffers"].update(B=2**64)),
    ("blueprint.buffers.B", "must not be negative", lambda d: d["blueprint"]["buffers"].update(B=-1)),
    ("blueprint.buffers.B.CeilDiv[1]", "divides by zero",
     lambda d: d["blueprint"]["buffers"].update(B={"CeilDiv": [8, 0]})),
    ("blueprint.control_flow[1].Repeat.body[0].ExecKernel.args[2].Constant.value", "does not fit in i8",
     lambda d: d["blueprint"]["control_flow"][1]["Repeat"]["body"][0]["ExecKernel"]["args"].__setitem__(
         2, {"Constant": {"type": "i8", "value": 300}})),
    ("blueprint.control_flow[1].Repeat.body[0].ExecKernel.args[2].Constant.type", "must be one of",
     lambda d: d["blueprint"]["control_flow"][1]["Repeat"]["body"][0]["ExecKernel"]["args"].__setitem__(
         2, {"Constant": {"type": "int", "value": 3}})),
    ("blueprint.control_flow[1].Repeat.body[0].ExecKernel.args[2].Constant.value", "must be an integer",
     lambda d: d["blueprint"]["control_flow"][1]["Repeat"]["body"][0]["ExecKernel"]["args"].__setitem__(
         2, {"Constant": {"type": "i64", "value": 1.5}})),
    ("library", "not an absolute path", lambda d: d.update(library="/etc/passwd")),
    ("library", "must not contain '..'", lambda d: d.update(library="a/../../b")),
    ("library", "NUL", lambda d: d.update(library="ab\x00c")),
    ("library", "at most 64", lambda d: d.update(library="a" * 65)),
    ("deadline", "positive", lambda d: d.update(deadline=-1)),
])
def test_each_error_class_is_located(path, fragment, change):
    assert_error(mutate(matmul_config(), change), path, fragment)


def test_from_input_bounds_checked_against_declared_size():
    doc = matmul_config()
    doc["blueprint"]["inputs"] = ["A", {"name": "cfg", "size": 8}]
    doc["blueprint"]["control_flow"][1]["Repeat"]["times"] = {"FromInput": {"input": "cfg", "index": 1}}
    assert_error(doc, "blueprint.control_flow[1].Repeat.times.FromInput.index", "reads bytes 8..16")
    doc["blueprint"]["control_flow"][1]["Repeat"]["times"] = {"FromInput": {"input": "cfg", "index": 1, "type": "u32"}}
    parse_function(doc)  # bytes 4..8 fit
    doc["blueprint"]["inputs"] = ["A", "cfg"]
    assert_error(doc, "blueprint.control_flow[1].Repeat.times.FromInput.input", "no declared size")


def test_size_cycle_detected():
    doc = matmul_config()
    doc["blueprint"]["buffers"] = {"B": {"Sizeof": "C"}, "C": {"Add": [{"Sizeof": "B"}, 8]}}
    assert_error(doc, "blueprint.buffers.B", "cycle")


def test_launch_totals_and_nesting_are_bounded():
    doc = matmul_config(repeat=1000)
    body = doc["blueprint"]["control_flow"][1]
    doc["blueprint"]["control_flow"][1] = {"Repeat": {"times": 100000, "body": [body]}}
    assert_error(doc, "blueprint.control_flow", "launches 100000001 kernels", limits=Limits())
    deep = {"ExecKernel": doc["blueprint"]["control_flow"][0]["ExecKernel"]}
    for _ in range(20):
        deep = {"Repeat": {"times": 1, "body": [deep]}}
    doc["blueprint"]["control_flow"] = [deep]
    errs = errors_of(doc)
    assert any("nests deeper" in e for e in errs)


def test_device_limits_come_from_the_backend():
    doc = matmul_config()
    doc["blueprint"]["control_flow"][0]["ExecKernel"]["block"] = [32, 32, 1]
    parse_function(doc)
    assert_error(doc, "blueprint.control_flow[0].ExecKernel.block", "exceed the device limit of 256",
                 device=DeviceLimits(max_block_threads=256))


def test_all_errors_reported_at_once():
    doc = matmul_config()
    doc["extra"] = True
    doc["blueprint"]["outputs"] = ["Z"]
    doc["blueprint"]["control_flow"][0]["ExecKernel"]["grid"] = [0]
    errs = errors_of(doc)
    assert len(errs) >= 3
    assert any(e.startswith("extra:") for e in errs)
    assert any(e.startswith("blueprint.outputs[0]:") for e in errs)
    assert any(e.startswith("blueprint.control_flow[0].ExecKernel.grid[0]:") for e in errs)


@pytest.mark.parametrize("text,fragment", [
    ("{not json", "not valid JSON"),
    ('{"a": NaN}', "NaN is not allowed"),
    ("[" * 100000 + "]" * 100000, "nests too deeply"),
])
def test_bad_json_is_one_clean_error(text, fragment):
    errs = errors_of(text)
    assert any(fragment in e for e in errs), errs


def test_oversized_config_rejected_before_parsing():
    big = json.dumps(matmul_config()) + " " * 200
    errs = errors_of(big.encode(), limits=Limits(max_config_bytes=100))
    assert "limit is 100" in errs[0]


def test_kernels_from_several_libraries():
    doc = matmul_config()
    doc["kernels"] = ["matmul_at_i64", {"name": "add_i64", "library": "other"}]
    cfg = parse_function(doc)
    assert cfg.libraries == ("m", "other")
    del doc["library"]
    assert_error(doc, "kernels[0]", "has no library")


def test_value_argument_checks():
    doc = matmul_config()
    doc["blueprint"]["inputs"] = ["A", {"name": "cfg", "size": 8}]
    args = doc["blueprint"]["control_flow"][1]["Repeat"]["body"][0]["ExecKernel"]["args"]
    args[2] = {"Value": {"type": "u8", "value": 300}}
    assert_error(doc, "blueprint.control_flow[1].Repeat.body[0].ExecKernel.args[2].Value.value", "does not fit in u8")
    args[2] = {"Value": {"type": "f32", "value": 1}}
    assert_error(doc, "blueprint.control_flow[1].Repeat.body[0].ExecKernel.args[2].Value.type", "must be one of")
    args[2] = {"Value": {"type": "i64", "value": {"FromInput": {"input": "cfg", "index": 0}}}}
    parse_function(doc)
    jsonschema.validate(doc, function_schema())


# --- one root cause, one error; typos get a suggestion ----------------------------------------


@pytest.mark.parametrize("change,expected", [
    # A misspelt default library: the kernels it leaves without a library, and the launches of
    # those kernels, are consequences of the typo and are not reported on their own.
    (lambda d: d.__setitem__("libary", d.pop("library")),
     ["libary: unknown field, did you mean 'library'?"]),
    (lambda d: d["blueprint"].__setitem__("controlflow", d["blueprint"].pop("control_flow")),
     ["blueprint.controlflow: unknown field, did you mean 'control_flow'?", "blueprint.control_flow: is required"]),
    (lambda d: d["blueprint"]["control_flow"][0]["ExecKernel"].__setitem__(
        "grids", d["blueprint"]["control_flow"][0]["ExecKernel"].pop("grid")),
     ["blueprint.control_flow[0].ExecKernel.grids: unknown field, did you mean 'grid'?",
      "blueprint.control_flow[0].ExecKernel.grid: is required"]),
    # A library name that is itself wrong: reported once, at 'library'.
    (lambda d: d.update(library="/etc/m"), ["library: must be a name, not an absolute path"]),
    # A kernel whose entry is wrong is still listed: launching it is not a second error.
    (lambda d: d["kernels"].__setitem__(1, {"name": "add_i64", "library": "../x"}),
     ["kernels[1].library: must not contain '..', '/' or '\\' (names are not paths)"]),
    (lambda d: d.pop("kernels"), ["kernels: is required"]),
    # A buffer whose size is wrong still exists: the outputs and arguments naming it are fine.
    (lambda d: d["blueprint"]["buffers"].update(B=-1), ["blueprint.buffers.B: must not be negative (-1)"]),
    (lambda d: d["blueprint"].update(buffers=[]),
     ["blueprint.buffers: must be an object mapping buffer names to sizes, not array"]),
    (lambda d: d["blueprint"].update(inputs=["A"] * 5000), ["blueprint.inputs: 5000 inputs exceed the limit of 4096"]),
    (lambda d: d["blueprint"].update(inputs=[{"nmae": "A"}]),
     ["blueprint.inputs[0].nmae: unknown field, did you mean 'name'?",
      "blueprint.inputs[0].name: is required"]),
    (lambda d: d["blueprint"]["control_flow"][0]["ExecKernel"]["args"].__setitem__(2, {"Constant": {"value": 1}}),
     ["blueprint.control_flow[0].ExecKernel.args[2].Constant.type: is required"]),
])
def test_only_the_root_cause_is_reported(change, expected):
    errs = errors_of(mutate(matmul_config(), change))
    assert [re.sub(r" \(allowed: [^)]*\)$", "", e) for e in errs] == expected


def test_from_input_of_an_input_with_a_wrong_size_is_not_a_second_error():
    doc = matmul_config()
    doc["blueprint"]["inputs"] = ["A", {"name": "cfg", "size": -8}]
    doc["blueprint"]["control_flow"][1]["Repeat"]["times"] = {"FromInput": {"input": "cfg", "index": 0}}
    assert errors_of(doc) == ["blueprint.inputs[1].size: must be a non-negative integer number of bytes"]


@pytest.mark.parametrize("change,path,suggestion", [
    (lambda d: d.update(descripton="x"), "descripton", "did you mean 'description'?"),
    (lambda d: d.update(Kernels=d.pop("kernels")), "Kernels", "did you mean 'kernels'?"),
    (lambda d: d["blueprint"].update(output=d["blueprint"].pop("outputs")), "blueprint.output",
     "did you mean 'outputs'?"),
    (lambda d: d["blueprint"]["control_flow"][0]["ExecKernel"].update(shared_mem=0),
     "blueprint.control_flow[0].ExecKernel.shared_mem", "did you mean 'shared_mem_bytes'?"),
    (lambda d: d["blueprint"]["control_flow"].__setitem__(0, {"ExecKernal": {}}),
     "blueprint.control_flow[0]", "did you mean 'ExecKernel'?"),
    (lambda d: d["blueprint"]["control_flow"][1]["Repeat"].update(time=d["blueprint"]["control_flow"][1]["Repeat"]
                                                                  .pop("times")),
     "blueprint.control_flow[1].Repeat.time", "did you mean 'times'?"),
    (lambda d: d["blueprint"]["control_flow"][0]["ExecKernel"]["args"].__setitem__(0, {"ptr": "A"}),
     "blueprint.control_flow[0].ExecKernel.args[0]", "did you mean 'Ptr'?"),
    (lambda d: d["blueprint"]["buffers"].update(B={"SizeOf": "A"}), "blueprint.buffers.B", "did you mean 'Sizeof'?"),
    (lambda d: d["blueprint"].update(outputs=["b"]), "blueprint.outputs[0]", "did you mean 'B'?"),
    (lambda d: d["blueprint"]["control_flow"][0]["ExecKernel"].update(name="matmul_at_i32"),
     "blueprint.control_flow[0].ExecKernel.name", "did you mean 'matmul_at_i64'?"),
])
def test_unknown_names_get_a_suggestion(change, path, suggestion):
    assert_error(mutate(matmul_config(), change), path, suggestion)


def test_no_suggestion_without_a_close_match():
    errs = errors_of(mutate(matmul_config(), lambda d: d.update(zzz=1)))
    assert errs == ["zzz: unknown field (allowed: blueprint, deadline, description, engine, kernels, library, schema)"]


def test_a_misspelt_kernel_library_is_one_error():
    doc = matmul_config()
    del doc["library"]
    doc["kernels"] = [{"name": "matmul_at_i64", "libary": "m"}, {"name": "add_i64", "library": "m"}]
    assert errors_of(doc) == ["kernels[0].libary: unknown field, did you mean 'library'? (allowed: library, name)"]


def test_a_wrong_buffer_name_masks_no_other_error():
    doc = matmul_config()
    doc["blueprint"]["buffers"] = {"B": {"Sizeof": "A"}, "bad-name": 8}
    doc["blueprint"]["outputs"] = ["B", "bad-name", "Z"]
    assert [e.split(":")[0] for e in errors_of(doc)] == ["blueprint.buffers.bad-name", "blueprint.outputs[2]"]


def test_kernels_null_is_an_error_not_a_config_without_kernels():
    """Found by the long fuzz profile: `"kernels": null` with a launch once parsed cleanly (the
    launch's name went unchecked), and the engine then had no handle for the kernel."""
    doc = matmul_config(repeat=1)
    doc["kernels"] = None
    with pytest.raises(ValidationError) as info:
        parse_function(doc)
    assert [(e.path, e.message) for e in info.value.errors] == [
        ("kernels", "must be an array of kernel names, not null")]
    del doc["kernels"]
    with pytest.raises(ValidationError) as info:
        parse_function(doc)
    assert [(e.path, e.message) for e in info.value.errors] == [("kernels", "is required")]


def test_a_parsed_config_never_launches_an_unlisted_kernel():
    """The safety net under the parser, on a config built past it."""
    import dataclasses

    from pappus.config.parser import _every_launch_listed

    config = parse_function(matmul_config(repeat=2))
    _every_launch_listed(config)  # the real one passes
    with pytest.raises(ValidationError, match=r"blueprint\.control_flow\[0\].*is not listed in 'kernels'"):
        _every_launch_listed(dataclasses.replace(config, kernels=()))
