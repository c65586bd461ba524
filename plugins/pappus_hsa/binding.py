"""cffi (ABI mode) binding to the few parts of ``libhsa-runtime64`` the fault monitor needs.

Every declaration in :data:`CDEF` is copied from the installed ROCm headers (``hsa/hsa.h`` and
``hsa/hsa_ext_amd.h``, ROCm 5.2 as shipped by Debian); nothing is compiled against them at run
time. ``tests/hsa/test_layout.py`` compiles a small C program against the real headers and checks
that every size, field offset and constant below matches, so the Python view cannot drift.

Importing this module parses the declarations (a few milliseconds, pycparser) but opens no
library: :func:`load` does that, on first use.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import threading
from dataclasses import dataclass
from typing import Any

import cffi

#: Declarations copied from the ROCm 5.2 headers. Keep them verbatim (only comments and the
#: ``HSA_API`` decoration dropped; ``hsa_init()`` spelled ``hsa_init(void)``).
CDEF = r"""
/* hsa/hsa.h */
typedef enum {
  HSA_STATUS_SUCCESS = 0x0,
  HSA_STATUS_INFO_BREAK = 0x1,
  HSA_STATUS_ERROR = 0x1000,
  HSA_STATUS_ERROR_INVALID_ARGUMENT = 0x1001,
  HSA_STATUS_ERROR_INVALID_QUEUE_CREATION = 0x1002,
  HSA_STATUS_ERROR_INVALID_ALLOCATION = 0x1003,
  HSA_STATUS_ERROR_INVALID_AGENT = 0x1004,
  HSA_STATUS_ERROR_INVALID_REGION = 0x1005,
  HSA_STATUS_ERROR_INVALID_SIGNAL = 0x1006,
  HSA_STATUS_ERROR_INVALID_QUEUE = 0x1007,
  HSA_STATUS_ERROR_OUT_OF_RESOURCES = 0x1008,
  HSA_STATUS_ERROR_INVALID_PACKET_FORMAT = 0x1009,
  HSA_STATUS_ERROR_RESOURCE_FREE = 0x100A,
  HSA_STATUS_ERROR_NOT_INITIALIZED = 0x100B,
  HSA_STATUS_ERROR_REFCOUNT_OVERFLOW = 0x100C,
  HSA_STATUS_ERROR_INCOMPATIBLE_ARGUMENTS = 0x100D,
  HSA_STATUS_ERROR_INVALID_INDEX = 0x100E,
  HSA_STATUS_ERROR_INVALID_ISA = 0x100F,
  HSA_STATUS_ERROR_INVALID_ISA_NAME = 0x1017,
  HSA_STATUS_ERROR_INVALID_CODE_OBJECT = 0x1010,
  HSA_STATUS_ERROR_INVALID_EXECUTABLE = 0x1011,
  HSA_STATUS_ERROR_FROZEN_EXECUTABLE = 0x1012,
  HSA_STATUS_ERROR_INVALID_SYMBOL_NAME = 0x1013,
  HSA_STATUS_ERROR_VARIABLE_ALREADY_DEFINED = 0x1014,
  HSA_STATUS_ERROR_VARIABLE_UNDEFINED = 0x1015,
  HSA_STATUS_ERROR_EXCEPTION = 0x1016,
  HSA_STATUS_ERROR_INVALID_CODE_SYMBOL = 0x1018,
  HSA_STATUS_ERROR_INVALID_EXECUTABLE_SYMBOL = 0x1019,
  HSA_STATUS_ERROR_INVALID_FILE = 0x1020,
  HSA_STATUS_ERROR_INVALID_CODE_OBJECT_READER = 0x1021,
  HSA_STATUS_ERROR_INVALID_CACHE = 0x1022,
  HSA_STATUS_ERROR_INVALID_WAVEFRONT = 0x1023,
  HSA_STATUS_ERROR_INVALID_SIGNAL_GROUP = 0x1024,
  HSA_STATUS_ERROR_INVALID_RUNTIME_STATE = 0x1025,
  HSA_STATUS_ERROR_FATAL = 0x1026
} hsa_status_t;

hsa_status_t hsa_status_string(
    hsa_status_t status,
    const char ** status_string);

hsa_status_t hsa_init(void);

hsa_status_t hsa_shut_down(void);

typedef struct hsa_agent_s {
  uint64_t handle;
} hsa_agent_t;

/* hsa/hsa_ext_amd.h */
enum {
  HSA_STATUS_ERROR_INVALID_MEMORY_POOL = 40,
  HSA_STATUS_ERROR_MEMORY_APERTURE_VIOLATION = 41,
  HSA_STATUS_ERROR_ILLEGAL_INSTRUCTION = 42,
  HSA_STATUS_ERROR_MEMORY_FAULT = 43,
  HSA_STATUS_CU_MASK_REDUCED = 44,
};

typedef enum hsa_amd_event_type_s {
  HSA_AMD_GPU_MEMORY_FAULT_EVENT = 0,
} hsa_amd_event_type_t;

typedef enum {
  HSA_AMD_MEMORY_FAULT_PAGE_NOT_PRESENT = 1 << 0,
  HSA_AMD_MEMORY_FAULT_READ_ONLY = 1 << 1,
  HSA_AMD_MEMORY_FAULT_NX = 1 << 2,
  HSA_AMD_MEMORY_FAULT_HOST_ONLY = 1 << 3,
  HSA_AMD_MEMORY_FAULT_DRAMECC = 1 << 4,
  HSA_AMD_MEMORY_FAULT_IMPRECISE = 1 << 5,
  HSA_AMD_MEMORY_FAULT_SRAMECC = 1 << 6,
  HSA_AMD_MEMORY_FAULT_HANG = 1 << 31
} hsa_amd_memory_fault_reason_t;

typedef struct hsa_amd_gpu_memory_fault_info_s {
  hsa_agent_t agent;
  uint64_t virtual_address;
  uint32_t fault_reason_mask;
} hsa_amd_gpu_memory_fault_info_t;

typedef struct hsa_amd_event_s {
  hsa_amd_event_type_t event_type;
  union {
    hsa_amd_gpu_memory_fault_info_t memory_fault;
  };
} hsa_amd_event_t;

typedef hsa_status_t (*hsa_amd_system_event_callback_t)(const hsa_amd_event_t* event, void* data);

hsa_status_t hsa_amd_register_system_event_handler(hsa_amd_system_event_callback_t callback,
                                                   void* data);
"""

ffi = cffi.FFI()
ffi.cdef(CDEF)

HSA_STATUS_SUCCESS = 0x0
HSA_STATUS_ERROR = 0x1000
HSA_AMD_GPU_MEMORY_FAULT_EVENT = 0

#: Status code -> name, from both status enums above.
STATUS_NAMES: dict[int, str] = {
    value: name
    for name, value in ffi.typeof("hsa_status_t").relements.items()
}
_EXTRA_STATUS = ("HSA_STATUS_ERROR_INVALID_MEMORY_POOL", "HSA_STATUS_ERROR_MEMORY_APERTURE_VIOLATION",
                 "HSA_STATUS_ERROR_ILLEGAL_INSTRUCTION", "HSA_STATUS_ERROR_MEMORY_FAULT",
                 "HSA_STATUS_CU_MASK_REDUCED")


def _build_extra_status() -> None:
    lib = ffi.dlopen(None)  # constants only; the C library handle is never used for calls
    for name in _EXTRA_STATUS:
        STATUS_NAMES[int(getattr(lib, name))] = name


_build_extra_status()

# --- fault reasons ------------------------------------------------------------------------

_REASON_PREFIX = "HSA_AMD_MEMORY_FAULT_"

#: Bit -> short name ("page_not_present", "read_only", ...), from the enum declared above.
#: (In C, ``1 << 31`` is a negative int; the mask field is uint32_t, so the bit is 0x80000000.)
REASON_BITS: dict[int, str] = {
    value & 0xFFFFFFFF: name[len(_REASON_PREFIX):].lower()
    for name, value in sorted(ffi.typeof("hsa_amd_memory_fault_reason_t").relements.items(),
                              key=lambda item: item[1] & 0xFFFFFFFF)
}

#: Short name -> what the header says it means.
REASON_DESCRIPTIONS: dict[str, str] = {
    "page_not_present": "page not present or supervisor privilege",
    "read_only": "write access to a read-only page",
    "nx": "execute access to a page marked NX",
    "host_only": "GPU attempted access to a host-only page",
    "dramecc": "DRAM ECC failure",
    "imprecise": "exact fault address not known",
    "sramecc": "SRAM ECC failure (registers; no fault address)",
    "hang": "GPU reset following an unspecified hang",
}

#: Reasons whose address does not identify the faulting access (the header says so).
ADDRESS_UNRELIABLE = frozenset({"imprecise", "sramecc", "hang"})


@functools.lru_cache(maxsize=256)
def decode_reasons(mask: int) -> tuple[str, ...]:
    """``fault_reason_mask`` -> names, lowest bit first; unknown bits as ``unknown_0x...``."""
    mask &= 0xFFFFFFFF
    names: list[str] = []
    bit = 1
    while mask:
        if mask & bit:
            names.append(REASON_BITS.get(bit, f"unknown_0x{bit:x}"))
            mask &= ~bit
        bit <<= 1
    return tuple(names)


def describe_reasons(reasons: tuple[str, ...] | list[str]) -> str:
    if not reasons:
        return "no reason bits set"
    return "; ".join(REASON_DESCRIPTIONS.get(r, r) for r in reasons)


def status_name(status: int) -> str:
    return STATUS_NAMES.get(int(status), "unknown status")


def agent_name(handle: int) -> str:
    """How an HSA agent appears in :class:`pappus.interfaces.FaultEvent` (``agent``)."""
    return f"hsa:0x{int(handle):x}"


# --- locating and loading the library -----------------------------------------------------

ENV_LIBRARY = "PAPPUS_HSA_LIBRARY"
KFD_DEVICE = "/dev/kfd"
SONAME = "libhsa-runtime64.so.1"


def candidates(path: str | None = None) -> list[str]:
    """Where to look for the runtime, in order: ``path`` or ``$PAPPUS_HSA_LIBRARY``, then the
    loader's search path (``libhsa-runtime64.so.1``), then ``/opt/rocm/lib`` and
    ``/opt/rocm-*/lib`` (newest version first)."""
    override = path or os.environ.get(ENV_LIBRARY, "").strip()
    if override:
        return [override]  # an explicit choice is honoured strictly: no silent fallback
    found = [SONAME]
    for root in ["/opt/rocm", *sorted(glob.glob("/opt/rocm-*"), key=_version_key, reverse=True)]:
        for name in (SONAME, "libhsa-runtime64.so"):
            full = os.path.join(root, "lib", name)
            if os.path.exists(full) and full not in found:
                found.append(full)
    return found


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", os.path.basename(path)))


class HsaUnavailable(Exception):
    """The HSA runtime cannot be used here; ``str()`` is the reason, one line."""

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Hsa:
    """An opened runtime library."""

    path: str  # what was passed to dlopen
    lib: Any

    def status_text(self, status: int) -> str:
        """``HSA_STATUS_ERROR_OUT_OF_RESOURCES (0x1008)``, plus the runtime's own text if any."""
        head = f"{status_name(status)} (0x{int(status):x})"
        out = ffi.new("const char **")
        try:
            rc = self.lib.hsa_status_string(int(status), out)
        except Exception:  # pragma: no cover - a broken runtime
            return head
        if rc != HSA_STATUS_SUCCESS or out[0] == ffi.NULL:
            return head
        text = ffi.string(out[0]).decode("utf-8", "replace").strip()
        # The runtime's text repeats the name ("NAME: explanation. More."); keep the first sentence.
        name, sep, rest = text.partition(": ")
        if sep and name == status_name(status):
            text = rest
        text = text.split(". ")[0].rstrip(".").strip()
        return f"{head}: {text}" if text else head

    def init(self) -> None:
        """``hsa_init()``; raise :class:`HsaUnavailable` with the status on failure."""
        rc = int(self.lib.hsa_init())
        if rc != HSA_STATUS_SUCCESS:
            reason = f"hsa_init failed: {self.status_text(rc)}"
            if not os.path.exists(KFD_DEVICE):
                reason += f" ({KFD_DEVICE} is missing: no amdgpu kernel driver or no AMD GPU here)"
            raise HsaUnavailable(reason, status=rc)

    def shut_down(self) -> int:
        return int(self.lib.hsa_shut_down())


_loaded: dict[str, Hsa] = {}
_load_lock = threading.Lock()


def load(path: str | None = None) -> Hsa:
    """Open the runtime (cached per path); raise :class:`HsaUnavailable` saying what was tried."""
    tried: list[str] = []
    with _load_lock:
        for candidate in candidates(path):
            if candidate in _loaded:
                return _loaded[candidate]
            try:
                lib = ffi.dlopen(candidate)
            except OSError as exc:
                tried.append(f"{candidate}: {_first_line(exc)}")
                continue
            missing = [sym for sym in ("hsa_init", "hsa_shut_down", "hsa_status_string",
                                       "hsa_amd_register_system_event_handler")
                       if not _has_symbol(lib, sym)]
            if missing:
                tried.append(f"{candidate}: missing {', '.join(missing)}")
                continue
            _loaded[candidate] = Hsa(candidate, lib)
            return _loaded[candidate]
    raise HsaUnavailable("libhsa-runtime64 not loadable (" + "; ".join(tried) + ")")


def _has_symbol(lib: Any, name: str) -> bool:
    try:
        getattr(lib, name)
    except (AttributeError, NotImplementedError):
        return False
    return True


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    # cffi appends a note about ctypes.util.find_library(); the dlerror() text is what matters.
    return text.split(".  Additionally,")[0].rstrip(".")
