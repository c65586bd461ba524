"""Importing a Dandelion config without a modules directory: its modules resolve by name to
libraries registered already (``import_dandelion(..., registered=...)``; what
``Runtime.register_function`` does for a config given as a dict, text or bytes, and what the
HTTP API does), while configs read from files keep resolving module paths as files."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pappus
from pappus.errors import ValidationError
from pappus.importers import export_dandelion, import_dandelion

from .conftest import DATA

ROOT = Path(__file__).resolve().parents[2]
FI = {"FromInput": {"bufname": "cfg", "idx": 0}}


def launch() -> dict[str, Any]:
    return {"grid_dim_x": FI, "grid_dim_y": FI, "grid_dim_z": {"Absolute": 1}, "block_dim_x": {"Absolute": 16},
            "block_dim_y": {"Absolute": 16}, "block_dim_z": {"Absolute": 1}, "shared_mem_bytes": {"Absolute": 0}}


def two_modules() -> dict[str, Any]:
    """Two used modules (names unlike their files) and an unused one."""
    flow = [{"ExecKernel": [k, [{"Ptr": "A"}, {"Sizeof": "A"}, {"Ptr": "B"}], launch()]} for k in ("k1", "k2")]
    return {
        "modules": [{"module_name": "First Module", "path": "hip/one.hsaco"},
                    {"module_name": "two.hsaco", "path": "hip/2.hsaco"},
                    {"module_name": "spare", "path": "../nowhere/spare.hsaco"}],
        "kernels": [{"module_name": "First Module", "kernel_name": "k1"},
                    {"module_name": "two.hsaco", "kernel_name": "k2"}],
        "blueprint": {"inputs": ["cfg", "A"], "buffers": {"B": {"Sizeof": "A"}}, "outputs": ["B"],
                      "control_flow": flow},
    }


def errors_of(doc: Any, **kw: Any) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        import_dandelion(doc, **kw)
    return {e.path: e.message for e in info.value.errors}


def test_modules_resolve_to_registered_libraries_by_their_library_names() -> None:
    result = import_dandelion(two_modules(), registered={"first-module", "two.hsaco"})
    assert result.libraries == {} and result.registered == ("first-module", "two.hsaco")
    assert [k.library for k in result.function.kernels] == ["first-module", "two.hsaco"]
    assert result.module_names == {"first-module": "First Module", "two.hsaco": "two.hsaco"}
    assert result.module_paths == {"first-module": "hip/one.hsaco", "two.hsaco": "hip/2.hsaco"}
    assert any(n.startswith("modules[0] ('First Module'): resolved to the registered library 'first-module'")
               for n in result.notes), result.notes
    # The unused module's path (which climbs out) is not looked at, nor must it be registered.
    assert any("modules[2] ('spare'): no kernel uses this module" in n for n in result.notes)
    back = export_dandelion(result.config, module_paths=result.module_paths, module_names=result.module_names)
    assert back["modules"] == two_modules()["modules"][:2]


def test_a_library_named_after_the_file_is_the_fallback() -> None:
    result = import_dandelion(two_modules(), registered={"one.hsaco", "two.hsaco"})
    assert result.registered == ("one.hsaco", "two.hsaco")
    assert any("resolved to the registered library 'one.hsaco', named after the module's file" in n
               for n in result.notes), result.notes
    # The library of the module's own name wins over the file's.
    result = import_dandelion(two_modules(), registered={"one.hsaco", "first-module", "two.hsaco"})
    assert result.registered == ("first-module", "two.hsaco")


def test_a_file_name_that_is_another_modules_library_is_no_fallback() -> None:
    doc = two_modules()
    doc["modules"][0]["path"] = "hip/two.hsaco"  # its file's name is the other module's library
    found = errors_of(doc, registered={"two.hsaco"})
    assert list(found) == ["modules[0]"]
    assert "(or as" not in found["modules[0]"] and "as library 'first-module'" in found["modules[0]"]


def test_each_missing_module_is_named_at_its_entry() -> None:
    found = errors_of(two_modules(), registered=set())
    assert set(found) == {"modules[0]", "modules[1]"}
    assert found["modules[0]"] == (
        "module 'First Module' is not a registered library: register its code object first as library "
        "'first-module' (or as 'one.hsaco', after its file) (HTTP: PUT /v1/libraries/first-module), or give "
        "a modules directory (modules_dir) to read the module files instead")
    assert "as library 'two.hsaco' (or as '2.hsaco', after its file)" in found["modules[1]"]
    thesis = json.loads((DATA / "thesis" / "listing_4_1.json").read_text())
    found = errors_of(thesis, registered=set())
    assert list(found) == ["module_path"] and "as library 'matmul.hsaco' (HTTP" in found["module_path"]
    result = import_dandelion(thesis, registered={"matmul.hsaco"})
    assert result.registered == ("matmul.hsaco",) and result.config["library"] == "matmul.hsaco"


def test_files_are_read_where_there_is_a_modules_directory(modules_tree: Path) -> None:
    doc = {"modules": [{"module_name": "a.hsaco", "path": "a.hsaco"}],
           "kernels": [{"module_name": "a.hsaco", "kernel_name": "k"}],
           "blueprint": two_modules()["blueprint"] | {"control_flow": [
               {"ExecKernel": ["k", [{"Ptr": "A"}], launch()]}]}}
    # registered is ignored where a modules directory is given, or the config is a file
    result = import_dandelion(doc, modules_dir=modules_tree, registered={"a.hsaco"})
    assert result.libraries == {"a.hsaco": (modules_tree / "a.hsaco").resolve()} and result.registered == ()
    (modules_tree / "f.json").write_text(json.dumps(doc))
    result = import_dandelion(modules_tree / "f.json", registered={"a.hsaco"})
    assert list(result.libraries) == ["a.hsaco"] and result.registered == ()
    doc["modules"][0]["path"] = "missing.hsaco"
    found = errors_of(doc, modules_dir=modules_tree, registered={"a.hsaco"})
    assert "does not exist in the modules directory" in found["modules[0].path"]


# --- through Runtime.register_function ------------------------------------------------------


@pytest.fixture(scope="module")
def matmul_so(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pappus_cpu.build import build_library

    out = tmp_path_factory.mktemp("dandelion-registered")
    (so,) = [p for p in build_library(ROOT / "examples" / "matmul" / "matmul.hip", out, ["cpu"]) if p.suffix == ".so"]
    return so


def matmul_modules(path: str = "hip/matmul.so") -> dict[str, Any]:
    return {"modules": [{"module_name": "matmul.so", "path": path}],
            "kernels": [{"module_name": "matmul.so", "kernel_name": "matmul_at"}],
            "blueprint": {"inputs": ["cfg", "A"], "buffers": {"B": {"Sizeof": "A"}}, "outputs": ["B"],
                          "control_flow": [{"ExecKernel": ["matmul_at", [{"Ptr": "A"}, {"Sizeof": "A"},
                                                                         {"Ptr": "B"}], launch()]}]}}


def test_register_function_without_modules_dir_uses_the_tenants_libraries(tmp_path, matmul_so) -> None:
    a = (np.arange(36, dtype=np.int64) % 5).reshape(6, 6)
    inputs = {"cfg": struct.pack("<Q", 1), "A": a.tobytes()}
    with pappus.Runtime(engine="cpu-sequential", state_dir=tmp_path / "state") as rt:
        with pytest.raises(ValidationError) as info:
            rt.register_function("mm", matmul_modules(), format="dandelion")
        (err,) = info.value.errors
        assert err.path == "modules[0]" and "as library 'matmul.so'" in err.message and "modules_dir" in err.message
        lib = rt.register_library("matmul.so", matmul_so, tenant="alice")
        for source in (matmul_modules(), json.dumps(matmul_modules()), json.dumps(matmul_modules()).encode()):
            rec = rt.register_function("mm", source, tenant="alice", input_sizes={"cfg": 8})
            assert rec.source_format == "dandelion" and rec.libraries == {"matmul.so": lib.sha256}
        assert [r.name for r in rt.list_libraries(tenant="alice")] == ["matmul.so"]  # nothing new
        assert rt.registry.get_library("alice", "matmul.so").registered_at == lib.registered_at
        out = rt.invoke("mm", inputs, tenant="alice")
        assert (np.frombuffer(out["B"], np.int64).reshape(6, 6) == a @ a.T).all()
        with pytest.raises(ValidationError):  # the default tenant has no such library
            rt.register_function("mm", matmul_modules())


def test_register_function_from_files_still_registers_the_modules(tmp_path, matmul_so) -> None:
    libs = tmp_path / "libs"
    (libs / "hip").mkdir(parents=True)
    shutil.copy(matmul_so, libs / "hip" / "matmul.so")
    (libs / "mm.json").write_text(json.dumps(matmul_modules()))
    with pappus.Runtime(engine="cpu-sequential", state_dir=tmp_path / "state") as rt:
        assert rt.list_libraries() == []
        rec = rt.register_function("by-path", libs / "mm.json")  # modules_dir: the config's directory
        assert rec.libraries == {"matmul.so": hashlib.sha256(matmul_so.read_bytes()).hexdigest()}
        assert [r.name for r in rt.list_libraries()] == ["matmul.so"]  # registered from the file
        rec = rt.register_function("by-dir", matmul_modules(), modules_dir=libs)
        assert rec.source_format == "dandelion" and list(rec.libraries) == ["matmul.so"]
        assert not any("resolved to the registered library" in n for n in rec.notes)
        with pytest.raises(ValidationError) as info:  # a modules directory is used as one, whatever is registered
            rt.register_function("by-dir", matmul_modules("other.so"), modules_dir=libs)
        assert info.value.errors[0].path == "modules[0].path"
