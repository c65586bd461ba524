"""AMDGPU code objects read statically: select the target's code object, describe its kernels.

Accepts what ``hipcc --genco`` writes: a clang offload bundle (``__CLANG_OFFLOAD_BUNDLE__``, one
entry per architecture) or a raw AMDGPU ELF (``--no-gpu-bundle-output``, ``e_machine`` 0xE0).
From the ``NT_AMDGPU_METADATA`` note (msgpack) it reads every kernel's real signature and
resources, and from the symbol table whether kernels reach device ``malloc`` or host calls.

Nothing here runs or loads the code. Every problem with the input, malformed or merely unusable,
is a :class:`pappus.errors.LibraryError` with the reason; no other exception type escapes
:func:`read_library`.

Heap and hostcall detection (see README.md for the whole policy):

* Code-object v3/v4 (``amdhsa.version`` [1, 0] / [1, 1]): a kernel lists ``hidden_hostcall_buffer``
  only when it uses host calls, and device ``malloc`` is built on host calls, so the hidden args
  say *which* kernels are involved; the symbol table (``__ockl_dm_*``) says whether it is malloc.
* Code-object v5+ ([1, 2] and later): every kernel that takes implicit arguments lists
  ``hidden_hostcall_buffer`` and ``hidden_heap_v1``, used or not. Only the symbol table tells real
  use (``__ockl_dm_alloc``/``__ockl_dm_dealloc`` => heap, ``__ockl_hostcall_*``/printf machinery =>
  host calls), and only per object: every kernel of the object that receives those pointers is
  flagged. Kernels without implicit arguments cannot reach either and stay clean.
* A stripped object (no ``.symtab``, or one whose local symbols were discarded): v3/v4 kernels with
  the hidden hostcall argument are flagged for both heap and host calls (they use one of them; it
  cannot be told which); a v5+ object in which any kernel receives those pointers is rejected,
  because nothing in it separates clean kernels from ones that call malloc or printf.

Symbol names are evidence from honest toolchains only: a hostile object can rename them. The
malloc-heap limit (0) set on the device before any tenant code runs remains the enforcement.
"""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pappus.errors import LibraryError
from pappus.kernels import KernelInfo, KernelParam, LibraryInfo, ParamKind

__all__ = [
    "BUNDLE_MAGIC", "CodeObject", "TargetID", "MAX_METADATA_BYTES", "MAX_CODE_OBJECT_BYTES",
    "Inspection", "inspect_code_object", "read_library", "select_code_object", "bundle_entries", "read_metadata",
]

BUNDLE_MAGIC = b"__CLANG_OFFLOAD_BUNDLE__"
COMPRESSED_BUNDLE_MAGIC = b"CCOB"
ELF_MAGIC = b"\x7fELF"
EM_AMDGPU = 0xE0
ELFOSABI_AMDGPU_HSA = 64
ET_REL, ET_DYN = 1, 3
NT_AMDGPU_METADATA = 32
NT_AMD_HSA_METADATA = 10  # code-object v2: YAML metadata in an "AMD" note

#: Metadata notes above this are refused before msgpack sees them.
MAX_METADATA_BYTES = 16 * 1024 * 1024
#: Whole inputs above this are refused (a code object of a few kernels is kilobytes).
MAX_CODE_OBJECT_BYTES = 512 * 1024 * 1024
MAX_BUNDLE_ENTRIES = 1024
MAX_BUNDLE_ID_BYTES = 1024
MAX_KERNELS = 65536
MAX_ARGS_PER_KERNEL = 4096
MAX_ARG_BYTES = 1 << 20
MAX_KERNARG_BYTES = 1 << 24
MAX_SYMBOLS = 1 << 20
MAX_NAME_CHARS = 4096

_MIB = 1024 * 1024

# e_flags EF_AMDGPU_MACH (LLVM BinaryFormat/ELF.h). Used when the metadata names no target.
_MACH: dict[int, str] = {
    0x020: "gfx600", 0x021: "gfx601", 0x022: "gfx700", 0x023: "gfx701", 0x024: "gfx702",
    0x025: "gfx703", 0x026: "gfx704", 0x028: "gfx801", 0x029: "gfx802", 0x02A: "gfx803",
    0x02B: "gfx810", 0x02C: "gfx900", 0x02D: "gfx902", 0x02E: "gfx904", 0x02F: "gfx906",
    0x030: "gfx908", 0x031: "gfx909", 0x032: "gfx90c", 0x033: "gfx1010", 0x034: "gfx1011",
    0x035: "gfx1012", 0x036: "gfx1030", 0x037: "gfx1031", 0x038: "gfx1032", 0x039: "gfx1033",
    0x03A: "gfx602", 0x03B: "gfx705", 0x03C: "gfx805", 0x03D: "gfx1035", 0x03E: "gfx1034",
    0x03F: "gfx90a", 0x040: "gfx940", 0x041: "gfx1100", 0x042: "gfx1013", 0x043: "gfx1150",
    0x044: "gfx1103", 0x045: "gfx1036", 0x046: "gfx1101", 0x047: "gfx1102", 0x048: "gfx1200",
    0x04A: "gfx1151", 0x04B: "gfx941", 0x04C: "gfx942", 0x04E: "gfx1201", 0x04F: "gfx950",
}
_EF_MACH_MASK = 0xFF

_MACHINES = {3: "x86", 62: "x86-64", 183: "AArch64", 190: "NVIDIA CUDA", 243: "RISC-V"}

_PROCESSOR_RE = re.compile(r"gfx[0-9a-f]{3,5}|gfx[0-9]+(?:-[0-9]+)*-generic")
_FEATURE_RE = re.compile(r"([a-z][a-z0-9_]*)([+-])")

_HEAP_PREFIX = "__ockl_dm_"
_HOSTCALL_PREFIXES = ("__ockl_hostcall", "__ockl_call_host", "__ockl_printf", "__ockl_fprintf",
                      "__printf_alloc", "__ockl_sanitizer_report")
_PRINTF_PREFIXES = ("__ockl_printf", "__ockl_fprintf", "__printf_alloc")
_STRING_LITERAL_RE = re.compile(r"\.str(\.[0-9]+)?")

_UNSUPPORTED_KINDS = {
    "dynamic_shared_pointer": "an OpenCL local-memory pointer",
    "image": "an image",
    "sampler": "a sampler",
    "pipe": "a pipe",
    "queue": "a device queue",
}

_VALUE_TYPES: dict[str, tuple[ParamKind, int]] = {
    "i8": (ParamKind.INT, 1), "i16": (ParamKind.INT, 2), "i32": (ParamKind.INT, 4),
    "i64": (ParamKind.INT, 8), "u8": (ParamKind.UINT, 1), "u16": (ParamKind.UINT, 2),
    "u32": (ParamKind.UINT, 4), "u64": (ParamKind.UINT, 8), "f16": (ParamKind.FLOAT, 2),
    "f32": (ParamKind.FLOAT, 4), "f64": (ParamKind.FLOAT, 8),
}
_TYPE_NAMES: dict[str, tuple[ParamKind, int]] = {
    # OpenCL-style .type_name spellings (amdgcn is LP64: long is 8 bytes)
    **{n: (ParamKind.INT, 1) for n in ("char", "signed char", "int8_t")},
    **{n: (ParamKind.INT, 2) for n in ("short", "short int", "int16_t")},
    **{n: (ParamKind.INT, 4) for n in ("int", "signed", "signed int", "int32_t")},
    **{n: (ParamKind.INT, 8) for n in ("long", "long int", "long long", "long long int", "int64_t",
                                        "ssize_t", "ptrdiff_t", "intptr_t")},
    **{n: (ParamKind.UINT, 1) for n in ("bool", "_Bool", "uchar", "unsigned char", "uint8_t")},
    **{n: (ParamKind.UINT, 2) for n in ("ushort", "unsigned short", "uint16_t")},
    **{n: (ParamKind.UINT, 4) for n in ("uint", "unsigned", "unsigned int", "uint32_t")},
    **{n: (ParamKind.UINT, 8) for n in ("ulong", "unsigned long", "unsigned long long", "size_t",
                                         "uint64_t", "uintptr_t")},
    **{n: (ParamKind.FLOAT, 2) for n in ("half", "_Float16", "__fp16")},
    "float": (ParamKind.FLOAT, 4),
    "double": (ParamKind.FLOAT, 8),
}


# --- target ids -----------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class TargetID:
    """An AMDGPU target id: a processor and feature settings, e.g. ``gfx90a:sramecc+:xnack-``.

    A feature a code object does not mention means "any" (it runs either way); a feature a
    device or configuration does not mention means "unknown".
    """

    processor: str
    features: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> TargetID:
        if not isinstance(text, str) or len(text) > 256:
            raise ValueError(f"{text!r} is not an AMDGPU target id")
        head, *rest = text.strip().split(":")
        if not _PROCESSOR_RE.fullmatch(head):
            raise ValueError(f"{text!r} is not an AMDGPU target id (expected e.g. gfx90a or gfx90a:xnack-)")
        features: dict[str, str] = {}
        for part in rest:
            m = _FEATURE_RE.fullmatch(part)
            if not m or m.group(1) in features:
                raise ValueError(f"{text!r}: bad target feature {part!r} (expected e.g. xnack+ or sramecc-)")
            features[m.group(1)] = m.group(2)
        return cls(head, tuple(sorted(features.items())))

    def __str__(self) -> str:
        return self.processor + "".join(f":{name}{setting}" for name, setting in self.features)

    def runs_on(self, device: TargetID) -> bool:
        """Whether a code object built for ``self`` may run on ``device``."""
        if self.processor != device.processor:
            return False
        wanted = dict(device.features)
        return all(wanted.get(name, setting) == setting for name, setting in self.features)

    def fit(self, device: TargetID) -> tuple[int, int]:
        """Preference among compatible code objects: exact feature matches first, then the
        fewest settings the device does not state."""
        wanted = dict(device.features)
        exact = sum(1 for name, setting in self.features if wanted.get(name) == setting)
        unstated = sum(1 for name, _ in self.features if name not in wanted)
        return (exact, -unstated)


def parse_target(text: str) -> TargetID:
    """Parse a configured target id; raise LibraryError (path ``target``) when malformed."""
    try:
        return TargetID.parse(text)
    except ValueError as exc:
        raise LibraryError(str(exc), path="target") from None


# --- bundles --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BundleEntry:
    id: str
    offset: int
    size: int

    @property
    def kind(self) -> str:
        return self.id.split("-", 1)[0]

    def amdgpu_target(self) -> TargetID | None:
        """The target id of an AMDGPU HIP entry (``hipv4-amdgcn-amd-amdhsa--gfx90a:xnack-``)."""
        parts = self.id.split("-", 5)
        if len(parts) != 6 or not parts[0].startswith("hip"):
            return None
        if parts[1:4] != ["amdgcn", "amd", "amdhsa"]:
            return None
        try:
            return TargetID.parse(parts[5])
        except ValueError:
            return None


def bundle_entries(data: bytes) -> list[BundleEntry]:
    """The entries of an uncompressed clang offload bundle, bounds-checked."""
    pos = len(BUNDLE_MAGIC)
    if len(data) < pos + 8:
        raise LibraryError("truncated clang offload bundle: no entry count")
    (count,) = struct.unpack_from("<Q", data, pos)
    pos += 8
    if count == 0:
        raise LibraryError("clang offload bundle has no entries")
    if count > MAX_BUNDLE_ENTRIES:
        raise LibraryError(f"clang offload bundle claims {count} entries; the limit is {MAX_BUNDLE_ENTRIES}")
    entries: list[BundleEntry] = []
    for i in range(count):
        if pos + 24 > len(data):
            raise LibraryError(f"truncated clang offload bundle: entry {i} of {count} is cut off")
        offset, size, id_len = struct.unpack_from("<QQQ", data, pos)
        pos += 24
        if id_len == 0 or id_len > MAX_BUNDLE_ID_BYTES:
            raise LibraryError(f"clang offload bundle entry {i} has an id of {id_len} bytes")
        if pos + id_len > len(data):
            raise LibraryError(f"truncated clang offload bundle: the id of entry {i} is cut off")
        raw_id = data[pos:pos + id_len]
        pos += id_len
        try:
            entry_id = raw_id.decode("ascii")
        except UnicodeDecodeError:
            raise LibraryError(f"clang offload bundle entry {i} has a non-ASCII id") from None
        if not entry_id.isprintable():
            raise LibraryError(f"clang offload bundle entry {i} has an unprintable id")
        if offset > len(data) or size > len(data) - offset:
            raise LibraryError(f"clang offload bundle entry {entry_id!r} lies outside the file "
                               f"(bytes {offset}..{offset + size} of {len(data)}; truncated?)")
        entries.append(BundleEntry(entry_id, offset, size))
    return entries


# --- selecting a code object ----------------------------------------------------------------


@dataclass(frozen=True)
class CodeObject:
    """The raw AMDGPU ELF chosen for a target, and where it came from."""

    format: str  # "amdgpu-elf" | "clang-offload-bundle"
    elf: bytes
    entry: str | None = None  # bundle entry id
    notes: tuple[str, ...] = ()
    entry_target: TargetID | None = None  # the target id the bundle entry names


def select_code_object(data: bytes, target: TargetID) -> CodeObject:
    """The AMDGPU ELF in ``data`` for ``target``: ``data`` itself or the best bundle entry."""
    if data.startswith(BUNDLE_MAGIC):
        return _select_from_bundle(data, target)
    if data.startswith(COMPRESSED_BUNDLE_MAGIC):
        raise LibraryError("compressed clang offload bundle (CCOB) is not supported; rebuild without "
                           "--offload-compress, or register the raw code object")
    if data.startswith(ELF_MAGIC):
        return CodeObject("amdgpu-elf", data)
    if len(data) < 4:
        raise LibraryError(f"not an AMDGPU code object: only {len(data)} bytes")
    raise LibraryError("not an AMDGPU code object: neither an ELF file nor a clang offload bundle "
                       f"(starts with {data[:8].hex()})")


def _select_from_bundle(data: bytes, target: TargetID) -> CodeObject:
    entries = bundle_entries(data)
    gpu = [(e, t) for e in entries if (t := e.amdgpu_target()) is not None]
    fitting = [(e, t) for e, t in gpu if t.runs_on(target)]
    if not fitting:
        have = ", ".join(str(t) for _, t in gpu) or "none"
        ids = ", ".join(e.id for e in entries)
        raise LibraryError(f"the clang offload bundle has no code object for {target} "
                           f"(AMDGPU entries: {have}; all entries: {ids}); rebuild with --offload-arch={target.processor}")
    best = max(t.fit(target) for _, t in fitting)
    chosen = [(e, t) for e, t in fitting if t.fit(target) == best]
    entry, entry_target = chosen[0]
    notes = [f"bundle entry {entry.id}"]
    if len({str(t) for _, t in chosen}) > 1:
        notes.append(f"several bundle entries fit {target} ({', '.join(str(t) for _, t in chosen)}); "
                     f"chose {entry_target}; name the device's features (e.g. {target.processor}:xnack-) to choose")
    if entry.size == 0:
        raise LibraryError(f"clang offload bundle entry {entry.id!r} is empty")
    elf = data[entry.offset:entry.offset + entry.size]
    if not elf.startswith(ELF_MAGIC):
        raise LibraryError(f"clang offload bundle entry {entry.id!r} is not an ELF code object")
    return CodeObject("clang-offload-bundle", bytes(elf), entry.id, tuple(notes), entry_target)


# --- ELF ------------------------------------------------------------------------------------


@dataclass
class _Elf:
    data: bytes
    abi_version: int
    e_flags: int
    sections: list[dict[str, Any]]
    segments: list[dict[str, Any]]
    elffile: Any


def _check_header(elf: bytes) -> tuple[int, int]:
    """Check the ELF identification and header fields that make it an HSA code object."""
    if len(elf) < 64:
        raise LibraryError(f"truncated ELF: {len(elf)} bytes, shorter than an ELF64 header")
    if elf[4] != 2:
        raise LibraryError("not a 64-bit ELF (AMDGPU code objects are ELF64)")
    if elf[5] != 1:
        raise LibraryError("not a little-endian ELF (AMDGPU code objects are little-endian)")
    e_type, e_machine = struct.unpack_from("<HH", elf, 16)
    if e_machine != EM_AMDGPU:
        name = _MACHINES.get(e_machine, "unknown")
        raise LibraryError(f"ELF for machine {e_machine:#x} ({name}), not AMDGPU ({EM_AMDGPU:#x})")
    if elf[7] != ELFOSABI_AMDGPU_HSA:
        raise LibraryError(f"AMDGPU ELF with OS ABI {elf[7]}, not HSA ({ELFOSABI_AMDGPU_HSA}): "
                           "not a code object the HIP runtime loads")
    if e_type == ET_REL:
        raise LibraryError("relocatable AMDGPU object (ET_REL), not a loadable code object; "
                           "build with hipcc --genco")
    if e_type != ET_DYN:
        raise LibraryError(f"AMDGPU ELF of type {e_type}, not a loadable code object (ET_DYN)")
    (e_flags,) = struct.unpack_from("<I", elf, 48)
    e_phoff, e_shoff = struct.unpack_from("<QQ", elf, 32)
    e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHHHH", elf, 54)
    if e_phnum and e_phentsize != 56:
        raise LibraryError(f"corrupt ELF: program header entries of {e_phentsize} bytes (ELF64 has 56)")
    if e_shnum and e_shentsize != 64:
        raise LibraryError(f"corrupt ELF: section header entries of {e_shentsize} bytes (ELF64 has 64)")
    if e_phoff + e_phnum * 56 > len(elf):
        raise LibraryError(f"truncated ELF: the program headers end at byte {e_phoff + e_phnum * 56}, "
                           f"the file has {len(elf)}")
    if e_shoff + e_shnum * 64 > len(elf):
        raise LibraryError(f"truncated ELF: the section headers end at byte {e_shoff + e_shnum * 64}, "
                           f"the file has {len(elf)}")
    if e_shnum and e_shstrndx >= e_shnum:
        raise LibraryError(f"corrupt ELF: section-name table index {e_shstrndx} of {e_shnum} sections")
    return elf[8], e_flags


def _open_elf(elf: bytes) -> _Elf:
    from elftools.elf.elffile import ELFFile

    abi_version, e_flags = _check_header(elf)
    ef = ELFFile(io.BytesIO(elf))
    size = len(elf)
    sections: list[dict[str, Any]] = []
    for index in range(ef.num_sections()):
        sec = ef.get_section(index)
        hdr = sec.header
        if hdr["sh_type"] not in ("SHT_NOBITS", "SHT_NULL") and (
                hdr["sh_offset"] > size or hdr["sh_size"] > size - hdr["sh_offset"]):
            raise LibraryError(f"truncated or corrupt ELF: section {index} ({_safe_name(sec)}) extends past "
                               f"the end of the file ({hdr['sh_offset']}+{hdr['sh_size']} > {size})")
        sections.append({"index": index, "name": _safe_name(sec), "type": hdr["sh_type"],
                         "flags": hdr["sh_flags"], "size": hdr["sh_size"], "offset": hdr["sh_offset"],
                         "link": hdr["sh_link"], "entsize": hdr["sh_entsize"], "section": sec})
    segments: list[dict[str, Any]] = []
    for index in range(ef.num_segments()):
        hdr = ef.get_segment(index).header
        if hdr["p_offset"] > size or hdr["p_filesz"] > size - hdr["p_offset"]:
            raise LibraryError(f"truncated or corrupt ELF: segment {index} ({hdr['p_type']}) extends past the "
                               f"end of the file ({hdr['p_offset']}+{hdr['p_filesz']} > {size})")
        segments.append({"type": hdr["p_type"], "offset": hdr["p_offset"], "filesz": hdr["p_filesz"]})
    if not any(s["type"] == "PT_LOAD" for s in segments):
        raise LibraryError("AMDGPU ELF has no loadable segment")
    return _Elf(elf, abi_version, e_flags, sections, segments, ef)


def _safe_name(sec: Any) -> str:
    try:
        name = sec.name
    except Exception:  # a corrupt section-name table
        return "?"
    return name if isinstance(name, str) and name.isprintable() and len(name) < 256 else "?"


def _iter_notes(blob: bytes, where: str) -> Iterator[tuple[str, int, bytes]]:
    """(name, type, desc) of each note in a note section or segment; 4-byte alignment."""
    pos = 0
    while pos + 12 <= len(blob):
        namesz, descsz, ntype = struct.unpack_from("<III", blob, pos)
        name_at = pos + 12
        desc_at = name_at + ((namesz + 3) & ~3)
        raw_name = blob[name_at:name_at + namesz]
        name = raw_name.rstrip(b"\0").decode("ascii", "replace")
        if name == "AMDGPU" and ntype == NT_AMDGPU_METADATA and descsz > MAX_METADATA_BYTES:
            raise LibraryError(f"AMDGPU metadata note is {descsz} bytes; the limit is "
                               f"{MAX_METADATA_BYTES // _MIB} MiB")
        if desc_at + descsz > len(blob) or name_at + namesz > len(blob):
            raise LibraryError(f"truncated note in {where}: it needs {desc_at + descsz} bytes, "
                               f"the note data has {len(blob)}")
        yield name, ntype, blob[desc_at:desc_at + descsz]
        pos = desc_at + ((descsz + 3) & ~3)


def _note_blobs(e: _Elf) -> Iterator[tuple[str, bytes]]:
    seen = False
    for s in e.sections:
        if s["type"] == "SHT_NOTE":
            seen = True
            yield f"section {s['name']}", e.data[s["offset"]:s["offset"] + s["size"]]
    if not seen:  # no section headers: fall back to the program headers
        for i, p in enumerate(e.segments):
            if p["type"] == "PT_NOTE":
                yield f"segment {i}", e.data[p["offset"]:p["offset"] + p["filesz"]]


def read_metadata(e: _Elf) -> dict[str, Any]:
    """The decoded NT_AMDGPU_METADATA map of an opened code object."""
    import msgpack

    found: list[bytes] = []
    legacy = False
    for where, blob in _note_blobs(e):
        for name, ntype, desc in _iter_notes(blob, where):
            if name == "AMDGPU" and ntype == NT_AMDGPU_METADATA:
                found.append(desc)
            elif name == "AMD" and ntype == NT_AMD_HSA_METADATA:
                legacy = True
    if not found:
        if legacy:
            raise LibraryError("code-object v2 (YAML metadata) is not supported; rebuild with a current "
                               "ROCm (code-object v4 or later)")
        raise LibraryError("no AMDGPU metadata note (NT_AMDGPU_METADATA): not a HIP code object, or stripped of it")
    if len(found) > 1:
        raise LibraryError(f"{len(found)} AMDGPU metadata notes; a code object has exactly one")
    try:
        doc = msgpack.unpackb(found[0], raw=False, strict_map_key=False, use_list=True)
    except Exception as exc:
        raise LibraryError(f"AMDGPU metadata note is not valid msgpack: {type(exc).__name__}: {exc}") from None
    if not isinstance(doc, dict):
        raise LibraryError(f"AMDGPU metadata is a msgpack {type(doc).__name__}, not a map")
    return doc


# --- metadata validation --------------------------------------------------------------------


def _int(obj: Mapping[str, Any], key: str, where: str, *, default: int | None = None,
         minimum: int = 0, maximum: int = 2**32 - 1) -> int:
    value = obj.get(key, default)
    if value is None:
        raise LibraryError(f"{where}: metadata field {key} is missing")
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise LibraryError(f"{where}: metadata field {key} is {_short(value)}, not an integer in "
                           f"{minimum}..{maximum}")
    return value


def _str(obj: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise LibraryError(f"{where}: metadata field {key} is missing")
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS or not value.isprintable():
        raise LibraryError(f"{where}: metadata field {key} is {_short(value)}, not a printable string")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _metadata_version(doc: Mapping[str, Any]) -> tuple[int, int]:
    version = doc.get("amdhsa.version")
    if (not isinstance(version, list) or len(version) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in version)):
        raise LibraryError(f"AMDGPU metadata: amdhsa.version is {_short(version)}, not [major, minor]")
    major, minor = version
    if major != 1 or not 0 <= minor <= 9:
        raise LibraryError(f"AMDGPU metadata version {major}.{minor} is not supported (expected 1.x: "
                           "code-object v3 and later)")
    return major, minor


def code_object_version(metadata_version: tuple[int, int]) -> int:
    """amdhsa.version [1, 0] is code-object v3, [1, 1] v4, [1, 2] v5, [1, 3] v6."""
    return metadata_version[1] + 3


@dataclass
class _Arg:
    index: int
    kind: str
    size: int
    offset: int
    name: str | None
    type_name: str | None
    value_type: str | None


def _args(kernel: Mapping[str, Any], where: str) -> list[_Arg]:
    raw = kernel.get(".args", [])
    if not isinstance(raw, list):
        raise LibraryError(f"{where}: .args is {_short(raw)}, not a list")
    if len(raw) > MAX_ARGS_PER_KERNEL:
        raise LibraryError(f"{where}: {len(raw)} arguments; the limit is {MAX_ARGS_PER_KERNEL}")
    out: list[_Arg] = []
    for i, arg in enumerate(raw):
        w = f"{where} argument {i}"
        if not isinstance(arg, dict):
            raise LibraryError(f"{w}: {_short(arg)} is not a map")
        kind = _str(arg, ".value_kind", w, required=True)
        assert kind is not None
        out.append(_Arg(
            index=i, kind=kind,
            size=_int(arg, ".size", w, minimum=1, maximum=MAX_ARG_BYTES),
            offset=_int(arg, ".offset", w, maximum=MAX_KERNARG_BYTES),
            name=_str(arg, ".name", w), type_name=_str(arg, ".type_name", w),
            value_type=_str(arg, ".value_type", w),
        ))
    return out


def _param(arg: _Arg, where: str) -> KernelParam:
    if arg.kind == "global_buffer":
        if arg.size != 8:
            raise LibraryError(f"{where}: a global_buffer argument of {arg.size} bytes (pointers are 8)")
        return KernelParam(8, ParamKind.POINTER, arg.offset, arg.name)
    if arg.kind == "by_value":
        return KernelParam(arg.size, _by_value_kind(arg), arg.offset, arg.name)
    if arg.kind in _UNSUPPORTED_KINDS:
        raise LibraryError(f"{where} is {_UNSUPPORTED_KINDS[arg.kind]} (value kind {arg.kind}), "
                           "which pappus cannot pass")
    raise LibraryError(f"{where} has the unknown value kind {arg.kind!r}")


def _by_value_kind(arg: _Arg) -> ParamKind:
    if arg.value_type:
        kind, width = _VALUE_TYPES.get(arg.value_type, (ParamKind.BYTES, 0))
        if width == arg.size:
            return kind
    if arg.type_name:
        name = " ".join(w for w in arg.type_name.replace("\t", " ").split(" ")
                        if w and w not in ("const", "volatile", "__restrict__", "restrict"))
        kind, width = _TYPE_NAMES.get(name, (ParamKind.BYTES, 0))
        if width == arg.size:
            return kind
    return ParamKind.BYTES


# --- symbols --------------------------------------------------------------------------------


@dataclass
class _Symbols:
    stripped: bool
    heap: list[str] = field(default_factory=list)
    hostcall: list[str] = field(default_factory=list)
    printf_hint: bool = False
    writable: list[tuple[str, int, str]] = field(default_factory=list)  # (symbol, size, section)


def _symbols(e: _Elf) -> _Symbols:
    symtabs = [s for s in e.sections if s["type"] == "SHT_SYMTAB"]
    if not symtabs:
        return _Symbols(stripped=True)
    tab = symtabs[0]
    if tab["entsize"] != 24 or tab["size"] % 24:
        raise LibraryError(f"corrupt ELF symbol table (entry size {tab['entsize']}, size {tab['size']})")
    count = tab["size"] // 24
    if count > MAX_SYMBOLS:
        raise LibraryError(f"ELF symbol table has {count} symbols; the limit is {MAX_SYMBOLS}")
    by_index = {s["index"]: s for s in e.sections}
    out = _Symbols(stripped=False)
    locals_seen = 0
    heap: set[str] = set()
    hostcall: set[str] = set()
    for i, sym in enumerate(tab["section"].iter_symbols()):
        if i == 0:
            continue
        name = sym.name if isinstance(sym.name, str) else ""
        info = sym["st_info"]
        if info["bind"] == "STB_LOCAL":
            locals_seen += 1
        if name.startswith(_HEAP_PREFIX):
            heap.add(name)
        if name.startswith(_HOSTCALL_PREFIXES):
            hostcall.add(name)
        if name.startswith(_PRINTF_PREFIXES) or (info["type"] == "STT_OBJECT" and _STRING_LITERAL_RE.fullmatch(name)):
            out.printf_hint = True
        shndx = sym["st_shndx"]
        if info["type"] == "STT_OBJECT" and isinstance(shndx, int) and shndx in by_index:
            sec = by_index[shndx]
            if _is_writable_data(sec):
                out.writable.append((name or "<unnamed>", int(sym["st_size"]), sec["name"]))
    # lld always writes the local _DYNAMIC symbol; a table without any local symbol has had its
    # locals discarded (strip --discard-all), which removes the __ockl_* evidence as well.
    out.stripped = locals_seen == 0
    out.heap, out.hostcall = sorted(heap), sorted(hostcall)
    return out


_SHF_WRITE, _SHF_ALLOC = 0x1, 0x2


def _is_writable_data(sec: Mapping[str, Any]) -> bool:
    return (bool(sec["flags"] & _SHF_WRITE) and bool(sec["flags"] & _SHF_ALLOC)
            and sec["type"] != "SHT_DYNAMIC" and sec["name"] not in (".got", ".got.plt"))


# --- the library ----------------------------------------------------------------------------


def _elf_target(e: _Elf, doc: Mapping[str, Any], co_version: int) -> TargetID:
    """The code object's target id: from amdhsa.target (v4+), checked against e_flags."""
    mach = _MACH.get(e.e_flags & _EF_MACH_MASK)
    text = doc.get("amdhsa.target")
    if text is not None:
        if not isinstance(text, str) or not text.startswith("amdgcn-amd-amdhsa--"):
            raise LibraryError(f"AMDGPU metadata: amdhsa.target is {_short(text)}, not amdgcn-amd-amdhsa--<target>")
        try:
            target = TargetID.parse(text[len("amdgcn-amd-amdhsa--"):])
        except ValueError as exc:
            raise LibraryError(f"AMDGPU metadata: amdhsa.target: {exc}") from None
        if mach is not None and mach != target.processor:
            raise LibraryError(f"inconsistent code object: the ELF header says {mach}, the metadata "
                               f"says {target.processor}")
        return target
    if mach is None:
        raise LibraryError(f"unknown AMDGPU processor (EF_AMDGPU_MACH {e.e_flags & _EF_MACH_MASK:#x}) "
                           "and no amdhsa.target in the metadata")
    features: list[tuple[str, str]] = []
    if co_version >= 4:
        for name, shift in (("sramecc", 10), ("xnack", 8)):
            setting = (e.e_flags >> shift) & 0x3
            if setting in (2, 3):
                features.append((name, "+" if setting == 3 else "-"))
    return TargetID(mach, tuple(sorted(features)))


def read_library(data: bytes | bytearray | memoryview, target: str | TargetID, *,
                 allow_writable_globals: bool = False) -> LibraryInfo:
    """Describe the kernels of ``data`` (bundle or raw ELF) as built for ``target``.

    Raises :class:`LibraryError` with the reason for anything malformed or unusable, and for
    nothing else: an unexpected parser failure on hostile bytes becomes a LibraryError too.
    """
    return inspect_code_object(data, target, allow_writable_globals=allow_writable_globals).library


@dataclass(frozen=True)
class Inspection:
    """Everything read_library learns, for the device (which needs the ELF and layouts)."""

    library: LibraryInfo
    code_object: CodeObject
    code_object_version: int
    target: TargetID
    kernarg_sizes: Mapping[str, int]
    writable_globals: tuple[tuple[str, int, str], ...]


def inspect_code_object(data: bytes | bytearray | memoryview, target: str | TargetID, *,
            allow_writable_globals: bool = False) -> Inspection:
    """Like :func:`read_library`, with the selected ELF and kernarg sizes (LibraryError only)."""
    if isinstance(target, str):
        target = parse_target(target)
    try:
        data = bytes(data)
        if len(data) > MAX_CODE_OBJECT_BYTES:
            raise LibraryError(f"code object is {len(data)} bytes; the limit is {MAX_CODE_OBJECT_BYTES // _MIB} MiB")
        return _inspect(data, target, allow_writable_globals)
    except LibraryError:
        raise
    except RecursionError:
        raise LibraryError("malformed code object: structures nest too deeply") from None
    except MemoryError:
        raise LibraryError("malformed code object: it asks for more memory than pappus allows") from None
    except Exception as exc:  # pyelftools and friends on hostile bytes: always a LibraryError
        raise LibraryError(f"malformed code object: {type(exc).__name__}: {_short(str(exc))}") from None


def _inspect(data: bytes, target: TargetID, allow_writable_globals: bool) -> Inspection:
    co = select_code_object(data, target)
    e = _open_elf(co.elf)
    doc = read_metadata(e)
    version = _metadata_version(doc)
    co_version = code_object_version(version)
    elf_target = _elf_target(e, doc, co_version)
    if not elf_target.runs_on(target):
        raise LibraryError(f"the code object is built for {elf_target}, not for the target {target}; "
                           f"rebuild with --offload-arch={target.processor}")
    kernels_raw = doc.get("amdhsa.kernels", [])
    if not isinstance(kernels_raw, list):
        raise LibraryError(f"AMDGPU metadata: amdhsa.kernels is {_short(kernels_raw)}, not a list")
    if not kernels_raw:
        raise LibraryError("the code object defines no kernels")
    if len(kernels_raw) > MAX_KERNELS:
        raise LibraryError(f"the code object defines {len(kernels_raw)} kernels; the limit is {MAX_KERNELS}")

    syms = _symbols(e)
    precise = co_version <= 4  # v3/v4: hidden args appear only when used
    heap_obj, hostcall_obj = bool(syms.heap), bool(syms.hostcall)
    lib_notes = [f"code-object v{co_version}", f"target {elf_target}", *co.notes]
    if syms.stripped:
        lib_notes.append("no symbol table (stripped): heap and host-call use judged from hidden arguments only")
    if heap_obj:
        lib_notes.append(f"device malloc machinery present ({', '.join(syms.heap)})")
    if hostcall_obj:
        lib_notes.append(f"host-call machinery present ({', '.join(syms.hostcall)})")

    kernels: dict[str, KernelInfo] = {}
    kernarg_sizes: dict[str, int] = {}
    dynamic_stack: list[str] = []
    ambiguous: list[str] = []
    for k_index, raw in enumerate(kernels_raw):
        where = f"kernel {k_index}"
        if not isinstance(raw, dict):
            raise LibraryError(f"{where}: {_short(raw)} is not a map")
        name = _str(raw, ".name", where, required=True)
        assert name is not None
        where = f"kernel {name!r}"
        if name in kernels:
            raise LibraryError(f"{where} is defined twice")
        _str(raw, ".symbol", where)
        args = _args(raw, where)
        kernarg_size = _int(raw, ".kernarg_segment_size", where, default=0, maximum=MAX_KERNARG_BYTES)
        params: list[KernelParam] = []
        hidden: set[str] = set()
        end = 0
        for arg in args:
            if arg.offset + arg.size > kernarg_size and ".kernarg_segment_size" in raw:
                raise LibraryError(f"{where} argument {arg.index} (bytes {arg.offset}..{arg.offset + arg.size}) "
                                   f"lies outside its kernarg segment of {kernarg_size} bytes")
            if arg.kind.startswith("hidden_"):
                hidden.add(arg.kind)
                continue
            if arg.offset < end:
                raise LibraryError(f"{where} argument {arg.index} at offset {arg.offset} overlaps the "
                                   f"argument before it (which ends at {end})")
            end = arg.offset + arg.size
            params.append(_param(arg, f"{where} argument {arg.index}"))
        if ".kernarg_segment_size" not in raw:
            kernarg_size = max([end] + [a.offset + a.size for a in args])
        group = _int(raw, ".group_segment_fixed_size", where, default=0)
        private = _int(raw, ".private_segment_fixed_size", where, default=0)
        max_threads = raw.get(".max_flat_workgroup_size")
        if max_threads is not None:
            max_threads = _int(raw, ".max_flat_workgroup_size", where, minimum=1, maximum=1 << 16)
        uses_dynamic_stack = raw.get(".uses_dynamic_stack", False)
        if not isinstance(uses_dynamic_stack, bool):
            raise LibraryError(f"{where}: .uses_dynamic_stack is {_short(uses_dynamic_stack)}, not a boolean")
        if uses_dynamic_stack:
            dynamic_stack.append(name)

        reach_hostcall = "hidden_hostcall_buffer" in hidden or "hidden_printf_buffer" in hidden
        reach_heap = "hidden_heap_v1" in hidden or (precise and "hidden_hostcall_buffer" in hidden)
        notes: list[str] = []
        if syms.stripped:
            if not precise and (reach_heap or reach_hostcall):
                ambiguous.append(name)
            uses_heap, uses_hostcall = reach_heap, reach_hostcall
            if reach_heap or reach_hostcall:
                notes.append("stripped object: the hidden host-call argument may serve malloc or printf; "
                             "flagged for both")
        else:
            uses_heap = reach_heap and heap_obj
            uses_hostcall = ("hidden_printf_buffer" in hidden
                             or (reach_hostcall and hostcall_obj and (not heap_obj or syms.printf_hint))
                             or (precise and reach_hostcall and not heap_obj and not hostcall_obj))
            if uses_heap:
                notes.append("calls device malloc (" + ", ".join(syms.heap) + " in the object)")
                if hostcall_obj and not uses_hostcall:
                    notes.append("its host calls are attributed to device malloc, which is built on them")
            if uses_hostcall:
                notes.append("uses host calls (printf or similar)")
            if (uses_heap or uses_hostcall) and not precise:
                notes.append(f"code-object v{co_version} metadata does not say which kernels use this; "
                             "every kernel of the object that receives the pointers is flagged")
        if uses_dynamic_stack:
            notes.append("uses a dynamic stack")
        kernels[name] = KernelInfo(
            name=name, params=tuple(params), static_shared_bytes=group, private_bytes=private,
            uses_heap=uses_heap, uses_hostcall=uses_hostcall, max_block_threads=max_threads,
            notes=tuple(notes),
        )
        kernarg_sizes[name] = kernarg_size

    if dynamic_stack:
        raise LibraryError(f"kernel(s) {', '.join(repr(n) for n in dynamic_stack)} use a dynamic stack "
                           "(recursion, indirect calls or variable-sized stack arrays): their private "
                           "memory has no static bound, so pappus rejects them; remove the recursion")
    if ambiguous:
        raise LibraryError(f"stripped code-object v{co_version}: kernel(s) {', '.join(repr(n) for n in ambiguous)} "
                           "receive the host-call and heap pointers, which every v5 kernel with implicit "
                           "arguments does, and without a symbol table pappus cannot tell whether they call "
                           "device malloc or printf; register the unstripped object (as hipcc writes it)")

    writable = _writable_globals(e, syms, heap_obj)
    if writable:
        listed = ", ".join(f"{n} ({size} bytes in {sec})" for n, size, sec in writable[:8])
        more = f" and {len(writable) - 8} more" if len(writable) > 8 else ""
        if not allow_writable_globals:
            raise LibraryError(f"the code object has writable device globals ({listed}{more}): "
                               "__device__ and __constant__ variables outlive an invocation in a loaded "
                               "module, so one invocation could leave data for the next; pass such data in "
                               "buffers instead")
        lib_notes.append(f"writable device globals allowed by configuration: {listed}{more}")

    # The code object's own target id (a bundle entry may name features the ELF leaves open).
    shown = co.entry_target if co.entry_target is not None else elf_target
    library = LibraryInfo(format=co.format, target=str(shown), kernels=kernels, size=len(data),
                          notes=tuple(lib_notes))
    return Inspection(library, co, co_version, elf_target, kernarg_sizes, tuple(writable))


def _writable_globals(e: _Elf, syms: _Symbols, heap_obj: bool) -> list[tuple[str, int, str]]:
    if syms.stripped:
        # No symbols: judge by sections. Device-malloc state (v4) cannot be told apart here.
        return [(f"section {s['name']}", int(s["size"]), s["name"]) for s in e.sections
                if _is_writable_data(s) and s["size"] > 0]
    out = []
    for name, size, sec in syms.writable:
        if heap_obj and name.startswith("__unnamed_"):
            continue  # the device allocator's own state (code-object v4); its kernels are flagged
        out.append((name, size, sec))
    return out
