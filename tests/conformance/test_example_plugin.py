"""The plugin author's path, end to end: install the out-of-tree example backend from
examples/backend-plugin into a fresh environment, see pappus find it, and run the conformance
suite against it. It passes what it claims and reports the rest as not claimed."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.scaffold.test_new_backend import _fresh_env, _pip_install, _run

ROOT = Path(__file__).resolve().parents[2]


def test_example_plugin_installs_and_conforms(tmp_path):
    python = _fresh_env(tmp_path / "venv")
    env = dict(os.environ, PAPPUS_HOME=str(tmp_path / "home"))
    env.pop("PAPPUS_PLUGIN_MODULES", None)
    _pip_install(python, ROOT / "examples" / "backend-plugin", env)
    listed = _run([str(python), "-m", "pappus", "plugins", "--json"], env)
    assert listed.returncode == 0, listed.stderr
    report = json.loads(listed.stdout)
    example = next(b for b in report["backends"] if b["name"] == "example")
    assert example["available"] and example["plugin"] == "example"
    assert [e["name"] for e in example["engines"]] == ["example-sequential", "example-multiprocess"]

    out = tmp_path / "report"
    result = _run([str(python), "-m", "pappus", "conformance", "--backend", "example", "-n", "2",
                   "--report", str(out)], env, timeout=600, cwd=tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    props = summary["properties"]
    for claimed in ("zeroing", "fault_containment", "bounded_execution", "signatures"):
        assert props[claimed].get("passed", 0) > 0 and set(props[claimed]) == {"passed"}, props[claimed]
    for unclaimed in ("malloc_heap", "no_host_escape"):
        assert set(props[unclaimed]) == {"not_claimed"}, props[unclaimed]
    assert (out / "junit.xml").is_file()
