"""Fixtures for the HSA fault-monitor tests: a C compiler, the real ROCm headers, and a helper
library (csrc/fake_hsa.c) that calls cffi callbacks from foreign pthreads and fakes the four HSA
entry points the monitor uses."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

try:  # an editable install made before plugins/pappus_hsa existed does not map it yet
    import pappus_hsa  # noqa: F401
except ImportError:  # pragma: no cover - depends on how the venv was installed
    sys.path.insert(0, str(REPO / "plugins"))

from .hsa_support import Helper, build, need_toolchain  # noqa: E402


@pytest.fixture(scope="session")
def cc() -> str:
    return need_toolchain()


@pytest.fixture(scope="session")
def helper_path(cc: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hsa-helper") / "libfakehsa.so"
    return build(cc, [HERE / "csrc" / "fake_hsa.c"], out, shared=True)


@pytest.fixture(scope="session")
def helper(helper_path: Path) -> Helper:
    return Helper(helper_path)
