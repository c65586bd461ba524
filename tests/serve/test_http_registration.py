"""The registration routes' query parameters over real HTTP: ``PUT /v1/functions/{name}
?format=dandelion`` importing an upstream config whose modules were uploaded as libraries
first (and ``?input_size=NAME=BYTES``, ``?engine=NAME``), ``PUT /v1/libraries/{name}?backend=NAME``,
and unknown query parameters refused by name on every route."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .helpers import UNLIMITED_RATE, add_tenants, b64, thread_server, unb64

ROOT = Path(__file__).resolve().parents[2]
HIP_KERNELS = ROOT / "tests" / "hip" / "kernels"
FI = {"FromInput": {"bufname": "cfg", "idx": 0}}


def launch() -> dict[str, Any]:
    return {"grid_dim_x": FI, "grid_dim_y": FI, "grid_dim_z": {"Absolute": 1}, "block_dim_x": {"Absolute": 16},
            "block_dim_y": {"Absolute": 16}, "block_dim_z": {"Absolute": 1}, "shared_mem_bytes": {"Absolute": 0}}


def blueprint() -> dict[str, Any]:
    """B = A A^T with examples/matmul's matmul_at, the grid read from cfg (as upstream's
    test_gpu_matmul_para.json)."""
    return {"inputs": ["cfg", "A"], "buffers": {"B": {"Sizeof": "A"}}, "outputs": ["B"],
            "control_flow": [{"ExecKernel": ["matmul_at", [{"Ptr": "A"}, {"Sizeof": "A"}, {"Ptr": "B"}],
                                             launch()]}]}


def modules_config(module: str = "matmul.so", path: str = "hip/matmul.so") -> dict[str, Any]:
    return {"modules": [{"module_name": module, "path": path}],
            "kernels": [{"module_name": module, "kernel_name": "matmul_at"}], "blueprint": blueprint()}


def thesis_config(module_path: str = "libs/matmul.so") -> dict[str, Any]:
    return {"module_path": module_path, "kernels": ["matmul_at"], "blueprint": blueprint()}


@pytest.fixture(scope="module")
def matmul_so(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real CPU library of examples/matmul/matmul.hip."""
    from pappus_cpu.build import build_library

    out = tmp_path_factory.mktemp("serve-dandelion")
    (so,) = [p for p in build_library(ROOT / "examples" / "matmul" / "matmul.hip", out, ["cpu"]) if p.suffix == ".so"]
    return so.read_bytes()


@pytest.fixture(scope="module")
def hsaco(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real AMD code object (gfx90a), built with hipcc; skipped with the reason without it."""
    from pappus_hip.build import build_hsaco, find_hipcc

    if find_hipcc() is None:
        pytest.skip("hipcc not found: this test builds a real AMD code object with ROCm's hipcc "
                    "(Debian: apt install hipcc libamdhip64-dev)")
    out = tmp_path_factory.mktemp("serve-hsaco")
    (path,) = build_hsaco(HIP_KERNELS / "clean.hip", out, ["gfx90a"], bundle=False)
    return path.read_bytes()


@pytest.fixture
def server(tmp_path):
    tokens = add_tenants(tmp_path, "alice", "bob", **UNLIMITED_RATE)
    with thread_server(tmp_path, engine="cpu-sequential") as srv:
        srv.tokens = tokens
        yield srv


def errors(r: Any) -> dict[str, str]:
    assert r.status_code == 422, r.text
    return {e["path"]: e["message"] for e in r.json()["errors"]}


def matmul_inputs(n: int = 4) -> tuple[dict[str, str], np.ndarray]:
    a = (np.arange(n * n, dtype=np.int64) % 7).reshape(n, n)
    return {"cfg": b64(struct.pack("<Q", 1)), "A": b64(a.tobytes())}, a @ a.T


# --- ?format=dandelion: modules resolve to the tenant's libraries ----------------------------


def test_dandelion_config_imports_against_the_uploaded_module(server, matmul_so) -> None:
    config = json.dumps(modules_config())
    with server.client(server.tokens["alice"]) as c:
        # Before the module is uploaded: 422 at the module's entry, naming the library to PUT.
        r = c.put("/v1/functions/mm?format=dandelion", content=config)
        msg = errors(r)["modules[0]"]
        assert "module 'matmul.so' is not a registered library" in msg
        assert "as library 'matmul.so'" in msg and "PUT /v1/libraries/matmul.so" in msg
        assert "modules directory" not in msg and "modules_dir" not in msg  # nothing an HTTP caller can give
        assert c.get("/v1/functions").json() == {"functions": []}

        r = c.put("/v1/libraries/matmul.so", content=matmul_so)
        assert r.status_code == 201, r.text
        sha = r.json()["sha256"]
        r = c.put("/v1/functions/mm?format=dandelion", content=config)
        assert r.status_code == 201, r.text
        assert r.json()["libraries"] == {"matmul.so": sha} and r.json()["source_format"] == "dandelion"
        # Nothing new was registered: the import used the library as it was uploaded.
        assert [x["name"] for x in c.get("/v1/libraries").json()["libraries"]] == ["matmul.so"]
        got = c.get("/v1/functions/mm").json()
        assert got["config"]["library"] == "matmul.so"
        assert any("resolved to the registered library 'matmul.so'" in n for n in got["notes"]), got["notes"]

        inputs, want = matmul_inputs()
        r = c.post("/v1/functions/mm/invoke", json={"inputs": inputs})
        assert r.status_code == 200, r.text
        assert (np.frombuffer(unb64(r.json()["outputs"]["B"]), np.int64).reshape(want.shape) == want).all()

    # Another tenant's library of that name is not found: names resolve in the caller's namespace.
    with server.client(server.tokens["bob"]) as c:
        r = c.put("/v1/functions/mm?format=dandelion", content=config)
        assert "PUT /v1/libraries/matmul.so" in errors(r)["modules[0]"]


def test_thesis_config_and_a_library_named_after_the_module_file(server, matmul_so) -> None:
    with server.client(server.tokens["alice"]) as c:
        r = c.put("/v1/functions/t?format=dandelion", content=json.dumps(thesis_config("libs/Matmul.so")))
        msg = errors(r)["module_path"]
        assert "module 'libs/Matmul.so' is not a registered library" in msg and "as library 'matmul.so'" in msg
        assert c.put("/v1/libraries/matmul.so", content=matmul_so).status_code == 201
        r = c.put("/v1/functions/t?format=dandelion", content=json.dumps(thesis_config("libs/Matmul.so")))
        assert r.status_code == 201 and list(r.json()["libraries"]) == ["matmul.so"], r.text

        # A module whose name and file differ: the library of its name first, else of its file's name.
        doc = json.dumps(modules_config(module="mm-kernels", path="cuda/matmul.so"))
        r = c.put("/v1/functions/m2?format=dandelion", content=doc)
        assert r.status_code == 201 and list(r.json()["libraries"]) == ["matmul.so"], r.text
        assert c.put("/v1/libraries/mm-kernels", content=matmul_so).status_code == 201
        r = c.put("/v1/functions/m2?format=dandelion", content=doc)
        assert r.status_code == 200 and list(r.json()["libraries"]) == ["mm-kernels"], r.text
        inputs, want = matmul_inputs(8)
        for fn in ("t", "m2"):
            r = c.post(f"/v1/functions/{fn}/invoke", json={"inputs": inputs})
            assert r.status_code == 200, r.text
            assert (np.frombuffer(unb64(r.json()["outputs"]["B"]), np.int64).reshape(want.shape) == want).all()


def test_unused_modules_need_no_library_and_each_missing_one_is_named(server, matmul_so) -> None:
    doc = modules_config()
    doc["modules"].append({"module_name": "spare.hsaco", "path": "spare.hsaco"})
    doc["modules"].insert(0, {"module_name": "Other Module", "path": "x/other.so"})
    doc["kernels"].append({"module_name": "Other Module", "kernel_name": "other"})
    with server.client(server.tokens["alice"]) as c:
        found = errors(c.put("/v1/functions/mm?format=dandelion", content=json.dumps(doc)))
        assert set(found) == {"modules[0]", "modules[1]"}, found
        assert "module 'Other Module'" in found["modules[0]"]
        assert "as library 'other-module' (or as 'other.so', after its file)" in found["modules[0]"]
        assert "PUT /v1/libraries/other-module" in found["modules[0]"]
        assert "as library 'matmul.so'" in found["modules[1]"]
        doc["modules"].pop(0)
        doc["kernels"].pop()
        assert c.put("/v1/libraries/matmul.so", content=matmul_so).status_code == 201
        r = c.put("/v1/functions/mm?format=dandelion", content=json.dumps(doc))
        assert r.status_code == 201, r.text
        notes = c.get("/v1/functions/mm").json()["notes"]
        assert any("modules[1] ('spare.hsaco'): no kernel uses this module" in n for n in notes), notes


def test_input_size_declares_what_callers_send(server, matmul_so) -> None:
    config = json.dumps(modules_config())
    with server.client(server.tokens["alice"]) as c:
        assert c.put("/v1/libraries/matmul.so", content=matmul_so).status_code == 201
        r = c.put("/v1/functions/mm?format=dandelion&input_size=cfg=16", content=config)
        assert r.status_code == 201, r.text
        inputs = c.get("/v1/functions/mm").json()["config"]["blueprint"]["inputs"]
        assert {"name": "cfg", "size": 16} in inputs
        ins, want = matmul_inputs()
        r = c.post("/v1/functions/mm/invoke", json={"inputs": {**ins, "cfg": b64(struct.pack("<QQ", 1, 99))}})
        assert r.status_code == 200, r.text
        r = c.post("/v1/functions/mm/invoke", json={"inputs": ins})  # 8 bytes: not the declared 16
        assert r.status_code == 422, r.text

        # Malformed values: 422 naming input_size, every problem at once, nothing stored.
        bad = errors(c.put("/v1/functions/mm2?format=dandelion&input_size=cfg&input_size=A=x&input_size=B=1"
                           "&input_size=B=2", content=config))
        assert list(bad) == ["input_size"]
        r = c.put("/v1/functions/mm2?format=dandelion&input_size=cfg&input_size=A=x", content=config)
        messages = [e["message"] for e in r.json()["errors"]]
        assert r.status_code == 422 and {e["path"] for e in r.json()["errors"]} == {"input_size"}
        assert messages == ["'cfg' is not NAME=BYTES", "A=x: BYTES must be a non-negative whole number of bytes"]
        r = c.put("/v1/functions/mm2?format=dandelion&input_size=cfg=8&input_size=cfg=16", content=config)
        assert "'cfg' is given twice" in errors(r)["input_size"]
        r = c.put("/v1/functions/mm2?format=dandelion&input_size=-8", content=config)
        assert "is not NAME=BYTES" in errors(r)["input_size"]
        # Sizes the config refuses: named in the parameter's terms.
        r = c.put("/v1/functions/mm2?format=dandelion&input_size=nope=8", content=config)
        assert errors(r) == {"input_size.nope": "'nope' is not an input of this config"}
        r = c.put("/v1/functions/mm2?format=dandelion&input_size=cfg=4", content=config)
        found = errors(r)
        assert set(found) == {f"blueprint.control_flow[0].ExecKernel[2].grid_dim_{a}.FromInput.idx" for a in "xy"}
        for msg in found.values():
            assert "which has 4 bytes (declared with ?input_size)" in msg and "input_sizes" not in msg
        # Only Dandelion configs take it.
        r = c.put("/v1/functions/mm2?input_size=cfg=8", content=config)
        assert "applies to Dandelion configs only" in errors(r)["input_size"]
        assert [f["name"] for f in c.get("/v1/functions").json()["functions"]] == ["mm"]


def test_engine_chooses_where_a_dandelion_config_runs(server, matmul_so) -> None:
    config = json.dumps(modules_config())
    with server.client(server.tokens["alice"]) as c:
        assert c.put("/v1/libraries/matmul.so", content=matmul_so).status_code == 201
        # Refused, each at the parameter, nothing stored: a pappus config names its own engine.
        found = errors(c.put("/v1/functions/mm?engine=cpu-multiprocess", content=config))
        assert found == {"engine": "applies to Dandelion configs only (?format=dandelion); a pappus config names "
                                   "its engine itself (its 'engine' field)"}
        assert "applies to Dandelion configs only" in errors(c.put("/v1/functions/mm?engine=", content=config))["engine"]
        found = errors(c.put("/v1/functions/mm?format=dandelion&engine=cpu-multiprocess&engine=cpu-sequential",
                             content=config))
        assert found == {"engine": "is given 2 times; give it once"}
        found = errors(c.put("/v1/functions/mm?format=dandelion&engine=cpu-turbo", content=config))
        assert list(found) == ["engine"] and found["engine"].startswith("'cpu-turbo' is not an engine here: ")
        found = errors(c.put("/v1/functions/mm?format=dandelion&format=pappus&engine=cpu-multiprocess",
                             content=config))
        assert found == {"format": "is given 2 times; give it once"}  # which format it is, is not known
        assert c.get("/v1/functions").json() == {"functions": []}

        r = c.put("/v1/functions/mm?format=dandelion&engine=cpu-multiprocess", content=config)
        assert r.status_code == 201, r.text
        assert r.json()["engine"] == "cpu-multiprocess"
        assert c.get("/v1/functions/mm").json()["config"]["engine"] == "cpu-multiprocess"
        inputs, want = matmul_inputs()
        r = c.post("/v1/functions/mm/invoke", json={"inputs": inputs})
        assert r.status_code == 200, r.text
        assert (np.frombuffer(unb64(r.json()["outputs"]["B"]), np.int64).reshape(want.shape) == want).all()
        # Without ?engine=, the server's own (cpu-sequential), as before.
        assert c.put("/v1/functions/mm?format=dandelion", content=config).json()["engine"] == "cpu-sequential"
    assert [e["engine"] for e in server.runtime.metrics() if e["outcomes"]] == ["cpu-multiprocess"]


# --- ?backend=NAME -----------------------------------------------------------------------------


def test_library_for_another_backend_than_the_default_engine(server, hsaco, matmul_so) -> None:
    with server.client(server.tokens["alice"]) as c:
        r = c.put("/v1/libraries/k.hsaco", content=hsaco)  # the server's default is cpu-sequential
        assert r.status_code == 422 and r.json()["error"] == "library_error", r.text
        assert "for the hip backend" in r.json()["errors"][0]["message"]
        r = c.put("/v1/libraries/k.hsaco?backend=hip", content=hsaco)
        assert r.status_code == 201, r.text
        rec = r.json()
        assert rec["backend"] == "hip" and rec["format"] == "amdgpu-elf" and "matmul_at_i64" in rec["kernels"]
        assert c.get("/v1/libraries/k.hsaco").json()["backend"] == "hip"
        r = c.put("/v1/libraries/k.hsaco?backend=hip", content=hsaco)
        assert r.status_code == 200, r.text
        # The default backend's own name is accepted too, and still checks the bytes.
        assert c.put("/v1/libraries/m?backend=cpu", content=matmul_so).json()["backend"] == "cpu"
        r = c.put("/v1/libraries/m2?backend=cpu", content=hsaco)
        assert r.status_code == 422 and r.json()["error"] == "library_error"
        # An imported Dandelion config names no engine: checked on the server's (cpu), it is
        # refused, naming the library, not a 500.
        doc = modules_config(module="k.hsaco", path="k.hsaco")
        doc["kernels"][0]["kernel_name"] = "matmul_at_i64"
        doc["blueprint"]["control_flow"][0]["ExecKernel"][0] = "matmul_at_i64"
        found = errors(c.put("/v1/functions/f?format=dandelion", content=json.dumps(doc)))
        assert "library 'k.hsaco' cannot run on backend 'cpu'" in found["library"], found
        # ?engine= names where it runs: the hip backend checks it (no GPU needed to register).
        r = c.put("/v1/functions/f?format=dandelion&engine=hip-sequential", content=json.dumps(doc))
        assert r.status_code == 201, r.text
        assert r.json()["engine"] == "hip-sequential" and r.json()["libraries"] == {"k.hsaco": rec["sha256"]}


def test_unknown_or_repeated_backend_is_422_naming_it(server, matmul_so) -> None:
    with server.client(server.tokens["alice"]) as c:
        msg = errors(c.put("/v1/libraries/m?backend=rocm", content=matmul_so))["backend"]
        assert msg.startswith("'rocm' is not an installed backend (installed: ") and "cpu" in msg and "hip" in msg
        msg = errors(c.put("/v1/libraries/m?backend=hip-sequential", content=matmul_so))["backend"]
        assert "'hip-sequential' is an engine, give its backend: backend=hip" in msg
        assert "must name a backend" in errors(c.put("/v1/libraries/m?backend=", content=matmul_so))["backend"]
        msg = errors(c.put("/v1/libraries/m?backend=cpu&backend=hip", content=matmul_so))["backend"]
        assert msg == "is given 2 times; give it once"
        assert c.get("/v1/libraries").json() == {"libraries": []}


# --- unknown query parameters ------------------------------------------------------------------


def test_unknown_query_parameters_are_refused_by_name(server, matmul_so) -> None:
    config = json.dumps(modules_config())
    with server.client(server.tokens["alice"]) as c:
        assert c.put("/v1/libraries/matmul.so", content=matmul_so).status_code == 201
        found = errors(c.put("/v1/functions/mm?fromat=dandelion", content=config))
        assert found == {"fromat": "unknown query parameter, did you mean 'format'? "
                                   "(this route takes: format, input_size, engine)"}
        found = errors(c.put("/v1/functions/mm?format=dandelion&inputsize=cfg=8&x=1", content=config))
        assert set(found) == {"inputsize", "x"} and "did you mean 'input_size'?" in found["inputsize"]
        found = errors(c.put("/v1/libraries/m?backnd=hip", content=matmul_so))
        assert found == {"backnd": "unknown query parameter, did you mean 'backend'? (this route takes: backend)"}
        found = errors(c.put("/v1/libraries/m?format=dandelion", content=matmul_so))
        assert "unknown query parameter" in found["format"]
        found = errors(c.put("/v1/functions/mm?format=dandelion&format=pappus", content=config))
        assert found == {"format": "is given 2 times; give it once"}
        assert c.get("/v1/functions").json() == {"functions": []}
        assert [x["name"] for x in c.get("/v1/libraries").json()["libraries"]] == ["matmul.so"]

        # Every other route takes none, and says so (after authentication).
        assert c.put("/v1/functions/mm?format=dandelion", content=config).status_code == 201
        for method, url in [("GET", "/v1/libraries?all=1"), ("GET", "/v1/functions/mm?full"),
                            ("DELETE", "/v1/functions/mm?force=1"), ("GET", "/v1/libraries/matmul.so?v=2")]:
            r = c.request(method, url)
            (path, message), = errors(r).items()
            assert path == url.split("?")[1].split("=")[0] and message == "unknown query parameter (this route takes none)"
        r = c.post("/v1/functions/mm/invoke?deadline=2", json={"inputs": {}})
        assert errors(r) == {"deadline": "unknown query parameter (this route takes none)"}
        assert c.get("/v1/functions/mm").status_code == 200  # the DELETE above deleted nothing
    with server.client() as anonymous:
        assert anonymous.get("/v1/libraries?all=1").status_code == 401
