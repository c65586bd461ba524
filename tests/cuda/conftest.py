"""Fixtures of the CUDA backend tests: code objects built once per session with nvcc (or NVRTC)."""

from __future__ import annotations

import shutil
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KERNELS = Path(__file__).resolve().parent / "kernels"

try:  # an editable install made before plugins/pappus_cuda existed does not map it yet
    import pappus_cuda  # noqa: F401
except ImportError:
    sys.path.insert(0, str(ROOT / "plugins"))

#: (source stem, targets) -> one output; targets of one sm_ give a cubin, compute_ a PTX, several a fatbin
BUILDS = [
    ("clean", ("sm_90",)), ("clean", ("sm_80",)), ("clean", ("compute_80",)), ("clean", ("sm_80", "sm_90", "compute_90")),
    ("malloc", ("sm_90",)), ("malloc", ("sm_75",)), ("malloc", ("compute_80",)),
    ("printf", ("sm_90",)), ("printf", ("compute_80",)),
    ("mixed", ("sm_90",)), ("mixed", ("sm_80",)), ("mixed", ("compute_80",)),
    ("fault", ("sm_90",)), ("heap_probe", ("sm_90",)),
    ("globals", ("sm_90",)), ("globals", ("compute_80",)), ("misc", ("sm_90",)), ("misc", ("compute_80",)),
    ("shim", ("sm_90",)),
]

NVCC_MISSING = "nvcc not found: the CUDA tests build real code objects with nvcc (CUDA toolkit)"


def _key(stem: str, targets: tuple[str, ...]) -> str:
    return f"{stem}-{'-'.join(targets)}"


class CodeObjects:
    """Code objects by (stem, targets); every build starts at once, in parallel."""

    def __init__(self, out: Path) -> None:
        from pappus_cuda.build import build_cuda

        self.out = out
        pool = ThreadPoolExecutor(max_workers=4)
        self._futures: dict[tuple[str, tuple[str, ...]], Future[Path]] = {}
        for stem, targets in BUILDS:
            self._futures[(stem, targets)] = pool.submit(
                lambda s=stem, t=targets: build_cuda(KERNELS / f"{s}.hip", out, list(t), compiler="nvcc",
                                                     name=_key(s, t))[0])
        pool.shutdown(wait=False)

    def path(self, stem: str, *targets: str) -> Path:
        targets = targets or ("sm_90",)
        try:
            return self._futures[(stem, tuple(targets))].result()
        except KeyError:
            raise AssertionError(f"no build {stem} {targets} in conftest.BUILDS") from None
        except Exception as exc:
            pytest.fail(f"building {stem}.hip for {targets} failed: {exc}\n{getattr(exc, 'output', '')}")

    def get(self, stem: str, *targets: str) -> bytes:
        return self.path(stem, *targets).read_bytes()


@pytest.fixture(scope="session")
def nvcc() -> str:
    from pappus_cuda.build import find_nvcc

    path = find_nvcc()
    if path is None:
        pytest.skip(NVCC_MISSING)
    return path


@pytest.fixture(scope="session")
def code_objects(nvcc: str, tmp_path_factory: pytest.TempPathFactory) -> CodeObjects:
    return CodeObjects(tmp_path_factory.mktemp("cuda-code-objects"))


def find_tool(name: str) -> str | None:
    """cuobjdump / nvdisasm: PATH, the CUDA toolkit, or the nvidia-cuda-cuobjdump wheel."""
    found = shutil.which(name)
    if found:
        return found
    for base in ("/usr/local/cuda/bin",):
        if (Path(base) / name).is_file():
            return str(Path(base) / name)
    try:
        import nvidia  # type: ignore[import-not-found]

        for root in getattr(nvidia, "__path__", []):
            for candidate in Path(root).glob(f"*/bin/{name}"):
                return str(candidate)
    except ImportError:
        pass
    return None
