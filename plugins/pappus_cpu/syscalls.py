"""System call names for SandboxViolation, from libseccomp's table (loaded lazily through cffi)."""

from __future__ import annotations

import threading
from typing import Any

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_AARCH64 = 0xC00000B7

# Used when libseccomp cannot be loaded: the calls the sandbox tests and most tenants hit.
_FALLBACK = {
    AUDIT_ARCH_X86_64: {
        0: "read", 1: "write", 2: "open", 3: "close", 9: "mmap", 10: "mprotect", 11: "munmap",
        12: "brk", 13: "rt_sigaction", 14: "rt_sigprocmask", 20: "writev", 39: "getpid", 41: "socket",
        42: "connect", 56: "clone", 57: "fork", 58: "vfork", 59: "execve", 62: "kill", 101: "ptrace",
        186: "gettid", 200: "tkill", 202: "futex", 228: "clock_gettime", 234: "tgkill",
        257: "openat", 322: "execveat", 435: "clone3",
    },
    AUDIT_ARCH_AARCH64: {
        29: "ioctl", 56: "openat", 57: "close", 63: "read", 64: "write", 66: "writev", 98: "futex",
        113: "clock_gettime", 117: "ptrace", 129: "kill", 130: "tkill", 131: "tgkill",
        134: "rt_sigaction", 135: "rt_sigprocmask", 172: "getpid", 178: "gettid", 198: "socket",
        203: "connect", 214: "brk", 215: "munmap", 220: "clone", 221: "execve", 222: "mmap",
        226: "mprotect", 281: "execveat", 435: "clone3",
    },
}

_lock = threading.Lock()
_lib: Any = None
_ffi: Any = None
_tried = False


def _load() -> tuple[Any, Any]:
    global _lib, _ffi, _tried
    with _lock:
        if not _tried:
            _tried = True
            try:
                import cffi

                ffi = cffi.FFI()
                ffi.cdef("char *seccomp_syscall_resolve_num_arch(uint32_t arch_token, int num);"
                         "void free(void *ptr);")
                _lib = ffi.dlopen("libseccomp.so.2")
                _ffi = ffi
            except Exception:  # no libseccomp: the fallback table answers
                _lib = _ffi = None
    return _lib, _ffi


def syscall_name(number: int, arch: int) -> str:
    """``openat`` for (257, AUDIT_ARCH_X86_64); ``syscall_<n>`` when the number is unknown."""
    lib, ffi = _load()
    if lib is not None and 0 <= number < 1 << 20:
        try:
            ptr = lib.seccomp_syscall_resolve_num_arch(arch, number)
            if ptr != ffi.NULL:
                try:
                    return str(ffi.string(ptr).decode("ascii", "replace"))
                finally:
                    lib.free(ptr)
        except Exception:
            pass
    return _FALLBACK.get(arch, {}).get(number, f"syscall_{number}")
