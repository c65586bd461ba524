"""Without a GPU: the plugin imports, check() gives the driver's reason, nothing prints a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pappus.errors import BackendUnavailable
from pappus_cuda import runtime
from pappus_cuda.plugin import CUDA_BACKEND, check

from .fakecuda import CUresult, FakeDriver

EXPECTED_REASONS = (runtime.NOT_INSTALLED, runtime.NO_DRIVER, "cuInit failed", "no NVIDIA GPU visible",
                    "older than the CUDA", "NVIDIA GPU(s), device 0")


def test_check_reports_the_real_reason():
    avail = check()
    assert avail.reason.startswith(EXPECTED_REASONS) or any(r in avail.reason for r in EXPECTED_REASONS), avail
    if not avail:
        assert "Traceback" not in avail.reason


def test_backend_bundle():
    assert CUDA_BACKEND.name == "cuda"
    assert CUDA_BACKEND.engine_names() == ["cuda-sequential", "cuda-multiprocess"]
    assert CUDA_BACKEND.build_targets == ("sm_*", "compute_*")
    assert {".cubin", ".ptx", ".fatbin"} <= set(CUDA_BACKEND.library_suffixes)


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_importing_the_plugin_touches_no_gpu():
    proc = _run("import sys, pappus_cuda.plugin, pappus_cuda.device, pappus_cuda.cubin, pappus_cuda.build\n"
                "print(sorted(m for m in sys.modules if m.startswith('cuda')))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"  # cuda-bindings is imported only when a device is used


def test_without_cuda_bindings_the_reason_says_how_to_install():
    proc = _run("import sys; sys.modules['cuda'] = None; sys.modules['cuda.bindings'] = None\n"
                "from pappus_cuda.plugin import check; print(check().reason)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == runtime.NOT_INSTALLED
    assert "Traceback" not in proc.stderr


def test_cli_lists_the_backend_without_a_traceback():
    proc = subprocess.run([sys.executable, "-m", "pappus", "plugins", "--json"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "cuda-sequential" in proc.stdout
    doc = json.loads(proc.stdout)
    text = json.dumps(doc)
    assert "cuda" in text


def test_probe_reasons_from_driver_answers(monkeypatch):
    monkeypatch.setattr(runtime, "load_driver", lambda: FakeDriver(driver_version=12080))
    result = runtime.probe()
    assert not result.available and result.driver_older
    assert "supports CUDA 12.8, older than the CUDA 13.0" in result.reason
    assert "cuda-bindings~=12.0" in result.reason

    fake = FakeDriver()
    fake.cuInit = lambda flags: (CUresult.CUDA_ERROR_NO_DEVICE,)
    monkeypatch.setattr(runtime, "load_driver", lambda: fake)
    assert runtime.probe().reason == "cuInit failed: CUDA_ERROR_NO_DEVICE (no CUDA-capable device is detected)"

    monkeypatch.setattr(runtime, "load_driver", lambda: FakeDriver(devices=0))
    assert runtime.probe().reason == "no NVIDIA GPU visible (0 devices)"

    monkeypatch.setattr(runtime, "load_driver", lambda: FakeDriver())
    result = runtime.probe()
    assert result.available and result.archs == ["sm_90"] and result.shared_optin == [232448]
    assert result.reason.startswith("1 NVIDIA GPU(s), device 0: Fake H100 (sm_90)")
    assert result.pageable_memory_access == [False] and "host memory" not in result.reason


def test_probe_says_when_engines_will_refuse_a_gpu(monkeypatch):
    monkeypatch.delenv("PAPPUS_ALLOW_HOST_MEMORY_ACCESS", raising=False)
    monkeypatch.setattr(runtime, "load_driver", lambda: FakeDriver(pageable_memory_access=1))
    result = runtime.probe()
    assert result.available and result.pageable_memory_access == [True]
    assert "kernels on device 0 can reach pageable host memory" in result.reason
    assert "engines refuse it unless allowed (PAPPUS_ALLOW_HOST_MEMORY_ACCESS=1" in result.reason
    monkeypatch.setenv("PAPPUS_ALLOW_HOST_MEMORY_ACCESS", "1")
    assert "allowed here by PAPPUS_ALLOW_HOST_MEMORY_ACCESS" in runtime.probe().reason


def test_opening_without_bindings_is_backend_unavailable(monkeypatch):
    from pappus_cuda.device import CudaDevice

    def missing():
        raise ImportError("no cuda")

    monkeypatch.setattr(runtime, "load_driver", missing)
    with pytest.raises(BackendUnavailable, match="cuda-bindings is not installed"):
        CudaDevice().open()


def test_driver_inspects_without_a_gpu(code_objects, monkeypatch):
    from pappus_cuda.driver import CudaDriver

    monkeypatch.delenv("PAPPUS_CUDA_ARCH", raising=False)
    info = CudaDriver().inspect_library(code_objects.get("clean", "sm_90"))
    assert "matmul_at_i64" in info.kernels
    monkeypatch.setenv("PAPPUS_CUDA_ARCH", "sm_80")
    from pappus.errors import LibraryError

    with pytest.raises(LibraryError, match="cannot run on sm_80"):
        CudaDriver().inspect_library(code_objects.get("clean", "sm_90"))
