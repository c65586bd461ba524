"""Support for tests that build and run real kernels on the CPU backend.

Used by this project's ``tests/cpu`` and ``security_tests``, and open to a plugin author's own
tests. Kernels are built from HIP source with :func:`pappus_cpu.build.build_library`, once per
source, flags and name under a cache root; a file lock makes processes that share the root
(pytest-xdist workers) build each library once between them.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pappus._files import file_lock
from pappus.interfaces import LibraryImage
from pappus.kernels import LibraryInfo


def need_compilers(who: str) -> None:
    """Skip the calling test (``who`` needs them) when the C or C++ compiler is missing."""
    import pytest

    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip(f"no C++ compiler: {who} build real kernels")
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler: the CPU device template cannot be built")


@dataclass(frozen=True)
class BuiltLibrary:
    """A kernel library built for the CPU backend."""

    path: Path
    data: bytes
    sha256: str

    @functools.cached_property
    def info(self) -> LibraryInfo:
        """What the static validator reads from it (read on first use: an unvalidated build
        may be refused here)."""
        from .driver import CpuDriver

        return CpuDriver().inspect_library(self.data)

    def image(self) -> LibraryImage:
        return LibraryImage(self.sha256, self.data, str(self.path))


class KernelBuilder:
    """HIP source (a ``Path`` to a .hip file, or source text) -> :class:`BuiltLibrary`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache: dict[str, BuiltLibrary] = {}

    def __call__(self, source: str | Path, name: str | None = None, *, validate: bool = True,
                 extra_flags: tuple[str, ...] = ()) -> BuiltLibrary:
        from .build import build_library

        text = source.read_text() if isinstance(source, Path) else str(source)
        stem = name or (source.stem if isinstance(source, Path) else "k")
        key = hashlib.sha256("\0".join((text, stem, repr(validate), repr(extra_flags))).encode()).hexdigest()[:16]
        built = self.cache.get(key)
        if built is not None:
            return built
        work = self.root / f"{stem}-{key}"
        so = work / "out" / f"{stem}.so"
        with file_lock(self.root / f"{key}.lock"):
            if not so.is_file():
                work.mkdir(parents=True, exist_ok=True)
                src = work / f"{stem}.hip"
                src.write_text(text)
                out = build_library(src, work / "out", ["cpu"], validate=validate, extra_flags=extra_flags)
                assert out[0] == so, out
        data = so.read_bytes()
        built = self.cache[key] = BuiltLibrary(so, data, hashlib.sha256(data).hexdigest())
        return built


@contextmanager
def device_cache(path: Path) -> Iterator[None]:
    """``PAPPUS_CPU_CACHE`` set to ``path`` for the duration: the device template is built
    once there, not once per test that gives itself a fresh ``PAPPUS_HOME``."""
    old = os.environ.get("PAPPUS_CPU_CACHE")
    os.environ["PAPPUS_CPU_CACHE"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PAPPUS_CPU_CACHE", None)
        else:
            os.environ["PAPPUS_CPU_CACHE"] = old


def one_launch(kernel: str, args: list[Any], *, buffers: dict[str, Any] | None = None,
               inputs: list[Any] | None = None, outputs: list[str] | None = None, grid: Any = (1, 1, 1),
               block: Any = (1, 1, 1), shared: Any = 0, library: str = "k") -> dict[str, Any]:
    """A function config (``pappus/function@1``) whose control flow is one launch of ``kernel``."""
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
