"""Fixtures for the CPU backend tests: real compilers, real processes, no mocks.

Kernels are built from HIP source by ``pappus_cpu.build`` once per session (cached by source
hash under a session temporary directory) and run through core's own machinery: ``Plan``,
``BufferPool`` and ``run_invocation`` drive a real :class:`CpuDevice`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
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
from pappus.interfaces import LibraryImage  # noqa: E402
from pappus.interpreter import run_invocation  # noqa: E402
from pappus.kernels import LibraryInfo  # noqa: E402
from pappus.plan import Plan  # noqa: E402
from pappus.pool import BufferPool  # noqa: E402
from pappus_cpu.build import build_library  # noqa: E402
from pappus_cpu.device import CpuDevice  # noqa: E402
from pappus_cpu.driver import CPU_LIMITS, CpuDriver  # noqa: E402

POOL_BYTES = 32 * 1024 * 1024


def need_compilers() -> None:
    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("no C++ compiler: the CPU backend tests build real kernels")
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler: the CPU device template cannot be built")


@dataclass(frozen=True)
class Built:
    """A kernel library built by pappus_cpu.build, with what the validator read from it."""

    path: Path
    data: bytes
    sha256: str
    info: LibraryInfo

    def image(self) -> LibraryImage:
        return LibraryImage(self.sha256, self.data, str(self.path))


class Builder:
    """Builds HIP sources once per session, keyed by the hash of the source text."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache: dict[str, Built] = {}

    def __call__(self, source: str | Path, name: str | None = None, *, validate: bool = True,
                 extra_flags: tuple[str, ...] = ()) -> Built:
        """``source``: a Path to a .hip file, or HIP source text."""
        if isinstance(source, Path):
            text = source.read_text()
            stem = name or source.stem
        else:
            text = str(source)
            stem = name or "k"
        key = hashlib.sha256((text + repr(validate) + repr(extra_flags)).encode()).hexdigest()[:16]
        if key in self.cache:
            return self.cache[key]
        work = self.root / key
        work.mkdir(parents=True, exist_ok=True)
        src = work / f"{stem}.hip"
        if isinstance(source, Path):
            shutil.copy(source, src)
        else:
            src.write_text(text)
        out = build_library(src, work / "out", ["cpu"], validate=validate, extra_flags=extra_flags)
        so = out[0]
        data = so.read_bytes()
        info = CpuDriver().inspect_library(data) if validate else None
        built = Built(so, data, hashlib.sha256(data).hexdigest(), info)  # type: ignore[arg-type]
        self.cache[key] = built
        return built


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


def single(kernel: str, args: list[Any], *, buffers: dict[str, Any] | None = None, inputs: list[Any] | None = None,
           outputs: list[str] | None = None, grid: Any = (1, 1, 1), block: Any = (1, 1, 1), shared: int = 0,
           library: str = "k") -> dict[str, Any]:
    """A function config with one launch."""
    return {
        "schema": "pappus/function@1",
        "library": library,
        "kernels": [kernel],
        "blueprint": {
            "inputs": inputs or [],
            "buffers": buffers if buffers is not None else {},
            "outputs": outputs or [],
            "control_flow": [{"ExecKernel": {"name": kernel, "args": args, "grid": list(grid), "block": list(block),
                                             "shared_mem_bytes": shared}}],
        },
    }


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


@pytest.fixture(scope="session", autouse=True)
def _cpu_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One template build per session (the per-test PAPPUS_HOME would rebuild it every test)."""
    old = os.environ.get("PAPPUS_CPU_CACHE")
    os.environ["PAPPUS_CPU_CACHE"] = str(tmp_path_factory.mktemp("pappus-cpu-cache"))
    yield
    if old is None:
        os.environ.pop("PAPPUS_CPU_CACHE", None)
    else:
        os.environ["PAPPUS_CPU_CACHE"] = old


@pytest.fixture(scope="session")
def build(tmp_path_factory: pytest.TempPathFactory) -> Builder:
    need_compilers()
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
