"""Build HIP source into AMDGPU code objects with hipcc (``pappus build --targets gfx90a``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pappus.errors import BuildError

_TARGET_RE = re.compile(r"gfx[0-9a-z]+(?:-[0-9]+)*(?:-generic)?(?::[a-z][a-z0-9_]*[+-])*")


def find_hipcc() -> str | None:
    """hipcc from ``PAPPUS_HIPCC``, else PATH."""
    explicit = os.environ.get("PAPPUS_HIPCC", "").strip()
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("hipcc")


def build_hsaco(source: str | os.PathLike[str], out_dir: str | os.PathLike[str], targets: Sequence[str], *,
                bundle: bool = True, code_object_version: int | None = None, optimize: str = "-O2",
                extra_flags: Sequence[str] = (), name: str | None = None, timeout: float = 600.0) -> list[Path]:
    """Compile ``source`` for ``targets`` (gfx90a, gfx1030, gfx90a:xnack-, ...).

    ``bundle=True`` writes one clang offload bundle ``<stem>.hsaco`` holding every target;
    ``bundle=False`` writes one raw AMDGPU ELF per target, ``<stem>-<target>.hsaco``.
    Always sets ``HIP_PLATFORM=amd`` (an nvcc on PATH would otherwise take over hipcc) and always
    names the architectures (hipcc would otherwise probe for a GPU and fall back to gfx803).
    """
    src = Path(source)
    if not src.is_file():
        raise BuildError(f"no such source file: {src}")
    targets = list(targets)
    if not targets:
        raise BuildError("no target architecture given (e.g. gfx90a)", path="targets")
    for t in targets:
        if not _TARGET_RE.fullmatch(t):
            raise BuildError(f"{t!r} is not an AMDGPU target (expected e.g. gfx90a or gfx90a:xnack-)",
                             path="targets")
    hipcc = find_hipcc()
    if hipcc is None:
        raise BuildError("hipcc was not found (set PAPPUS_HIPCC or put ROCm's hipcc on PATH; on Debian: "
                         "apt install hipcc libamdhip64-dev)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = name or src.stem
    flags = [optimize, *extra_flags]
    if code_object_version is not None:
        flags.append(f"-mcode-object-version={int(code_object_version)}")
    env = dict(os.environ, HIP_PLATFORM="amd")
    jobs: list[tuple[list[str], Path]] = []
    if bundle:
        path = out / f"{stem}.hsaco"
        jobs.append(([*(f"--offload-arch={t}" for t in targets)], path))
    else:
        for t in targets:
            jobs.append(([f"--offload-arch={t}", "--no-gpu-bundle-output"],
                         out / f"{stem}-{t.replace(':', '_')}.hsaco"))
    written: list[Path] = []
    for arch_flags, path in jobs:
        cmd = [hipcc, "--genco", *arch_flags, *flags, str(src), "-o", str(path)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                                  stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            raise BuildError(f"hipcc did not finish within {timeout:g} s") from None
        except OSError as exc:
            raise BuildError(f"hipcc could not be run: {exc}") from None
        if proc.returncode != 0 or not path.is_file():
            output = (proc.stderr or proc.stdout or "").strip()
            first = next((line for line in output.splitlines() if "error" in line), output.splitlines()[0] if output else "")
            raise BuildError(f"hipcc failed on {src.name} (exit {proc.returncode}): {first[:300]}",
                             path="targets" if "invalid target ID" in output else "source", output=output[-4000:])
        written.append(path)
    return written


def build(source: Any, out_dir: Any, targets: list[str]) -> list[Any]:
    """The backend's ``build`` hook: one offload bundle for all targets."""
    return build_hsaco(source, out_dir, targets)
