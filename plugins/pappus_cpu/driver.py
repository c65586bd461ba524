"""Static validation of CPU kernel libraries: read an ELF shared object, never load it.

A library is accepted only if the dynamic loader would do nothing with it but map its segments
and apply plain relocations inside its own writable segments. Everything that would run tenant
code at load time (constructors, IFUNC resolvers), pull in other files (RPATH, unusual
DT_NEEDED, audit libraries), or weaken the sandbox (executable stack, text relocations, TLS) is
refused with the reason. The checks read what the loader reads: program headers, and the
dynamic table, symbols and relocations through the *virtual addresses* of the loaded image
(not the section headers, which the loader ignores). Section headers are used for the
manifest and as a second source of facts.

Every problem, including a truncated or malformed file, is a :class:`LibraryError`.
"""

from __future__ import annotations

import platform
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from pappus.errors import LibraryError
from pappus.interfaces import Driver
from pappus.kernels import DeviceLimits, KernelInfo, KernelParam, LibraryInfo, ParamKind

from .abi import (
    ABI_VERSION,
    ENTRY_PREFIX,
    HEAP_SECTION,
    KIND_NAMES,
    MANIFEST_MAGIC,
    MANIFEST_SECTION,
    RECORD_HEAP,
    RECORD_KERNEL,
)

LIBRARY_FORMAT = "pappus-cpu/1"
MAX_LIBRARY_BYTES = 256 * 1024 * 1024
MAX_IMAGE_SPAN = 1024 * 1024 * 1024
MAX_PARAMS = 256
MAX_RELOCATIONS = 1 << 20
PAGE = 4096

#: Limits of the CPU "device": threads of a block run on fibers (one stack each), dynamic
#: shared memory is one arena per launch.
CPU_LIMITS = DeviceLimits(max_block_threads=1024, max_shared_bytes=64 * 1024)

EM_X86_64 = 62
EM_AARCH64 = 183
_MACHINES = {"x86_64": EM_X86_64, "amd64": EM_X86_64, "aarch64": EM_AARCH64, "arm64": EM_AARCH64}
_MACHINE_NAMES = {EM_X86_64: "x86-64", EM_AARCH64: "aarch64"}

PT_NULL, PT_LOAD, PT_DYNAMIC, PT_INTERP, PT_NOTE, PT_SHLIB, PT_PHDR, PT_TLS = range(8)
PT_GNU_EH_FRAME = 0x6474E550
PT_GNU_STACK = 0x6474E551
PT_GNU_RELRO = 0x6474E552
PT_GNU_PROPERTY = 0x6474E553
PT_GNU_SFRAME = 0x6474E554
PF_X, PF_W, PF_R = 1, 2, 4

# Dynamic tags
DT = {
    "NULL": 0, "NEEDED": 1, "PLTRELSZ": 2, "PLTGOT": 3, "HASH": 4, "STRTAB": 5, "SYMTAB": 6,
    "RELA": 7, "RELASZ": 8, "RELAENT": 9, "STRSZ": 10, "SYMENT": 11, "INIT": 12, "FINI": 13,
    "SONAME": 14, "RPATH": 15, "SYMBOLIC": 16, "REL": 17, "RELSZ": 18, "RELENT": 19, "PLTREL": 20,
    "DEBUG": 21, "TEXTREL": 22, "JMPREL": 23, "BIND_NOW": 24, "INIT_ARRAY": 25, "FINI_ARRAY": 26,
    "INIT_ARRAYSZ": 27, "FINI_ARRAYSZ": 28, "RUNPATH": 29, "FLAGS": 30, "PREINIT_ARRAY": 32,
    "PREINIT_ARRAYSZ": 33, "RELRSZ": 35, "RELR": 36, "RELRENT": 37,
    "GNU_HASH": 0x6FFFFEF5, "VERSYM": 0x6FFFFFF0, "RELACOUNT": 0x6FFFFFF9, "RELCOUNT": 0x6FFFFFFA,
    "FLAGS_1": 0x6FFFFFFB, "VERDEF": 0x6FFFFFFC, "VERDEFNUM": 0x6FFFFFFD, "VERNEED": 0x6FFFFFFE,
    "VERNEEDNUM": 0x6FFFFFFF, "AUDIT": 0x6FFFFEFC, "DEPAUDIT": 0x6FFFFEFB, "AUXILIARY": 0x7FFFFFFD,
    "FILTER": 0x7FFFFFFF,
}
_DT_NAMES = {v: k for k, v in DT.items()}
#: Tags a plain library may carry (anything else is refused by name).
_DT_PLAIN = {DT[n] for n in (
    "NULL", "NEEDED", "PLTRELSZ", "PLTGOT", "HASH", "STRTAB", "SYMTAB", "RELA", "RELASZ", "RELAENT",
    "STRSZ", "SYMENT", "SONAME", "SYMBOLIC", "PLTREL", "DEBUG", "JMPREL", "BIND_NOW", "FLAGS",
    "GNU_HASH", "VERSYM", "RELACOUNT", "FLAGS_1", "VERDEF", "VERDEFNUM", "VERNEED", "VERNEEDNUM",
)} | {0x70000001, 0x70000003, 0x70000005}  # DT_AARCH64_BTI_PLT, _PAC_PLT, _VARIANT_PCS
_DT_REFUSED = {
    DT["INIT"]: "has an initialisation function (DT_INIT), which would run library code at load time",
    DT["FINI"]: "has a finalisation function (DT_FINI), which would run library code at unload time",
    DT["TEXTREL"]: "needs text relocations (DT_TEXTREL): it must be built with -fPIC",
    DT["RPATH"]: "sets a library search path (DT_RPATH)",
    DT["RUNPATH"]: "sets a library search path (DT_RUNPATH)",
    DT["AUDIT"]: "names an audit library (DT_AUDIT)",
    DT["DEPAUDIT"]: "names an audit library (DT_DEPAUDIT)",
    DT["AUXILIARY"]: "is a filter library (DT_AUXILIARY)",
    DT["FILTER"]: "is a filter library (DT_FILTER)",
    DT["REL"]: "uses REL relocations, which this architecture does not use",
    DT["RELR"]: "uses packed relative relocations (DT_RELR), which the validator does not accept",
}
_DT_ARRAYS = {
    DT["INIT_ARRAY"]: (DT["INIT_ARRAYSZ"], "constructors (DT_INIT_ARRAY), which would run library code at load time"),
    DT["PREINIT_ARRAY"]: (DT["PREINIT_ARRAYSZ"], "pre-initialisers (DT_PREINIT_ARRAY)"),
    DT["FINI_ARRAY"]: (DT["FINI_ARRAYSZ"], "destructors (DT_FINI_ARRAY), which would run library code at unload time"),
}
DF_TEXTREL, DF_STATIC_TLS = 0x4, 0x10
DF_1_NODELETE = 0x8

STT_FUNC, STT_TLS, STT_GNU_IFUNC = 2, 6, 10
STB_GNU_UNIQUE = 10

# Relocation types the loader may apply: plain data and GOT/PLT words.
_RELOCS = {
    EM_X86_64: {
        "ok": {0, 1, 6, 7, 8},  # NONE, 64, GLOB_DAT, JUMP_SLOT, RELATIVE
        "ifunc": {37},  # IRELATIVE
        "tls": {16, 17, 18, 36},  # DTPMOD64, DTPOFF64, TPOFF64, TLSDESC
        "copy": {5},
    },
    EM_AARCH64: {
        "ok": {0, 257, 1025, 1026, 1027},  # NONE, ABS64, GLOB_DAT, JUMP_SLOT, RELATIVE
        "ifunc": {1032},
        "tls": {1028, 1029, 1030, 1031},
        "copy": {1024},
    },
}

_NEEDED_OK = re.compile(r"(lib(c|m|gcc_s|stdc\+\+)\.so(\.\d+)*|ld-linux(-[a-z0-9_]+)?\.so\.\d+)")
_KERNEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}")


def host_machine() -> int | None:
    return _MACHINES.get(platform.machine().lower())


@dataclass(frozen=True)
class _Load:
    vaddr: int
    memsz: int
    offset: int
    filesz: int
    flags: int


class _Image:
    """The library as the loader maps it: reads by virtual address, zeros past a segment's file part."""

    def __init__(self, data: bytes, loads: list[_Load]) -> None:
        self.data = data
        self.loads = loads

    def segment(self, vaddr: int, size: int) -> _Load | None:
        for seg in self.loads:
            if seg.vaddr <= vaddr and vaddr + size <= seg.vaddr + seg.memsz:
                return seg
        return None

    def read(self, vaddr: int, size: int, what: str) -> bytes:
        """Bytes the loader would see at ``vaddr``. Loader tables live in the file-backed part of a
        segment; anything reaching into zero-fill memory (or past it) is refused, which also
        bounds every read by the file's size."""
        if size < 0 or size > len(self.data):
            raise LibraryError(f"{what} has an impossible size ({size} bytes)")
        for seg in self.loads:
            if seg.vaddr <= vaddr and vaddr + size <= seg.vaddr + seg.filesz:
                start = seg.offset + vaddr - seg.vaddr
                return self.data[start:start + size]
        raise LibraryError(f"{what} ({size} bytes at {vaddr:#x}) lies outside the library's file-backed segments")

    def cstring(self, strtab: int, strsz: int, offset: int, what: str) -> str:
        if offset >= strsz:
            raise LibraryError(f"{what}: string offset {offset} is outside the string table")
        table = self.read(strtab, strsz, "the dynamic string table")
        end = table.find(b"\0", offset)
        if end < 0:
            raise LibraryError(f"{what}: unterminated string")
        return table[offset:end].decode("utf-8", "replace")


class CpuDriver(Driver):
    """Reads CPU kernel libraries (ELF shared objects built by ``pappus_cpu.build``)."""

    def device_limits(self) -> DeviceLimits:
        return CPU_LIMITS

    def inspect_library(self, data: bytes) -> LibraryInfo:
        try:
            return _inspect(bytes(data))
        except LibraryError:
            raise
        except Exception as exc:  # any parse problem of a malformed file is the library's
            detail = str(exc).strip() or type(exc).__name__
            raise LibraryError(f"malformed ELF shared object: {detail}") from None


def loadable_image(data: bytes) -> bytes:
    """The bytes the device template loads: the library with its DT_SONAME, if any, emptied.

    Before glibc looks for a file it matches the requested name against every loaded object's
    names *and* DT_SONAME. A library whose SONAME is the name of a later load (the template's
    ``/proc/self/fd/N``, or a dependency such as ``libm.so.6``) would be handed out for that
    load, that is, in place of another tenant's library. A kernel library's SONAME serves no
    purpose (nothing links against it), so the entry is pointed at the SONAME's own terminating
    NUL: an empty name, which no load request matches (``""`` means the main program, which the
    loader finds first). Nothing else changes; a library without a SONAME is returned as is.
    """
    try:
        return _without_soname(bytes(data))
    except LibraryError:
        raise
    except Exception as exc:  # a malformed file (only when it was not validated first)
        detail = str(exc).strip() or type(exc).__name__
        raise LibraryError(f"malformed ELF shared object: {detail}") from None


def _without_soname(data: bytes) -> bytes:
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise LibraryError("not a 64-bit little-endian ELF shared object")
    (e_phoff,) = struct.unpack_from("<Q", data, 32)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    loads, dynamic = _program_headers(data, e_phoff, e_phentsize, e_phnum)
    image = _Image(data, loads)
    dyn = _dynamic_table(image, dynamic)
    if DT["SONAME"] not in dyn:
        return data
    strtab, strsz = _strtab(dyn)
    name_at = dyn[DT["SONAME"]][0]
    image.cstring(strtab, strsz, name_at, "DT_SONAME")  # in the table and terminated
    nul_at = image.read(strtab, strsz, "the dynamic string table").index(b"\0", name_at)
    assert dynamic is not None
    _vaddr, memsz, file_offset = dynamic  # _dynamic_table checked that the file offset maps there
    out = bytearray(data)
    for pos in range(0, memsz - 15, 16):
        (tag,) = struct.unpack_from("<Q", data, file_offset + pos)
        if tag == DT["SONAME"]:
            struct.pack_into("<Q", out, file_offset + pos + 8, nul_at)
            return bytes(out)
        if tag == DT["NULL"]:
            break
    raise LibraryError("the dynamic table changed while it was read")  # cannot happen: dyn came from it


EM_AMDGPU = 224
EM_CUDA = 190
_REBUILD = "build a CPU library from the same source with `pappus build --targets cpu`"


def _gpu_code_object(data: bytes) -> str | None:
    """What a GPU backend's library is, when one is given to the CPU backend (else None)."""
    if data.startswith(b"__CLANG_OFFLOAD_BUNDLE__"):
        return "an AMD GPU code object bundle (.hsaco, for the hip backend)"
    if data[:4] == b"\x50\xed\x55\xba":
        return "an NVIDIA fatbin (for the cuda backend)"
    if data[:4] == b"\x7fELF" and len(data) >= 20:
        machine = struct.unpack_from("<H", data, 18)[0]
        if machine == EM_AMDGPU:
            return "an AMD GPU code object (.hsaco, for the hip backend)"
        if machine == EM_CUDA:
            return "an NVIDIA cubin (for the cuda backend)"
    head = data[:4096].lstrip()
    if head.startswith((b"//", b".version")) and b".target" in data[:4096]:
        return "NVIDIA PTX (for the cuda backend)"
    return None


def _inspect(data: bytes) -> LibraryInfo:
    if len(data) > MAX_LIBRARY_BYTES:
        raise LibraryError(f"library is {len(data)} bytes; the limit is {MAX_LIBRARY_BYTES}")
    foreign = _gpu_code_object(data)
    if foreign:
        raise LibraryError(f"this is {foreign}, not a CPU library: register it with that backend's engines, "
                           f"or {_REBUILD}")
    if data[:4] != b"\x7fELF":
        raise LibraryError(f"not an ELF shared object ({_REBUILD})")
    if len(data) < 64:
        raise LibraryError("truncated ELF file: the header is incomplete")
    if data[4] != 2 or data[5] != 1:
        raise LibraryError("not a 64-bit little-endian ELF file")
    (e_type, e_machine, _version, _entry, e_phoff, e_shoff, _flags, _ehsize, e_phentsize, e_phnum,
     e_shentsize, e_shnum, e_shstrndx) = struct.unpack_from("<HHIQQQIHHHHHH", data, 16)
    if e_type != 3:
        raise LibraryError("not a shared object (ELF type is not ET_DYN)")
    host = host_machine()
    if host is None or e_machine != host:
        want = _MACHINE_NAMES.get(host or 0, platform.machine())
        got = _MACHINE_NAMES.get(e_machine, f"machine {e_machine}")
        raise LibraryError(f"built for {got}, but this host is {want}")

    loads, dynamic = _program_headers(data, e_phoff, e_phentsize, e_phnum)
    image = _Image(data, loads)
    dyn = _dynamic_table(image, dynamic)
    strtab, strsz = _strtab(dyn)
    notes: list[str] = []

    for tag in dyn:
        if tag in _DT_REFUSED:
            raise LibraryError(f"library {_DT_REFUSED[tag]}")
        if tag in _DT_ARRAYS:
            size_tag, what = _DT_ARRAYS[tag]
            size = dyn.get(size_tag, [None])[0]
            if size is None or size != 0:
                raise LibraryError(f"library has {what}")
        elif tag not in _DT_PLAIN and tag not in (DT["INIT_ARRAYSZ"], DT["PREINIT_ARRAYSZ"], DT["FINI_ARRAYSZ"]):
            raise LibraryError(f"library has an unsupported dynamic tag {_DT_NAMES.get(tag, hex(tag))}")
    flags = dyn.get(DT["FLAGS"], [0])[0]
    if flags & DF_TEXTREL:
        raise LibraryError("library needs text relocations (DF_TEXTREL): it must be built with -fPIC")
    if flags & DF_STATIC_TLS:
        raise LibraryError("library uses thread-local storage (DF_STATIC_TLS)")
    if dyn.get(DT["FLAGS_1"], [0])[0] & DF_1_NODELETE:
        raise LibraryError("library is marked NODELETE and could never be unloaded")

    for offset in dyn.get(DT["NEEDED"], []):
        name = image.cstring(strtab, strsz, offset, "DT_NEEDED")
        if not _NEEDED_OK.fullmatch(name):
            raise LibraryError(f"library depends on {name!r}; only libc, libm, libgcc_s, libstdc++ "
                               "and the dynamic loader are allowed")

    symbols = _dynamic_symbols(image, dyn, strtab, strsz)
    machine_relocs = _RELOCS[e_machine]
    for rel in _relocations(image, dyn):
        r_offset, r_type, r_sym = rel
        if r_type in machine_relocs["ifunc"]:
            raise LibraryError("library uses an IFUNC (IRELATIVE relocation), whose resolver would run "
                               "library code at load time")
        if r_type in machine_relocs["tls"]:
            raise LibraryError("library uses thread-local storage (TLS relocation)")
        if r_type in machine_relocs["copy"]:
            raise LibraryError("library has a copy relocation, which shared objects must not use")
        if r_type not in machine_relocs["ok"]:
            raise LibraryError(f"library has an unsupported relocation type {r_type}")
        seg = image.segment(r_offset, 8)
        if seg is None or not seg.flags & PF_W:
            raise LibraryError(f"a relocation writes to {r_offset:#x}, outside the library's writable segments")
        if r_sym >= len(symbols):
            raise LibraryError(f"a relocation names symbol {r_sym}, but the library has {len(symbols)}")

    exported: dict[str, int] = {}
    for sym in symbols:
        name, info, other, shndx, value = sym
        stype, bind = info & 0xF, info >> 4
        if stype == STT_GNU_IFUNC:
            raise LibraryError(f"symbol {name!r} is an IFUNC, whose resolver would run library code at load time")
        if stype == STT_TLS:
            raise LibraryError(f"symbol {name!r} is thread-local; the CPU backend does not run TLS")
        if bind == STB_GNU_UNIQUE:
            raise LibraryError(f"symbol {name!r} is STB_GNU_UNIQUE, which makes the library impossible to "
                               "unload (build with -fno-gnu-unique)")
        if shndx != 0 and stype == STT_FUNC and (other & 3) == 0 and bind in (1, 2):
            exported[name] = value

    sections = _sections(data, e_shoff, e_shentsize, e_shnum, e_shstrndx)
    symtab = sections.get(".symtab")
    local_names: set[str] = set()
    if symtab is not None:
        local_names = _check_symtab(data, sections, symtab)
    for name in (".init_array", ".preinit_array", ".fini_array", ".ctors", ".dtors", ".init", ".fini"):
        sec = sections.get(name)
        if sec is not None and sec[1] > 0:
            raise LibraryError(f"library has a {name} section, which would run library code when it is "
                               "loaded or unloaded (constructors and destructors are not allowed)")

    manifest = sections.get(MANIFEST_SECTION)
    if manifest is None:
        raise LibraryError(f"library has no {MANIFEST_SECTION} section: build it with `pappus build --targets cpu`")
    kernels = _parse_manifest(_section_bytes(data, manifest, MANIFEST_SECTION), RECORD_KERNEL)
    uses_heap = HEAP_SECTION in sections or "__pappus_device_malloc" in local_names \
        or "__pappus_device_malloc" in exported
    if uses_heap:
        notes.append("calls device malloc: functions using it need a heap limit above 0")

    infos: dict[str, KernelInfo] = {}
    for name, params in kernels.items():
        entry = exported.get(ENTRY_PREFIX + name)
        if entry is None:
            raise LibraryError(f"kernel {name!r} is in the manifest but its entry point "
                               f"{ENTRY_PREFIX + name} is not exported")
        seg = image.segment(entry, 1)
        if seg is None or not seg.flags & PF_X:
            raise LibraryError(f"the entry point of kernel {name!r} is not in executable code")
        infos[name] = KernelInfo(name=name, params=params, uses_heap=uses_heap, max_block_threads=None)
    if not infos:
        raise LibraryError("library exports no kernels")
    return LibraryInfo(format=LIBRARY_FORMAT, target=_MACHINE_NAMES[e_machine], kernels=infos,
                       size=len(data), notes=tuple(notes))


# --- program headers ---------------------------------------------------------------------------


def _program_headers(data: bytes, phoff: int, phentsize: int, phnum: int) -> tuple[list[_Load], tuple[int, int, int] | None]:
    if phnum == 0:
        raise LibraryError("library has no program headers")
    if phentsize != 56:
        raise LibraryError(f"malformed ELF: program header entries are {phentsize} bytes, not 56")
    if phoff + phnum * 56 > len(data):
        raise LibraryError("truncated ELF file: the program headers run past the end of the file")
    loads: list[_Load] = []
    dynamic = None
    stack_flags = None
    for i in range(phnum):
        p_type, p_flags, p_offset, p_vaddr, _paddr, p_filesz, p_memsz, p_align = struct.unpack_from(
            "<IIQQQQQQ", data, phoff + i * 56)
        if p_type == PT_INTERP:
            raise LibraryError("file has a program interpreter (it is an executable, not a library)")
        if p_type == PT_TLS:
            raise LibraryError("library uses thread-local storage (PT_TLS); the CPU backend does not run TLS")
        if p_type == PT_SHLIB:
            raise LibraryError("library has a PT_SHLIB header")
        if p_type == PT_GNU_STACK:
            stack_flags = p_flags
        elif p_type == PT_LOAD:
            if p_filesz > p_memsz:
                raise LibraryError(f"malformed ELF: segment {i} has more file bytes than memory bytes")
            if p_offset + p_filesz > len(data):
                raise LibraryError(f"truncated ELF file: segment {i} runs past the end of the file")
            if p_align and (p_align & (p_align - 1) or (p_vaddr - p_offset) % p_align):
                raise LibraryError(f"malformed ELF: segment {i} is not aligned as its header says")
            if p_flags & PF_W and p_flags & PF_X:
                raise LibraryError(f"segment {i} is both writable and executable")
            loads.append(_Load(p_vaddr, p_memsz, p_offset, p_filesz, p_flags))
        elif p_type == PT_DYNAMIC:
            if dynamic is not None:
                raise LibraryError("library has more than one dynamic segment")
            dynamic = (p_vaddr, p_memsz, p_offset)
        elif p_type not in (PT_NULL, PT_NOTE, PT_PHDR, PT_GNU_EH_FRAME, PT_GNU_RELRO, PT_GNU_PROPERTY,
                            PT_GNU_SFRAME) and not 0x70000000 <= p_type <= 0x7FFFFFFF:
            raise LibraryError(f"library has an unsupported program header type {p_type:#x}")
    if stack_flags is None:
        raise LibraryError("library has no PT_GNU_STACK header, so the loader would make the stack executable")
    if stack_flags & PF_X:
        raise LibraryError("library requests an executable stack (PT_GNU_STACK is executable)")
    if not loads:
        raise LibraryError("library has no loadable segments")
    if dynamic is None:
        raise LibraryError("library has no dynamic segment")
    for a, b in zip(loads, loads[1:], strict=False):
        if b.vaddr < a.vaddr + a.memsz:
            raise LibraryError("malformed ELF: loadable segments overlap or are out of order")
    span = loads[-1].vaddr + loads[-1].memsz - (loads[0].vaddr & ~(PAGE - 1))
    if span > MAX_IMAGE_SPAN:
        raise LibraryError(f"library maps {span} bytes; the limit is {MAX_IMAGE_SPAN}")
    return loads, dynamic


def _dynamic_table(image: _Image, dynamic: tuple[int, int, int] | None) -> dict[int, list[int]]:
    assert dynamic is not None
    vaddr, memsz, offset = dynamic
    seg = image.segment(vaddr, max(memsz, 16))
    if seg is None:
        raise LibraryError("the dynamic segment lies outside the library's loaded segments")
    if seg.offset + (vaddr - seg.vaddr) != offset:
        raise LibraryError("the dynamic segment's file offset does not match its address")
    raw = image.read(vaddr, memsz, "the dynamic segment")
    out: dict[int, list[int]] = {}
    for pos in range(0, len(raw) - 15, 16):
        tag, val = struct.unpack_from("<QQ", raw, pos)
        if tag == 0:
            return out
        out.setdefault(tag, []).append(val)
        if len(out[tag]) > 1 and tag != DT["NEEDED"]:
            raise LibraryError(f"the dynamic tag {_DT_NAMES.get(tag, hex(tag))} appears twice")
    raise LibraryError("the dynamic table is not terminated by DT_NULL")


def _strtab(dyn: dict[int, list[int]]) -> tuple[int, int]:
    if DT["STRTAB"] not in dyn or DT["STRSZ"] not in dyn:
        raise LibraryError("library has no dynamic string table")
    return dyn[DT["STRTAB"]][0], dyn[DT["STRSZ"]][0]


def _dynamic_symbols(image: _Image, dyn: dict[int, list[int]], strtab: int, strsz: int
                     ) -> list[tuple[str, int, int, int, int]]:
    if DT["SYMTAB"] not in dyn:
        raise LibraryError("library has no dynamic symbol table")
    if dyn.get(DT["SYMENT"], [24])[0] != 24:
        raise LibraryError("malformed ELF: dynamic symbols are not 24 bytes each")
    count = _symbol_count(image, dyn)
    base = dyn[DT["SYMTAB"]][0]
    raw = image.read(base, count * 24, "the dynamic symbol table")
    table = image.read(strtab, strsz, "the dynamic string table")
    out = []
    for i in range(count):
        st_name, st_info, st_other, st_shndx, st_value, _size = struct.unpack_from("<IBBHQQ", raw, i * 24)
        if st_name >= max(strsz, 1) and i:
            raise LibraryError(f"dynamic symbol {i} has a name outside the string table")
        end = table.find(b"\0", st_name)
        name = table[st_name:end if end >= 0 else len(table)].decode("utf-8", "replace")
        out.append((name, st_info, st_other, st_shndx, st_value))
    return out


def _symbol_count(image: _Image, dyn: dict[int, list[int]]) -> int:
    if DT["HASH"] in dyn:
        _nbucket, nchain = struct.unpack("<II", image.read(dyn[DT["HASH"]][0], 8, "DT_HASH"))
        return nchain
    if DT["GNU_HASH"] not in dyn:
        raise LibraryError("library has no symbol hash table")
    addr = dyn[DT["GNU_HASH"]][0]
    nbuckets, symoffset, bloom_size, _shift = struct.unpack("<IIII", image.read(addr, 16, "DT_GNU_HASH"))
    if nbuckets > 1 << 20 or bloom_size > 1 << 20:
        raise LibraryError("malformed ELF: the GNU hash table is implausibly large")
    buckets_at = addr + 16 + bloom_size * 8
    buckets = struct.unpack(f"<{nbuckets}I", image.read(buckets_at, nbuckets * 4, "DT_GNU_HASH buckets"))
    top = max(buckets, default=0)
    if top < symoffset:
        return symoffset
    # The chain of the highest bucket ends at the last symbol: the first word with bit 0 set.
    first = buckets_at + nbuckets * 4 + (top - symoffset) * 4
    seg = next((g for g in image.loads if g.vaddr <= first < g.vaddr + g.filesz), None)
    if seg is None:
        raise LibraryError("malformed ELF: the GNU hash chains lie outside the library's file-backed segments")
    chains = image.read(first, (seg.vaddr + seg.filesz - first) // 4 * 4, "DT_GNU_HASH chains")
    for i, (h,) in enumerate(struct.iter_unpack("<I", chains)):
        if h & 1:
            return top + i + 1
    raise LibraryError("malformed ELF: the GNU hash chains do not terminate")


def _relocations(image: _Image, dyn: dict[int, list[int]]) -> Iterator[tuple[int, int, int]]:
    if dyn.get(DT["RELAENT"], [24])[0] != 24:
        raise LibraryError("malformed ELF: RELA entries are not 24 bytes each")
    tables = []
    if DT["RELA"] in dyn:
        tables.append((dyn[DT["RELA"]][0], dyn.get(DT["RELASZ"], [0])[0], "DT_RELA"))
    if DT["JMPREL"] in dyn:
        if dyn.get(DT["PLTREL"], [DT["RELA"]])[0] != DT["RELA"]:
            raise LibraryError("PLT relocations are not RELA, which this architecture uses")
        tables.append((dyn[DT["JMPREL"]][0], dyn.get(DT["PLTRELSZ"], [0])[0], "DT_JMPREL"))
    for addr, size, what in tables:
        if size % 24:
            raise LibraryError(f"malformed ELF: {what} is not a whole number of entries")
        if size // 24 > MAX_RELOCATIONS:
            raise LibraryError(f"library has {size // 24} relocations in {what}; the limit is {MAX_RELOCATIONS}")
        raw = image.read(addr, size, what)
        for pos in range(0, size, 24):
            r_offset, r_info, _addend = struct.unpack_from("<QQq", raw, pos)
            yield r_offset, r_info & 0xFFFFFFFF, r_info >> 32


# --- sections (the manifest, and a second look at symbols) ------------------------------------


def _sections(data: bytes, shoff: int, shentsize: int, shnum: int, shstrndx: int) -> dict[str, tuple[int, int, int]]:
    """name -> (type, size, offset) of every section; {} for a file without section headers."""
    if shoff == 0 or shnum == 0:
        return {}
    if shentsize != 64 or shoff + shnum * 64 > len(data):
        raise LibraryError("truncated ELF file: the section headers run past the end of the file")
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * 64) for i in range(shnum)]
    if shstrndx >= shnum:
        raise LibraryError("malformed ELF: the section name table index is out of range")
    _n, _t, _f, _a, str_off, str_size, *_ = headers[shstrndx]
    if str_off + str_size > len(data):
        raise LibraryError("truncated ELF file: the section name table runs past the end of the file")
    names = data[str_off:str_off + str_size]
    out: dict[str, tuple[int, int, int]] = {}
    for sh_name, sh_type, _flags, _addr, sh_offset, sh_size, *_rest in headers:
        end = names.find(b"\0", sh_name)
        name = names[sh_name:end if end >= 0 else len(names)].decode("utf-8", "replace")
        if sh_type != 8 and sh_offset + sh_size > len(data):  # SHT_NOBITS occupies no file bytes
            raise LibraryError(f"truncated ELF file: section {name} runs past the end of the file")
        out[name] = (sh_type, sh_size, sh_offset)
    return out


def _section_bytes(data: bytes, sec: tuple[int, int, int], name: str) -> bytes:
    sh_type, size, offset = sec
    if sh_type == 8:
        raise LibraryError(f"section {name} has no contents")
    return data[offset:offset + size]


def _check_symtab(data: bytes, sections: dict[str, tuple[int, int, int]], symtab: tuple[int, int, int]) -> set[str]:
    """Look for IFUNCs among all symbols, local ones included; return the names defined."""
    raw = _section_bytes(data, symtab, ".symtab")
    strsec = sections.get(".strtab")
    strings = _section_bytes(data, strsec, ".strtab") if strsec else b""
    names: set[str] = set()
    for pos in range(0, len(raw) - 23, 24):
        st_name, st_info, _other, st_shndx, _value, _size = struct.unpack_from("<IBBHQQ", raw, pos)
        end = strings.find(b"\0", st_name)
        name = strings[st_name:end if end >= 0 else len(strings)].decode("utf-8", "replace")
        if st_info & 0xF == STT_GNU_IFUNC:
            raise LibraryError(f"symbol {name!r} is an IFUNC, whose resolver would run library code at load time")
        if st_shndx != 0 and name:
            names.add(name)
    return names


def _parse_manifest(raw: bytes, want_type: int) -> dict[str, tuple[KernelParam, ...]]:
    kernels: dict[str, tuple[KernelParam, ...]] = {}
    pos = 0
    n = len(raw)
    while pos + 8 <= n:
        (magic,) = struct.unpack_from("<I", raw, pos)
        if magic == 0:  # alignment padding between records
            pos += 8
            continue
        if magic != MANIFEST_MAGIC:
            raise LibraryError(f"malformed {MANIFEST_SECTION}: no record at offset {pos}")
        if pos + 24 > n:
            raise LibraryError(f"truncated {MANIFEST_SECTION} record at offset {pos}")
        _magic, abi, rtype, size, nparams, namelen, _reserved = struct.unpack_from("<IHHIIII", raw, pos)
        if abi != ABI_VERSION:
            raise LibraryError(f"library was built for pappus CPU ABI {abi}; this backend runs ABI "
                               f"{ABI_VERSION}: rebuild it with `pappus build --targets cpu`")
        if nparams > MAX_PARAMS:
            raise LibraryError(f"a kernel in {MANIFEST_SECTION} has {nparams} parameters (at most {MAX_PARAMS})")
        need = 24 + 8 * (nparams + 1) + namelen + 1
        if size % 8 or size < need or pos + size > n:
            raise LibraryError(f"malformed {MANIFEST_SECTION} record at offset {pos}")
        name_at = pos + 24 + 8 * (nparams + 1)
        name_raw = raw[name_at:name_at + namelen]
        if raw[name_at + namelen] != 0:
            raise LibraryError(f"malformed {MANIFEST_SECTION} record at offset {pos}: name not terminated")
        name = name_raw.decode("ascii", "replace")
        if rtype == want_type:
            if not _KERNEL_NAME.fullmatch(name):
                raise LibraryError(f"{MANIFEST_SECTION} names an invalid kernel {name[:80]!r}")
            if name in kernels:
                raise LibraryError(f"kernel {name!r} appears twice in {MANIFEST_SECTION}")
            params = []
            for k in range(nparams):
                psize, pkind = struct.unpack_from("<II", raw, pos + 24 + 8 * k)
                if pkind not in KIND_NAMES or not 1 <= psize <= 1 << 16:
                    raise LibraryError(f"kernel {name!r}: parameter {k} has an invalid size or kind in "
                                       f"{MANIFEST_SECTION}")
                kind = ParamKind(KIND_NAMES[pkind])
                if kind == ParamKind.POINTER and psize != 8:
                    raise LibraryError(f"kernel {name!r}: pointer parameter {k} is {psize} bytes")
                params.append(KernelParam(size=psize, kind=kind))
            kernels[name] = tuple(params)
        elif rtype != RECORD_HEAP:
            raise LibraryError(f"{MANIFEST_SECTION} has a record of unknown type {rtype}")
        pos += size
    return kernels
