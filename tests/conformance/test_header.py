"""The suite's report header: what a CI log must show about the backend and the host."""

from __future__ import annotations

import os
import subprocess
import sys


def _header(tmp_path, **env: str) -> str:
    run_env = {k: v for k, v in os.environ.items()
               if k not in ("PYTEST_XDIST_WORKER", "PAPPUS_WORKER_LOCKDOWN", "PAPPUS_ALLOW_HOST_MEMORY_ACCESS")}
    run_env.update(env)
    res = subprocess.run([sys.executable, "-m", "pytest", "-p", "pappus_conformance", "--pappus-backend", "cpu",
                          "--collect-only", "-p", "no:cacheprovider"], cwd=tmp_path, env=run_env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return res.stdout.split("collected")[0]


def test_the_header_says_how_workers_are_confined_and_echoes_the_switches(tmp_path):
    from pappus.engine import lockdown

    on = _header(tmp_path)
    outlook = lockdown.outlook()
    assert f"  workers: seccomp deny-list {outlook['seccomp']}; Landlock scope {outlook['scope']}" in on
    assert "PAPPUS_WORKER_LOCKDOWN" not in on
    off = _header(tmp_path, PAPPUS_WORKER_LOCKDOWN="0", PAPPUS_ALLOW_HOST_MEMORY_ACCESS="1")
    assert "  workers: seccomp deny-list no: turned off (PAPPUS_WORKER_LOCKDOWN=0)" in off
    assert "  PAPPUS_WORKER_LOCKDOWN=0" in off and "  PAPPUS_ALLOW_HOST_MEMORY_ACCESS=1" in off


def test_a_suite_chosen_by_the_environment_alone_says_so(tmp_path):
    # PAPPUS_BACKEND in the environment and a bare pytest: the suite runs instead of the tests
    # of the directory, which must not go unnoticed
    (tmp_path / "test_own.py").write_text("def test_own():\n    pass\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_XDIST_WORKER", "PAPPUS_BACKEND")}
    base = [sys.executable, "-m", "pytest", "-p", "pappus_conformance", "--collect-only", "-q", "-p", "no:cacheprovider"]
    note = "PAPPUS_BACKEND is set, so this session runs the conformance suite instead of the tests here"

    def run(*args: str, **extra: str) -> str:
        res = subprocess.run([*base, *args], cwd=tmp_path, env={**env, **extra}, capture_output=True, text=True,
                             timeout=300)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        return res.stdout

    by_env = run(PAPPUS_BACKEND="cpu")
    assert note in by_env and "test_own.py" not in by_env
    assert note not in run("--pappus-backend", "cpu")  # asked for on the command line: no surprise
    own = run("test_own.py", PAPPUS_BACKEND="cpu")  # test paths named: those run, no note
    assert "test_own.py::test_own" in own and note not in own
