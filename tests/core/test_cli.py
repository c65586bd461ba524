"""The CLI: one-line errors, every problem listed, JSON for machines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

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


def test_a_wrong_output_directory_is_named_before_anything_runs(tmp_path):
    cfg = tmp_path / "mm.json"
    cfg.write_text(json.dumps(matmul_config(repeat=1)))
    lib = tmp_path / "m.json"
    lib.write_bytes(HOST_LIB)
    np.save(tmp_path / "a.npy", np.arange(16, dtype=np.int64).reshape(4, 4))
    afile = tmp_path / "afile"
    afile.write_text("")
    run = ["run", str(cfg), "--library", f"m={lib}", "--input", f"A={tmp_path / 'a.npy'}", "--engine", "host-sequential"]
    res = run_cli(*run, "-o", str(afile))
    assert res.returncode == 1 and res.stderr == f"pappus: error: -o: {str(afile)!r} is a file, not a directory\n"
    assert res.stdout == ""  # nothing ran (it printed no output sizes)
    res = run_cli(*run, "-o", str(afile / "sub"))
    assert res.stderr.startswith(f"pappus: error: -o: cannot create {str(afile / 'sub')!r}: "), res.stderr
    res = run_cli("build", str(tmp_path / "mm.json"), "-o", str(afile), "--targets", "cpu")
    assert res.stderr == f"pappus: error: -o: {str(afile)!r} is a file, not a directory\n", res.stderr


def test_an_unknown_option_is_reported_by_its_command_with_a_suggestion():
    res = run_cli("tenant", "add", "bob", "--quotaa", "x=1")
    assert res.returncode == 2
    assert res.stderr.startswith("usage: pappus tenant add "), res.stderr
    assert res.stderr.splitlines()[-1] == ("pappus tenant add: error: unrecognized arguments: --quotaa x=1 "
                                           "(--quotaa: did you mean --quota?)")
    last = run_cli("run", "f.json", "--jsn").stderr.splitlines()[-1]
    assert last == "pappus run: error: unrecognized arguments: --jsn", last  # nothing close: no guess


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


# --- bugs found by walking through the docs --------------------------------------------------

BRACKET_PLUGIN = '''
from dataclasses import replace

from pappus.devices.host import HOST_BACKEND
from pappus.hookspecs import hookimpl
from pappus.interfaces import Availability


@hookimpl
def pappus_register_backends(registry):
    registry.add(replace(HOST_BACKEND, name="brackets",
                         check=lambda: Availability(False, "hip-python is not installed (pip install 'pappus[hip]')")))
'''


def _words(text: str) -> str:
    return " ".join(text.split())


def test_plugins_table_prints_reasons_and_errors_verbatim(tmp_path):
    (tmp_path / "bracket_plugin.py").write_text(BRACKET_PLUGIN)
    (tmp_path / "broken_plugin.py").write_text("raise ImportError(\"needs pip install 'pappus[cuda]'\")\n")
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "COLUMNS": "400",
           "PAPPUS_PLUGIN_MODULES": "bracket_plugin,broken_plugin"}
    res = subprocess.run([sys.executable, "-m", "pappus", "plugins"], capture_output=True, text=True, timeout=120,
                         env=env)
    assert res.returncode == 0, res.stderr
    out = _words(res.stdout)
    assert "(pip install 'pappus[hip]')" in out  # Rich markup took '[hip]' for a tag
    assert "needs pip install 'pappus[cuda]'" in out


def test_plugin_module_also_installed_through_its_entry_point_is_loaded_once():
    env = {**os.environ, "PAPPUS_PLUGIN_MODULES": "pappus.devices.host,pappus.devices.host", "COLUMNS": "400"}
    res = subprocess.run([sys.executable, "-m", "pappus", "plugins", "--json"], capture_output=True, text=True,
                         timeout=120, env=env)
    report = json.loads(res.stdout)
    assert [p for p in report["plugins"] if not p["ok"]] == []
    assert [p["name"] for p in report["plugins"] if p["module"] == "pappus.devices.host"] == ["host"]
    table = subprocess.run([sys.executable, "-m", "pappus", "plugins"], capture_output=True, text=True,
                           timeout=120, env=env).stdout
    assert "failed to load" not in table and "already registered" not in table


def test_tenant_add_refuses_weight_zero_like_tenant_set(tmp_path, capsys):
    state = str(tmp_path / "state")
    assert main(["tenant", "add", "bob", "--state-dir", state]) == 0
    capsys.readouterr()
    assert main(["tenant", "set", "bob", "--weight", "0", "--state-dir", state]) == 1
    set_err = capsys.readouterr().err
    assert main(["tenant", "add", "dave", "--weight", "0", "--state-dir", state]) == 1
    add_err = capsys.readouterr().err
    assert add_err == set_err == "pappus: error: weight: 0 is not a whole number from 1 to 1000\n"
    assert main(["tenant", "list", "--json", "--state-dir", state]) == 0
    assert [t["name"] for t in json.loads(capsys.readouterr().out)] == ["bob"]


def test_a_state_dir_that_is_a_file_is_named(tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("x")
    want = f"--state-dir: {str(afile)!r} is not a directory"
    for cmd in (["list"], ["tenant", "list"], ["tenant", "add", "x"], ["register", "library", "m", str(afile)],
                ["serve", "--port", "0", "--no-auth", "--engine", "host-sequential"]):
        res = run_cli(*cmd, "--state-dir", str(afile))
        assert res.returncode == 1 and res.stderr == f"pappus: error: {want}\n", (cmd, res.stderr)
    env = {**os.environ, "PAPPUS_HOME": str(afile)}
    for cmd in (["list"], ["serve", "--port", "0", "--no-auth", "--engine", "host-sequential"]):
        res = subprocess.run([sys.executable, "-m", "pappus", *cmd], capture_output=True, text=True, timeout=120,
                             env=env)
        assert res.stderr == f"pappus: error: $PAPPUS_HOME: {str(afile)!r} is not a directory\n", (cmd, res.stderr)


def test_read_only_commands_do_not_create_the_state_dir(tmp_path, capsys):
    state = tmp_path / "nope" / "x"
    for cmd, out in ((["tenant", "list"], "no tenants"), (["tenant", "list", "--json"], "[]"),
                     (["tenant", "defaults"], "concurrent_invocations"), (["list"], ""),
                     (["list", "--json"], '"libraries": []')):
        assert main([*cmd, "--state-dir", str(state)]) == 0, cmd
        captured = capsys.readouterr()
        assert out in captured.out and "does not exist" in captured.err, cmd
    for cmd in (["tenant", "rotate", "bob"], ["tenant", "remove", "bob"], ["tenant", "set", "bob", "--weight", "2"]):
        assert main([*cmd, "--state-dir", str(state)]) == 1, cmd  # a tenant of no state dir does not exist
        assert "no tenant named 'bob'" in capsys.readouterr().err, cmd
    assert not (tmp_path / "nope").exists()


def test_unreadable_inputs_name_their_option(tmp_path):
    cfg = tmp_path / "mm.json"
    cfg.write_text(json.dumps(matmul_config(repeat=1)))
    for value, what in ((str(tmp_path), "a directory"), ("/dev/null", "a character device")):
        res = run_cli("run", str(cfg), "--input", f"A={value}", "--engine", "host-sequential")
        assert res.stderr == f"pappus: error: --input A: {value!r} is {what}, not a regular file\n", res.stderr


def test_run_and_validate_word_a_missing_library_alike(tmp_path):
    cfg = tmp_path / "mm.json"
    cfg.write_text(json.dumps(matmul_config(repeat=1)))
    missing = tmp_path / "missing.so"
    line = f"pappus: error: --library m: cannot read {str(missing)!r}: No such file or directory\n"
    assert run_cli("run", str(cfg), "--library", f"m={missing}", "--engine", "host-sequential").stderr == line
    assert run_cli("validate", str(cfg), "--library", f"m={missing}").stderr == line


def test_cpu_library_hints_name_the_targets_flag(tmp_path, capsys):
    cfg = tmp_path / "mm.json"
    cfg.write_text(json.dumps(matmul_config(repeat=1)))
    text = tmp_path / "m.so"
    text.write_text("not a library")
    assert main(["validate", str(cfg), "--library", f"m={text}", "--backend", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "`pappus build --targets cpu`" in err and "--target " not in err


def test_run_help_says_where_the_registry_is():
    out = _words(run_cli("run", "--help").stdout)
    assert "temporary registry" in out and "~/.local/share/pappus" not in out


def test_tenant_remove_counts_objects_in_words(tmp_path):
    state = str(tmp_path / "state")
    lib = tmp_path / "m.json"
    lib.write_bytes(HOST_LIB)
    assert run_cli("tenant", "add", "alice", "--state-dir", state).returncode == 0
    res = run_cli("register", "library", "m", str(lib), "--tenant", "alice", "--engine", "host-sequential",
                  "--state-dir", state)
    assert res.returncode == 0, res.stderr
    assert run_cli("tenant", "remove", "alice", "--state-dir", state).stdout == "tenant alice removed, 1 object removed\n"


def test_an_engine_of_no_installed_backend_says_so(tmp_path):
    cfg = tmp_path / "mm.json"
    cfg.write_text(json.dumps(matmul_config(repeat=1)))
    for engine in ("gpu-sequential", "gpu"):
        err = run_cli("run", str(cfg), "--engine", engine).stderr
        assert "'gpu' is not an installed backend" in err and "(installed" in err and "host" in err, err
        assert "unavailable" not in err, err


def test_conformance_given_an_engine_for_a_backend_names_the_backend():
    err = run_cli("conformance", "--backend", "host-sequential").stderr
    assert err.strip() == ("pappus: error: --backend: 'host-sequential' is not an installed backend (installed: "
                           f"{err.split('(installed: ')[1].split(')')[0]}); 'host-sequential' is an engine, give its "
                           "backend: host"), err
    assert "is an engine" not in run_cli("conformance", "--backend", "nope").stderr


def test_a_library_the_config_names_but_not_given_says_what_was_given(tmp_path):
    lib = tmp_path / "m.json"
    lib.write_bytes(HOST_LIB)
    cfg = tmp_path / "mm.json"
    cfg.write_text(json.dumps(matmul_config(repeat=1, library="matmul")))
    a = tmp_path / "a.npy"
    np.save(a, np.zeros((4, 4), np.int64))
    err = run_cli("run", str(cfg), "--library", f"mat={lib}", "--input", f"A={a}", "--engine", "host-sequential").stderr
    assert "library 'matmul' is not registered" in err and "--library gave 'mat'" in err, err
    err = run_cli("validate", str(cfg), "--library", f"mat={lib}", "--backend", "host").stderr
    assert "library 'matmul' is named by the config but not given with --library (--library gave 'mat')" in err, err


@pytest.mark.parametrize("argv, option, says", [
    (["run", "f.json", "--repeat", "0"], "--repeat", "must be at least 1, not 0"),
    (["run", "f.json", "--workers", "two"], "--workers", "'two' is not a whole number"),
    (["validate", "f.json", "--heap-limit", "-1"], "--heap-limit", "must be at least 0, not -1"),
    (["conformance", "--backend", "cpu", "--workers", "0"], "--workers", "must be at least 1, not 0"),
    (["demo", "--workers", "0"], "--workers", "must be at least 1, not 0"),
    (["bench", "--check-every", "0"], "--check-every", "must be at least 1, not 0"),
])
def test_counts_are_checked_before_anything_runs(argv, option, says, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert f"error: argument {option}: {says}" in capsys.readouterr().err
