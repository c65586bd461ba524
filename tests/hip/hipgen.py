"""Test helpers: synthetic AMDGPU code objects and offload bundles, built byte by byte.

Real code objects come from hipcc (see conftest.py); these cover what hipcc never writes
(malformed metadata, oversized notes, code-object v2) without needing a toolchain.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import msgpack

BUNDLE_MAGIC = b"__CLANG_OFFLOAD_BUNDLE__"


def note(name: bytes, ntype: int, desc: bytes) -> bytes:
    name_z = name + b"\0"
    pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name_z), len(desc), ntype) + pad(name_z) + pad(desc)


def metadata(kernels: Sequence[dict[str, Any]], version: tuple[int, int] = (1, 1),
             target: str | None = "amdgcn-amd-amdhsa--gfx90a") -> dict[str, Any]:
    doc: dict[str, Any] = {"amdhsa.version": list(version), "amdhsa.kernels": list(kernels)}
    if target is not None:
        doc["amdhsa.target"] = target
    return doc


def kernel(name: str = "k", args: Sequence[dict[str, Any]] = (), **fields: Any) -> dict[str, Any]:
    k = {".name": name, ".symbol": name + ".kd", ".args": list(args),
         ".kernarg_segment_size": _kernarg_end(args),
         ".group_segment_fixed_size": 0, ".private_segment_fixed_size": 0,
         ".max_flat_workgroup_size": 1024, ".uses_dynamic_stack": False}
    k.update(fields)
    return k


def _kernarg_end(args: Sequence[Any]) -> int:
    ends = [0]
    for a in args:
        try:
            ends.append(int(a[".offset"]) + int(a[".size"]))
        except (TypeError, KeyError, ValueError):
            pass
    return max(ends)


def arg(kind: str, size: int, offset: int, **fields: Any) -> dict[str, Any]:
    return {".value_kind": kind, ".size": size, ".offset": offset, **fields}


def make_elf(notes: bytes | None = None, *, doc: dict[str, Any] | None = None, machine: int = 0xE0,
             osabi: int = 64, abi_version: int = 2, e_type: int = 3, e_flags: int = 0x3F,
             elf_class: int = 2, symbols: Sequence[tuple[str, int, int]] | None = None) -> bytes:
    """A minimal AMDGPU ELF: one PT_LOAD, a .note section, optionally a .symtab.

    ``symbols``: (name, st_info, st_shndx) entries after the null symbol; default one local
    ``_DYNAMIC`` (what lld writes), so the object does not look stripped.
    """
    if notes is None:
        notes = note(b"AMDGPU", 32, msgpack.packb(doc if doc is not None else metadata([kernel()])))
    if symbols is None:
        symbols = [("_DYNAMIC", 0x00, 1)]  # STB_LOCAL, STT_NOTYPE
    strtab = b"\0"
    syms = b"\0" * 24
    for name, info, shndx in symbols:
        syms += struct.pack("<IBBHQQ", len(strtab), info, 0, shndx, 0, 0)
        strtab += name.encode() + b"\0"
    shstr = b"\0.note\0.shstrtab\0.symtab\0.strtab\0"
    off_note = 64 + 56
    off_shstr = off_note + len(notes)
    off_sym = (off_shstr + len(shstr) + 7) & ~7
    off_str = off_sym + len(syms)
    off_sh = (off_str + len(strtab) + 7) & ~7
    body_end = off_sh
    ident = b"\x7fELF" + bytes([elf_class, 1, 1, osabi, abi_version]) + b"\0" * 7
    header = ident + struct.pack("<HHIQQQIHHHHHH", e_type, machine, 1, 0, 64, off_sh, e_flags,
                                 64, 56, 1, 64, 5, 2)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, 0, 0, body_end, body_end, 0x1000)  # PT_LOAD R+X

    def sh(name: int, typ: int, flags: int, off: int, size: int, link: int = 0, info: int = 0,
           align: int = 1, entsize: int = 0) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name, typ, flags, 0, off, size, link, info, align, entsize)

    shdrs = (sh(0, 0, 0, 0, 0)
             + sh(1, 7, 2, off_note, len(notes), align=4)  # .note SHT_NOTE ALLOC
             + sh(7, 3, 0, off_shstr, len(shstr))  # .shstrtab
             + sh(17, 2, 0, off_sym, len(syms), link=4, info=1 + sum(1 for s in symbols if s[1] >> 4 == 0),
                  align=8, entsize=24)  # .symtab
             + sh(25, 3, 0, off_str, len(strtab)))  # .strtab
    out = bytearray(header + phdr + notes + shstr)
    out += b"\0" * (off_sym - len(out)) + syms + strtab
    out += b"\0" * (off_sh - len(out)) + shdrs
    return bytes(out)


def make_bundle(entries: Sequence[tuple[str, bytes]]) -> bytes:
    """A clang offload bundle of (id, bytes) entries."""
    head = BUNDLE_MAGIC + struct.pack("<Q", len(entries))
    size = len(head) + sum(24 + len(i.encode()) for i, _ in entries)
    offset = (size + 0xFFF) & ~0xFFF
    table = b""
    blobs = b""
    for entry_id, data in entries:
        table += struct.pack("<QQQ", offset + len(blobs), len(data), len(entry_id)) + entry_id.encode()
        blobs += data
    out = head + table
    return out + b"\0" * (offset - len(out)) + blobs


def metadata_note_range(elf: bytes) -> tuple[int, int]:
    """(offset, size) of the NT_AMDGPU_METADATA descriptor in a real code object."""
    import io

    from elftools.elf.elffile import ELFFile

    ef = ELFFile(io.BytesIO(elf))
    for sec in ef.iter_sections():
        if sec["sh_type"] != "SHT_NOTE":
            continue
        data = sec.data()
        pos = 0
        while pos + 12 <= len(data):
            namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
            desc = pos + 12 + ((namesz + 3) & ~3)
            if ntype == 32 and data[pos + 12:pos + 12 + namesz].rstrip(b"\0") == b"AMDGPU":
                return sec["sh_offset"] + desc, descsz
            pos = desc + ((descsz + 3) & ~3)
    raise AssertionError("no metadata note")
