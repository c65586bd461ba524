"""The builder: HIP source -> cubin / PTX / fatbin with nvcc (NVRTC where nvcc is missing)."""

from __future__ import annotations

import pytest

from pappus.errors import PappusError
from pappus_cuda.build import BuildError, build_cuda, check_targets, nvrtc_available
from pappus_cuda.cubin import read_library

from .conftest import KERNELS


def test_target_names_are_checked(tmp_path):
    for bad in ([], ["gfx90a"], ["sm90"], ["sm_90", "sm_90"], ["cpu"]):
        with pytest.raises(BuildError) as info:
            check_targets(bad, "x.hip")
        assert info.value.errors[0].path == "targets" and info.value.fields["source"] == "x.hip"
    assert check_targets(["sm_90", "compute_80", "sm_90a", "sm_100f"], "x.hip")


def test_missing_source(tmp_path):
    with pytest.raises(BuildError, match="no such source file"):
        build_cuda(tmp_path / "nope.hip", tmp_path, ["sm_90"])


@pytest.mark.parametrize("targets,name", [(["sm_90"], "clean.cubin"), (["compute_80"], "clean.ptx"),
                                          (["sm_80", "sm_90"], "clean.fatbin")])
def test_outputs(nvcc, tmp_path, targets, name):
    paths = build_cuda(KERNELS / "clean.hip", tmp_path, targets)
    assert [p.name for p in paths] == [name]
    assert "matmul_at_i64" in read_library(paths[0].read_bytes()).kernels


def test_the_shim_maps_every_hip_device_name(code_objects):
    info = read_library(code_objects.get("shim", "sm_90"))
    assert [(p.size, p.offset) for p in info.kernels["shim_all"].params] == [(8, 0), (8, 8)]


def test_compile_errors_are_reported_with_the_compiler_line(nvcc, tmp_path):
    src = tmp_path / "bad.hip"
    src.write_text('#include <hip/hip_runtime.h>\nextern "C" __global__ void k(int* p) { p[0] = undefined_name; }\n')
    with pytest.raises(BuildError, match="nvcc failed on bad.hip.*undefined_name") as info:
        build_cuda(src, tmp_path, ["sm_90"])
    assert "undefined_name" in info.value.fields["output"] and info.value.errors[0].path == "source"


def test_amd_only_intrinsics_fail_to_compile(nvcc, tmp_path):
    src = tmp_path / "amd.hip"
    src.write_text('#include <hip/hip_runtime.h>\n'
                   'extern "C" __global__ void k(int* p) { p[0] = __builtin_amdgcn_workitem_id_x(); }\n')
    with pytest.raises(BuildError):
        build_cuda(src, tmp_path, ["sm_90"])


def test_nvrtc_builds_the_same_kernels(tmp_path):
    why = nvrtc_available()
    if why:
        pytest.skip(f"NVRTC unavailable: {why}")
    for stem, flags in (("clean", (False, False)), ("malloc", (True, False)), ("printf", (False, True))):
        one = build_cuda(KERNELS / f"{stem}.hip", tmp_path, ["sm_90"], compiler="nvrtc", name=f"{stem}-rtc")
        assert one[0].name == f"{stem}-rtc.cubin"
        info = read_library(one[0].read_bytes())
        assert any((k.uses_heap, k.uses_hostcall) == flags for k in info.kernels.values())
    several = build_cuda(KERNELS / "clean.hip", tmp_path, ["sm_80", "compute_90"], compiler="nvrtc")
    assert [p.name for p in several] == ["clean.sm_80.cubin", "clean.compute_90.ptx"]
    assert read_library(several[1].read_bytes()).kernels["scalars"].params[4].size == 24


def test_pappus_build_routes_sm_targets_to_this_backend():
    from pappus.cli.build_cmd import route
    from pappus_cuda.plugin import CUDA_BACKEND

    plan = route(["sm_90", "compute_80"], [CUDA_BACKEND])
    assert plan["cuda"][1] == ["sm_90", "compute_80"]
    assert issubclass(BuildError, PappusError)
