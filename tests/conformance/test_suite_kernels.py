"""The suite's kernels build for every GPU backend whose compiler is on this machine, and its
driver accepts them: a GPU session runs the suite on them, so a kernel that one vendor's
compiler cannot build must show here, not there. (The CPU backend builds them in every run of
the suite.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from pappus.errors import LibraryError
from pappus.plugins import get_plugins
from pappus_conformance.fixtures import KERNEL_DIR

#: backend -> (the compiler it builds with, a target of a GPU the device tool lends or CI knows)
GPU_BACKENDS = {"hip": ("hipcc", "gfx90a"), "cuda": ("nvcc", "sm_90")}


def kernel_names(library: str) -> set[str]:
    return set(re.findall(r'extern "C" __global__ void (\w+)\(', (KERNEL_DIR / f"{library}.hip").read_text()))


@pytest.fixture(params=sorted(GPU_BACKENDS))
def gpu_backend(request: pytest.FixtureRequest):
    compiler, target = GPU_BACKENDS[request.param]
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} not found: the {request.param} backend cannot build kernels here")
    return get_plugins().backend(request.param), target


@pytest.mark.parametrize("library", ["suite", "heap"])
def test_the_suite_kernels_build_and_are_accepted(gpu_backend, library, tmp_path):
    backend, target = gpu_backend
    (path,) = backend.build(KERNEL_DIR / f"{library}.hip", tmp_path, [target])
    info = backend.driver.inspect_library(path.read_bytes())
    assert set(info.kernels) == kernel_names(library)


def test_writable_globals_are_refused(gpu_backend, tmp_path):
    """test_zeroing.py::test_module_globals counts a refusal at registration as the property held."""
    backend, target = gpu_backend
    (path,) = backend.build(KERNEL_DIR / "globals.hip", tmp_path, [target])
    with pytest.raises(LibraryError, match="writable"):
        backend.driver.inspect_library(path.read_bytes())


def test_without_the_device_the_static_checks_still_run(tmp_path):
    """On a GPU backend's CI without a GPU, the suite builds its kernels and reads them with the
    backend's driver (``test_each_reported_kind...``); everything that runs them skips, with why."""
    plugins = get_plugins()
    backend = plugins.backend("hip")
    if shutil.which("hipcc") is None:
        pytest.skip("hipcc not found: the suite's kernels cannot be built for the hip backend here")
    if plugins.availability(backend):
        pytest.skip("an AMD GPU is usable here: the whole suite runs (pappus conformance --backend hip)")
    env = dict(os.environ, PAPPUS_HIP_ARCH="gfx90a")
    res = subprocess.run([sys.executable, "-m", "pappus", "conformance", "--backend", "hip", "-n", "0", "--report",
                          str(tmp_path / "report"), "--", "-p", "no:cacheprovider"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["verdicts"]["signatures"] == "partial"
    outcomes = {t["test"]: t for t in summary["tests"]}
    passed = [name for name, t in outcomes.items() if t["outcome"] == "passed"]
    assert passed == ["test_each_reported_kind_is_the_true_one_or_unknown"], passed
    rest = {t["outcome"] for name, t in outcomes.items() if name not in passed}
    assert rest == {"skipped", "not_claimed"}, rest
    assert all("is unavailable here" in t["reason"] for t in outcomes.values() if t["outcome"] == "skipped")
