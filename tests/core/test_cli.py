"""The CLI: one-line errors, every problem listed, JSON for machines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from pappus.cli import main

from .helpers import HOST_LIB, matmul_config


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pappus", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_plugins_json_lists_builtins():
    res = run_cli("plugins", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    names = {p["name"] for p in report["plugins"]}
    assert {"host", "cpu", "hip", "hsa"} <= names
    host = next(b for b in report["backends"] if b["name"] == "host")
    assert host["available"] and {e["name"] for e in host["engines"]} == {"host-sequential", "host-multiprocess"}


def test_plugins_says_how_workers_will_be_confined_here():
    from pappus import landlock

    report = json.loads(run_cli("plugins", "--json").stdout)["worker_lockdown"]
    abi = landlock.abi()
    scope = (f"yes (Landlock ABI {abi})" if abi >= landlock.SCOPES_ABI else
             f"no: Landlock ABI {abi}; scoping needs {landlock.SCOPES_ABI} (Linux 6.12)")
    assert report == {"enabled": True, "seccomp": "yes", "scope": scope}  # seccomp: the CPU backend needs it too
    table = run_cli("plugins").stdout
    assert "seccomp deny-list after open: yes" in " ".join(table.split())
    off = subprocess.run([sys.executable, "-m", "pappus", "plugins", "--json"], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PAPPUS_WORKER_LOCKDOWN": "0"})
    assert json.loads(off.stdout)["worker_lockdown"]["enabled"] is False


def test_validate_prints_every_wrong_field(tmp_path, capsys):
    doc = matmul_config()
    doc["blueprint"]["outputs"] = ["nope"]
    doc["blueprint"]["control_flow"][0]["ExecKernel"]["grid"] = [0]
    doc["bogus"] = 1
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    code = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert code == 1
    assert "3 problems" in err
    for fragment in ("bogus: unknown field", "blueprint.outputs[0]:", "ExecKernel.grid[0]:"):
        assert fragment in err
    assert "Traceback" not in err


def test_validate_against_library(tmp_path, capsys):
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(matmul_config()))
    lib = tmp_path / "m.json"
    lib.write_bytes(HOST_LIB)
    assert main(["validate", str(path), "--library", f"m={lib}"]) == 0
    assert "valid (2 kernels, checked against 1 library (host))" in capsys.readouterr().out


def test_run_command_end_to_end(tmp_path):
    cfg = tmp_path / "mm.json"
    cfg.write_text(json.dumps(matmul_config(repeat=1)))
    lib = tmp_path / "m.json"
    lib.write_bytes(HOST_LIB)
    a = np.arange(16, dtype=np.int64).reshape(4, 4)
    np.save(tmp_path / "a.npy", a)
    res = run_cli("run", str(cfg), "--library", f"m={lib}", "--input", f"A={tmp_path / 'a.npy'}",
                  "-o", str(tmp_path / "out"), "--engine", "host-sequential")
    assert res.returncode == 0, res.stderr
    b = np.frombuffer((tmp_path / "out" / "B.bin").read_bytes(), np.int64).reshape(4, 4)
    assert (b == a @ a.T + 2).all()


def test_errors_are_one_line_without_traceback(tmp_path):
    res = run_cli("run", str(tmp_path / "missing.json"), "--engine", "host-sequential")
    assert res.returncode == 1
    assert res.stderr.startswith("pappus: error:") and "Traceback" not in res.stderr
    res = run_cli("validate", str(tmp_path / "missing.json"), "--debug")
    assert res.returncode != 0 and "Traceback" in res.stderr


def test_import_dandelion_cli(tmp_path):
    src = Path(__file__).resolve().parents[1] / "importers" / "data" / "thesis" / "listing_4_1.json"
    out = tmp_path / "converted.json"
    res = run_cli("import", "dandelion", str(src), "-o", str(out))
    assert res.returncode == 0, res.stderr
    doc = json.loads(out.read_text())
    assert doc["schema"] == "pappus/function@1"
    assert "library matmul.hsaco" in res.stderr
    res = run_cli("import", "dandelion", str(src), "--modules-dir", "/")
    assert res.returncode == 1 and "module_path" in res.stderr
