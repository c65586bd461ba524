"""Read NVIDIA code objects statically: cubin (ELF), PTX and fatbin, without a GPU or the driver.

What registration needs from a library, read straight from the bytes:

* **kernels**: ``STT_FUNC`` symbols marked as entries (``st_other & 0x10``) that live in a
  ``.text.<name>`` section;
* **parameters**: the ``EIATTR_KPARAM_INFO`` records of ``.nv.info.<kernel>`` (ordinal, offset in
  the parameter constant bank, size), checked against ``EIATTR_CBANK_PARAM_SIZE``. A cubin does
  not record C types, so every parameter is :attr:`ParamKind.BYTES` of its exact size (a PTX entry
  does: ``.f32``/``.f64`` parameters are FLOAT there);
* **static shared memory**: the size of ``.nv.shared.<kernel>``, less the 1 KiB that ptxas places
  in it for the driver on sm_90 and newer (objects that reference ``.nv.reservedSmem.offset0``);
* **device heap and host calls**: calls to ``malloc``/``free`` (``uses_heap``) and to ``vprintf``,
  ``__assertfail`` or the device runtime (``uses_hostcall``) are undefined ``FUNC`` symbols that
  the driver resolves at load time; ``EIATTR_EXTERNS`` names, per kernel, the ones its code (and
  every device function compiled into it) reaches;
* **writable globals**: ``__device__`` variables (objects in ``.nv.global``/``.nv.global.init``)
  outlive an invocation in a cached module, so they are refused unless explicitly allowed.

Everything is bounds-checked by hand (no ELF library whose exceptions would leak); every problem
is a :class:`~pappus.errors.LibraryError` with the reason.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from pappus.errors import LibraryError
from pappus.kernels import KernelInfo, KernelParam, LibraryInfo, ParamKind

# --- constants --------------------------------------------------------------------------------

EM_CUDA = 190
ET_REL, ET_EXEC = 1, 2
ELFOSABI_CUDA_V1, ELFOSABI_CUDA_V2 = 0x33, 0x41
SHT_SYMTAB, SHT_NOBITS, SHT_SYMTAB_SHNDX = 2, 8, 18
STT_OBJECT, STT_FUNC = 1, 2
STO_CUDA_ENTRY = 0x10
SHN_UNDEF, SHN_LORESERVE, SHN_XINDEX = 0, 0xFF00, 0xFFFF

FATBIN_MAGIC = 0xBA55ED50
FATBIN_KIND_PTX, FATBIN_KIND_ELF = 1, 2
FATBIN_COMPRESSED = 0x2000 | 0x8000  # the two compression flags nvcc has used

# EIATTR codes (the attribute byte of a .nv.info record) that pappus reads.
EIATTR_MAX_THREADS = 0x05
EIATTR_PARAM_CBANK = 0x0A
EIATTR_EXTERNS = 0x0F
EIATTR_REQNTID = 0x10
EIATTR_FRAME_SIZE = 0x11
EIATTR_MIN_STACK_SIZE = 0x12
EIATTR_KPARAM_INFO = 0x17
EIATTR_CBANK_PARAM_SIZE = 0x19
EIATTR_MAX_STACK_SIZE = 0x23
EIATTR_REGCOUNT = 0x2F
EIATTR_NEED_CNP_WRAPPER = 0x1F
# .nv.info record formats
EIFMT_NVAL, EIFMT_BVAL, EIFMT_HVAL, EIFMT_SVAL = 1, 2, 3, 4

#: Parameter space limits: 4 KiB classic, 32764 bytes from Volta with CUDA 12.1.
MAX_PARAM_BYTES = 32764
#: Shared memory the driver reserves per block, placed inside .nv.shared.<kernel> from sm_90 on.
RESERVED_SHARED_BYTES = 1024
RESERVED_SHARED_SYMBOLS = (".nv.reservedSmem.offset0", "__nv_reservedSMEM_offset_0_alias")

MAX_LIBRARY_BYTES = 512 * 1024 * 1024
MAX_PTX_FUNCTIONS = 2048
MAX_PTX_SHARED_VARIABLES = 256
MAX_SECTIONS = 1 << 16
MAX_SYMBOLS = 1 << 20

HEAP_SYMBOLS = frozenset({"malloc", "free", "__nv_aligned_device_malloc"})
HOSTCALL_SYMBOLS = frozenset({"vprintf", "__assertfail", "__assert_fail"})
#: Device runtime (dynamic parallelism): device-side launches and their parameter buffers.
DEVICE_RUNTIME_PREFIXES = ("cudaLaunchDevice", "cudaGetParameterBuffer", "cudaCG", "cudaDevice",
                           "cudaStream", "cudaEvent", "cudaGetLastError", "cudaPeekAtLastError",
                           "cudaMalloc", "cudaFree", "cudaMemcpy", "cudaMemset", "__cudaCDP")
#: Compiler-made read-only data in .nv.global.init: string literals and __func__ names.
_COMPILER_DATA = re.compile(r"^(\$str(\$\d+)?|__unnamed_\d+|\$[A-Za-z_][\w$]*\$__func__.*)$")


# --- a small, strict ELF64 reader -----------------------------------------------------------


@dataclass(frozen=True)
class Section:
    index: int
    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int
    entsize: int

    @property
    def nobits(self) -> bool:
        return self.type == SHT_NOBITS


@dataclass(frozen=True)
class Symbol:
    index: int
    name: str
    type: int
    bind: int
    other: int
    shndx: int
    value: int
    size: int


@dataclass
class Elf:
    data: bytes
    e_type: int
    osabi: int
    abiversion: int
    flags: int
    sections: list[Section]
    symbols: list[Symbol]

    def section(self, name: str) -> Section | None:
        by_name = self.__dict__.get("_by_name")
        if by_name is None:
            by_name = {}
            for s in self.sections:
                by_name.setdefault(s.name, s)
            self.__dict__["_by_name"] = by_name
        return by_name.get(name)

    def body(self, section: Section) -> bytes:
        if section.nobits:
            return b""
        return self.data[section.offset:section.offset + section.size]


def _u(fmt: str, data: bytes, offset: int, what: str) -> tuple[int, ...]:
    size = struct.calcsize(fmt)
    if offset < 0 or offset + size > len(data):
        raise LibraryError(f"truncated cubin: {what} at byte {offset} needs {size} bytes, the file has {len(data)}")
    return struct.unpack_from(fmt, data, offset)


def _cstr(table: bytes, offset: int, what: str) -> str:
    if offset >= len(table) and offset != 0:
        raise LibraryError(f"corrupt cubin: the name of {what} lies outside its string table")
    end = table.find(b"\0", offset)
    if end < 0:
        raise LibraryError(f"corrupt cubin: the name of {what} is not NUL-terminated")
    raw = table[offset:end]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise LibraryError(f"corrupt cubin: the name of {what} is not UTF-8") from None


def parse_elf(data: bytes) -> Elf:
    """Headers, sections and symbols of a CUDA ELF, every offset checked against the file."""
    if len(data) < 64:
        raise LibraryError(f"truncated cubin: {len(data)} bytes, shorter than an ELF64 header")
    if data[:4] != b"\x7fELF":
        raise LibraryError("not an ELF file")
    if data[4] != 2:
        raise LibraryError("not a 64-bit ELF (cubins are ELF64)")
    if data[5] != 1:
        raise LibraryError("not a little-endian ELF (cubins are little-endian)")
    osabi, abiversion = data[7], data[8]
    (e_type, e_machine, _version, _entry, _phoff, e_shoff, e_flags, _ehsize, _phentsize, _phnum,
     e_shentsize, e_shnum, e_shstrndx) = _u("<HHIQQQIHHHHHH", data, 16, "the ELF header")
    if e_machine != EM_CUDA:
        raise LibraryError(f"ELF for machine {e_machine}, not an NVIDIA cubin (EM_CUDA = {EM_CUDA})")
    if e_type == ET_REL:
        raise LibraryError("relocatable device code (ET_REL, from nvcc -dc/-rdc): link it into a loadable "
                           "cubin first (nvcc -cubin without -rdc, or nvlink -cubin)")
    if e_type != ET_EXEC:
        raise LibraryError(f"cubin of ELF type {e_type}, not a loadable one (ET_EXEC)")
    if e_shoff == 0:
        raise LibraryError("corrupt cubin: no section headers")
    if e_shentsize != 64:
        raise LibraryError(f"corrupt cubin: section header entries of {e_shentsize} bytes (ELF64 has 64)")
    shnum = e_shnum
    if shnum == 0:  # extended numbering: the count is in section 0's sh_size
        shnum = _u("<Q", data, e_shoff + 32, "section header 0")[0]
    if shnum > MAX_SECTIONS:
        raise LibraryError(f"corrupt cubin: {shnum} sections")
    if e_shoff + shnum * 64 > len(data):
        raise LibraryError(f"truncated cubin: the section headers end at byte {e_shoff + shnum * 64}, "
                           f"the file has {len(data)}")
    raw = []
    for i in range(shnum):
        raw.append(struct.unpack_from("<IIQQQQIIQQ", data, e_shoff + i * 64))
    if e_shstrndx == SHN_XINDEX and raw:
        e_shstrndx = raw[0][6]
    if not 0 < e_shstrndx < shnum:
        raise LibraryError(f"corrupt cubin: section-name table index {e_shstrndx} of {shnum} sections")
    for i, (_n, typ, _f, _a, off, size, *_rest) in enumerate(raw):
        if typ != SHT_NOBITS and i and off + size > len(data):
            raise LibraryError(f"truncated or corrupt cubin: section {i} extends past the end of the file "
                               f"(bytes {off}..{off + size} of {len(data)})")
    shstr = raw[e_shstrndx]
    names = data[shstr[4]:shstr[4] + shstr[5]]
    sections = [Section(i, _cstr(names, r[0], f"section {i}") if i else "", r[1], r[2], r[4], r[5], r[6], r[7],
                        r[9]) for i, r in enumerate(raw)]
    elf = Elf(data, e_type, osabi, abiversion, e_flags, sections, [])
    elf.symbols = _symbols(elf)
    return elf


def _symbols(elf: Elf) -> list[Symbol]:
    tabs = [s for s in elf.sections if s.type == SHT_SYMTAB]
    if not tabs:
        raise LibraryError("cubin has no symbol table (.symtab)")
    if len(tabs) > 1:
        raise LibraryError(f"cubin has {len(tabs)} symbol tables; a cubin has one")
    tab = tabs[0]
    if tab.entsize not in (0, 24):
        raise LibraryError(f"corrupt cubin: symbol entries of {tab.entsize} bytes (ELF64 has 24)")
    if tab.size % 24:
        raise LibraryError("corrupt cubin: the symbol table is not a whole number of entries")
    if not 0 < tab.link < len(elf.sections):
        raise LibraryError("corrupt cubin: the symbol table names no string table")
    strings = elf.body(elf.sections[tab.link])
    shndx_tab = next((s for s in elf.sections if s.type == SHT_SYMTAB_SHNDX), None)
    xindex = elf.body(shndx_tab) if shndx_tab else b""
    count = tab.size // 24
    if count > MAX_SYMBOLS:
        raise LibraryError(f"corrupt cubin: {count} symbols")
    body = elf.body(tab)
    out = []
    for i in range(count):
        st_name, st_info, st_other, st_shndx, st_value, st_size = struct.unpack_from("<IBBHQQ", body, i * 24)
        if st_shndx == SHN_XINDEX:
            if len(xindex) < (i + 1) * 4:
                raise LibraryError(f"corrupt cubin: symbol {i} needs .symtab_shndx, which is missing or short")
            st_shndx = struct.unpack_from("<I", xindex, i * 4)[0]
        elif st_shndx >= SHN_LORESERVE:
            st_shndx = 0 if st_shndx != 0xFFF1 else st_shndx  # SHN_ABS kept, others ignored
        if 0 < st_shndx < SHN_LORESERVE and st_shndx >= len(elf.sections):
            raise LibraryError(f"corrupt cubin: symbol {i} points at section {st_shndx} of {len(elf.sections)}")
        out.append(Symbol(i, _cstr(strings, st_name, f"symbol {i}"), st_info & 0xF, st_info >> 4, st_other,
                          st_shndx, st_value, st_size))
    return out


def cubin_arch(elf: Elf) -> int:
    """The SM version a cubin was built for (90 for sm_90): e_flags bits 8..15 in the ELF ABI that
    CUDA 12.8+ writes (OS ABI 0x41), bits 0..7 before (OS ABI 0x33)."""
    if elf.osabi == ELFOSABI_CUDA_V1 or elf.abiversion < 8:
        return elf.flags & 0xFF
    return (elf.flags >> 8) & 0xFF


# --- .nv.info records -------------------------------------------------------------------------


@dataclass(frozen=True)
class Attr:
    code: int
    fmt: int
    value: int  # NVAL/BVAL/HVAL: the value; SVAL: the payload size
    payload: bytes = b""


def parse_info(body: bytes, where: str) -> list[Attr]:
    """The records of one ``.nv.info`` section: ``[fmt u8][attr u8][u16]``, SVAL followed by u16 bytes."""
    out: list[Attr] = []
    i = 0
    while i < len(body):
        if i + 4 > len(body):
            raise LibraryError(f"corrupt cubin: {where} ends inside a record header")
        fmt, code, value = struct.unpack_from("<BBH", body, i)
        i += 4
        if fmt == EIFMT_SVAL:
            if i + value > len(body):
                raise LibraryError(f"corrupt cubin: a record of {where} claims {value} bytes, "
                                   f"{len(body) - i} are left")
            out.append(Attr(code, fmt, value, body[i:i + value]))
            i += value
        elif fmt in (EIFMT_NVAL, EIFMT_BVAL, EIFMT_HVAL):
            out.append(Attr(code, fmt, value))
        else:
            raise LibraryError(f"corrupt cubin: unknown record format {fmt:#x} in {where}")
    return out


@dataclass(frozen=True)
class RawParam:
    ordinal: int
    offset: int
    size: int
    log_align: int
    space: int
    cbank: int


def kparam_info(payload: bytes, where: str) -> RawParam:
    """EIATTR_KPARAM_INFO: u32 index, u16 ordinal, u16 offset, u32 bits (size << 18 | cbank << 12 |
    space << 8 | pointee log2-alignment), as cuobjdump --dump-elf prints them."""
    if len(payload) != 12:
        raise LibraryError(f"corrupt cubin: a parameter record of {where} has {len(payload)} bytes, not 12")
    _index, ordinal, offset, bits = struct.unpack("<IHHI", payload)
    return RawParam(ordinal, offset, bits >> 18, bits & 0xFF, (bits >> 8) & 0xF, (bits >> 12) & 0x1F)


def _u32s(payload: bytes, where: str) -> list[int]:
    if len(payload) % 4:
        raise LibraryError(f"corrupt cubin: {where} is not a list of 32-bit values")
    return list(struct.unpack(f"<{len(payload) // 4}I", payload))


# --- cubin -> LibraryInfo -----------------------------------------------------------------------


@dataclass
class _Kernel:
    symbol: Symbol
    attrs: list[Attr] = field(default_factory=list)


def read_cubin(data: bytes, *, allow_writable_globals: bool = False) -> LibraryInfo:
    elf = parse_elf(data)
    arch = cubin_arch(elf)
    if arch < 30 or arch > 250:
        raise LibraryError(f"corrupt cubin: e_flags {elf.flags:#x} name no plausible SM version ({arch})")
    sections = elf.sections
    by_index = {s.index: s for s in sections}
    notes: list[str] = [f"cubin for sm_{arch}"]

    undefined = {s.index: s.name for s in elf.symbols if s.shndx == SHN_UNDEF and s.type == STT_FUNC and s.name}
    kernels: dict[str, _Kernel] = {}
    for sym in elf.symbols:
        if sym.type != STT_FUNC or sym.shndx in (SHN_UNDEF,) or sym.shndx >= len(sections) or not sym.name:
            continue
        sec = by_index[sym.shndx]
        if sec.name != f".text.{sym.name}":
            continue  # a device function compiled into some kernel's section
        info = elf.section(f".nv.info.{sym.name}")
        if not (sym.other & STO_CUDA_ENTRY) and info is None:
            continue
        if sym.name in kernels:
            raise LibraryError(f"corrupt cubin: kernel {sym.name!r} is defined twice")
        kernels[sym.name] = _Kernel(sym, parse_info(elf.body(info), f".nv.info.{sym.name}") if info else [])
    if not kernels:
        raise LibraryError("the cubin defines no kernels (no __global__ entry points)")

    # Per-function facts from the object-wide .nv.info, keyed by symbol index.
    frame: dict[int, int] = {}
    stack: dict[int, int] = {}
    regs: dict[int, int] = {}
    common = elf.section(".nv.info")
    if common is not None:
        for a in parse_info(elf.body(common), ".nv.info"):
            if a.fmt == EIFMT_SVAL and a.code in (EIATTR_FRAME_SIZE, EIATTR_MIN_STACK_SIZE, EIATTR_MAX_STACK_SIZE,
                                                   EIATTR_REGCOUNT):
                if len(a.payload) != 8:
                    raise LibraryError(f"corrupt cubin: a per-function record of .nv.info has {len(a.payload)} bytes")
                idx, value = struct.unpack("<II", a.payload)
                target = {EIATTR_FRAME_SIZE: frame, EIATTR_REGCOUNT: regs}.get(a.code, stack)
                target[idx] = max(target.get(idx, 0), value)

    reserved = any(s.name in RESERVED_SHARED_SYMBOLS for s in elf.symbols)
    heap_anywhere = sorted({n for n in undefined.values() if n in HEAP_SYMBOLS})
    calls_anywhere = sorted({n for n in undefined.values() if _is_hostcall(n)})
    unknown_externs = sorted({n for n in undefined.values() if n not in HEAP_SYMBOLS and not _is_hostcall(n)})
    if unknown_externs:
        notes.append(f"undefined external functions the driver must resolve: {', '.join(unknown_externs)}")
    attributed: set[str] = set()

    infos: dict[str, KernelInfo] = {}
    for name, k in kernels.items():
        where = f"kernel {name!r}"
        raw_params: list[RawParam] = []
        cbank_size: int | None = None
        max_threads: int | None = None
        externs: list[str] | None = None
        knotes: list[str] = []
        for a in k.attrs:
            if a.code == EIATTR_KPARAM_INFO and a.fmt == EIFMT_SVAL:
                raw_params.append(kparam_info(a.payload, f".nv.info.{name}"))
            elif a.code == EIATTR_CBANK_PARAM_SIZE and a.fmt == EIFMT_HVAL:
                cbank_size = a.value
            elif a.code in (EIATTR_MAX_THREADS, EIATTR_REQNTID) and a.fmt == EIFMT_SVAL:
                dims = _u32s(a.payload, f"the launch bounds of {where}")
                if len(dims) != 3:
                    raise LibraryError(f"corrupt cubin: the launch bounds of {where} have {len(dims)} values")
                threads = dims[0] * dims[1] * dims[2]
                if threads:
                    max_threads = threads if max_threads is None else min(max_threads, threads)
                if a.code == EIATTR_REQNTID:
                    knotes.append(f"requires exactly {dims[0]}x{dims[1]}x{dims[2]} threads per block")
            elif a.code == EIATTR_EXTERNS and a.fmt == EIFMT_SVAL:
                externs = externs or []
                for idx in _u32s(a.payload, f"the external calls of {where}"):
                    if idx >= len(elf.symbols):
                        raise LibraryError(f"corrupt cubin: {where} calls symbol {idx} of {len(elf.symbols)}")
                    externs.append(elf.symbols[idx].name)
            elif a.code == EIATTR_NEED_CNP_WRAPPER:
                knotes.append("uses the device runtime (dynamic parallelism)")
        params = _params(raw_params, cbank_size, where)

        shared = 0
        sec = elf.section(f".nv.shared.{name}")
        if sec is not None:
            shared = sec.size
            if reserved and arch >= 90 and shared >= RESERVED_SHARED_BYTES:
                shared -= RESERVED_SHARED_BYTES

        if externs is not None:
            attributed.update(externs)
            uses_heap = any(n in HEAP_SYMBOLS for n in externs)
            hostcalls = [n for n in externs if _is_hostcall(n) or n in unknown_externs]
        else:
            uses_heap, hostcalls = False, []
        if uses_heap:
            knotes.append("calls device malloc/free")
        if hostcalls:
            knotes.append(f"calls {', '.join(sorted(set(hostcalls)))} (printf, assert or the device runtime)")
        infos[name] = KernelInfo(
            name=name, params=params, static_shared_bytes=shared,
            private_bytes=max(frame.get(k.symbol.index, 0), stack.get(k.symbol.index, 0)),
            uses_heap=uses_heap, uses_hostcall=bool(hostcalls), max_block_threads=max_threads,
            notes=tuple(knotes + ([f"{regs[k.symbol.index]} registers"] if k.symbol.index in regs else [])),
        )

    # An external the object references but no kernel's EXTERNS list accounts for: the calling
    # kernel cannot be told, so every kernel is flagged (refusing is the safe answer).
    orphans = set(heap_anywhere + calls_anywhere + unknown_externs) - attributed
    if orphans:
        heap = any(n in HEAP_SYMBOLS for n in orphans)
        call = any(n not in HEAP_SYMBOLS for n in orphans)
        note = (f"the object calls {', '.join(sorted(orphans))} from code no kernel's EIATTR_EXTERNS accounts for; "
                "every kernel of the object is flagged")
        for name, info in list(infos.items()):
            infos[name] = KernelInfo(info.name, info.params, info.static_shared_bytes, info.private_bytes,
                                     info.uses_heap or heap, info.uses_hostcall or call, info.max_block_threads,
                                     info.notes + (note,))

    globals_ = writable_globals(elf)
    if globals_:
        listed = ", ".join(globals_[:8]) + (" ..." if len(globals_) > 8 else "")
        if not allow_writable_globals:
            raise LibraryError(f"the cubin has writable device globals ({listed}): they keep their values between "
                               "invocations of a cached module; make them kernel parameters or local variables "
                               "(or set PAPPUS_CUDA_ALLOW_WRITABLE_GLOBALS=1 for trusted code)")
        notes.append(f"writable device globals allowed: {listed}")
    if reserved and arch >= 90:
        notes.append(f"static shared sizes exclude the {RESERVED_SHARED_BYTES} bytes the driver reserves per block")
    return LibraryInfo(format="cubin", target=f"sm_{arch}", kernels=infos, size=len(data), notes=tuple(notes))


def _is_hostcall(name: str) -> bool:
    return name in HOSTCALL_SYMBOLS or name.startswith(DEVICE_RUNTIME_PREFIXES)


def _params(raw: list[RawParam], cbank_size: int | None, where: str) -> tuple[KernelParam, ...]:
    if not raw:
        if cbank_size:
            raise LibraryError(f"corrupt cubin: {where} has {cbank_size} bytes of parameters but no parameter records")
        return ()
    ordered = sorted(raw, key=lambda p: p.ordinal)
    if [p.ordinal for p in ordered] != list(range(len(ordered))):
        raise LibraryError(f"corrupt cubin: the parameter ordinals of {where} are "
                           f"{[p.ordinal for p in ordered]}, not 0..{len(ordered) - 1}")
    end = 0
    for p in ordered:
        if p.size == 0:
            raise LibraryError(f"corrupt cubin: parameter {p.ordinal} of {where} has size 0")
        if p.offset < end:
            raise LibraryError(f"corrupt cubin: parameter {p.ordinal} of {where} at offset {p.offset} overlaps "
                               f"the previous one (which ends at {end})")
        end = p.offset + p.size
    if end > MAX_PARAM_BYTES:
        raise LibraryError(f"corrupt cubin: the parameters of {where} span {end} bytes; the limit is {MAX_PARAM_BYTES}")
    if cbank_size is not None and end > cbank_size:
        raise LibraryError(f"corrupt cubin: the parameters of {where} end at byte {end} but the parameter bank "
                           f"holds {cbank_size}")
    return tuple(KernelParam(size=p.size, kind=ParamKind.BYTES, offset=p.offset) for p in ordered)


def writable_globals(elf: Elf) -> list[str]:
    """``__device__`` variables: named objects in .nv.global (zeroed) or .nv.global.init (initialised)."""
    homes = {s.index for s in elf.sections if s.name in (".nv.global", ".nv.global.init")}
    return sorted(s.name for s in elf.symbols
                  if s.type == STT_OBJECT and s.shndx in homes and s.name and not _COMPILER_DATA.match(s.name))


# --- PTX ------------------------------------------------------------------------------------------

_PTX_TARGET = re.compile(r"^\s*\.target\s+([A-Za-z0-9_,\s]+?)\s*$", re.M)
_PTX_ENTRY = re.compile(r"\.entry\s+([A-Za-z_$%][\w$%]*)\s*\(")
_PTX_PARAM = re.compile(
    r"^\.param\s+(?:\.align\s+(\d+)\s+)?\.(u8|u16|u32|u64|s8|s16|s32|s64|b8|b16|b32|b64|f16|f32|f64)"
    r"(?:\s+\.ptr(?:\s+\.(?:global|shared|local|const))?(?:\s+\.align\s+\d+)?)?"
    r"\s+([A-Za-z_$%][\w$%]*)\s*(?:\[(\d+)\])?$")
_PTX_CALL = re.compile(r"\bcall(?:\.uni)?\s+(?:\([^)]*\)\s*,\s*)?([A-Za-z_$%][\w$%]*)")
_PTX_SHARED = re.compile(r"\.shared\s+(?:\.align\s+(\d+)\s+)?\.(?:[bsuf])(8|16|32|64)\s+([A-Za-z_$%][\w$%]*)"
                         r"((?:\[\d*\])*)\s*;")
_PTX_BOUNDS = re.compile(r"\.(maxntid|reqntid)\s+(\d+)(?:\s*,\s*(\d+))?(?:\s*,\s*(\d+))?")
_PTX_GLOBAL = re.compile(r"^\s*(?:\.visible\s+|\.weak\s+)?\.global\s+(?:\.align\s+\d+\s+)?\.[a-z]\d+\s+([A-Za-z_$%][\w$%]*)",
                         re.M)
_PTX_IDENT = re.compile(r"[A-Za-z_$%][\w$%]*")
_TYPE_SIZES = {"8": 1, "16": 2, "32": 4, "64": 8}


def _strip_ptx_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def _ptx_blocks(text: str) -> list[tuple[str, str, str, int]]:
    """(kind, name, header, body) of every .entry and .func with a body, by brace matching."""
    out: list[tuple[str, str, str, int]] = []
    for m in re.finditer(r"\.(entry|func)\b", text):
        kind = m.group(1)
        rest = text[m.end():]
        nm = re.match(r"\s*(?:\([^)]*\)\s*)?([A-Za-z_$%][\w$%]*)", rest)
        if not nm:
            raise LibraryError(f"malformed PTX: a .{kind} without a name")
        name = nm.group(1)
        # header: up to the first "{" or ";" (a declaration without body)
        j = m.end() + nm.end()
        depth = 0
        while j < len(text):
            ch = text[j]
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            elif depth == 0 and ch in "{;":
                break
            j += 1
        if j >= len(text):
            raise LibraryError(f"malformed PTX: .{kind} {name} is cut off")
        header = text[m.end() + nm.end():j]
        if text[j] == ";":
            out.append((kind, name, header, -1))
            continue
        out.append((kind, name, header, j))
    return out


def _match_brace(text: str, start: int, name: str) -> str:
    depth = 0
    for k in range(start, len(text)):
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:k]
    raise LibraryError(f"malformed PTX: the body of {name} is not closed")


def read_ptx(data: bytes, *, allow_writable_globals: bool = False) -> LibraryInfo:
    if b"\0" in data.rstrip(b"\0"):
        raise LibraryError("not PTX: the text contains NUL bytes")
    try:
        text = data.rstrip(b"\0").decode("ascii")
    except UnicodeDecodeError:
        raise LibraryError("not PTX: the text is not ASCII") from None
    text = _strip_ptx_comments(text)
    if not re.search(r"^\s*\.version\s+\d+\.\d+", text, re.M):
        raise LibraryError("not PTX: no .version directive")
    tm = _PTX_TARGET.search(text)
    if not tm:
        raise LibraryError("malformed PTX: no .target directive")
    target = tm.group(1).split(",")[0].strip()
    if not re.fullmatch(r"sm_\d+[af]?", target):
        raise LibraryError(f"malformed PTX: .target {target!r} is not an sm_XX target")
    blocks = _ptx_blocks(text)
    bodies: dict[str, str] = {}
    headers: dict[str, tuple[str, str]] = {}
    declared: set[str] = set()
    for kind, name, header, start in blocks:
        if start < 0:
            declared.add(name)
            continue
        if name in bodies:
            raise LibraryError(f"malformed PTX: {name} is defined twice")
        bodies[name] = _match_brace(text, start, name)
        headers[name] = (kind, header)
    entries = [n for n, (k, _) in headers.items() if k == "entry"]
    if not entries:
        raise LibraryError("the PTX defines no kernels (.entry)")
    if len(bodies) > MAX_PTX_FUNCTIONS:
        raise LibraryError(f"the PTX defines {len(bodies)} functions; the limit is {MAX_PTX_FUNCTIONS}")
    module_shared = {m.group(3): _shared_size(m) for m in _PTX_SHARED.finditer(_outside_bodies(text, blocks))}
    if len(module_shared) > MAX_PTX_SHARED_VARIABLES:
        raise LibraryError(f"the PTX declares {len(module_shared)} module-scope .shared variables; the limit is "
                           f"{MAX_PTX_SHARED_VARIABLES}")
    calls = {name: set(_PTX_CALL.findall(body)) for name, body in bodies.items()}
    # which module-scope .shared variables each function names (one tokenisation per body)
    shared_uses = {name: {t for t in _PTX_IDENT.findall(body) if t in module_shared} if module_shared else set()
                   for name, body in bodies.items()}
    globals_ = sorted(g for g in set(_PTX_GLOBAL.findall(_outside_bodies(text, blocks))) if not _COMPILER_DATA.match(g))
    if globals_ and not allow_writable_globals:
        raise LibraryError(f"the PTX has writable device globals ({', '.join(globals_[:8])}): they keep their values "
                           "between invocations of a cached module; make them kernel parameters or local variables "
                           "(or set PAPPUS_CUDA_ALLOW_WRITABLE_GLOBALS=1 for trusted code)")

    kernels: dict[str, KernelInfo] = {}
    for name in entries:
        _, header = headers[name]
        params = _ptx_params(header, name)
        reach = _closure(name, calls)
        externs = {c for c in reach if c not in bodies}
        heap = sorted(c for c in externs if c in HEAP_SYMBOLS)
        hostcalls = sorted(c for c in externs if c not in HEAP_SYMBOLS)
        body = bodies[name]
        shared = sum(_shared_size(m) for m in _PTX_SHARED.finditer(body))
        used: set[str] = set()
        for f in reach | {name}:
            used |= shared_uses.get(f, set())
        shared += sum(module_shared[sym] for sym in used)
        max_threads = None
        knotes = []
        for bm in _PTX_BOUNDS.finditer(header):
            dims = [int(d) for d in bm.groups()[1:] if d]
            threads = 1
            for d in dims:
                threads *= d
            max_threads = threads if max_threads is None else min(max_threads, threads)
            if bm.group(1) == "reqntid":
                knotes.append(f"requires exactly {'x'.join(map(str, dims))} threads per block")
        if heap:
            knotes.append("calls device malloc/free")
        if hostcalls:
            knotes.append(f"calls {', '.join(hostcalls)} (printf, assert, the device runtime or unknown externals)")
        kernels[name] = KernelInfo(name=name, params=params, static_shared_bytes=shared, uses_heap=bool(heap),
                                   uses_hostcall=bool(hostcalls), max_block_threads=max_threads, notes=tuple(knotes))
    notes = [f"PTX for {target} (compiled by the driver at load time)"]
    if globals_:
        notes.append(f"writable device globals allowed: {', '.join(globals_[:8])}")
    return LibraryInfo(format="ptx", target=target, kernels=kernels, size=len(data), notes=tuple(notes))


def _outside_bodies(text: str, blocks: list[tuple[str, str, str, int]]) -> str:
    out, pos = [], 0
    for _kind, name, _header, start in sorted((b for b in blocks if b[3] >= 0), key=lambda b: b[3]):
        if start < pos:
            continue
        out.append(text[pos:start])
        body = _match_brace(text, start, name)
        pos = start + len(body) + 2
    out.append(text[pos:])
    return "".join(out)


def _shared_size(m: re.Match[str]) -> int:
    elem = _TYPE_SIZES[m.group(2)]
    dims = re.findall(r"\[(\d*)\]", m.group(4) or "")
    if any(d == "" for d in dims):
        return 0  # extern/dynamic
    count = 1
    for d in dims:
        count *= int(d)
    return elem * count


def _closure(start: str, calls: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        fn = todo.pop()
        for callee in calls.get(fn, ()):
            if callee not in seen:
                seen.add(callee)
                todo.append(callee)
    return seen


def _ptx_params(header: str, kernel: str) -> tuple[KernelParam, ...]:
    h = header.strip()
    if not h.startswith("("):
        raise LibraryError(f"malformed PTX: the parameter list of {kernel} is missing")
    depth, end = 0, -1
    for i, ch in enumerate(h):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                end = i
                break
    if end < 0:
        raise LibraryError(f"malformed PTX: the parameter list of {kernel} is not closed")
    inner = " ".join(h[1:end].split())
    if not inner:
        return ()
    params: list[KernelParam] = []
    offset = 0
    for i, decl in enumerate(p.strip() for p in inner.split(",")):
        m = _PTX_PARAM.match(decl)
        if not m:
            raise LibraryError(f"malformed PTX: parameter {i} of {kernel} ({decl[:80]!r}) is not "
                               "'.param [.align N] .type name[[count]]'")
        align_s, typ, pname, count_s = m.groups()
        elem = _TYPE_SIZES[typ[1:]]
        count = int(count_s) if count_s else 1
        if count == 0:
            raise LibraryError(f"malformed PTX: parameter {i} of {kernel} has size 0")
        size = elem * count
        align = int(align_s) if align_s else elem
        if align <= 0 or align & (align - 1):
            raise LibraryError(f"malformed PTX: parameter {i} of {kernel} has alignment {align}")
        offset = (offset + align - 1) & ~(align - 1)
        kind = ParamKind.FLOAT if typ in ("f32", "f64") and count == 1 else (
            ParamKind.INT if typ.startswith("s") and count == 1 else ParamKind.BYTES)
        params.append(KernelParam(size=size, kind=kind, offset=offset, name=pname))
        offset += size
    if offset > MAX_PARAM_BYTES:
        raise LibraryError(f"the parameters of {kernel} span {offset} bytes; the limit is {MAX_PARAM_BYTES}")
    return tuple(params)


# --- fatbin ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FatbinEntry:
    kind: str  # "cubin" | "ptx"
    arch: int
    offset: int
    size: int
    compressed: bool

    @property
    def label(self) -> str:
        return f"{'sm' if self.kind == 'cubin' else 'compute'}_{self.arch} {self.kind}" + (
            " (compressed)" if self.compressed else "")


def fatbin_entries(data: bytes) -> list[FatbinEntry]:
    """The entries of a fatbin container (``nvcc -fatbin``): 16-byte header, then entries of
    ``kind u16, version u16, header size u32, payload size u64, ..., arch u32 @0x1c, flags u64 @0x28``."""
    if len(data) < 16:
        raise LibraryError(f"truncated fatbin: {len(data)} bytes")
    magic, _version, header_size, fat_size = struct.unpack_from("<IHHQ", data, 0)
    if magic != FATBIN_MAGIC:
        raise LibraryError("not a fatbin")
    if header_size < 16 or header_size + fat_size > len(data):
        raise LibraryError(f"truncated fatbin: it claims {header_size + fat_size} bytes, the file has {len(data)}")
    end = header_size + fat_size
    out: list[FatbinEntry] = []
    off = header_size
    while off < end:
        if off + 0x30 > end:
            raise LibraryError(f"truncated fatbin: entry {len(out)} is cut off")
        kind, _ver, ehsize, psize = struct.unpack_from("<HHIQ", data, off)
        (arch,) = struct.unpack_from("<I", data, off + 0x1C)
        (flags,) = struct.unpack_from("<Q", data, off + 0x28)
        if ehsize < 0x30 or off + ehsize + psize > end:
            raise LibraryError(f"corrupt fatbin: entry {len(out)} (header {ehsize} bytes, payload {psize}) lies "
                               "outside the container")
        if kind not in (FATBIN_KIND_PTX, FATBIN_KIND_ELF):
            raise LibraryError(f"corrupt fatbin: entry {len(out)} is of unknown kind {kind}")
        out.append(FatbinEntry("ptx" if kind == FATBIN_KIND_PTX else "cubin", arch, off + ehsize, psize,
                               bool(flags & FATBIN_COMPRESSED)))
        off += ehsize + psize
        if len(out) > 4096:
            raise LibraryError("corrupt fatbin: more than 4096 entries")
    if not out:
        raise LibraryError("the fatbin has no entries")
    return out


def parse_arch(target: str | None) -> int | None:
    """90 for "sm_90", "sm_90a", "compute_90" or "90"; None for nothing."""
    if not target:
        return None
    m = re.fullmatch(r"(?:sm_|compute_)?(\d+)[af]?", target.strip())
    if not m:
        raise LibraryError(f"{target!r} is not an NVIDIA target (expected e.g. sm_90)", path="target")
    return int(m.group(1))


def cubin_runs_on(cubin_arch_: int, device_arch: int) -> bool:
    """A cubin runs on GPUs of its major version with an equal or higher minor version."""
    return cubin_arch_ // 10 == device_arch // 10 and cubin_arch_ <= device_arch


def select_entry(entries: list[FatbinEntry], device_arch: int | None) -> FatbinEntry:
    """The entry the device runs: the newest compatible cubin, else the newest PTX it can JIT."""
    readable = [e for e in entries if not e.compressed]
    if device_arch is None:
        pool = readable or entries
        cubins = sorted((e for e in pool if e.kind == "cubin"), key=lambda e: e.arch)
        choice = cubins[-1] if cubins else max(pool, key=lambda e: e.arch)
    else:
        cubins = sorted((e for e in entries if e.kind == "cubin" and cubin_runs_on(e.arch, device_arch)),
                        key=lambda e: e.arch)
        ptxs = sorted((e for e in entries if e.kind == "ptx" and e.arch <= device_arch), key=lambda e: e.arch)
        if cubins:
            choice = cubins[-1]
        elif ptxs:
            choice = ptxs[-1]
        else:
            have = ", ".join(e.label for e in entries)
            raise LibraryError(f"the fatbin has no code for sm_{device_arch} (it has: {have})")
    if choice.compressed:
        raise LibraryError(f"the fatbin entry for this GPU ({choice.label}) is compressed, which pappus cannot "
                           "validate; rebuild with nvcc -no-compress (pappus build does)")
    return choice


# --- entry point ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inspected:
    """A library as validated: its facts and exactly the bytes to hand the driver."""

    library: LibraryInfo
    image: bytes  # cubin, or NUL-terminated PTX
    kind: str  # "cubin" | "ptx"


def detect(data: bytes) -> str:
    if data[:4] == b"\x7fELF":
        return "cubin"
    if len(data) >= 4 and struct.unpack_from("<I", data, 0)[0] == FATBIN_MAGIC:
        return "fatbin"
    head = data[:4096].lstrip()
    if head.startswith((b"//", b".version", b"/*", b".target")) or b".version" in head[:2048]:
        return "ptx"
    return "unknown"


def inspect(data: bytes, target: str | None = None, *, allow_writable_globals: bool = False) -> Inspected:
    """Validate a library for a device of ``target`` (sm_XX; None: no device known)."""
    try:
        return _inspect(bytes(data), target, allow_writable_globals)
    except LibraryError:
        raise
    except (RecursionError, MemoryError):
        raise LibraryError("the library is too large or too deeply nested to inspect") from None
    except Exception as exc:  # belt and braces: a reader bug must still read as a rejected library
        raise LibraryError(f"the library cannot be read: {type(exc).__name__}: {exc}") from None


def _inspect(data: bytes, target: str | None, allow: bool) -> Inspected:
    if not data:
        raise LibraryError("the library is empty")
    if len(data) > MAX_LIBRARY_BYTES:
        raise LibraryError(f"the library is {len(data)} bytes; the limit is {MAX_LIBRARY_BYTES}")
    device_arch = parse_arch(target)
    kind = detect(data)
    if kind == "cubin":
        info = read_cubin(data, allow_writable_globals=allow)
        _check_arch(info, device_arch)
        return Inspected(info, data, "cubin")
    if kind == "ptx":
        info = read_ptx(data, allow_writable_globals=allow)
        _check_arch(info, device_arch)
        return Inspected(info, data.rstrip(b"\0") + b"\0", "ptx")
    if kind == "fatbin":
        entries = fatbin_entries(data)
        choice = select_entry(entries, device_arch)
        payload = data[choice.offset:choice.offset + choice.size]
        inner = _inspect(payload, None, allow)
        if inner.kind != choice.kind:
            raise LibraryError(f"corrupt fatbin: the {choice.label} entry holds {inner.kind}")
        # every other readable entry must be acceptable too (no hidden writable globals etc.)
        for e in entries:
            if e is not choice and not e.compressed:
                _inspect(data[e.offset:e.offset + e.size], None, allow)
        listing = ", ".join(e.label for e in entries)
        lib = inner.library
        info = LibraryInfo(format="fatbin", target=lib.target, kernels=lib.kernels, size=len(data),
                           notes=(f"fatbin entries: {listing}", f"selected: {choice.label}") + lib.notes)
        return Inspected(info, inner.image, inner.kind)
    raise LibraryError("not an NVIDIA code object: expected a cubin (ELF), a fatbin or PTX text")


def _check_arch(info: LibraryInfo, device_arch: int | None) -> None:
    if device_arch is None:
        return
    arch = parse_arch(info.target)
    assert arch is not None
    if info.format == "ptx":
        if arch > device_arch:
            raise LibraryError(f"PTX for {info.target} cannot be compiled for sm_{device_arch} (it needs a GPU of "
                               f"{info.target} or newer)")
    elif not cubin_runs_on(arch, device_arch):
        raise LibraryError(f"a cubin for {info.target} cannot run on sm_{device_arch} (a cubin runs on its own "
                           "major version with an equal or higher minor); rebuild for this GPU or ship PTX")


def read_library(data: bytes, target: str | None = None, *, allow_writable_globals: bool = False) -> LibraryInfo:
    """:class:`LibraryInfo` of a cubin, PTX or fatbin; raises LibraryError with the reason."""
    return inspect(data, target, allow_writable_globals=allow_writable_globals).library


def kernel_names(info: LibraryInfo) -> Iterable[str]:
    return sorted(info.kernels)
