"""Round trips between Dandelion configs and pappus functions, on generated functions.

Functions are drawn as an abstract model (modules, kernels, inputs, buffers, a control flow of
launches and nested repeats) and rendered twice: in upstream's spelling and in pappus's. Then:

* export(import(x)) is equivalent to x for every upstream config x of the model;
* import(export(y)) parses to the same FunctionConfig as y for every pappus config y that fits;
* import(x) parses to the same FunctionConfig as the pappus rendering of the same model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pappus.config import FunctionConfig, parse_function
from pappus.importers import detect_dandelion, export_dandelion, import_dandelion
from pappus.importers.dandelion import LAUNCH_FIELDS

PATHS = ("a.hsaco", "sub/b.hsaco", "sub/deeper/c.hsaco")
VALID_MODULES = ("alpha", "beta.hsaco", "g-1", "tem_fused_linear_0.hsaco")
ODD_MODULES = ("Alpha", "alpha", "lib one", "x/y.HSACO", "..", "Ünïcode.hsaco")
KERNELS = ("k0", "kern001", "_tvm.fused$1", "conv2d", "relu")
INPUTS = ("cfg", "A", "B", "w_0")
BUFFERS = ("buf0", "tmp", "out")

SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def modules_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("roundtrip-modules")
    for rel in PATHS:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"placeholder code object " + rel.encode())
    return root


# --- the abstract model ---------------------------------------------------------------------


@st.composite
def models(draw: st.DrawFn, *, odd_module_names: bool) -> dict[str, Any]:
    pool = ODD_MODULES if odd_module_names else VALID_MODULES
    module_names = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True))
    modules = [(name, draw(st.sampled_from(PATHS))) for name in module_names]
    kernel_names = draw(st.lists(st.sampled_from(KERNELS), min_size=1, max_size=4, unique=True))
    kernels = [(k, draw(st.sampled_from(module_names))) for k in kernel_names]
    inputs = draw(st.lists(st.sampled_from(INPUTS), min_size=1, max_size=4, unique=True))
    buffer_names = draw(st.lists(st.sampled_from(BUFFERS), max_size=3, unique=True))
    names = inputs + buffer_names

    def from_input() -> st.SearchStrategy[tuple[Any, ...]]:
        return st.tuples(st.just("from"), st.sampled_from(inputs), st.integers(0, 7))

    buffer_size = st.one_of(st.tuples(st.just("abs"), st.integers(0, 2**40)),
                            st.tuples(st.just("sizeof"), st.sampled_from(inputs)), from_input())
    buffers = {b: draw(buffer_size) for b in buffer_names}

    def dim(low: int, high: int) -> st.SearchStrategy[tuple[Any, ...]]:
        return st.one_of(st.tuples(st.just("abs"), st.integers(low, high)), from_input(),
                         st.tuples(st.just("sizeof"), st.sampled_from(names)))

    arg = st.one_of(st.tuples(st.just("ptr"), st.sampled_from(names)),
                    st.tuples(st.just("sizeof"), st.sampled_from(names)),
                    st.tuples(st.just("const"), st.integers(-(2**63), 2**63 - 1)))
    launch = st.tuples(
        st.just("exec"), st.sampled_from(kernel_names), st.lists(arg, max_size=5),
        st.tuples(dim(1, 2**31 - 1), dim(1, 65535), dim(1, 65535),
                  dim(1, 8), dim(1, 8), dim(1, 8), dim(0, 65536)))
    actions = st.recursive(
        st.lists(launch, min_size=1, max_size=3),
        lambda inner: st.lists(st.one_of(launch, st.tuples(st.just("repeat"), dim(0, 5), inner)),
                               min_size=1, max_size=3),
        max_leaves=8)
    flow = draw(actions)
    outputs = draw(st.lists(st.sampled_from(names), max_size=3, unique=True))
    return {"modules": modules, "kernels": kernels, "inputs": inputs, "buffers": buffers,
            "flow": flow, "outputs": outputs}


# --- renderers ------------------------------------------------------------------------------


def upstream_size(s: tuple[Any, ...]) -> dict[str, Any]:
    if s[0] == "abs":
        return {"Absolute": s[1]}
    if s[0] == "sizeof":
        return {"Sizeof": s[1]}
    return {"FromInput": {"bufname": s[1], "idx": s[2]}}


def pappus_size(s: tuple[Any, ...]) -> Any:
    if s[0] == "abs":
        return s[1] if s[1] % 2 else {"Absolute": s[1]}  # pappus also takes a bare integer
    if s[0] == "sizeof":
        return {"Sizeof": s[1]}
    return {"FromInput": {"input": s[1], "index": s[2], "type": "u64"}}


def upstream_arg(a: tuple[Any, ...]) -> dict[str, Any]:
    return {"ptr": {"Ptr": a[1]}, "sizeof": {"Sizeof": a[1]}, "const": {"Constant": a[1]}}[a[0]]


def pappus_arg(a: tuple[Any, ...]) -> dict[str, Any]:
    if a[0] == "const":
        return {"Constant": {"type": "i64", "value": a[1]}}
    return upstream_arg(a)


def upstream_flow(actions: list[Any]) -> list[Any]:
    out = []
    for a in actions:
        if a[0] == "exec":
            launch = {key: upstream_size(s) for key, s in zip(LAUNCH_FIELDS, a[3], strict=True)}
            out.append({"ExecKernel": [a[1], [upstream_arg(x) for x in a[2]], launch]})
        else:
            out.append({"Repeat": [upstream_size(a[1]), upstream_flow(a[2])]})
    return out


def pappus_flow(actions: list[Any]) -> list[Any]:
    out = []
    for a in actions:
        if a[0] == "exec":
            dims = [pappus_size(s) for s in a[3]]
            out.append({"ExecKernel": {"name": a[1], "args": [pappus_arg(x) for x in a[2]],
                                       "grid": dims[0:3], "block": dims[3:6], "shared_mem_bytes": dims[6]}})
        else:
            out.append({"Repeat": {"times": pappus_size(a[1]), "body": pappus_flow(a[2])}})
    return out


def reads(model: dict[str, Any]) -> dict[str, int]:
    """The largest FromInput index read from each input."""
    found: dict[str, int] = {}

    def size(s: tuple[Any, ...]) -> None:
        if s[0] == "from":
            found[s[1]] = max(found.get(s[1], -1), s[2])

    def walk(actions: list[Any]) -> None:
        for a in actions:
            if a[0] == "exec":
                for s in a[3]:
                    size(s)
            else:
                size(a[1])
                walk(a[2])

    for s in model["buffers"].values():
        size(s)
    walk(model["flow"])
    return found


def render_modules(model: dict[str, Any]) -> dict[str, Any]:
    return {
        "modules": [{"module_name": n, "path": p} for n, p in model["modules"]],
        "kernels": [{"module_name": m, "kernel_name": k} for k, m in model["kernels"]],
        "blueprint": {"inputs": list(model["inputs"]),
                      "buffers": {b: upstream_size(s) for b, s in model["buffers"].items()},
                      "outputs": list(model["outputs"]), "control_flow": upstream_flow(model["flow"])},
    }


def render_thesis(model: dict[str, Any]) -> dict[str, Any]:
    doc = render_modules(model)
    doc.pop("modules")
    doc["kernels"] = [k for k, _ in model["kernels"]]
    return {"module_path": model["modules"][0][1], **doc}


def render_pappus(model: dict[str, Any]) -> dict[str, Any]:
    sizes = reads(model)
    inputs = [{"name": n, "size": (sizes[n] + 1) * 8} if n in sizes else n for n in model["inputs"]]
    return {
        "schema": "pappus/function@1",
        "kernels": [{"name": k, "library": m} for k, m in model["kernels"]],
        "blueprint": {"inputs": inputs,
                      "buffers": {b: pappus_size(s) for b, s in model["buffers"].items()},
                      "outputs": list(model["outputs"]), "control_flow": pappus_flow(model["flow"])},
    }


# --- equivalence ----------------------------------------------------------------------------


def canonical(doc: dict[str, Any]) -> tuple[Any, ...]:
    """What an upstream config means: modules actually used, kernels by module, the blueprint."""
    gen = detect_dandelion(doc)
    if gen == "modules":
        used = {k["module_name"] for k in doc["kernels"]}
        modules = {m["module_name"]: m["path"] for m in doc["modules"] if m["module_name"] in used}
        kernels = [(k["module_name"], k["kernel_name"]) for k in doc["kernels"]]
    else:
        modules = {"": doc["module_path"]}
        kernels = [("", k) for k in doc["kernels"]]
    return gen, modules, kernels, doc["blueprint"]


def semantics(fc: FunctionConfig) -> FunctionConfig:
    """A function without its default library (a spelling choice, not part of its meaning)."""
    return dataclasses.replace(fc, library=None)


# --- properties -----------------------------------------------------------------------------


@SETTINGS
@given(model=models(odd_module_names=True))
def test_export_of_import_is_the_upstream_config(modules_dir: Path, model: dict[str, Any]) -> None:
    for x in (render_modules(model), render_thesis(model)):
        result = import_dandelion(x, modules_dir=modules_dir)
        back = export_dandelion(result.config, generation=result.generation,
                                module_paths=result.module_paths, module_names=result.module_names,
                                weights=result.weights)
        assert canonical(back) == canonical(x)


@SETTINGS
@given(model=models(odd_module_names=False))
def test_import_of_export_is_the_pappus_function(modules_dir: Path, model: dict[str, Any]) -> None:
    y = render_pappus(model)
    expected = parse_function(y)
    paths = dict(model["modules"])
    exported = export_dandelion(y, module_paths=paths)
    result = import_dandelion(exported, modules_dir=modules_dir)
    assert semantics(result.function) == semantics(expected)
    assert result.libraries == {lib: (modules_dir / paths[lib]).resolve() for lib in expected.libraries}


@SETTINGS
@given(model=models(odd_module_names=False))
def test_import_maps_every_field_to_its_pappus_twin(modules_dir: Path, model: dict[str, Any]) -> None:
    result = import_dandelion(render_modules(model), modules_dir=modules_dir)
    assert semantics(result.function) == semantics(parse_function(render_pappus(model)))
    assert parse_function(result.config) == result.function
