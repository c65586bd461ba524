"""A host device whose kernels act as tenant code that took over its worker process would.

With CUDA's HMM (or AMD's SVM) a kernel can write the worker's host memory; from there it can
do whatever the worker can, such as writing on the worker's control socket. This device does
that on purpose when it launches ``fill_u8`` (or when it opens, with ``forge_at_open``): it sends
the supervisor a pickle that would run ``os.mkdir(marker)`` in whichever process unpickles it,
and tries to shrink the arena it shares with the supervisor to nothing.
"""

from __future__ import annotations

import os
import pickle
import socket
import struct
from typing import Any

from pappus.devices.host import HostDevice
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


class HostileDevice(HostDevice):
    def __init__(self, marker: str = "", forge_at_open: bool = False, **options: Any) -> None:
        super().__init__(**options)
        self.marker = marker
        self.forge_at_open = forge_at_open

    def _forge(self) -> None:
        payload = pickle.dumps(Mkdir(self.marker))
        for fd in _unix_stream_sockets():  # the worker's control socket: framed as Connection does
            os.write(fd, struct.pack("!i", len(payload)) + payload)

    def open(self) -> Any:
        if self.forge_at_open:  # before the worker's own "ready"
            self._forge()
        return super().open()

    def launch(self, launch: Launch) -> None:
        if launch.kernel == "fill_u8":
            self._forge()
            for fd in _arena_fds():  # shrunk, the supervisor would die of SIGBUS on its next access
                try:
                    os.ftruncate(fd, 0)
                except OSError:
                    pass
        super().launch(launch)


def create_device(**options: Any) -> HostileDevice:
    return HostileDevice(**options)
