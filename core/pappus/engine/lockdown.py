"""What a worker process may still do: a Landlock scope before its device opens, a seccomp deny-list after.

A worker runs next to tenant code. On the CPU backend that code is in sandboxed children, but a
GPU kernel that reaches its worker's host memory (HMM, ATS, XNACK: ``host_access.py``), or a
driver bug a tenant can trigger, could take the worker over; the worker then has its user's
rights. After the device is open (the driver has loaded, mapped and started what it needs), the
worker gives up, for itself and every thread and child, the calls a serving worker never makes
and a hijacked one would want (a seccomp deny-list, :func:`lock_down`):

* starting other programs (``execve``, ``execveat``);
* reading or writing other processes (``ptrace``, ``process_vm_readv``/``writev``, ``kcmp``);
* the network (``socket`` for IPv4, IPv6 and raw packets; local sockets stay: drivers use them);
* the kernel's rarer attack surface (``bpf``, ``userfaultfd``, ``io_uring_*``, key rings, module
  loading, ``kexec``, mounts, namespaces, ``chroot``).

Before that, before its device opens (so that every thread the driver starts inherits it), the
worker scopes itself with Landlock (:func:`scope`, Linux 6.12 and later): it can no longer
signal, or connect to abstract unix sockets of, any process it did not start itself. Without
it, code that took a worker over could SIGKILL the serving process, and with it every tenant.
Scoping sets no_new_privs first, so a driver's setuid helper (``nvidia-modprobe``, which makes
missing device nodes) no longer gains rights in a worker; the backends' availability probes,
which run before any worker in a process of their own, have made those nodes by then.

Denied calls fail with EPERM rather than killing the worker, so a driver that does make one
later gets an error it reports, not a crash that would look like a tenant's fault. A backend that
still needs one of these calls in its worker names it in ``Backend.worker_keeps`` (the CPU
backend keeps ``execve``: a reset starts a new device template); it may name the scopes
(``signals``, ``abstract_unix_sockets``) too. ``PAPPUS_WORKER_LOCKDOWN=0`` turns both off, for
a driver that breaks under them; the device details say what applies (``worker_lockdown``,
``worker_scope``).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from .. import landlock, seccomp

log = logging.getLogger("pappus.worker")

ENV = "PAPPUS_WORKER_LOCKDOWN"
_TURNED_OFF = f"turned off ({ENV}=0)"

#: call -> why a worker has no use for it once serving.
DENIED_CALLS: dict[str, str] = {
    "execve": "start another program",
    "execveat": "start another program",
    "ptrace": "read or control another process",
    "process_vm_readv": "read another process's memory",
    "process_vm_writev": "write another process's memory",
    "kcmp": "inspect another process's resources",
    "bpf": "load kernel programs",
    "userfaultfd": "stall the kernel on page faults (exploit aid)",
    "io_uring_setup": "system calls that seccomp does not see",
    "io_uring_enter": "system calls that seccomp does not see",
    "io_uring_register": "system calls that seccomp does not see",
    "keyctl": "the kernel key rings",
    "add_key": "the kernel key rings",
    "request_key": "the kernel key rings",
    "init_module": "load kernel modules",
    "finit_module": "load kernel modules",
    "delete_module": "unload kernel modules",
    "kexec_load": "replace the kernel",
    "kexec_file_load": "replace the kernel",
    "mount": "change mounts",
    "umount2": "change mounts",
    "pivot_root": "change mounts",
    "chroot": "change the root directory",
    "unshare": "enter new namespaces",
    "setns": "enter other namespaces",
}

#: ``socket`` families a worker may not open: the network.
DENIED_SOCKET_FAMILIES: dict[str, int] = {"AF_INET": socket.AF_INET, "AF_INET6": socket.AF_INET6,
                                          "AF_PACKET": getattr(socket, "AF_PACKET", 17)}


@dataclass(frozen=True)
class Lockdown:
    """What :func:`lock_down` did, for the device details (``worker_lockdown``)."""

    applied: bool
    denied: tuple[str, ...] = ()
    reason: str = ""  # why not applied

    def describe(self) -> str:
        if not self.applied:
            return f"off: {self.reason}"
        return "seccomp deny-list (EPERM): " + ", ".join(self.denied)


def prepare() -> None:
    """Load libseccomp (and parse its declarations, about 40 ms here) once in the zygote, so
    that workers forked from it lock down in about 2 ms instead of paying that at every respawn."""
    try:
        seccomp.load()
    except seccomp.SeccompUnavailable:
        pass  # each worker says so when it tries


def unknown_keeps(keep: Iterable[str]) -> list[str]:
    """The names in ``keep`` that are neither calls this lockdown denies nor scopes (a typo keeps nothing)."""
    return sorted(set(keep) - set(DENIED_CALLS) - {"socket"} - set(landlock.SCOPES))


def scope(keep: Iterable[str] = (), *, enable: bool = True) -> str:
    """Scope this process to its own Landlock domain for signals and abstract unix sockets (less
    those in ``keep``), before it starts any thread; says what it did, for ``worker_scope``.
    Never raises."""
    if not enable:
        return f"off: {_TURNED_OFF}"
    keep = frozenset(keep)
    names = [name for name in landlock.SCOPES if name not in keep]
    if not names:
        return "none: the backend keeps every scope"
    version = landlock.abi()
    if version < landlock.SCOPES_ABI:
        return (f"none: this kernel's Landlock ABI is {version}; scoping signals and abstract unix sockets "
                f"needs {landlock.SCOPES_ABI} (Linux 6.12)")
    try:
        landlock.restrict_scopes(names)
    except OSError as exc:
        log.warning("worker %d is not scoped: %s", os.getpid(), exc)
        return f"none: {exc}"
    return "Landlock: " + ", ".join(name.replace("_", " ") for name in names) + " of its own processes only"


def outlook() -> dict[str, object]:
    """What a worker started now would get, without installing anything (``pappus plugins``)."""
    if not enabled():
        off = f"no: {_TURNED_OFF}"
        return {"enabled": False, "seccomp": off, "scope": off}
    try:
        seccomp.load()
        actions = seccomp.kernel_actions()
        filters = "yes" if "errno" in actions else "no: this kernel's seccomp cannot fail a call with an errno"
    except seccomp.SeccompUnavailable as exc:
        filters = f"no: {exc}"
    version = landlock.abi()
    scoped = (f"yes (Landlock ABI {version})" if version >= landlock.SCOPES_ABI else
              f"no: Landlock ABI {version}; scoping needs {landlock.SCOPES_ABI} (Linux 6.12)")
    return {"enabled": True, "seccomp": filters, "scope": scoped}


def enabled(environ: dict[str, str] | None = None) -> bool:
    """False only where the operator turned it off (``PAPPUS_WORKER_LOCKDOWN=0``, ``off``, ``no``, ``false``)."""
    value = (os.environ if environ is None else environ).get(ENV, "").strip().lower()
    return value not in ("0", "off", "no", "false")


def lock_down(keep: Iterable[str] = (), *, enable: bool = True) -> Lockdown:
    """Install the deny-list in this process, less the calls in ``keep``. Never raises: a worker
    that cannot be locked down still serves, and says so."""
    keep = frozenset(keep)
    if not enable:
        return Lockdown(False, reason=_TURNED_OFF)
    denials = [seccomp.Denial(call) for call in DENIED_CALLS if call not in keep]
    if "socket" not in keep:
        denials.append(seccomp.Denial("socket", tuple(DENIED_SOCKET_FAMILIES.values())))
    try:
        denied = seccomp.install_deny_list(denials)
    except seccomp.SeccompUnavailable as exc:
        log.warning("worker %d is not locked down: %s", os.getpid(), exc)
        return Lockdown(False, reason=str(exc))
    names = [("socket(" + "|".join(DENIED_SOCKET_FAMILIES) + ")") if c == "socket" else c for c in denied]
    return Lockdown(True, tuple(names))
