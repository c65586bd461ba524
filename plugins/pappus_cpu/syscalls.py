"""System call names for SandboxViolation, from libseccomp's table (``pappus.seccomp``)."""

from __future__ import annotations

from pappus import seccomp

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


def syscall_name(number: int, arch: int) -> str:
    """``openat`` for (257, AUDIT_ARCH_X86_64); ``syscall_<n>`` when the number is unknown."""
    name = seccomp.syscall_name(number, arch)
    if name is not None:
        return name
    return _FALLBACK.get(arch, {}).get(number, f"syscall_{number}")
