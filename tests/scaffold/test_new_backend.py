"""``pappus new-backend`` end to end: scaffold, install into a fresh environment, list, run the
conformance suite, and see the skeleton fail honestly (about 30 s).

The fresh environment is a venv whose site-packages chains to this interpreter's (a ``.pth``
that calls ``site.addsitedir``, the ``--system-site-packages`` idea pointed at the environment
pappus is installed in), so nothing is downloaded except, when this environment cannot build
wheels itself, setuptools for pip's isolated build. The plugin is installed with a plain
``pip install``, so its metadata, entry point and dependency on pappus are the real thing.
"""

from __future__ import annotations

import json
import os
import re
import site
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path
from typing import Any

import pytest

NAME = "scaffoldtest"
ROOT = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], env: dict[str, str], timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)


def _fresh_env(where: Path) -> Path:
    """A venv without pip that sees this interpreter's packages (pappus included) after its own."""
    venv.EnvBuilder(with_pip=False, symlinks=True).create(where)
    python = where / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], os.environ.copy())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()}
    lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in sorted(ours) if Path(p).is_dir())
    (Path(purelib.stdout.strip()) / "_pappus_parent_env.pth").write_text(lines)
    return python


def _can_build_without_isolation() -> bool:
    """setuptools >= 70.1 builds wheels on its own; older ones need the wheel package."""
    try:
        import setuptools
    except ImportError:
        return False
    major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
    if (major, minor) >= (70, 1):
        return True
    try:
        import wheel  # noqa: F401
    except ImportError:
        return False
    return True


def _pip_install(python: Path, project: Path, env: dict[str, str]) -> None:
    cmd = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-input",
           "--disable-pip-version-check", str(project)]
    if _can_build_without_isolation():
        cmd.insert(-1, "--no-build-isolation")
    result = _run(cmd, env)
    if result.returncode != 0 and re.search(r"No matching distribution found for setuptools|"
                                            r"Could not find a version that satisfies the requirement setuptools",
                                            result.stdout + result.stderr):
        pytest.skip("pip's isolated build needs setuptools>=69 from an index, and none is reachable")
    assert result.returncode == 0, result.stdout + result.stderr


def _conformance(python: Path, report: Path, env: dict[str, str]) -> tuple[int, dict[str, Any], str]:
    result = _run([str(python), "-m", "pappus", "conformance", "--backend", NAME, "-n", "0",
                   "--report", str(report)], env, timeout=600)
    summary = json.loads((report / "summary.json").read_text())
    return result.returncode, summary, result.stdout + result.stderr


def _outcomes(summary: dict[str, Any]) -> dict[str, set[str]]:
    return {prop: set(counts) for prop, counts in summary["properties"].items()}


def test_scaffold_installs_lists_and_fails_conformance_honestly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PAPPUS_PLUGINS", "PAPPUS_PLUGIN_MODULES",
                                                           "PAPPUS_BACKEND", "PAPPUS_ENGINE", "PYTHONPATH")}
    env["PAPPUS_HOME"] = str(tmp_path / "home")

    # 1. scaffold with the CLI
    made = _run([sys.executable, "-m", "pappus", "new-backend", NAME, "-o", str(tmp_path)], env)
    assert made.returncode == 0, made.stderr
    project = tmp_path / f"pappus-{NAME}"
    plugin_py = project / f"pappus_{NAME}" / "plugin.py"
    assert plugin_py.exists()

    # 2. install it into a fresh environment
    python = _fresh_env(tmp_path / "venv")
    _pip_install(python, project, env)

    # 3. pappus plugins --json lists it, from its own distribution, claiming nothing
    listed = _run([str(python), "-m", "pappus", "plugins", "--json"], env)
    assert listed.returncode == 0, listed.stderr
    report = json.loads(listed.stdout)
    record = next(p for p in report["plugins"] if p["name"] == NAME)
    assert record["ok"] and record["distribution"] == f"pappus-{NAME}" and record["backends"] == [NAME]
    backend = next(b for b in report["backends"] if b["name"] == NAME)
    assert backend["capabilities"] == []
    assert [e["name"] for e in backend["engines"]] == [f"{NAME}-sequential", f"{NAME}-multiprocess"]

    # 4. as scaffolded: nothing claimed, so every property is not_claimed and nothing passes
    code, summary, output = _conformance(python, tmp_path / "report-pristine", env)
    assert summary["backend"] == NAME
    assert summary["tests"], output
    assert {t["outcome"] for t in summary["tests"]} == {"not_claimed"}, output

    # 5. an author claims two capabilities before implementing them: the suite runs those
    #    properties, they fail with the skeleton's pointer to the docs, the rest stay not_claimed
    text = plugin_py.read_text()
    assert "CLAIMS = capabilities()" in text
    plugin_py.write_text(text.replace("CLAIMS = capabilities()", 'CLAIMS = capabilities("zeroing", "fault_containment")'))
    _pip_install(python, project, env)
    code, summary, output = _conformance(python, tmp_path / "report-claimed", env)
    assert code != 0, output
    outcomes = _outcomes(summary)
    assert not any("passed" in kinds for kinds in outcomes.values()), summary["properties"]
    for prop in ("zeroing", "fault_containment"):
        assert outcomes[prop] & {"failed", "error"}, summary["properties"]
    for prop in ("malloc_heap", "bounded_execution", "no_host_escape"):
        assert outcomes[prop] == {"not_claimed"}, summary["properties"]
    junit = (tmp_path / "report-claimed" / "junit.xml").read_text()
    assert f"{NAME.capitalize()}Device.open is not implemented yet" in junit
    assert "docs/writing-a-backend.md#open" in junit
