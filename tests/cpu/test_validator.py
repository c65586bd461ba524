"""Static validation of CPU libraries: what would run code at load time or weaken the sandbox
is refused with the reason, and no malformed file produces anything but a LibraryError."""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from pappus.errors import BuildError, LibraryError
from pappus_cpu.driver import CpuDriver

from .conftest import Builder, Built

KERNEL = """
#include <hip/hip_runtime.h>
__global__ void k(int* out) { out[threadIdx.x] = 1; }
"""


def inspect(data: bytes):  # type: ignore[no-untyped-def]
    return CpuDriver().inspect_library(data)


def refused(data: bytes, match: str) -> None:
    with pytest.raises(LibraryError, match=match):
        inspect(data)


def test_a_built_library_is_accepted(build: Builder) -> None:
    info = inspect(build(KERNEL).data)
    assert info.format == "pappus-cpu/1"
    assert list(info.kernels) == ["k"]
    assert [p.kind.value for p in info.kernels["k"].params] == ["pointer"]
    assert not info.kernels["k"].uses_heap


def test_constructor_is_refused(build: Builder) -> None:
    src = KERNEL + "int armed;\n__attribute__((constructor)) static void init() { armed = 1; }\n"
    refused(build(src, validate=False).data, "constructors|init_array")


def test_dynamic_initialiser_is_refused_by_the_builder_with_the_reason(build: Builder) -> None:
    src = KERNEL + "static int compute() { return 5; }\nint g = compute();\n__global__ void u(int* o) { o[0] = g; }\n"
    with pytest.raises(BuildError, match="would be refused: .*constructors"):
        build(src)


def test_ifunc_is_refused(build: Builder) -> None:
    src = KERNEL + """
extern "C" int impl(int x) { return x + 1; }
extern "C" void* pick() { return (void*)impl; }
extern "C" int chosen(int) __attribute__((ifunc("pick")));
__global__ void uses(int* out) { out[0] = chosen(out[0]); }
"""
    refused(build(src, validate=False).data, "IFUNC")


def test_executable_stack_is_refused(build: Builder) -> None:
    refused(build(KERNEL, validate=False, extra_flags=("-Wl,-z,execstack",)).data, "executable stack")


def test_thread_local_storage_is_refused(build: Builder) -> None:
    src = KERNEL + "thread_local int tls;\n__global__ void t(int* o) { o[0] = ++tls; }\n"
    refused(build(src, validate=False).data, "thread-local")


def test_unexpected_dependencies_and_search_paths_are_refused(build: Builder) -> None:
    refused(build(KERNEL, validate=False, extra_flags=("-Wl,--no-as-needed", "-l:libpthread.so.0")).data, "libpthread")
    refused(build(KERNEL, validate=False, extra_flags=("-Wl,-rpath,/tmp",)).data, "search path")


def test_a_library_without_manifest_is_refused(tmp_path: Path) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    src = tmp_path / "plain.c"
    src.write_text("void __pappus_entry_k(const void* l, void* const* a) { (void)l; (void)a; }\n")
    so = tmp_path / "plain.so"
    subprocess.run([cc, "-shared", "-fPIC", "-nostartfiles", "-o", str(so), str(src)], check=True)
    refused(so.read_bytes(), "no .pappus_manifest")


@pytest.mark.parametrize("data,match", [
    (b"", "not an ELF"),
    (b"hello world, not a library", "not an ELF"),
    (b"MZ\x90\x00" + bytes(200), "not an ELF"),
    (b"\x7fELF", "truncated"),
    (b"\x7fELF\x01\x01\x01" + bytes(60), "64-bit"),
])
def test_non_elf_files_are_refused(data: bytes, match: str) -> None:
    refused(data, match)


def test_truncated_libraries_are_refused(build: Builder) -> None:
    data = build(KERNEL).data
    for cut in (16, 63, 64, 100, 400, len(data) // 3, len(data) // 2, len(data) - 64, len(data) - 1):
        with pytest.raises(LibraryError):
            inspect(data[:cut])


def test_a_relocation_outside_the_library_is_refused(sandbox_lib: Built) -> None:
    data = bytearray(sandbox_lib.data)
    elf = ELFFile(__import__("io").BytesIO(bytes(data)))
    rela = elf.get_section_by_name(".rela.plt") or elf.get_section_by_name(".rela.dyn")
    assert rela is not None and rela.num_relocations() > 0
    struct.pack_into("<Q", data, rela["sh_offset"], 0x7FFF_0000_0000)  # r_offset of the first entry
    refused(bytes(data), "outside the library's writable segments")


def test_kernel_without_entry_point_is_refused(build: Builder) -> None:
    data = bytearray(build(KERNEL).data)
    at = data.find(b"__pappus_entry_k\x00")
    assert at > 0
    data[at:at + 16] = b"__pappus_entrx_k"  # the dynamic symbol no longer matches the manifest
    refused(bytes(data), "entry point")


def test_wrong_abi_version_is_refused(build: Builder) -> None:
    data = bytearray(build(KERNEL).data)
    elf = ELFFile(__import__("io").BytesIO(bytes(data)))
    sec = elf.get_section_by_name(".pappus_manifest")
    struct.pack_into("<H", data, sec["sh_offset"] + 4, 99)
    refused(bytes(data), "ABI 99")


def test_random_corruption_never_raises_anything_but_library_error(build: Builder, sandbox_lib: Built) -> None:
    rng = random.Random(1234)
    for base in (build(KERNEL).data, sandbox_lib.data):
        for _ in range(300):
            data = bytearray(base)
            for _ in range(rng.randint(1, 8)):
                pos = rng.randrange(0, min(len(data), 4096) if rng.random() < 0.7 else len(data))
                data[pos] = rng.randrange(256)
            try:
                inspect(bytes(data))
            except LibraryError:
                pass
