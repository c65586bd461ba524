"""What a backend author meets following docs/conformance-ci.md: ``pappus conformance`` without
pytest-xdist, the report header under ``-q``, usage errors for a wrong backend or engine, the
per-property verdicts and the doc's CI gate, and the scaffold's tox route to a local pappus."""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pappus_conformance.properties import PROPERTIES

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "conformance-ci.md"

# Makes pytest-xdist look uninstalled: `import xdist` fails and pytest's autoload does not see it.
NO_XDIST = '''
import importlib.abc, importlib.metadata as md, sys

class _NoXdist(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "xdist" or name.startswith("xdist."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoXdist())
_distributions = md.distributions
md.distributions = lambda **kw: (d for d in _distributions(**kw)
                                 if (d.metadata["Name"] or "").lower() != "pytest-xdist")
'''


def _env(tmp_path: Path, *, no_xdist: bool = False, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTEST_XDIST_WORKER", "PAPPUS_BACKEND", "PAPPUS_ENGINE", "PYTEST_DISABLE_PLUGIN_AUTOLOAD")}
    path = [str(ROOT), env.get("PYTHONPATH", "")]
    if no_xdist:
        shim = tmp_path / "no-xdist"
        shim.mkdir(exist_ok=True)
        (shim / "sitecustomize.py").write_text(NO_XDIST)
        path.insert(0, str(shim))
    env.update(PYTHONPATH=os.pathsep.join(path), PAPPUS_HOME=str(tmp_path / "home"), **extra)
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _cli(tmp_path: Path, *args: str, no_xdist: bool = False, **env: str) -> subprocess.CompletedProcess[str]:
    return _run(["-m", "pappus", "conformance", *args], _env(tmp_path, no_xdist=no_xdist, **env), tmp_path)


def _pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _run(["-m", "pytest", "-p", "pappus_conformance", "-p", "no:cacheprovider", *args], _env(tmp_path), tmp_path)


# --- finding 1: -n without pytest-xdist ----------------------------------------------------------

def test_without_xdist_the_cli_runs_serially(tmp_path):
    check = _run(["-c", "import xdist"], _env(tmp_path, no_xdist=True), tmp_path)
    assert check.returncode != 0 and "No module named 'xdist'" in check.stderr
    report = tmp_path / "report"
    res = _cli(tmp_path, "--backend", "cpu", "--engine", "sequential", "--report", str(report),
               "--", "-k", "test_after_success", no_xdist=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "pytest-xdist is not installed, running serially" in res.stderr
    assert json.loads((report / "summary.json").read_text())["properties"]["zeroing"] == {"passed": 1}


def test_explicit_n_without_xdist_is_a_one_line_error(tmp_path):
    res = _cli(tmp_path, "--backend", "cpu", "-n", "2", no_xdist=True)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        "pappus: error: -n 2: pytest-xdist is not installed: pip install pytest-xdist (or run serially with -n 0)"]


def test_n_works_with_plugin_autoload_disabled(tmp_path):
    pytest.importorskip("xdist")
    res = _cli(tmp_path, "--backend", "cpu", "--engine", "sequential", "-n", "2", "--", "-k", "test_after_success",
               PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "1 passed" in res.stdout


# --- finding 2: the report header under -q --------------------------------------------------------

def test_the_cli_shows_the_report_header(tmp_path):
    from pappus.engine import lockdown

    res = _cli(tmp_path, "--backend", "cpu", "--engine", "cpu-sequential", "-n", "0", "--", "-k", "test_after_success",
               PAPPUS_WORKER_LOCKDOWN="1")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    outlook = lockdown.outlook()
    assert "pappus conformance: backend='cpu' engine=sequential" in res.stdout
    assert "  claims: " in res.stdout and "  PAPPUS_WORKER_LOCKDOWN=1" in res.stdout
    assert f"  workers: seccomp deny-list {outlook['seccomp']}; Landlock scope {outlook['scope']}" in res.stdout


def test_pytest_q_shows_the_report_header_once(tmp_path):
    res = _pytest(tmp_path, "--pappus-backend", "cpu", "--collect-only", "-q")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert res.stdout.count("pappus conformance: backend='cpu' engine=all") == 1
    plain = _pytest(tmp_path, "--pappus-backend", "cpu", "--collect-only")
    assert plain.stdout.count("pappus conformance: backend='cpu' engine=all") == 1


# --- finding 5: usage errors ----------------------------------------------------------------------

def test_pytest_unknown_backend_is_a_usage_error(tmp_path):
    res = _pytest(tmp_path, "--pappus-backend", "nosuch")
    assert res.returncode == 4, res.stdout[-3000:] + res.stderr[-3000:]
    assert "INTERNALERROR" not in res.stdout + res.stderr and "Traceback" not in res.stderr
    assert re.search(r"ERROR: --pappus-backend: .*'nosuch'.*installed: .*\bcpu\b", res.stderr), res.stderr


def test_pytest_engine_accepts_the_full_name_and_rejects_others(tmp_path):
    res = _pytest(tmp_path, "--pappus-backend", "cpu", "--pappus-engine", "cpu-sequential", "--collect-only", "-q")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    ids = re.findall(r"\[([^\]]+)\]", res.stdout)
    assert ids and all(i.startswith("cpu-sequential") for i in ids), ids
    assert "engine=sequential" in res.stdout
    bad = _pytest(tmp_path, "--pappus-backend", "cpu", "--pappus-engine", "mygpu-sequential")
    assert bad.returncode == 4 and "Traceback" not in bad.stderr
    assert ("ERROR: --pappus-engine: backend 'cpu' has no engine 'mygpu-sequential'; "
            "use sequential (or cpu-sequential), multiprocess (or cpu-multiprocess)") in bad.stderr


def test_cli_engine_accepts_the_full_name_and_rejects_others(tmp_path):
    from pappus.plugins import get_plugins

    cpu = get_plugins().backend("cpu")
    assert cpu.engine_kind("cpu-multiprocess") == cpu.engine_kind("multiprocess") == "multiprocess"
    for wrong in ("mygpu-sequential", "threads"):
        with pytest.raises(ValueError, match="use sequential \\(or cpu-sequential\\)"):
            cpu.engine_kind(wrong)
    res = _cli(tmp_path, "--backend", "cpu", "--engine", "threads")
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip() == ("pappus: error: --engine: backend 'cpu' has no engine 'threads'; use sequential "
                                  "(or cpu-sequential), multiprocess (or cpu-multiprocess)")


# --- finding 3 and 6: verdicts, the doc's CI gate, the property table -----------------------------

def test_verdict_rules():
    from pappus_conformance.plugin import verdicts

    claimed = {"zeroing", "fault_containment", "malloc_heap_limit"}
    got = verdicts({"zeroing": {"passed": 24, "not_claimed": 2},
                    "fault_containment": {"passed": 3, "failed": 1},
                    "malloc_heap": {"passed": 2, "xfailed": 1},
                    "bounded_execution": {"not_claimed": 3}}, claimed)
    assert got == {"zeroing": "proven", "fault_containment": "failed", "malloc_heap": "partial",
                   "bounded_execution": "not_claimed", "no_host_escape": "not_claimed",
                   "signatures": "not_claimed"}
    assert verdicts({"zeroing": {"skipped": 26}}, {"zeroing"})["zeroing"] == "not_tested"
    assert verdicts({"zeroing": {"xpassed-stale": 1, "passed": 3}}, {"zeroing"})["zeroing"] == "failed"
    assert verdicts({}, {"zeroing"})["zeroing"] == "not_tested"


def _doc_gate() -> str:
    match = re.search(r"```sh\npython - (\S+) (.*?) <<'PY'\n(.*?)\nPY\n```", DOC.read_text(), re.S)
    assert match, "the CI gate snippet is missing from docs/conformance-ci.md"
    return match.group(3)


def test_verdicts_and_the_documented_ci_gate(tmp_path):
    report = tmp_path / "report"
    env = _env(tmp_path, PAPPUS_PLUGIN_MODULES="tests.conformance.broken_backends")
    res = _run(["-m", "pappus", "conformance", "--backend", "nowatchdog", "--engine", "sequential", "-n", "0",
                "--report", str(report), "--", "-k", "test_after_success or test_after_timeout or "
                "test_no_data_of_faulting_tenant_afterwards or test_hang_fails_alone"], env, tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((report / "summary.json").read_text())
    assert summary["properties"]["zeroing"] == {"passed": 1, "not_claimed": 1}
    assert summary["properties"]["fault_containment"] == {"passed": 1, "not_claimed": 1}
    assert summary["verdicts"] == {"zeroing": "proven", "fault_containment": "proven",
                                   "bounded_execution": "not_claimed", "malloc_heap": "not_tested",
                                   "no_host_escape": "not_tested", "signatures": "not_tested"}
    gate = _doc_gate()
    ok = _run(["-c", gate, str(report / "summary.json"), "zeroing", "fault_containment"], env, tmp_path)
    assert ok.returncode == 0, ok.stderr
    bad = _run(["-c", gate, str(report / "summary.json"), "zeroing", "bounded_execution"], env, tmp_path)
    assert bad.returncode == 1 and "not proven: {'bounded_execution': 'not_claimed'}" in bad.stderr


def test_doc_maps_properties_to_capabilities():
    text = DOC.read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| `(\w+)` \|", text, re.M))
    assert rows == {prop: spec.capability for prop, spec in PROPERTIES.items()}
    for verdict in ("proven", "partial", "failed", "not_claimed", "not_tested"):
        assert f"| `{verdict}` |" in text


# --- finding 4: tox against a local pappus --------------------------------------------------------

def test_scaffold_tox_installs_pappus_from_pappus_spec(tmp_path):
    from pappus.scaffold import new_backend

    new_backend("mygpu", tmp_path, check_taken=False)
    root = tmp_path / "pappus-mygpu"
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(root / "tox.ini")
    assert re.fullmatch(r"\{env:PAPPUS_SPEC:pappus>=\d+\.\d+,<\d+\.\d+\}", ini["testenv"]["deps"].strip())
    if shutil.which("tox") is None and not (Path(sys.executable).parent / "tox").exists():
        pytest.skip("tox is not installed")
    env = {k: v for k, v in os.environ.items() if k != "PAPPUS_SPEC"}
    for spec, expected in ((None, "pappus>="), ("-e /src/pappus", "-e /src/pappus")):
        if spec:
            env["PAPPUS_SPEC"] = spec
        res = subprocess.run([sys.executable, "-m", "tox", "config", "-e", "conformance", "-k", "deps"], cwd=root,
                             env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"deps = {expected}" in res.stdout, res.stdout
