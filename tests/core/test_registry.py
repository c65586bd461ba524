"""The registry survives restarts, writes atomically, and never trusts what is on disk."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import pappus
from pappus.errors import LibraryError, NotFound, ValidationError
from pappus.registry import Registry

from .helpers import HOST_LIB, matmul_config


def test_functions_survive_a_new_process(tmp_path):
    state = tmp_path / "state"
    with pappus.Runtime(engine="host-sequential", state_dir=state) as rt:
        rt.register_library("m", HOST_LIB)
        rt.register_function("mm", matmul_config(repeat=1))
    code = (
        "import sys, numpy as np, pappus;"
        "rt = pappus.Runtime(engine='host-sequential', state_dir=sys.argv[1]);"
        "a = np.eye(4, dtype=np.int64);"
        "out = rt.invoke('mm', {'A': a.tobytes()});"
        "print(np.frombuffer(out['B'], np.int64).sum()); rt.close()"
    )
    res = subprocess.run([sys.executable, "-c", code, str(state)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert int(res.stdout.strip()) == 4 + 2 * 16


def test_replacing_a_library_does_not_change_a_registered_function(tmp_path):
    from pappus.devices.host import host_library

    with pappus.Runtime(engine="host-sequential", state_dir=tmp_path) as rt:
        rt.register_library("m", HOST_LIB)
        rt.register_function("mm", matmul_config(repeat=1))
        before = rt.registry.get_function("default", "mm").libraries["m"]
        rt.register_library("m", host_library(["matmul_at_i64", "add_i64"]))  # new bytes, same name
        assert rt.registry.get_function("default", "mm").libraries["m"] == before
        a = np.eye(4, dtype=np.int64)
        assert rt.invoke("mm", {"A": a.tobytes()})["B"]


def test_tampered_blob_is_caught_at_load(tmp_path):
    with pappus.Runtime(engine="host-sequential", state_dir=tmp_path) as rt:
        rt.register_library("m", HOST_LIB)
        rt.register_function("mm", matmul_config(repeat=1))
        sha = rt.registry.get_library("default", "m").sha256
        path = rt.registry.blob_path(sha)
        path.chmod(0o644)
        path.write_bytes(HOST_LIB.replace(b"add_i64", b"add_i64 "))
        with pytest.raises(LibraryError) as info:
            rt.invoke("mm", {"A": bytes(8 * 16)})
        assert "does not match" in str(info.value)


def test_atomic_writes_leave_no_temporaries(tmp_path):
    reg = Registry(tmp_path)
    for i in range(20):
        reg.put_function("default", f"f{i}", {"x": i}, {}, "host-sequential")
    leftovers = [p for p in tmp_path.rglob(".tmp-*")]
    assert not leftovers
    assert len(reg.list_functions("default")) == 20
    lines = (tmp_path / "audit.log").read_text().splitlines()
    assert len(lines) == 20 and json.loads(lines[0])["action"] == "register"


@pytest.mark.parametrize("name", ["../evil", "/abs", "a" * 65, "UPPER", "x\x00y", ""])
def test_unsafe_names_rejected(tmp_path, name):
    reg = Registry(tmp_path)
    with pytest.raises(ValidationError):
        reg.put_library("default", name, "0" * 64, 1, "host", "x", [])
    with pappus.Runtime(engine="host-sequential", state_dir=tmp_path) as rt:
        with pytest.raises(ValidationError):
            rt.register_library(name, HOST_LIB)
    assert not list((tmp_path / "tenants").rglob("*.json"))


def test_missing_objects_are_not_found(tmp_path):
    with pappus.Runtime(engine="host-sequential", state_dir=tmp_path) as rt:
        with pytest.raises(NotFound):
            rt.invoke("nope", {})
        with pytest.raises(ValidationError) as info:
            rt.register_function("mm", matmul_config())
        assert "library 'm' is not registered" in str(info.value)
        assert not rt.registry.list_functions("default")


def test_signature_mismatch_rejected_at_registration(tmp_path):
    doc = matmul_config()
    doc["blueprint"]["control_flow"][0]["ExecKernel"]["args"].pop()
    doc["blueprint"]["control_flow"][1]["Repeat"]["body"][0]["ExecKernel"]["args"][2] = {
        "Constant": {"type": "f64", "value": 1.0}}
    with pappus.Runtime(engine="host-sequential", state_dir=tmp_path) as rt:
        rt.register_library("m", HOST_LIB)
        with pytest.raises(ValidationError) as info:
            rt.register_function("mm", doc)
        msgs = [str(e) for e in info.value.errors]
        assert any("control_flow[0].ExecKernel.args: kernel 'matmul_at_i64' takes 3 arguments, 2 given" in m
                   for m in msgs), msgs
        assert any("Repeat.body[0].ExecKernel.args[2]: f64 is a float but the kernel expects" in m for m in msgs), msgs
        with pytest.raises(ValidationError):
            rt.register_function("mm2", dict(doc, kernels=["matmul_at_i64", "nope"]))
        assert not rt.registry.list_functions("default"), "nothing is registered on error"
