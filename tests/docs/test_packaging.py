"""Versioning, typing and the tox matrix: the contracts docs/development.md describes."""

from __future__ import annotations

import configparser
import fnmatch
import subprocess
import sys
from pathlib import Path

import pytest

import pappus
from pappus import _version

from .conftest import ROOT

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_version_has_one_source() -> None:
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "pappus._version.__version__"}
    assert pappus.__version__ == _version.__version__
    parts = _version.__version__.split(".")
    assert len(parts) == 3 and all(p.isdigit() for p in parts), "semver MAJOR.MINOR.PATCH"
    out = subprocess.run([sys.executable, "-m", "pappus", "--version"], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == f"pappus {_version.__version__}"


def test_py_typed_ships() -> None:
    assert (ROOT / "core" / "pappus" / "py.typed").exists()
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["*"]
    assert "py.typed" in patterns


def test_scaffold_templates_ship_as_package_data() -> None:
    from pappus.scaffold import TEMPLATES

    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["*"]
    folder = ROOT / "core" / "pappus" / "scaffold" / "templates"
    assert (folder / "__init__.py").exists(), "templates/ must be a package for package data to apply"
    for name in TEMPLATES:
        assert (folder / name).exists()
        assert any(fnmatch.fnmatch(name, pat) for pat in patterns), f"{name} matches no package-data pattern"


def test_docs_extra() -> None:
    docs = " ".join(PYPROJECT["project"]["optional-dependencies"]["docs"])
    for package in ("mkdocs", "mkdocs-material", "mkdocstrings[python]"):
        assert package in docs


def test_changelog_has_unreleased() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in text and "keepachangelog.com" in text


def test_tox_matrix() -> None:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    envs = [e.strip() for e in ini["tox"]["env_list"].split(",")]
    assert envs == ["py310", "py311", "py312", "py313", "lint", "type", "conformance-cpu", "security",
                    "hip-static", "docs"]
    assert ini["tox"]["skip_missing_interpreters"] == "true"
    for env in envs[4:]:
        assert f"testenv:{env}" in ini, f"tox.ini has no [testenv:{env}]"
    assert "mkdocs build --strict" in ini["testenv:docs"]["commands"]
    assert "pappus conformance --backend cpu --report {envtmpdir}/conformance" in ini["testenv:conformance-cpu"]["commands"]
    assert "HIP_PLATFORM = amd" in ini["testenv:hip-static"]["set_env"]
    assert '-m "not slow"' in ini["testenv:security"]["commands"]
    lint = ini["testenv:lint"]["commands"]
    for folder in ("core", "plugins", "conformance", "tests", "security_tests", "benchmarks"):
        assert f" {folder}" in lint
    extras = {env: ini[f"testenv:{env}"].get("extras", "") for env in envs[4:]}
    assert "docs" in extras["docs"] and "hip" in extras["hip-static"]
    for path in (Path(p) for p in ("core", "plugins", "conformance", "tests", "security_tests", "benchmarks")):
        assert (ROOT / path).is_dir()
