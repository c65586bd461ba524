"""The static reader on real nvcc output (cubin, PTX, fatbin), checked against cuobjdump where it is
installed, and fed malformed input: every failure is a LibraryError."""

from __future__ import annotations

import re
import struct
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pappus.errors import LibraryError
from pappus.kernels import ParamKind
from pappus_cuda.cubin import (
    RESERVED_SHARED_BYTES,
    fatbin_entries,
    inspect,
    parse_elf,
    read_library,
    select_entry,
)

from .conftest import find_tool

B, F = ParamKind.BYTES, ParamKind.FLOAT

SCALARS = [(8, 0), (4, 8), (4, 12), (8, 16), (24, 24), (1, 48)]  # ptr, int, float, double, Big24, char


def sig(kernel):
    return [(p.size, p.offset) for p in kernel.params]


@pytest.mark.parametrize("targets", [("sm_90",), ("sm_80",), ("compute_80",), ("sm_80", "sm_90", "compute_90")])
def test_clean_kernels(code_objects, targets):
    info = read_library(code_objects.get("clean", *targets))
    assert info.format == {1: "cubin" if targets[0].startswith("sm") else "ptx"}.get(len(targets), "fatbin")
    assert set(info.kernels) == {"matmul_at_i64", "matmul_tiled_f32", "block_sum", "dyn_sum", "scalars",
                                 "histogram", "noop"}
    k = info.kernels
    assert sig(k["matmul_at_i64"]) == [(8, 0), (8, 8), (8, 16)]
    assert sig(k["matmul_tiled_f32"]) == [(8, 0), (8, 8), (8, 16), (4, 24)]
    assert sig(k["dyn_sum"]) == [(8, 0), (8, 8), (4, 16)]
    assert sig(k["scalars"]) == SCALARS
    assert sig(k["noop"]) == []
    # static shared memory: the user's arrays, not the driver's reserved KiB, not dynamic memory
    assert k["block_sum"].static_shared_bytes == 256 * 4
    assert k["matmul_tiled_f32"].static_shared_bytes == 2 * 16 * 16 * 4
    assert k["dyn_sum"].static_shared_bytes == 0 and k["noop"].static_shared_bytes == 0
    for kernel in k.values():
        assert not kernel.uses_heap and not kernel.uses_hostcall, (kernel.name, kernel.notes)


def test_cubin_params_are_bytes_ptx_params_are_typed(code_objects):
    cub = read_library(code_objects.get("clean", "sm_90")).kernels["scalars"]
    assert {p.kind for p in cub.params} == {B}  # a cubin does not record C types
    ptx = read_library(code_objects.get("clean", "compute_80")).kernels["scalars"]
    assert [p.kind for p in ptx.params] == [B, B, F, F, B, B]
    assert ptx.params[0].name == "scalars_param_0"


@pytest.mark.parametrize("targets", [("sm_90",), ("sm_75",), ("compute_80",)])
def test_malloc_kernel_uses_heap(code_objects, targets):
    k = read_library(code_objects.get("malloc", *targets)).kernels["uses_malloc"]
    assert k.uses_heap and not k.uses_hostcall
    assert sig(k) == [(8, 0), (8, 8)]


@pytest.mark.parametrize("targets", [("sm_90",), ("compute_80",)])
def test_printf_kernel_uses_hostcall(code_objects, targets):
    k = read_library(code_objects.get("printf", *targets)).kernels["uses_printf"]
    assert k.uses_hostcall and not k.uses_heap
    assert sig(k) == [(8, 0)]


@pytest.mark.parametrize("targets", [("sm_90",), ("sm_80",), ("compute_80",)])
def test_flags_follow_calls_through_device_functions(code_objects, targets):
    k = read_library(code_objects.get("mixed", *targets)).kernels
    assert k["grab"].uses_heap and not k["grab"].uses_hostcall
    assert k["chatty"].uses_hostcall and not k["chatty"].uses_heap
    assert not k["axpy"].uses_heap and not k["axpy"].uses_hostcall  # calls a clean helper only
    assert sig(k["axpy"]) == [(4, 0), (8, 8), (8, 16), (4, 24)]


@pytest.mark.parametrize("targets", [("sm_90",), ("compute_80",)])
def test_misc_kernels(code_objects, targets):
    k = read_library(code_objects.get("misc", *targets)).kernels
    assert k["bounded"].max_block_threads == 128  # __launch_bounds__(128)
    assert k["big_shared"].static_shared_bytes == 48000
    assert "_Z7mangledPif" in k  # C++ kernels keep their mangled names (use extern "C")
    assert sig(k["_Z7mangledPif"]) == [(8, 0), (4, 8)]
    assert k["asserting"].uses_hostcall  # assert() prints through the printf FIFO


@pytest.mark.parametrize("targets", [("sm_90",), ("compute_80",)])
def test_writable_globals_refused_unless_allowed(code_objects, targets):
    data = code_objects.get("globals", *targets)
    with pytest.raises(LibraryError, match=r"writable device globals \(counter, table\)"):
        read_library(data)
    info = read_library(data, allow_writable_globals=True)
    assert "bump" in info.kernels
    assert any("counter" in n for n in info.notes)


def test_relocatable_device_code_is_refused(nvcc, tmp_path):
    from pappus_cuda.build import build_cuda

    src = tmp_path / "k.hip"
    src.write_text('#include <hip/hip_runtime.h>\nextern "C" __global__ void k(int* p) { p[0] = 1; }\n')
    path = build_cuda(src, tmp_path, ["sm_90"], extra_flags=["-rdc=true"])[0]
    with pytest.raises(LibraryError, match="relocatable device code"):
        read_library(path.read_bytes())


# --- architectures and fatbins -------------------------------------------------------------------


def test_cubin_architecture_compatibility(code_objects):
    sm80 = code_objects.get("clean", "sm_80")
    assert read_library(sm80, "sm_80").target == "sm_80"
    assert read_library(sm80, "sm_86").target == "sm_80"  # same major, newer minor: runs
    with pytest.raises(LibraryError, match="cannot run on sm_90"):
        read_library(sm80, "sm_90")
    ptx = code_objects.get("clean", "compute_80")
    assert read_library(ptx, "sm_90").format == "ptx"  # the driver JIT-compiles PTX for newer GPUs
    with pytest.raises(LibraryError, match="cannot be compiled for sm_75"):
        read_library(ptx, "sm_75")


def test_fatbin_entries_and_selection(code_objects):
    data = code_objects.get("clean", "sm_80", "sm_90", "compute_90")
    entries = fatbin_entries(data)
    assert sorted((e.kind, e.arch, e.compressed) for e in entries) == [("cubin", 80, False), ("cubin", 90, False),
                                                                      ("ptx", 90, False)]
    assert select_entry(entries, 80).arch == 80
    assert select_entry(entries, 86).arch == 80
    assert select_entry(entries, 90).kind == "cubin"
    assert select_entry(entries, 100).kind == "ptx"  # no sm_10x cubin: the PTX
    with pytest.raises(LibraryError, match="no code for sm_75"):
        select_entry(entries, 75)
    found = inspect(data, "sm_100")
    assert found.kind == "ptx" and found.image.endswith(b"\0")
    assert inspect(data, "sm_90").image[:4] == b"\x7fELF"
    info = read_library(data)
    assert info.format == "fatbin" and "selected: sm_90 cubin" in info.notes


def test_compressed_fatbin_entries_cannot_be_validated(nvcc, tmp_path):
    from pappus_cuda.build import INCLUDE_DIR

    from .conftest import KERNELS

    out = tmp_path / "c.fatbin"
    subprocess.run([nvcc, "-x", "cu", "-fatbin", f"-I{INCLUDE_DIR}", "-gencode=arch=compute_90,code=sm_90",
                    "-gencode=arch=compute_90,code=compute_90", str(KERNELS / "clean.hip"), "-o", str(out)],
                   check=True, capture_output=True)
    data = out.read_bytes()
    if not any(e.compressed for e in fatbin_entries(data)):
        pytest.skip("this nvcc did not compress any fatbin entry")
    assert read_library(data, "sm_90").target == "sm_90"  # the uncompressed cubin is enough here
    with pytest.raises(LibraryError, match="compressed"):
        read_library(data, "sm_100")


# --- cuobjdump as the oracle ---------------------------------------------------------------------


def _cuobjdump_params(text: str) -> dict[str, list[tuple[int, int, int]]]:
    out: dict[str, list[tuple[int, int, int]]] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"^\.nv\.info\.(\S+)$", line.strip())
        if m:
            current = m.group(1)
            out.setdefault(current, [])
            continue
        m = re.search(r"Ordinal\s*:\s*(0x[0-9a-f]+)\s+Offset\s*:\s*(0x[0-9a-f]+)\s+Size\s*:\s*(0x[0-9a-f]+)", line)
        if m and current:
            out[current].append(tuple(int(v, 16) for v in m.groups()))  # type: ignore[arg-type]
    return out


@pytest.mark.parametrize("stem", ["clean", "mixed", "malloc", "printf", "misc"])
def test_parameters_match_cuobjdump(code_objects, stem):
    tool = find_tool("cuobjdump")
    if tool is None:
        pytest.skip("cuobjdump not found (pip install nvidia-cuda-cuobjdump, or a full CUDA toolkit)")
    path = code_objects.path(stem, "sm_90")
    dump = subprocess.run([tool, "--dump-elf", str(path)], capture_output=True, text=True, check=True).stdout
    expected = _cuobjdump_params(dump)
    info = read_library(path.read_bytes())
    assert set(expected) == set(info.kernels)
    for name, records in expected.items():
        assert sorted((o, off, size) for o, off, size in records) == \
            [(i, p.offset, p.size) for i, p in enumerate(info.kernels[name].params)], name
    usage = subprocess.run([tool, "--dump-resource-usage", str(path)], capture_output=True, text=True,
                           check=True).stdout
    for name, shared in re.findall(r"Function (\S+):\s*\n\s*REG:\d+ STACK:\d+ SHARED:(\d+)", usage):
        ours = info.kernels[name].static_shared_bytes
        # cuobjdump counts the driver's reserved KiB where ptxas placed it in the kernel's section
        assert int(shared) in (ours, ours + RESERVED_SHARED_BYTES), name


def test_elf_tables_match_pyelftools(code_objects):
    from io import BytesIO

    from elftools.elf.elffile import ELFFile

    data = code_objects.get("mixed", "sm_90")
    ours = parse_elf(data)
    ref = ELFFile(BytesIO(data))
    assert [s.name for s in ours.sections] == [s.name for s in ref.iter_sections()]
    assert [(s.name, s.size) for s in ours.sections] == [(s.name, s["sh_size"]) for s in ref.iter_sections()]
    symtab = ref.get_section_by_name(".symtab")
    types = {"STT_NOTYPE": 0, "STT_OBJECT": 1, "STT_FUNC": 2, "STT_SECTION": 3}
    theirs = [(s.name, types.get(s["st_info"]["type"], -1), s["st_shndx"] if isinstance(s["st_shndx"], int) else 0)
              for s in symtab.iter_symbols()]
    assert [(s.name, s.type if s.type in types.values() else -1, s.shndx) for s in ours.symbols] == theirs


# --- malformed input -----------------------------------------------------------------------------


@pytest.mark.parametrize("data,reason", [
    (b"", "empty"),
    (b"hello world", "not an NVIDIA code object"),
    (b"\x7fELF", "truncated cubin"),
    (b"\x7fELF\x01\x01\x01" + b"\0" * 57, "not a 64-bit ELF"),
    (b"\x7fELF\x02\x02\x01" + b"\0" * 57, "not a little-endian"),
    (b"\x7fELF\x02\x01\x01" + b"\0" * 9 + struct.pack("<HH", 2, 62) + b"\0" * 44, "not an NVIDIA cubin"),
    (struct.pack("<IHHQ", 0xBA55ED50, 1, 16, 1000), "truncated fatbin"),
    (struct.pack("<IHHQ", 0xBA55ED50, 1, 16, 0), "no entries"),
    (b".version 8.0\n.target sm_90\n.address_size 64\n", "no kernels"),
    (b".version 8.0\n.target sm_90\n.visible .entry k(\n.param .u64 p\n)\n{\nret;\n", "not closed"),
    (b".version 8.0\n.target sm_90\n.visible .entry k(\n.param .u64 p\n{\nret;\n", "cut off"),
    (b".version 8.0\n.target sm_90\n.visible .entry k(.param .weird p)\n{\nret;\n}\n", "is not '.param"),
    (b".version 8.0\n.target gfx90a\n", "not an sm_XX target"),
    (b".version 8.0\n.target sm_90\n\xff\xfe", "not ASCII"),
])
def test_malformed_inputs_are_library_errors(data, reason):
    with pytest.raises(LibraryError, match=reason):
        read_library(data)


def test_every_truncation_of_a_cubin_is_a_library_error(code_objects):
    data = code_objects.get("mixed", "sm_90")
    for cut in list(range(0, 256, 3)) + list(range(256, len(data), max(1, len(data) // 300))):
        try:
            read_library(data[:cut])
        except LibraryError:
            pass


def test_fatbin_truncations_are_library_errors(code_objects):
    data = code_objects.get("clean", "sm_80", "sm_90", "compute_90")
    for cut in range(0, len(data), max(1, len(data) // 200)):
        with pytest.raises(LibraryError):
            read_library(data[:cut])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=1 << 30), st.integers(min_value=0, max_value=255)),
                min_size=1, max_size=8))
def test_byte_flips_of_a_real_cubin_never_escape_as_other_errors(code_objects, flips):
    data = bytearray(code_objects.get("mixed", "sm_90"))
    for pos, value in flips:
        data[pos % len(data)] = value
    try:
        info = read_library(bytes(data))
    except LibraryError:
        return
    for k in info.kernels.values():  # whatever survives must still be a coherent signature
        end = 0
        for p in k.params:
            assert p.size > 0 and p.offset is not None and p.offset >= end
            end = p.offset + p.size


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(min_value=0), st.binary(min_size=1, max_size=16))
def test_ptx_corruption_is_a_library_error_or_a_clean_read(code_objects, pos, junk):
    data = bytearray(code_objects.get("mixed", "compute_80"))
    at = pos % len(data)
    data[at:at + len(junk)] = junk
    try:
        read_library(bytes(data))
    except LibraryError:
        pass


def test_the_cpu_backend_names_nvidia_code_given_to_it():
    """A fatbin registered on a CPU engine is named for what it is, not just "not an ELF"."""
    from pathlib import Path

    from pappus.errors import LibraryError
    from pappus_cpu.driver import CpuDriver

    fatbin = (Path(__file__).parent / "prebuilt" / "clean.fatbin").read_bytes()
    with pytest.raises(LibraryError) as info:
        CpuDriver().inspect_library(fatbin)
    assert "NVIDIA fatbin (for the cuda backend)" in str(info.value) and "--targets cpu" in str(info.value)
