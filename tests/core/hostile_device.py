"""A host device whose kernels act as tenant code that took over its worker process would.

With CUDA's HMM (or AMD's SVM) a kernel can write the worker's host memory; from there it can
do whatever the worker can, such as writing on the worker's control socket. This device does
that on purpose when it launches ``fill_u8`` (or when it opens, with ``forge_at_open``): it sends
the supervisor a pickle that would run ``os.mkdir(marker)`` in whichever process unpickles it,
and tries to shrink the arena it shares with the supervisor to nothing. With ``escape_report``
it instead tries to leave the worker (start a program, open a network socket, read process
memory, enter a namespace, signal its parent, connect to an abstract unix socket named
``abstract_socket``) and writes what each attempt got into that file, as JSON.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import json
import os
import pickle
import socket
import struct
from pathlib import Path
from typing import Any

from pappus import Runtime, hookimpl
from pappus.devices.host import HostDevice
from pappus.interfaces import DeviceSpec
from pappus.plan import Launch


class Mkdir:
    """Unpickled, runs ``os.mkdir(path)``: a marker of code run by whoever unpickles it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.path,))


def _own_fds() -> list[int]:
    return [int(name) for name in os.listdir("/proc/self/fd")]


def _unix_stream_sockets() -> list[int]:
    found = []
    for fd in _own_fds():
        try:
            probe = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        with probe:
            if probe.family == socket.AF_UNIX and probe.type == socket.SOCK_STREAM:
                found.append(fd)
    return found


def _arena_fds() -> list[int]:
    found = []
    for fd in _own_fds():
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:pappus-"):
                found.append(fd)
        except OSError:
            continue
    return found


def _outcome(attempt: Any) -> str:
    """"ok", or the errno name the attempt failed with."""
    try:
        attempt()
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return "ok"


def _spawn_true() -> None:
    os.waitpid(os.posix_spawn("/bin/true", ["true"], {}), 0)


def _read_own_memory() -> None:
    """process_vm_readv on this very process: allowed without a filter, whatever Yama says."""

    class IoVec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    libc = ctypes.CDLL(None, use_errno=True)
    src, dst = ctypes.create_string_buffer(b"secret", 8), ctypes.create_string_buffer(8)
    local, remote = IoVec(ctypes.addressof(dst), 8), IoVec(ctypes.addressof(src), 8)
    if libc.process_vm_readv(os.getpid(), ctypes.byref(local), 1, ctypes.byref(remote), 1, 0) < 0:
        raise OSError(ctypes.get_errno(), "process_vm_readv")


def _setns_bad_fd() -> None:
    """setns on no namespace at all: EBADF from the kernel, EPERM from a filter that stops it first."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(-1, 0) < 0:
        raise OSError(ctypes.get_errno(), "setns")


def escape_attempts() -> dict[str, str]:
    return {
        "spawn a program": _outcome(_spawn_true),
        "IPv4 socket": _outcome(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()),
        "IPv6 socket": _outcome(lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()),
        "local socket pair": _outcome(lambda: [s.close() for s in socket.socketpair()]),
        "read process memory": _outcome(_read_own_memory),
        "enter a namespace": _outcome(_setns_bad_fd),
    }


def _connect_abstract(name: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect("\0" + name)


def scope_attempts(abstract_socket: str) -> dict[str, str]:
    """Reaching processes this one did not start: its parent (signal 0 only checks permission)
    and a listening abstract unix socket named ``abstract_socket``."""
    return {
        "signal its parent": _outcome(lambda: os.kill(os.getppid(), 0)),
        "abstract unix socket": _outcome(lambda: _connect_abstract(abstract_socket)),
    }


class HostileDevice(HostDevice):
    def __init__(self, marker: str = "", forge_at_open: bool = False, escape_report: str = "",
                 abstract_socket: str = "", pageable: bool = False, **options: Any) -> None:
        super().__init__(**options)
        self.abstract_socket = abstract_socket
        self.pageable = pageable  # reports that its kernels reach host memory (an allowed HMM GPU)
        self.marker = marker
        self.forge_at_open = forge_at_open
        self.escape_report = escape_report

    def _forge(self) -> None:
        payload = pickle.dumps(Mkdir(self.marker))
        for fd in _unix_stream_sockets():  # the worker's control socket: framed as Connection does
            os.write(fd, struct.pack("!i", len(payload)) + payload)

    def open(self) -> Any:
        if self.forge_at_open:  # before the worker's own "ready"
            self._forge()
        info = super().open()
        if self.pageable:
            info = dataclasses.replace(info, details={**info.details, "pageable_memory_access": True})
        return info

    def launch(self, launch: Launch) -> None:
        if launch.kernel == "fill_u8" and self.escape_report:
            with open(self.escape_report, "w") as fh:
                json.dump({**escape_attempts(), **scope_attempts(self.abstract_socket)}, fh)
        elif launch.kernel == "fill_u8":
            self._forge()
            for fd in _arena_fds():  # shrunk, the supervisor would die of SIGBUS on its next access
                try:
                    os.ftruncate(fd, 0)
                except OSError:
                    pass
        super().launch(launch)


def create_device(**options: Any) -> HostileDevice:
    return HostileDevice(**options)


class _HostileHost:
    """Registers backend ``hostile``: the host backend on this device."""

    @hookimpl
    def pappus_register_backends(self, registry: Any) -> None:
        from pappus.devices.host import HOST_BACKEND

        registry.add(dataclasses.replace(
            HOST_BACKEND, name="hostile",
            device=lambda **options: DeviceSpec("tests.core.hostile_device:create_device", options)))


def hostile_runtime(tmp_path: Path, engine: str = "hostile-multiprocess", **device_options: Any) -> Runtime:
    """A runtime (one worker, if multiprocess) on this device, with ``mm`` registered."""
    from pappus.plugins import Plugins

    from .helpers import HOST_LIB, matmul_config

    plugins = Plugins().load()
    plugins.register_module(_HostileHost(), "hostile")
    rt = Runtime(engine=engine, state_dir=tmp_path / "state", pool_bytes=4 << 20, workers=1,
                 plugins=plugins, device_options=device_options)
    rt.register_library("m", HOST_LIB)
    rt.register_function("mm", matmul_config(repeat=1))
    return rt
