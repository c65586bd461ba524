"""Malformed and hostile inputs: every one is a LibraryError with a reason, never another type."""

from __future__ import annotations

import struct

import msgpack
import pytest

from pappus.errors import LibraryError
from pappus_hip.codeobject import MAX_METADATA_BYTES, read_library

from .hipgen import arg, kernel, make_bundle, make_elf, metadata, metadata_note_range, note


def rejects(data: bytes, match: str, target: str = "gfx90a") -> None:
    with pytest.raises(LibraryError, match=match):
        read_library(data, target)


def test_synthetic_object_reads():
    doc = metadata([kernel("k", [arg("global_buffer", 8, 0), arg("by_value", 4, 8, **{".type_name": "float"}),
                                 arg("by_value", 8, 16, **{".value_type": "i64"}),
                                 arg("hidden_global_offset_x", 8, 24)])])
    info = read_library(make_elf(doc=doc), "gfx90a")
    assert [(p.size, p.kind.value) for p in info.kernels["k"].params] == [(8, "pointer"), (4, "float"), (8, "int")]
    # a type name whose width disagrees with the size is not trusted
    doc = metadata([kernel("k", [arg("by_value", 8, 0, **{".type_name": "int"}),
                                 arg("by_value", 8, 8, **{".type_name": "const unsigned long"}),
                                 arg("by_value", 4, 16, **{".value_type": "i64"})])])
    info = read_library(make_elf(doc=doc), "gfx90a")
    assert [p.kind.value for p in info.kernels["k"].params] == ["bytes", "uint", "bytes"]


@pytest.mark.parametrize("data,match", [
    (b"", "only 0 bytes"),
    (b"\x7fEL", "only 3 bytes"),
    (b"MZ\x90\x00" + b"\0" * 100, "neither an ELF file nor a clang offload bundle"),
    (b"#!/bin/sh\necho hi\n", "neither an ELF file nor a clang offload bundle"),
    (b"\x7fELF" + b"\0" * 20, "shorter than an ELF64 header"),
    (b"CCOB" + b"\0" * 60, "compressed clang offload bundle"),
    (b"__CLANG_OFFLOAD_BUNDLE__", "no entry count"),
    (b"__CLANG_OFFLOAD_BUNDLE__" + struct.pack("<Q", 0), "has no entries"),
    (b"__CLANG_OFFLOAD_BUNDLE__" + struct.pack("<Q", 1 << 40), "claims 1099511627776 entries"),
    (b"__CLANG_OFFLOAD_BUNDLE__" + struct.pack("<QQQQ", 1, 0, 0, 5), "the id of entry 0 is cut off"),
])
def test_garbage(data, match):
    rejects(data, match)


def test_wrong_machine_class_abi_type():
    rejects(make_elf(machine=62), r"machine 0x3e \(x86-64\), not AMDGPU")
    rejects(make_elf(elf_class=1), "not a 64-bit ELF")
    rejects(make_elf(osabi=0), "OS ABI 0, not HSA")
    rejects(make_elf(e_type=1), "relocatable AMDGPU object")
    rejects(make_elf(e_flags=0x36), "inconsistent code object: the ELF header says gfx1030")


def test_bundle_entry_outside_the_file():
    bundle = make_bundle([("hipv4-amdgcn-amd-amdhsa--gfx90a", make_elf())])
    rejects(bundle[:-10], "lies outside the file")


def test_bundle_entry_that_is_not_elf():
    rejects(make_bundle([("hipv4-amdgcn-amd-amdhsa--gfx90a", b"hello world")]), "is not an ELF code object")


def test_bundle_target_features():
    plain = make_elf()
    bundle = make_bundle([("host-x86_64-unknown-linux", b""),
                          ("hipv4-amdgcn-amd-amdhsa--gfx90a:xnack-", plain),
                          ("hipv4-amdgcn-amd-amdhsa--gfx90a:xnack+", plain)])
    assert read_library(bundle, "gfx90a:xnack+").target == "gfx90a:xnack+"
    assert read_library(bundle, "gfx90a:sramecc+:xnack-").target == "gfx90a:xnack-"
    info = read_library(bundle, "gfx90a")  # unknown xnack: first fitting entry, with a note
    assert info.target == "gfx90a:xnack-"
    assert any("several bundle entries fit" in n for n in info.notes)
    only_plus = make_bundle([("hipv4-amdgcn-amd-amdhsa--gfx90a:xnack+", plain)])
    rejects(only_plus, "no code object for gfx90a:xnack-", target="gfx90a:xnack-")


def test_oversized_metadata_note_declared():
    """A note header claiming more than the cap is refused before anything reads it."""
    elf = bytearray(make_elf())
    offset, _ = metadata_note_range(bytes(elf))
    struct.pack_into("<I", elf, offset - 8 - 8, MAX_METADATA_BYTES + 1)  # descsz of the note
    rejects(bytes(elf), "metadata note is 16777217 bytes; the limit is 16 MiB")


def test_oversized_metadata_note_real():
    big = msgpack.packb({"amdhsa.version": [1, 1], "padding": "x" * (MAX_METADATA_BYTES + 16)})
    rejects(make_elf(note(b"AMDGPU", 32, big)), "the limit is 16 MiB")


@pytest.mark.parametrize("desc,match", [
    (b"\xc1\xc1\xc1", "not valid msgpack"),
    (b"\x92\x01", "not valid msgpack"),
    (msgpack.packb([1, 2, 3]), "a msgpack list, not a map"),
    (msgpack.packb({"amdhsa.kernels": []}), "amdhsa.version is None"),
    (msgpack.packb({"amdhsa.version": [2, 0], "amdhsa.kernels": []}), "version 2.0 is not supported"),
    (msgpack.packb({"amdhsa.version": [1, 1], "amdhsa.kernels": []}), "defines no kernels"),
    (msgpack.packb({"amdhsa.version": [1, 1], "amdhsa.kernels": {"a": 1}}), "not a list"),
    (msgpack.packb({"amdhsa.version": [1, 1], "amdhsa.kernels": [7]}), "kernel 0: 7 is not a map"),
    (msgpack.packb({"amdhsa.version": [1, 1], "amdhsa.kernels": [{".args": []}]}), r"\.name is missing"),
    (msgpack.packb({"amdhsa.version": [True, 1], "amdhsa.kernels": []}), "not \\[major, minor\\]"),
    (msgpack.packb({"amdhsa.version": [1, 1], "amdhsa.target": 5, "amdhsa.kernels": []}), "amdhsa.target is 5"),
    (msgpack.packb({"amdhsa.version": [1, 1], "amdhsa.target": "amdgcn-amd-amdhsa--sm_80",
                    "amdhsa.kernels": []}), "not an AMDGPU target id"),
])
def test_bad_metadata(desc, match):
    rejects(make_elf(note(b"AMDGPU", 32, desc)), match)


K = kernel


@pytest.mark.parametrize("kernels,match", [
    ([K("a"), K("a")], "kernel 'a' is defined twice"),
    ([K("a", [arg("global_buffer", 4, 0)])], "global_buffer argument of 4 bytes"),
    ([K("a", [arg("image", 8, 0)])], "is an image .*which pappus cannot pass"),
    ([K("a", [arg("dynamic_shared_pointer", 8, 0)])], "OpenCL local-memory pointer"),
    ([K("a", [arg("mystery", 8, 0)])], "unknown value kind 'mystery'"),
    ([K("a", [arg("by_value", 8, 0), arg("by_value", 8, 4)])], "overlaps the argument before it"),
    ([K("a", [arg("by_value", 8, 0)], **{".kernarg_segment_size": 4})], "outside its kernarg segment"),
    ([K("a", [arg("by_value", 0, 0)])], r"\.size is 0"),
    ([K("a", [arg("by_value", True, 0)])], r"\.size is True"),
    ([K("a", [arg("by_value", 8, -8)])], r"\.offset is -8"),
    ([K("a", [{".size": 8, ".offset": 0}])], r"\.value_kind is missing"),
    ([K("a", [7])], "argument 0: 7 is not a map"),
    ([K("a", **{".args": "x"})], r"\.args is 'x', not a list"),
    ([K("a", **{".uses_dynamic_stack": True})], "'a' use a dynamic stack"),
    ([K("a", **{".uses_dynamic_stack": 1})], "not a boolean"),
    ([K("a", **{".group_segment_fixed_size": "big"})], "group_segment_fixed_size is 'big'"),
    ([K("a", **{".max_flat_workgroup_size": 0})], "max_flat_workgroup_size is 0"),
    ([K("bad\x00name")], "not a printable string"),
])
def test_bad_kernels(kernels, match):
    rejects(make_elf(doc=metadata(kernels)), match)


def test_code_object_v2_and_missing_notes():
    rejects(make_elf(note(b"AMD", 10, b"---\nKernels: []\n")), "code-object v2")
    rejects(make_elf(b""), "no AMDGPU metadata note")
    two = note(b"AMDGPU", 32, msgpack.packb(metadata([K("a")]))) * 2
    rejects(make_elf(two), "2 AMDGPU metadata notes")


def test_truncated_note():
    full = note(b"AMDGPU", 32, msgpack.packb(metadata([K("a")])))
    header = bytearray(full[:12])
    struct.pack_into("<I", header, 4, 4096)  # descsz larger than the section
    rejects(make_elf(bytes(header) + full[12:]), "truncated note")


def test_v5_hidden_args_alone_do_not_flag():
    hidden = [arg("global_buffer", 8, 0), arg("hidden_hostcall_buffer", 8, 8), arg("hidden_heap_v1", 8, 16)]
    info = read_library(make_elf(doc=metadata([K("k", hidden)], version=(1, 2))), "gfx90a")
    assert not info.kernels["k"].uses_heap and not info.kernels["k"].uses_hostcall
    # the same metadata with the device allocator in the symbol table
    heap_syms = [("_DYNAMIC", 0, 1), ("__ockl_dm_alloc", 0x02, 1), ("__ockl_hostcall_internal", 0x02, 1)]
    info = read_library(make_elf(doc=metadata([K("k", hidden)], version=(1, 2)), symbols=heap_syms), "gfx90a")
    assert info.kernels["k"].uses_heap and not info.kernels["k"].uses_hostcall
    # v4: the hidden hostcall argument appears only when used, so it flags on its own
    v4 = read_library(make_elf(doc=metadata([K("k", hidden[:2])], version=(1, 1))), "gfx90a")
    assert v4.kernels["k"].uses_hostcall


def test_truncations_of_real_objects(code_objects):
    """Every truncation point class of a real object: header, program headers, sections, notes."""
    for stem, version, form in (("clean", 4, "raw-gfx90a"), ("printf", 5, "bundle")):
        data = code_objects.get(stem, version, form)
        cuts = sorted({*range(0, 200, 7), *range(0, len(data), max(1, len(data) // 97)), len(data) - 1})
        for cut in cuts:
            try:
                read_library(data[:cut], "gfx90a")
            except LibraryError:
                continue
            raise AssertionError(f"{stem} v{version} {form} cut at {cut} of {len(data)} was accepted")
