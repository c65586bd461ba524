"""The backend bundle: registration through the entry point, the hipcc build hook, the driver."""

from __future__ import annotations

import pytest

from pappus.interfaces import Capability
from pappus.plugins import Plugins
from pappus_hip import plugin
from pappus_hip.build import BuildError, build_hsaco
from pappus_hip.codeobject import read_library
from pappus_hip.device import HipDevice
from pappus_hip.driver import HipDriver


def test_backend_registers_through_the_plugin_hook():
    plugins = Plugins().load(entry_points=[])
    plugins.register_module(plugin, "hip")
    backend = plugins.backends.get("hip")
    assert backend.plugin == "hip"
    assert backend.capabilities == {Capability.ZEROING, Capability.MALLOC_HEAP_LIMIT, Capability.SIGNATURES}
    assert backend.build_targets == ("gfx*",) and backend.build is not None
    assert backend.engine_names() == ["hip-sequential", "hip-multiprocess"]
    spec = backend.device(device=0, heap_limit=0)
    assert spec.factory == "pappus_hip.device:create_device"
    device = spec.create()  # creating does not touch hip-python or a GPU
    assert isinstance(device, HipDevice) and device.bounds_writes is False


def test_build_without_hipcc(monkeypatch, tmp_path):
    src = tmp_path / "k.hip"
    src.write_text("extern \"C\" __global__ void k() {}\n")
    monkeypatch.setenv("PAPPUS_HIPCC", str(tmp_path / "no-such-hipcc"))
    with pytest.raises(BuildError, match="hipcc was not found"):
        plugin.HIP_BACKEND.build(src, tmp_path / "out", ["gfx90a"])


def test_build_rejects_bad_targets_and_sources(tmp_path):
    src = tmp_path / "k.hip"
    src.write_text("x")
    with pytest.raises(BuildError, match="not an AMDGPU target"):
        build_hsaco(src, tmp_path, ["sm_80"])
    with pytest.raises(BuildError, match="not an AMDGPU target"):
        build_hsaco(src, tmp_path, ["gfx90a --save-temps"])
    with pytest.raises(BuildError, match="no target"):
        build_hsaco(src, tmp_path, [])
    with pytest.raises(BuildError, match="no such source"):
        build_hsaco(tmp_path / "missing.hip", tmp_path, ["gfx90a"])


def test_build_hook_writes_a_bundle_for_every_target(hipcc, tmp_path):
    src = tmp_path / "axpy.hip"
    src.write_text('#include <hip/hip_runtime.h>\n'
                   'extern "C" __global__ void axpy(float* y, const float* x, float a) {\n'
                   '  y[threadIdx.x] += a * x[threadIdx.x]; }\n')
    [out] = plugin.HIP_BACKEND.build(src, tmp_path / "out", ["gfx90a", "gfx1030"])
    assert out.name == "axpy.hsaco"
    data = out.read_bytes()
    for arch in ("gfx90a", "gfx1030"):
        assert set(HipDriver(arch).inspect_library(data).kernels) == {"axpy"}


def test_build_reports_compiler_errors(hipcc, tmp_path):
    src = tmp_path / "broken.hip"
    src.write_text('extern "C" __global__ void k() { this is not c++; }\n')
    with pytest.raises(BuildError, match="hipcc failed on broken.hip") as exc:
        build_hsaco(src, tmp_path, ["gfx90a"])
    assert "error" in exc.value.output and exc.value.errors[0].path == "source"


def test_a_target_hipcc_does_not_know_is_blamed_on_targets(hipcc, tmp_path):
    import subprocess
    import sys

    src = tmp_path / "ok.hip"
    src.write_text('#include <hip/hip_runtime.h>\nextern "C" __global__ void k(int* p) { p[0] = 1; }\n')
    with pytest.raises(BuildError) as exc:
        build_hsaco(src, tmp_path, ["gfx90"])
    assert exc.value.errors[0].path == "targets" and "invalid target ID 'gfx90'" in str(exc.value)
    res = subprocess.run([sys.executable, "-m", "pappus", "build", str(src), "--targets", "gfx90", "-o",
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and res.stderr.startswith("pappus: error: --targets: hipcc failed on ok.hip"), res.stderr


def test_driver_target_from_configuration(monkeypatch, code_objects):
    monkeypatch.setattr("pappus_hip.driver.device_arch", lambda: None)  # no AMD GPU here anyway
    data = code_objects.get("clean", 4, "bundle")
    monkeypatch.setenv("PAPPUS_HIP_ARCH", "gfx1030")
    assert HipDriver().inspect_library(data).target == "gfx1030"
    monkeypatch.delenv("PAPPUS_HIP_ARCH")
    assert HipDriver().target() == "gfx90a"
    assert HipDriver().inspect_library(data).target == "gfx90a"
    monkeypatch.setattr("pappus_hip.driver.device_arch", lambda: "gfx1030")
    assert HipDriver().target() == "gfx1030"  # a visible device wins over configuration
    # What the conformance suite and the benchmarks build for: the same target, never "gfx*".
    assert plugin.HIP_BACKEND.default_target() == "gfx1030"
    monkeypatch.setattr("pappus_hip.driver.device_arch", lambda: None)
    assert plugin.HIP_BACKEND.default_target() == "gfx90a"
    monkeypatch.setattr("pappus_hip.driver.device_arch", lambda: "gfx1030")
    globals_ = code_objects.get("globals", 4, "raw-gfx90a")
    monkeypatch.setenv("PAPPUS_HIP_ALLOW_WRITABLE_GLOBALS", "1")
    assert read_library(globals_, "gfx90a", allow_writable_globals=HipDriver("gfx90a").allow_writable_globals)
