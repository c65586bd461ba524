"""Build HIP source for NVIDIA GPUs (``pappus build --targets sm_90``), with nvcc or NVRTC.

The same ``.hip`` file that hipcc builds for AMD compiles here: ``include/hip/hip_runtime.h`` (this
package) maps HIP's device-side names onto CUDA's. Outputs, for targets ``sm_XX``/``compute_XX``:

* one ``sm_XX`` -> ``OUT/<stem>.cubin``; one ``compute_XX`` -> ``OUT/<stem>.ptx``;
* several -> ``OUT/<stem>.fatbin`` (nvcc, uncompressed so registration can read every entry), or
  with NVRTC, which makes no fatbins, one ``OUT/<stem>.<target>.cubin``/``.ptx`` per target.

nvcc is used where it is found (``PAPPUS_NVCC``, PATH, ``$CUDA_HOME/bin``, /usr/local/cuda/bin);
NVRTC (``cuda.bindings.nvrtc`` with the ``nvidia-cuda-nvrtc`` wheel) otherwise.
Neither needs a GPU.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pappus.errors import BuildError as CoreBuildError

INCLUDE_DIR = Path(__file__).resolve().parent / "include"
SHIM_HEADERS = ("hip/hip_runtime.h", "hip/hip_runtime_api.h")
_TARGET_RE = re.compile(r"(sm|compute)_(\d{2,3})([af]?)")


class BuildError(CoreBuildError):
    """Core's :class:`~pappus.errors.BuildError` (at ``path``: ``source`` or ``targets``), saying
    also which source file and which compiler (fields ``source``, ``compiler``, ``output``)."""

    def __init__(self, message: str, *, source: str | None = None, compiler: str | None = None,
                 output: str | None = None, path: str = "source") -> None:
        super().__init__(message, path=path, output=output)
        self.fields.update(source=source, compiler=compiler, output=output)


def find_nvcc() -> str | None:
    explicit = os.environ.get("PAPPUS_NVCC", "").strip()
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("nvcc")
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            candidate = os.path.join(home, "bin", "nvcc")
            if os.access(candidate, os.X_OK):
                return candidate
    return None


def nvrtc_available() -> str | None:
    """None when NVRTC can compile here, else why not."""
    try:
        from cuda.bindings import nvrtc
    except ImportError:
        return "cuda-bindings is not installed (pip install 'pappus[cuda]')"
    try:
        err, major, minor = nvrtc.nvrtcVersion()
    except Exception as exc:
        return f"libnvrtc cannot be loaded ({type(exc).__name__}; pip install nvidia-cuda-nvrtc)"
    if int(err) != 0:
        return f"nvrtcVersion failed: {err}"
    return None


def check_targets(targets: Sequence[str], source: str) -> list[str]:
    targets = [t.strip() for t in targets if t.strip()]
    if not targets:
        raise BuildError("no target given (e.g. sm_90 for a cubin, compute_90 for PTX)", source=source, path="targets")
    for t in targets:
        if not _TARGET_RE.fullmatch(t):
            raise BuildError(f"{t!r} is not an NVIDIA target (expected sm_XX or compute_XX, e.g. sm_90)", source=source, path="targets")
    if len(set(targets)) != len(targets):
        raise BuildError(f"a target is named twice in {', '.join(targets)}", source=source, path="targets")
    return targets


def build_cuda(source: str | os.PathLike[str], out_dir: str | os.PathLike[str], targets: Sequence[str], *,
               compiler: str = "auto", optimize: str = "-O3", extra_flags: Sequence[str] = (),
               name: str | None = None, timeout: float = 600.0) -> list[Path]:
    """Compile ``source`` (HIP or CUDA) for ``targets``; return the files written."""
    src = Path(source)
    if not src.is_file():
        raise BuildError(f"no such source file: {src}", source=str(src))
    targets = check_targets(targets, str(src))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = name or src.stem
    if compiler not in ("auto", "nvcc", "nvrtc"):
        raise BuildError(f"unknown compiler {compiler!r} (auto, nvcc or nvrtc)", source=str(src))
    nvcc = find_nvcc() if compiler in ("auto", "nvcc") else None
    if nvcc:
        return [_nvcc(nvcc, src, out, stem, targets, optimize, extra_flags, timeout)]
    if compiler == "nvcc":
        raise BuildError("nvcc was not found (set PAPPUS_NVCC, CUDA_HOME, or put it on PATH)", source=str(src))
    why = nvrtc_available()
    if why:
        raise BuildError(f"neither nvcc nor NVRTC is available: nvcc not found; NVRTC: {why}", source=str(src))
    return [_nvrtc(src, out, stem, t, len(targets) > 1, optimize, extra_flags) for t in targets]


def _nvcc(nvcc: str, src: Path, out: Path, stem: str, targets: list[str], optimize: str,
          extra_flags: Sequence[str], timeout: float) -> Path:
    common = ["-x", "cu", f"-I{INCLUDE_DIR}", optimize, *extra_flags]
    if len(targets) == 1:
        t = targets[0]
        if t.startswith("sm_"):
            path = out / f"{stem}.cubin"
            cmd = [nvcc, "-cubin", f"-arch={t}", *common, str(src), "-o", str(path)]
        else:
            path = out / f"{stem}.ptx"
            cmd = [nvcc, "-ptx", f"-arch={t}", *common, str(src), "-o", str(path)]
    else:
        path = out / f"{stem}.fatbin"
        gencode = []
        for t in targets:
            kind, num, suffix = _TARGET_RE.fullmatch(t).groups()  # type: ignore[union-attr]
            gencode.append(f"-gencode=arch=compute_{num}{suffix},code={t}")
        cmd = [nvcc, "-fatbin", "-no-compress", *gencode, *common, str(src), "-o", str(path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              check=False)
    except subprocess.TimeoutExpired:
        raise BuildError(f"nvcc did not finish within {timeout:g} s", source=str(src), compiler=nvcc) from None
    except OSError as exc:
        raise BuildError(f"nvcc could not be run: {exc}", source=str(src), compiler=nvcc) from None
    if proc.returncode != 0 or not path.is_file():
        output = (proc.stderr or proc.stdout or "").strip()
        first = next((line for line in output.splitlines() if "error" in line), output.splitlines()[0] if output else "")
        raise BuildError(f"nvcc failed on {src.name} (exit {proc.returncode}): {first[:300]}", source=str(src),
                         compiler=nvcc, output=output[-4000:],
                         path="targets" if "Unsupported gpu architecture" in output else "source")
    return path


def _nvrtc(src: Path, out: Path, stem: str, target: str, several: bool, optimize: str,
           extra_flags: Sequence[str]) -> Path:
    from cuda.bindings import nvrtc

    def check(result: Any, api: str, prog: Any = None) -> Any:
        err, *values = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            log = _nvrtc_log(nvrtc, prog) if prog is not None else ""
            first = next((line for line in log.splitlines() if "error" in line), "")
            raise BuildError(f"NVRTC {api} failed on {src.name}: {getattr(err, 'name', err)} {first[:300]}".rstrip(),
                             source=str(src), compiler="nvrtc", output=log[-4000:])
        return values[0] if len(values) == 1 else values

    code = src.read_bytes()
    headers = [(INCLUDE_DIR / h).read_bytes() for h in SHIM_HEADERS]
    prog = check(nvrtc.nvrtcCreateProgram(code, src.name.encode(), len(headers), headers,
                                          [h.encode() for h in SHIM_HEADERS]), "nvrtcCreateProgram")
    try:
        cubin = target.startswith("sm_")
        options = [f"-arch={target}".encode(), b"-default-device", b"-std=c++17"]
        if optimize == "-O0":
            options.append(b"-G")
        options += [f.encode() for f in extra_flags]
        check(nvrtc.nvrtcCompileProgram(prog, len(options), options), "nvrtcCompileProgram", prog)
        if cubin:
            size = check(nvrtc.nvrtcGetCUBINSize(prog), "nvrtcGetCUBINSize", prog)
            data = b" " * size
            check(nvrtc.nvrtcGetCUBIN(prog, data), "nvrtcGetCUBIN", prog)
        else:
            size = check(nvrtc.nvrtcGetPTXSize(prog), "nvrtcGetPTXSize", prog)
            data = b" " * size
            check(nvrtc.nvrtcGetPTX(prog, data), "nvrtcGetPTX", prog)
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    suffix = ".cubin" if cubin else ".ptx"
    path = out / (f"{stem}.{target}{suffix}" if several else f"{stem}{suffix}")
    path.write_bytes(data if cubin else data.rstrip(b"\0") + b"\n")
    return path


def _nvrtc_log(nvrtc: Any, prog: Any) -> str:
    try:
        err, size = nvrtc.nvrtcGetProgramLogSize(prog)
        buf = b" " * size
        nvrtc.nvrtcGetProgramLog(prog, buf)
        return buf.rstrip(b"\0").decode("utf-8", "replace")
    except Exception:
        return ""


def build(source: Any, out_dir: Any, targets: list[str]) -> list[Any]:
    """The backend's ``build`` hook."""
    return build_cuda(source, out_dir, targets)
