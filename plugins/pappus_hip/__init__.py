"""pappus_hip: the HIP backend of pappus (AMD GPUs through hip-python).

Importing it is cheap: hip-python is imported only when a device is opened or availability is
asked. The code-object reader (:mod:`pappus_hip.codeobject`) needs neither hip-python nor a GPU.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HipDevice", "HipDriver", "read_library", "build_hsaco"]


def __getattr__(name: str) -> Any:
    if name == "HipDevice":
        from .device import HipDevice

        return HipDevice
    if name == "HipDriver":
        from .driver import HipDriver

        return HipDriver
    if name == "read_library":
        from .codeobject import read_library

        return read_library
    if name == "build_hsaco":
        from .build import build_hsaco

        return build_hsaco
    raise AttributeError(f"module 'pappus_hip' has no attribute {name!r}")
