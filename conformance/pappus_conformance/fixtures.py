"""Fixtures of the conformance suite: the backend under test, its engines, the suite's kernels.

Everything goes through pappus's public contract (``pappus.Runtime``), so every backend is held
to the same bar. Kernels ship with the suite as HIP source and are built for the backend under
test with its own builder, once per session (shared between xdist workers through a lock).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pappus._files import file_lock
from pappus.errors import PappusError

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"
SUITE_LIBRARIES = ("suite", "heap", "globals", "sandbox")
POOL_BYTES = 64 * 1024 * 1024


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine_name" not in metafunc.fixturenames:
        return
    name = metafunc.config.getoption("--pappus-backend", default=None)
    if not name:
        return
    from pappus.plugins import get_plugins

    try:
        kinds = list(get_plugins().backend(name).engine_kinds)
    except Exception:
        kinds = ["sequential", "multiprocess"]
    wanted = metafunc.config.getoption("--pappus-engine", default=None)
    if wanted:
        kinds = [k for k in kinds if k == wanted] or [wanted]
    metafunc.parametrize("engine_name", [f"{name}-{k}" for k in kinds], scope="module")


@pytest.fixture(scope="session")
def pappus_toolchain(request: pytest.FixtureRequest) -> Any:
    """The backend under test, whether or not its device is here: what only builds the suite's
    kernels and reads them with the backend's driver runs on a machine without the device too."""
    from pappus.plugins import get_plugins

    name = request.config.getoption("--pappus-backend")
    if not name:
        pytest.skip("no backend named (--pappus-backend)")
    return get_plugins().backend(name)  # an unknown name is an error, not a skip


@pytest.fixture(scope="session")
def pappus_backend(pappus_toolchain: Any) -> Any:
    """The backend under test, able to run here; every test that needs it skips with the reason
    when it cannot."""
    from pappus.plugins import get_plugins

    availability = get_plugins().availability(pappus_toolchain)
    if not availability:
        pytest.skip(f"backend {pappus_toolchain.name!r} is unavailable here: {availability.reason}")
    return pappus_toolchain


def _locked(path: Path) -> contextlib.AbstractContextManager[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return file_lock(path)


@pytest.fixture(scope="session")
def suite_libraries(pappus_toolchain: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The suite's kernels built for the backend under test (for its native target, which needs
    no device where the backend can name it otherwise): library name -> file."""
    backend = pappus_toolchain
    if backend.build is None:
        pytest.fail(f"backend {backend.name!r} has no builder: the suite's kernels cannot be built for it")
    try:
        target = backend.default_target()
    except (ValueError, PappusError) as exc:
        pytest.skip(f"backend {backend.name!r} cannot say what to build the suite's kernels for here: {exc}")
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of one run
    sources = {name: KERNEL_DIR / f"{name}.hip" for name in SUITE_LIBRARIES}
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources.values())).hexdigest()[:16]
    out = root / f"pappus-conformance-{backend.name}-{target}-{digest}"
    built: dict[str, Path] = {}
    with _locked(out.with_suffix(".lock")):
        for name, source in sources.items():
            if name == "sandbox" and "sandbox" not in {c.value for c in backend.capabilities}:
                continue
            lib_dir = out / name
            marker = lib_dir / ".done"
            if not marker.exists():
                lib_dir.mkdir(parents=True, exist_ok=True)
                paths = backend.build(source, lib_dir, [target])
                marker.write_text("\n".join(str(p) for p in paths))
            paths = [Path(p) for p in marker.read_text().splitlines()]
            built[name] = _library_file(paths, backend)
    return built


def _library_file(paths: list[Path], backend: Any) -> Path:
    suffixes = tuple(backend.library_suffixes)
    for p in paths:
        if not suffixes or p.name.endswith(suffixes):
            return p
    return paths[0]


class Harness:
    """A runtime on the engine under test, with the suite's libraries registered per tenant."""

    def __init__(self, engine_name: str, libraries: dict[str, Path], state_dir: Path, workers: int,
                 heap_limit: int = 0) -> None:
        import pappus

        self.engine_name = engine_name
        self.libraries = libraries
        self.rt = pappus.Runtime(engine=engine_name, state_dir=state_dir, workers=workers, heap_limit=heap_limit,
                                 pool_bytes=POOL_BYTES, deadline=30.0)
        self.registered: set[tuple[str, str]] = set()

    def library(self, tenant: str, name: str = "suite") -> str:
        if (tenant, name) not in self.registered:
            self.rt.register_library(name, self.libraries[name], tenant=tenant)
            self.registered.add((tenant, name))
        return name

    def function(self, tenant: str, name: str, launches: list[dict[str, Any]], *, buffers: dict[str, Any],
                 outputs: list[str], inputs: list[Any] | None = None, library: str = "suite") -> str:
        lib = self.library(tenant, library)
        kernels = sorted({launch["name"] for launch in launches})
        config = {
            "schema": "pappus/function@1", "library": lib, "kernels": kernels,
            "blueprint": {"inputs": inputs or [], "buffers": buffers, "outputs": outputs,
                          "control_flow": [{"ExecKernel": launch} for launch in launches]},
        }
        self.rt.register_function(name, config, tenant=tenant)
        return name

    def invoke(self, tenant: str, name: str, inputs: dict[str, bytes] | None = None, **kw: Any) -> dict[str, bytes]:
        return self.rt.invoke(name, inputs or {}, tenant=tenant, **kw)

    def invoke_async(self, tenant: str, name: str, inputs: dict[str, bytes] | None = None, **kw: Any) -> Any:
        return self.rt.invoke_async(name, inputs or {}, tenant=tenant, **kw)

    def close(self) -> None:
        self.rt.close(drain=False, timeout=10)


@pytest.fixture(scope="module")
def harness(engine_name: str, pappus_backend: Any, suite_libraries: dict[str, Path],
            tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Harness]:
    workers = request.config.getoption("--pappus-workers", default=2)
    h = Harness(engine_name, suite_libraries, tmp_path_factory.mktemp("state"), workers)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def make_harness(engine_name: str, pappus_backend: Any, suite_libraries: dict[str, Path], tmp_path: Path,
                 request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh harness with chosen options (e.g. a heap limit), closed after the test."""
    made: list[Harness] = []
    workers = request.config.getoption("--pappus-workers", default=2)

    def make(**kw: Any) -> Harness:
        h = Harness(engine_name, suite_libraries, tmp_path / f"state{len(made)}", workers, **kw)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()
