"""The thesis workloads (chapter 5) as named, buildable, checkable units.

    matmul128            B = A x A^T, 128x128 int64, one output per thread (5.2)
    matmul128-tiled      the same with __shared__ tiles and __syncthreads
    inference<N>         conv5x5 + ReLU + 2x2 max-pool on 224x224 f32, repeated N times (5.3)
    batched<B>           the layer over a batch of B images, batch in the grid's z (5.5)

Each workload builds its HIP source from ``examples/`` for a backend, registers library and
function, makes deterministic inputs, and checks outputs against the numpy reference that
ships next to the source (exactly for integers, with a tolerance for floats).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import re
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import FieldError, ValidationError


def examples_dir() -> Path:
    """``$PAPPUS_EXAMPLES``, else the ``examples/`` folder of the source checkout."""
    env = os.environ.get("PAPPUS_EXAMPLES")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "examples" / "matmul" / "matmul.hip").is_file():
            return parent / "examples"
    raise ValidationError(FieldError("examples", "the examples/ folder was not found; run from a source "
                                     "checkout or set PAPPUS_EXAMPLES"), what="arguments")


def default_build_dir() -> Path:
    """Where examples are built when no folder is given: ``$PAPPUS_BENCH_BUILD``, else
    ``$PAPPUS_HOME/cache/examples``, else ``~/.cache/pappus/examples`` (created on first use;
    safe to delete: builds are keyed by the content of the source and the backend's headers)."""
    explicit = os.environ.get("PAPPUS_BENCH_BUILD")
    if explicit:
        return Path(explicit)
    home = os.environ.get("PAPPUS_HOME")
    if home:
        return Path(home) / "cache" / "examples"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "pappus" / "examples"


_references: dict[Path, ModuleType] = {}
_ref_lock = threading.Lock()


def _load_reference(path: Path) -> ModuleType:
    with _ref_lock:
        module = _references.get(path)
        if module is None:
            spec = importlib.util.spec_from_file_location(f"_pappus_ref_{path.parent.name}", path)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            _references[path] = module
        return module


def _build_key(source: Path, backend: Any, target: str) -> str:
    """What a built library depends on: the source, the backend's headers, the target."""
    digest = hashlib.sha256(source.read_bytes())
    digest.update(f"\0{backend.name}\0{target}\0".encode())
    module = getattr(backend.build, "__module__", "") or ""
    pkg = module.split(".")[0]
    try:
        spec = importlib.util.find_spec(pkg) if pkg else None
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin:
        include = Path(spec.origin).parent / "include"
        for header in sorted(include.rglob("*.h")) if include.is_dir() else []:
            digest.update(header.name.encode())
            digest.update(header.read_bytes())
    return digest.hexdigest()


@dataclass
class Workload:
    name: str
    function: str
    example: str  # folder under examples/
    config_file: str
    params: dict[str, int]
    float_tolerance: float = 0.0
    library_path: Path | None = None
    _expected: dict[int, dict[str, Any]] = field(default_factory=dict, repr=False)

    @property
    def folder(self) -> Path:
        return examples_dir() / self.example

    @property
    def config(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((self.folder / self.config_file).read_text())
        return doc

    @property
    def library(self) -> str:
        return str(self.config["library"])

    def build(self, backend: Any, out_dir: Path, target: str | None = None) -> Path:
        """Compile the example for ``backend`` (cached in ``out_dir``); return the library file."""
        if backend.build is None:
            raise ValidationError(FieldError("backend", f"backend {backend.name!r} cannot build HIP source"),
                                  what="arguments")
        target = target or backend.default_target()
        source = self.folder / f"{self.example}.hip"
        dest = Path(out_dir) / f"{self.example}-{backend.name}-{target}"
        dest.mkdir(parents=True, exist_ok=True)
        stamp = dest / ".built"
        key = _build_key(source, backend, target)
        with open(dest / ".lock", "w") as lock:  # builds of the same folder (parallel tests) take turns
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._build_locked(backend, source, dest, stamp, key, target)

    def _build_locked(self, backend: Any, source: Path, dest: Path, stamp: Path, key: str, target: str) -> Path:
        # The stamp names the source's content hash (and the backend's headers), not its mtime:
        # a checkout, a copy or a header change rebuilds; a stale or missing library does too.
        try:
            lines = stamp.read_text().split("\n")
        except OSError:
            lines = []
        if len(lines) >= 2 and lines[0] == key and Path(lines[1]).is_file():
            self.library_path = Path(lines[1])
            return self.library_path
        paths = [Path(p) for p in backend.build(source, dest, [target])]
        suffixes = tuple(backend.library_suffixes)
        lib = next((p for p in paths if not suffixes or p.name.endswith(suffixes)), paths[0])
        tmp = stamp.with_name(f".built.{os.getpid()}")
        tmp.write_text(f"{key}\n{lib.resolve()}")
        os.replace(tmp, stamp)
        self.library_path = lib.resolve()
        return self.library_path

    def register(self, rt: Any, tenant: str = "default") -> None:
        if self.library_path is None:
            raise ValidationError(FieldError("workload", f"{self.name}: build() first"), what="arguments")
        rt.register_library(self.library, self.library_path, tenant=tenant)
        rt.register_function(self.function, self.config, tenant=tenant)

    @property
    def libraries(self) -> dict[str, Path]:
        """Library name -> built file (for the dedicated baseline)."""
        if self.library_path is None:
            raise ValidationError(FieldError("workload", f"{self.name}: build() first"), what="arguments")
        return {self.library: self.library_path}

    def reference_module(self) -> ModuleType:
        return _load_reference(self.folder / "reference.py")

    def inputs(self, seed: int = 0) -> dict[str, bytes]:
        ref = self.reference_module()
        if self.example == "inference":
            return dict(ref.make_inputs(seed, repeat=self.params.get("repeat", 1)))
        if self.example == "batched":
            return dict(ref.make_inputs(seed, batch=self.params.get("batch", 1)))
        return dict(ref.make_inputs(seed))

    def expected(self, inputs: dict[str, bytes], seed: int | None = None) -> dict[str, Any]:
        """numpy's outputs for ``inputs`` (cached by ``seed`` when given: the inputs of a seed
        never change, so a load run computes the reference once, not per request)."""
        if seed is not None and seed in self._expected:
            return self._expected[seed]
        raw = self.reference_module().reference(inputs)
        want: dict[str, Any] = {
            name: (np.frombuffer(data, dtype=np.float32) if self.float_tolerance else bytes(data))
            for name, data in raw.items()}
        if seed is not None:
            self._expected[seed] = want
        return want

    def check(self, inputs: dict[str, bytes], outputs: dict[str, bytes], seed: int | None = None) -> None:
        """Raise AssertionError with the difference when outputs do not match numpy."""
        for name, want in self.expected(inputs, seed).items():
            if name not in outputs:
                raise AssertionError(f"{self.name}: output {name!r} is missing")
            got = outputs[name]
            if self.float_tolerance:
                a = np.frombuffer(got, dtype=np.float32)
                if a.shape != want.shape or not np.allclose(a, want, rtol=self.float_tolerance,
                                                            atol=self.float_tolerance):
                    worst = float(np.max(np.abs(a - want))) if a.shape == want.shape else float("nan")
                    raise AssertionError(f"{self.name}: output {name!r} differs from numpy (max error {worst:g})")
            elif bytes(got) != want:
                raise AssertionError(f"{self.name}: output {name!r} differs from numpy")


_PATTERNS = [
    (re.compile(r"matmul128"), lambda m: Workload("matmul128", "matmul128", "matmul", "matmul.json", {})),
    (re.compile(r"matmul128-tiled"),
     lambda m: Workload("matmul128-tiled", "matmul128_tiled", "matmul", "matmul_tiled.json", {})),
    (re.compile(r"inference(\d+)"),
     lambda m: Workload(f"inference{m.group(1)}", "inference", "inference", "inference.json",
                        {"repeat": int(m.group(1))}, float_tolerance=1e-4)),
    (re.compile(r"batched(\d+)"),
     lambda m: Workload(f"batched{m.group(1)}", "batched", "batched", "batched.json",
                        {"batch": int(m.group(1))}, float_tolerance=1e-4)),
]

WORKLOAD_HELP = "matmul128, matmul128-tiled, inference<N> (e.g. inference50), batched<B> (e.g. batched4)"


def workload(name: str) -> Workload:
    for pattern, make in _PATTERNS:
        m = pattern.fullmatch(name)
        if m:
            return make(m)
    raise ValidationError(FieldError("workload", f"unknown workload {name!r} (known: {WORKLOAD_HELP})"),
                          what="arguments")


def load_workload(name: str, backend_name: str = "cpu", build_dir: Path | str | None = None) -> Workload:
    """Resolve, build for ``backend_name`` and return a workload ready to ``register``."""
    from ..plugins import get_plugins

    wl = workload(name)
    wl.build(get_plugins().backend(backend_name), Path(build_dir) if build_dir else default_build_dir())
    return wl


def repeat_input(n: int) -> bytes:
    return struct.pack("<Q", n)
