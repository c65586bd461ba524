"""Fixtures of the HIP backend tests: code objects built once per session with hipcc."""

from __future__ import annotations

import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KERNELS = Path(__file__).resolve().parent / "kernels"

ARCHS = ("gfx90a", "gfx1030")
VERSIONS = (4, 5)

#: (source stem, code-object version, form): form "bundle" holds ARCHS; "raw-<arch>" is one ELF.
BUILDS = [
    *((stem, v, form) for stem in ("clean", "malloc", "printf") for v in VERSIONS
      for form in ("bundle", "raw-gfx90a")),
    ("clean", 4, "raw-gfx1030"),
    ("mixed", 4, "raw-gfx90a"),
    ("mixed", 5, "raw-gfx90a"),
    ("recursive", 4, "raw-gfx90a"),
    ("globals", 4, "raw-gfx90a"),
]

HIPCC_MISSING = ("hipcc not found: the HIP tests build real code objects with ROCm's hipcc "
                 "(Debian: apt install hipcc libamdhip64-dev)")


class CodeObjects:
    """Code objects by (stem, version, form); every build starts at once, in parallel."""

    def __init__(self, out: Path) -> None:
        from pappus_hip.build import build_hsaco

        self.out = out
        pool = ThreadPoolExecutor(max_workers=4)
        self._futures: dict[tuple[str, int, str], Future[Path]] = {}
        for stem, version, form in BUILDS:
            src = KERNELS / f"{stem}.hip"
            name = f"{stem}-v{version}"
            if form == "bundle":
                fut = pool.submit(lambda s=src, n=name, v=version: build_hsaco(
                    s, out, list(ARCHS), code_object_version=v, name=n)[0])
            else:
                arch = form.split("-", 1)[1]
                fut = pool.submit(lambda s=src, n=name, v=version, a=arch: build_hsaco(
                    s, out, [a], bundle=False, code_object_version=v, name=n)[0])
            self._futures[(stem, version, form)] = fut
        pool.shutdown(wait=False)

    def path(self, stem: str, version: int = 4, form: str = "bundle") -> Path:
        try:
            return self._futures[(stem, version, form)].result()
        except KeyError:
            raise AssertionError(f"no build {stem} v{version} {form} in conftest.BUILDS") from None
        except Exception as exc:
            pytest.fail(f"building {stem}.hip (v{version}, {form}) failed: {exc}\n{getattr(exc, 'output', '')}")

    def get(self, stem: str, version: int = 4, form: str = "bundle") -> bytes:
        return self.path(stem, version, form).read_bytes()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that build code objects carry the ``rocm`` marker (``-m "not rocm"`` deselects them)."""
    here = Path(__file__).resolve().parent
    for item in items:
        if Path(str(item.fspath)).resolve().parent == here and (
                {"hipcc", "code_objects"} & set(getattr(item, "fixturenames", ()))):
            item.add_marker(pytest.mark.rocm)


@pytest.fixture(scope="session")
def hipcc() -> str:
    from pappus_hip.build import find_hipcc

    path = find_hipcc()
    if path is None:
        pytest.skip(HIPCC_MISSING)
    return path


@pytest.fixture(scope="session")
def code_objects(hipcc: str, tmp_path_factory: pytest.TempPathFactory) -> CodeObjects:
    return CodeObjects(tmp_path_factory.mktemp("hip-code-objects"))


@pytest.fixture(scope="session")
def llvm_strip() -> str:
    for name in ("llvm-strip", "llvm-strip-15", "llvm-strip-17", "llvm-strip-18"):
        path = shutil.which(name) or (shutil.which(name, path="/usr/lib/llvm-15/bin"))
        if path:
            return path
    pytest.skip("llvm-strip not found (it comes with ROCm's LLVM)")
