"""Fixtures of the docs tests: the repository's docs, mkdocs.yml and the generator module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


@pytest.fixture(scope="session")
def docs_gen() -> ModuleType:
    """``tools/docs_gen.py``, imported from its path (tools/ is not a package)."""
    name = "pappus_docs_gen"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / "docs_gen.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def mkdocs_config() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML comes with the docs extra (pip install -e '.[docs]')")

    class _Loader(yaml.SafeLoader):
        pass

    # mkdocs.yml may use !!python/name tags (material's emoji); read them as plain strings.
    _Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)
    return yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_Loader)
