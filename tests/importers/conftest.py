"""Shared fixtures of the Dandelion importer tests: paths to the hand-written configs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data"


def load(rel: str) -> dict[str, Any]:
    return json.loads((DATA / rel).read_text())


@pytest.fixture
def data() -> Path:
    return DATA


@pytest.fixture
def modules_tree(tmp_path: Path) -> Path:
    """A scratch modules directory holding two placeholder code objects."""
    root = tmp_path / "mods"
    (root / "sub").mkdir(parents=True)
    (root / "a.hsaco").write_bytes(b"placeholder a")
    (root / "sub" / "b.hsaco").write_bytes(b"placeholder b")
    return root


@pytest.fixture
def copy_of(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Copy a fixture directory into tmp_path (to add symlinks next to it)."""

    def make(rel: str) -> Path:
        dst = tmp_path / rel
        shutil.copytree(DATA / rel, dst)
        return dst

    return make
