"""pappus_cpu.build: kernel discovery, the wrapper and manifest, compiler errors as pappus
errors, unsupported features refused at compile time, and the hipcc path for gfx targets."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from pappus.errors import BuildError, PappusError
from pappus_cpu import abi, protocol
from pappus_cpu.build import build_library, find_kernels, rewrite_dynamic_shared
from pappus_cpu.driver import CpuDriver

from .conftest import EXAMPLES, Builder

PKG = Path(__import__("pappus_cpu").__file__).resolve().parent


def test_kernels_are_found_with_namespaces_and_without_templates_or_declarations() -> None:
    text = """
    struct S { int a; };
    void helper() { }
    __pappus_global__ void decl_only(int*);
    __pappus_global__ void plain(int* x) { x[0] = 1; }
    namespace outer { namespace inner { __pappus_global__ void nested(float* y) { } } }
    namespace { __pappus_global__ void hidden(int) { } }
    template <int N> __pappus_global__ void templ(int* x) { }
    extern "C" __pappus_global__ void cee(int* x) { }
    __pappus_global__ void __attribute__((noinline)) attributed(int* x) { }
    struct Holder { void method() { } };
    """
    found = {k.name: k.qualified for k in find_kernels(text)}
    assert found == {"plain": "::plain", "nested": "::outer::inner::nested", "hidden": "::hidden",
                     "cee": "::cee", "attributed": "::attributed"}


def test_overloaded_kernels_are_refused() -> None:
    text = "__pappus_global__ void k(int* x) { }\n__pappus_global__ void k(float* x) { }\n"
    with pytest.raises(BuildError, match="overloaded"):
        find_kernels(text)


def test_extern_shared_is_rewritten_in_place() -> None:
    src = "a\nextern __shared__ float sdata[];\nextern __shared__ __align__(16) unsigned char raw[ ];\nb\n"
    out = rewrite_dynamic_shared(src)
    assert out.count("\n") == src.count("\n")
    assert "dynshared<float> sdata" in out and "dynshared<unsigned char> raw" in out


def test_the_build_writes_a_library_and_a_readable_manifest(build: Builder, tmp_path: Path) -> None:
    paths = build_library(EXAMPLES / "matmul" / "matmul.hip", tmp_path, ["cpu"])
    assert [p.name for p in paths] == ["matmul.so", "matmul.manifest.json"]
    doc = json.loads(paths[1].read_text())
    assert doc["format"] == "pappus-cpu/1"
    assert doc["kernels"]["matmul_at"]["params"] == [
        {"size": 8, "kind": "pointer"}, {"size": 8, "kind": "uint"}, {"size": 8, "kind": "pointer"}]
    assert set(doc["kernels"]) == {"matmul_at", "matmul_at_tiled"}
    info = CpuDriver().inspect_library(paths[0].read_bytes())
    assert set(info.kernels) == set(doc["kernels"])


def test_compiler_errors_are_pappus_errors_with_the_compilers_message(build: Builder) -> None:
    with pytest.raises(BuildError) as info:
        build("#include <hip/hip_runtime.h>\n__global__ void k(int* x) { x[0] = undeclared_name; }\n")
    assert isinstance(info.value, PappusError)
    assert "undeclared_name" in str(info.value)
    assert "Traceback" not in str(info.value)


@pytest.mark.parametrize("body,needle", [
    ("x[0] = __shfl_down(x[0], 1);", "__shfl_down is not supported by the CPU backend"),
    ("x[0] = __ballot(x[0] > 0);", "__ballot is not supported"),
    ("__syncwarp();", "__syncwarp is not supported"),
    ("auto g = cooperative_groups::this_grid(); (void)g;", "cooperative groups are not supported"),
])
def test_unsupported_features_fail_at_compile_time_with_a_clear_message(build: Builder, body: str, needle: str) -> None:
    with pytest.raises(BuildError, match=re.escape(needle)):
        build("#include <hip/hip_runtime.h>\n__global__ void k(int* x) { " + body + " }\n")


def test_cooperative_groups_header_is_refused(build: Builder) -> None:
    with pytest.raises(BuildError, match="cooperative groups are not supported"):
        build("#include <hip/hip_runtime.h>\n#include <hip/hip_cooperative_groups.h>\n__global__ void k(int* x) { }\n")


def test_a_source_without_kernels_is_refused(build: Builder) -> None:
    with pytest.raises(BuildError, match="no __global__ kernels"):
        build("#include <hip/hip_runtime.h>\nint f(int x) { return x; }\n")


def test_unknown_targets_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="unknown target 'sm_90'"):
        build_library(EXAMPLES / "matmul" / "matmul.hip", tmp_path, ["sm_90"])


def test_abi_constants_agree_with_the_c_sources() -> None:
    header = (PKG / "include" / "pappus_cpu_abi.h").read_text()
    device = (PKG / "csrc" / "pappus_cpu_device.c").read_text()

    def define(text: str, name: str) -> str:
        m = re.search(rf"#define {name} (\S+)", text)
        assert m, name
        return m.group(1)

    assert int(define(header, "PAPPUS_CPU_ABI")) == abi.ABI_VERSION
    assert int(define(header, "PAPPUS_MANIFEST_MAGIC").rstrip("u"), 16) == abi.MANIFEST_MAGIC
    assert define(header, "PAPPUS_MANIFEST_SECTION").strip('"') == abi.MANIFEST_SECTION
    assert define(header, "PAPPUS_HEAP_SECTION").strip('"') == abi.HEAP_SECTION
    assert int(define(device, "CMD_MAGIC").rstrip("u"), 16) == protocol.CMD_MAGIC
    assert int(define(device, "MAX_MODULES")) == protocol.MAX_MODULES
    assert "#define KEEP_WORDS (MAX_MODULES / 32)" in device and protocol.KEEP_WORDS == protocol.MAX_MODULES // 32
    assert int(define(device, "EXIT_FAULT")) == protocol.EXIT_FAULT
    assert define(device, "EXTENT_UNKNOWN") == "UINT64_MAX" and protocol.EXTENT_UNKNOWN == 2**64 - 1
    for name in ("HELLO", "POOL", "CMD", "HEAP", "LOAD", "SYM", "UNLOAD", "ABORT", "QUIT", "DONE", "PING"):
        m = re.search(rf"OP_{name} = (\d+)", device)
        assert m and int(m.group(1)) == getattr(protocol, f"OP_{name}"), name


@pytest.mark.rocm
def test_hipcc_builds_gfx_targets_into_one_bundle(tmp_path: Path) -> None:
    if shutil.which("hipcc") is None:
        pytest.skip("hipcc was not found (ROCm toolchain absent)")
    paths = build_library(EXAMPLES / "matmul" / "matmul.hip", tmp_path, ["gfx90a", "gfx1030"])
    assert [p.name for p in paths] == ["matmul.hsaco"]
    data = paths[0].read_bytes()
    assert data.startswith(b"__CLANG_OFFLOAD_BUNDLE__")
    assert b"gfx90a" in data and b"gfx1030" in data


@pytest.mark.rocm
def test_cpu_and_gfx_targets_together_from_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("hipcc") is None:
        pytest.skip("hipcc was not found (ROCm toolchain absent)")
    monkeypatch.chdir(EXAMPLES.parent)
    paths = build_library("examples/inference/inference.hip", tmp_path, ["cpu", "gfx90a"])
    assert sorted(p.name for p in paths) == ["inference.hsaco", "inference.manifest.json", "inference.so"]


def test_missing_hipcc_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BuildError, match="hipcc was not found"):
        build_library(EXAMPLES / "matmul" / "matmul.hip", tmp_path, ["gfx90a"])
