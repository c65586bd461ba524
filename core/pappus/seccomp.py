"""libseccomp through cffi (ABI mode, loaded lazily): the project's one binding to it.

Two users: the engine kit's worker lockdown (``engine/lockdown.py``) builds a deny-list filter
with it, and the CPU backend names the system call a sandboxed kernel was stopped at. Nothing is
compiled: without ``libseccomp.so.2`` :func:`load` says why, and each user decides what that means.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_CDEF = """
typedef void *scmp_filter_ctx;
struct scmp_arg_cmp { unsigned int arg; int op; uint64_t datum_a; uint64_t datum_b; };
scmp_filter_ctx seccomp_init(uint32_t def_action);
void seccomp_release(scmp_filter_ctx ctx);
int seccomp_attr_set(scmp_filter_ctx ctx, int attr, uint32_t value);
int seccomp_syscall_resolve_name(const char *name);
char *seccomp_syscall_resolve_num_arch(uint32_t arch_token, int num);
int seccomp_rule_add_array(scmp_filter_ctx ctx, uint32_t action, int syscall, unsigned int arg_cnt,
                           const struct scmp_arg_cmp *arg_array);
int seccomp_load(scmp_filter_ctx ctx);
void free(void *ptr);
"""

# From <seccomp.h> (libseccomp 2.5; stable ABI values).
ACT_ALLOW = 0x7FFF0000
SCMP_FLTATR_CTL_TSYNC = 4
SCMP_CMP_EQ = 4


def act_errno(code: int) -> int:
    """SCMP_ACT_ERRNO(code): the call fails with ``code`` and the process goes on."""
    return 0x00050000 | (code & 0xFFFF)


class SeccompUnavailable(RuntimeError):
    """libseccomp could not be loaded, or the kernel refused the filter; the text says which."""


_lock = threading.Lock()
_loaded: tuple[Any, Any] | None = None
_load_error = ""


def load() -> tuple[Any, Any]:
    """(lib, ffi) of libseccomp, loaded once; :class:`SeccompUnavailable` with the reason if not."""
    global _loaded, _load_error
    with _lock:
        if _loaded is None and not _load_error:
            try:
                import cffi

                ffi = cffi.FFI()
                ffi.cdef(_CDEF)
                _loaded = (ffi.dlopen("libseccomp.so.2"), ffi)
            except Exception as exc:
                _load_error = f"libseccomp.so.2 cannot be loaded ({exc}); install libseccomp2"
    if _loaded is None:
        raise SeccompUnavailable(_load_error)
    return _loaded


def kernel_actions() -> list[str]:
    """The filter actions this kernel offers (``allow``, ``errno``, ``trap``, ...), read without
    libseccomp; :class:`SeccompUnavailable` if it has no seccomp filters at all."""
    try:
        with open("/proc/sys/kernel/seccomp/actions_avail") as fh:
            return fh.read().split()
    except OSError:
        raise SeccompUnavailable("the kernel has no seccomp filter support "
                                 "(/proc/sys/kernel/seccomp/actions_avail is missing)") from None


def syscall_name(number: int, arch: int) -> str | None:
    """The name libseccomp knows for ``number`` on ``arch`` (an AUDIT_ARCH_* token), else None."""
    try:
        lib, ffi = load()
    except SeccompUnavailable:
        return None
    if not 0 <= number < 1 << 20:
        return None
    ptr = lib.seccomp_syscall_resolve_num_arch(arch, number)
    if ptr == ffi.NULL:
        return None
    try:
        return str(ffi.string(ptr).decode("ascii", "replace"))
    finally:
        lib.free(ptr)


@dataclass(frozen=True)
class Denial:
    """``call`` fails with ``errno_code``; with ``arg0_in``, only when its first argument is one of those."""

    call: str
    arg0_in: tuple[int, ...] = ()
    errno_code: int = errno.EPERM


def install_deny_list(denials: Iterable[Denial]) -> list[str]:
    """Load a filter into this process (every thread: TSYNC) that fails the given calls and allows
    everything else. Sets no_new_privs, as any unprivileged filter needs. Returns the calls denied
    (those this kernel's architecture does not have are left out). Irreversible for the process and
    the children it starts."""
    lib, ffi = load()
    ctx = lib.seccomp_init(ACT_ALLOW)
    if ctx == ffi.NULL:
        raise SeccompUnavailable("seccomp_init failed")
    try:
        rc = lib.seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1)
        if rc < 0:
            raise SeccompUnavailable(f"libseccomp cannot synchronise a filter across threads ({-rc})")
        denied = []
        for d in denials:
            number = lib.seccomp_syscall_resolve_name(d.call.encode())
            if number < 0:  # no such call on this architecture (e.g. a newer kernel's)
                continue
            if d.arg0_in:
                for value in d.arg0_in:
                    cmp = ffi.new("struct scmp_arg_cmp[1]", [(0, SCMP_CMP_EQ, value, 0)])
                    rc = lib.seccomp_rule_add_array(ctx, act_errno(d.errno_code), number, 1, cmp)
                    if rc < 0:
                        raise SeccompUnavailable(f"libseccomp refused the rule for {d.call}({value}) ({-rc})")
            else:
                rc = lib.seccomp_rule_add_array(ctx, act_errno(d.errno_code), number, 0, ffi.NULL)
                if rc < 0:
                    raise SeccompUnavailable(f"libseccomp refused the rule for {d.call} ({-rc})")
            denied.append(d.call)
        rc = lib.seccomp_load(ctx)
        if rc < 0:
            raise SeccompUnavailable(f"the kernel refused the filter: {errno.errorcode.get(-rc, -rc)}")
        return denied
    finally:
        lib.seccomp_release(ctx)
