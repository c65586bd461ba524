"""Fixtures for the benchmark tooling tests: examples built once per session, real CPU backend.

The CPU device template and the example libraries are cached in session directories (both
caches are keyed by content), so each test does not rebuild them under its private
``PAPPUS_HOME``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def need_cpu_backend() -> None:
    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("no C++ compiler: the examples cannot be built for the CPU backend")
    from pappus.plugins import get_plugins

    plugins = get_plugins()
    availability = plugins.availability(plugins.backend("cpu"))
    if not availability:
        pytest.skip(f"the CPU backend cannot run here: {availability.reason}")


@pytest.fixture(scope="session")
def bench_caches(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return tmp_path_factory.mktemp("cpu-cache"), tmp_path_factory.mktemp("examples")


@pytest.fixture(autouse=True)
def _shared_caches(bench_caches: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, examples = bench_caches
    monkeypatch.setenv("PAPPUS_CPU_CACHE", str(cpu))
    monkeypatch.setenv("PAPPUS_BENCH_BUILD", str(examples))


@pytest.fixture
def cpu_backend() -> None:
    need_cpu_backend()
