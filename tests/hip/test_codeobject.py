"""The code-object reader on real hipcc output: bundles and raw ELF, code-object v4 and v5."""

from __future__ import annotations

import subprocess

import pytest

from pappus.errors import LibraryError
from pappus.kernels import ParamKind
from pappus_hip.codeobject import TargetID, bundle_entries, read_library

P, B = ParamKind.POINTER, ParamKind.BYTES

FORMS = [(4, "bundle"), (4, "raw-gfx90a"), (5, "bundle"), (5, "raw-gfx90a")]
FORMAT = {"bundle": "clang-offload-bundle", "raw-gfx90a": "amdgpu-elf"}


def sig(kernel):
    return [(p.size, p.kind, p.offset) for p in kernel.params]


@pytest.mark.parametrize("version,form", FORMS)
def test_clean_kernels_signatures_and_resources(code_objects, version, form):
    info = read_library(code_objects.get("clean", version, form), "gfx90a")
    assert info.format == FORMAT[form]
    assert info.target == "gfx90a"
    assert f"code-object v{version}" in info.notes
    assert set(info.kernels) == {"matmul_at_i64", "block_sum", "scalars", "bounded_fill"}
    assert info.kernels["bounded_fill"].max_block_threads == 256

    mm = info.kernels["matmul_at_i64"]
    assert sig(mm) == [(8, P, 0), (8, B, 8), (8, P, 16)]
    assert mm.static_shared_bytes == 0
    assert mm.max_block_threads == 1024

    bs = info.kernels["block_sum"]
    assert sig(bs) == [(8, P, 0), (8, P, 8)]
    assert bs.static_shared_bytes == 256 * 4  # __shared__ float tile[256]

    sc = info.kernels["scalars"]  # int*, int, float, Pair (16 bytes), char, double
    assert sig(sc) == [(8, P, 0), (4, B, 8), (4, B, 12), (16, B, 16), (1, B, 32), (8, B, 40)]

    for k in info.kernels.values():  # clean kernels are not flagged, v5 included
        assert not k.uses_heap and not k.uses_hostcall, (k.name, k.notes)


@pytest.mark.parametrize("version,form", FORMS)
def test_malloc_kernel_uses_heap(code_objects, version, form):
    k = read_library(code_objects.get("malloc", version, form), "gfx90a").kernels["uses_malloc"]
    assert k.uses_heap
    assert sig(k) == [(8, P, 0), (8, B, 8)]  # hidden arguments are not user parameters
    assert k.private_bytes > 0


@pytest.mark.parametrize("version,form", FORMS)
def test_printf_kernel_uses_hostcall(code_objects, version, form):
    k = read_library(code_objects.get("printf", version, form), "gfx90a").kernels["uses_printf"]
    assert k.uses_hostcall
    assert not k.uses_heap
    assert sig(k) == [(8, P, 0)]


def test_v4_flags_per_kernel_v5_per_object(code_objects):
    """v4 lists the hostcall argument only where used; v5 lists it for every kernel with implicit
    arguments, so a malloc kernel's object flags its neighbour too (documented policy)."""
    v4 = read_library(code_objects.get("mixed", 4, "raw-gfx90a"), "gfx90a").kernels
    assert v4["grab"].uses_heap and not v4["axpy"].uses_heap
    v5 = read_library(code_objects.get("mixed", 5, "raw-gfx90a"), "gfx90a").kernels
    assert v5["grab"].uses_heap and v5["axpy"].uses_heap
    assert any("every kernel of the object" in n for n in v5["axpy"].notes)


def test_bundle_selects_the_requested_architecture(code_objects):
    data = code_objects.get("clean", 4, "bundle")
    ids = [e.id for e in bundle_entries(data)]
    assert "hipv4-amdgcn-amd-amdhsa--gfx90a" in ids and "hipv4-amdgcn-amd-amdhsa--gfx1030" in ids
    info = read_library(data, "gfx1030")
    assert info.target == "gfx1030"
    assert any("gfx1030" in n for n in info.notes)
    # a device that states its features still takes the feature-agnostic entry
    assert read_library(data, "gfx90a:sramecc+:xnack-").target == "gfx90a"


def test_bundle_without_the_architecture_is_rejected(code_objects):
    with pytest.raises(LibraryError, match=r"no code object for gfx942 \(AMDGPU entries: gfx1030, gfx90a"):
        read_library(code_objects.get("clean", 4, "bundle"), "gfx942")


def test_raw_elf_for_another_architecture_is_rejected(code_objects):
    data = code_objects.get("clean", 4, "raw-gfx1030")
    assert read_library(data, "gfx1030").target == "gfx1030"
    with pytest.raises(LibraryError, match="built for gfx1030, not for the target gfx90a"):
        read_library(data, "gfx90a")


def test_dynamic_stack_is_rejected(code_objects):
    with pytest.raises(LibraryError, match="'recursive' use a dynamic stack"):
        read_library(code_objects.get("recursive", 4, "raw-gfx90a"), "gfx90a")


def test_writable_globals_are_rejected_unless_allowed(code_objects):
    data = code_objects.get("globals", 4, "raw-gfx90a")
    with pytest.raises(LibraryError, match=r"writable device globals \(counter \(4 bytes"):
        read_library(data, "gfx90a")
    info = read_library(data, "gfx90a", allow_writable_globals=True)
    assert any("counter" in n for n in info.notes)


def test_agrees_with_clang_offload_bundler(code_objects, tmp_path):
    """The bundle parser against the toolchain's own reader (an independent oracle)."""
    import shutil

    bundler = shutil.which("clang-offload-bundler-15") or shutil.which("clang-offload-bundler")
    if bundler is None:
        pytest.skip("clang-offload-bundler not found")
    path = code_objects.path("clean", 5, "bundle")
    listed = subprocess.run([bundler, "--list", "--type=o", f"--input={path}"], capture_output=True,
                            text=True, check=True).stdout.split()
    data = path.read_bytes()
    assert sorted(e.id for e in bundle_entries(data)) == sorted(listed)
    out = tmp_path / "gfx1030.o"
    subprocess.run([bundler, "--unbundle", "--type=o", f"--input={path}", f"--output={out}",
                    "--targets=hipv4-amdgcn-amd-amdhsa--gfx1030"], check=True)
    entry = next(e for e in bundle_entries(data) if e.id.endswith("gfx1030"))
    assert data[entry.offset:entry.offset + entry.size] == out.read_bytes()


@pytest.mark.parametrize("version", [4, 5])
def test_stripped_objects(code_objects, llvm_strip, tmp_path, version):
    """v4 stripped: the hidden hostcall argument still marks the kernel (both flags); v5 stripped:
    rejected when a kernel receives the heap/hostcall pointers; clean v5 without implicit args: fine."""
    src = code_objects.path("malloc", version, "raw-gfx90a")
    for how in ("--strip-all", "--discard-all"):
        out = tmp_path / f"malloc-v{version}{how}.o"
        subprocess.run([llvm_strip, how, str(src), "-o", str(out)], check=True)
        data = out.read_bytes()
        if version == 4:
            # v4 malloc state lives in .bss, which a stripped object cannot attribute
            with pytest.raises(LibraryError, match="writable device globals"):
                read_library(data, "gfx90a")
            k = read_library(data, "gfx90a", allow_writable_globals=True).kernels["uses_malloc"]
            assert k.uses_heap and k.uses_hostcall
        else:
            with pytest.raises(LibraryError, match="stripped code-object v5"):
                read_library(data, "gfx90a")
    clean = tmp_path / "clean-v5-stripped.o"
    subprocess.run([llvm_strip, "--strip-all", str(code_objects.path("clean", 5, "raw-gfx90a")), "-o",
                    str(clean)], check=True)
    if version == 5:
        # matmul_at_i64 reads blockDim (implicit arguments): ambiguous once stripped
        with pytest.raises(LibraryError, match="matmul_at_i64"):
            read_library(clean.read_bytes(), "gfx90a")


def test_target_ids():
    t = TargetID.parse("gfx90a:xnack-:sramecc+")
    assert str(t) == "gfx90a:sramecc+:xnack-"
    assert TargetID.parse("gfx90a").runs_on(t)
    assert TargetID.parse("gfx90a:xnack-").runs_on(t)
    assert not TargetID.parse("gfx90a:xnack+").runs_on(t)
    assert not TargetID.parse("gfx908").runs_on(t)
    assert TargetID.parse("gfx10-3-generic").processor == "gfx10-3-generic"
    for bad in ("", "sm_80", "gfx90a:xnack", "gfx90a:xnack+:xnack-", "gfx90a;rm -rf"):
        with pytest.raises(ValueError):
            TargetID.parse(bad)
    with pytest.raises(LibraryError, match="not an AMDGPU target id"):
        read_library(b"", "sm_80")


@pytest.mark.parametrize("form", ["bundle", "raw-gfx90a"])
def test_the_cpu_backend_names_an_amd_code_object_given_to_it(code_objects, form):
    """A .hsaco registered on a CPU engine is named for what it is, not just "not an ELF"."""
    from pappus.errors import LibraryError
    from pappus_cpu.driver import CpuDriver

    with pytest.raises(LibraryError) as info:
        CpuDriver().inspect_library(code_objects.get("clean", 4, form))
    assert "AMD GPU code object" in str(info.value) and "hip backend" in str(info.value)
    assert "--targets cpu" in str(info.value)
