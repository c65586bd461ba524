"""Fixtures for the CPU backend tests: real compilers, real processes, no mocks.

Kernels are built from HIP source once per session (``pappus_cpu.testing.KernelBuilder``, under
a session temporary directory) and run through core's own machinery: ``Plan``, ``BufferPool``
and ``run_invocation`` drive a real :class:`CpuDevice`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
KERNELS = HERE / "kernels"
EXAMPLES = REPO / "examples"

try:  # an editable install made before plugins/pappus_cpu existed does not map it yet
    import pappus_cpu  # noqa: F401
except ImportError:  # pragma: no cover - depends on how the venv was installed
    sys.path.insert(0, str(REPO / "plugins"))

from pappus.config import check_function_against_libraries, parse_function  # noqa: E402
from pappus.errors import ValidationError  # noqa: E402
from pappus.interpreter import run_invocation  # noqa: E402
from pappus.plan import Plan  # noqa: E402
from pappus.pool import BufferPool  # noqa: E402
from pappus_cpu.device import CpuDevice  # noqa: E402
from pappus_cpu.driver import CPU_LIMITS  # noqa: E402
from pappus_cpu.testing import BuiltLibrary, KernelBuilder, device_cache, need_compilers, one_launch  # noqa: E402

POOL_BYTES = 32 * 1024 * 1024

# The names these tests use for the shared helpers.
Built = BuiltLibrary
Builder = KernelBuilder
single = one_launch


class Harness:
    """One CpuDevice with a pool, driven the way an engine's executor drives it."""

    def __init__(self, pool_bytes: int = POOL_BYTES, heap_limit: int = 0, bind: bool = True, **options: Any) -> None:
        self.device = CpuDevice(memory_bytes=pool_bytes, **options)
        self.info = self.device.open()
        self.heap_limit = self.device.set_malloc_heap_limit(heap_limit)
        base = self.device.reserve(pool_bytes)
        self.pool = BufferPool(self.device, base, pool_bytes, scrub_before_use=not self.device.bounds_writes)
        if bind:
            self.device.bind_pool(self.pool)
        self.modules: dict[str, Any] = {}

    def plan(self, config: Mapping[str, Any] | str | Path, libraries: Mapping[str, Built]) -> tuple[Plan, dict[str, Any]]:
        cfg = parse_function(config if not isinstance(config, Path) else str(config), device=CPU_LIMITS)
        problems = check_function_against_libraries(cfg, {n: b.info for n, b in libraries.items()},
                                                    heap_limit=self.heap_limit, device=CPU_LIMITS)
        if problems:
            raise ValidationError(problems)
        signatures = {ref.name: libraries[ref.library].info.kernels[ref.name].params for ref in cfg.kernels}
        handles = {}
        for ref in cfg.kernels:
            built = libraries[ref.library]
            module = self.modules.get(built.sha256)
            if module is None:
                module = self.modules[built.sha256] = self.device.load_module(built.image())
            handles[ref.name] = self.device.get_kernel(module, ref.name)
        return Plan(cfg, signatures, device_limits=CPU_LIMITS), handles

    def run(self, config: Mapping[str, Any] | str | Path, libraries: Mapping[str, Built],
            inputs: Mapping[str, Any]) -> dict[str, bytes]:
        plan, handles = self.plan(config, libraries)
        return run_invocation(self.device, self.pool, plan, inputs, handles)

    def close(self) -> None:
        self.device.close()


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


@pytest.fixture(scope="session", autouse=True)
def _cpu_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One template build per session (the per-test PAPPUS_HOME would rebuild it every test)."""
    with device_cache(tmp_path_factory.mktemp("pappus-cpu-cache")):
        yield


@pytest.fixture(scope="session")
def build(tmp_path_factory: pytest.TempPathFactory) -> Builder:
    need_compilers("the CPU backend tests")
    return Builder(tmp_path_factory.mktemp("pappus-cpu-builds"))


@pytest.fixture(scope="session")
def runtime_lib(build: Builder) -> Built:
    return build(KERNELS / "runtime.hip")


@pytest.fixture(scope="session")
def sandbox_lib(build: Builder) -> Built:
    return build(KERNELS / "sandbox.hip")


@pytest.fixture(scope="session")
def heap_lib(build: Builder) -> Built:
    return build(KERNELS / "heap.hip")


@pytest.fixture(scope="module")
def harness(build: Builder) -> Iterator[Harness]:
    """A device shared by the tests of one module (each test is a new tenant to the others)."""
    h = Harness()
    yield h
    h.close()


@pytest.fixture
def fresh_harness(build: Builder) -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()
