"""Landlock scoping through raw system calls (no library needed).

Only what the worker lockdown uses (``engine/lockdown.py``): a ruleset that handles no file
system or network access, only *scopes*, so the process and everything it starts can no longer
signal, or connect to abstract unix sockets of, processes outside its own domain (Landlock
ABI 6, Linux 6.12). The CPU backend's template does its own, fuller Landlock set-up in C.
"""

from __future__ import annotations

import ctypes
import os
import struct

# The same numbers on every architecture (generic system call table, Linux 5.13+).
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_RESTRICT_SELF = 446
CREATE_RULESET_VERSION = 1 << 0
PR_SET_NO_NEW_PRIVS = 38

#: scope name -> LANDLOCK_SCOPE_* bit (ABI 6).
SCOPES: dict[str, int] = {"abstract_unix_sockets": 1 << 0, "signals": 1 << 1}
SCOPES_ABI = 6


class LandlockError(OSError):
    """The kernel refused a Landlock call; ``errno`` says why."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _syscall(libc: ctypes.CDLL, number: int, *args: object) -> int:
    """``syscall(2)`` with every argument passed as a full C long (it is variadic)."""
    longs = [a if isinstance(a, ctypes.Array) or a is None else ctypes.c_long(int(a)) for a in args]  # type: ignore[call-overload]
    return int(libc.syscall(ctypes.c_long(number), *longs))


def abi() -> int:
    """The Landlock ABI version the running kernel offers; 0 without Landlock (or not on Linux)."""
    try:
        version = _syscall(_libc(), SYS_LANDLOCK_CREATE_RULESET, None, 0, CREATE_RULESET_VERSION)
    except (OSError, AttributeError):
        return 0
    return max(version, 0)


def restrict_scopes(names: list[str]) -> None:
    """Scope this thread's process (and every thread and child it starts from now on) to its own
    domain for ``names`` (keys of :data:`SCOPES`). Sets no_new_privs, which an unprivileged
    process needs for this. Threads already running keep their old domain: call it first."""
    scoped = 0
    for name in names:
        scoped |= SCOPES[name]
    libc = _libc()
    raw = struct.pack("=QQQ", 0, 0, scoped)  # handled fs access, handled net access, scoped
    attr = ctypes.create_string_buffer(raw, len(raw))
    fd = _syscall(libc, SYS_LANDLOCK_CREATE_RULESET, attr, len(raw), 0)
    if fd < 0:
        err = ctypes.get_errno()
        raise LandlockError(err, f"landlock_create_ruleset: {os.strerror(err)}")
    try:
        if libc.prctl(PR_SET_NO_NEW_PRIVS, *(ctypes.c_ulong(v) for v in (1, 0, 0, 0))) != 0:
            err = ctypes.get_errno()
            raise LandlockError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")
        if _syscall(libc, SYS_LANDLOCK_RESTRICT_SELF, fd, 0) != 0:
            err = ctypes.get_errno()
            raise LandlockError(err, f"landlock_restrict_self: {os.strerror(err)}")
    finally:
        os.close(fd)
