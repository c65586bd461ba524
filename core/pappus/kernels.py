"""What a backend learns from a library without running it: kernels and their real signatures.

Each backend reads its own code-object format (AMDGPU metadata notes, the CPU backend's
manifest section, what NVRTC reports) into these neutral types. Core uses them to check a
function's kernel arguments at registration and to marshal arguments at invocation.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class ParamKind(str, enum.Enum):
    """How a kernel parameter is passed. ``BYTES`` covers structs and kinds a format leaves open."""

    POINTER = "pointer"
    INT = "int"
    UINT = "uint"
    FLOAT = "float"
    BYTES = "bytes"


@dataclass(frozen=True)
class KernelParam:
    size: int
    kind: ParamKind = ParamKind.BYTES
    offset: int | None = None
    name: str | None = None


@dataclass(frozen=True)
class KernelInfo:
    """One kernel entry point as the code object describes it.

    ``uses_heap`` / ``uses_hostcall`` mark kernels that need device malloc or host calls; core
    rejects functions that call them (the malloc-heap limit is a registration-time guarantee
    wherever the code object shows it).
    """

    name: str
    params: tuple[KernelParam, ...]
    static_shared_bytes: int = 0
    private_bytes: int = 0
    uses_heap: bool = False
    uses_hostcall: bool = False
    max_block_threads: int | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class LibraryInfo:
    """Static facts about a library: its format, target and kernels."""

    format: str
    target: str
    kernels: Mapping[str, KernelInfo]
    size: int = 0
    notes: tuple[str, ...] = field(default=())

    def kernel(self, name: str) -> KernelInfo | None:
        return self.kernels.get(name)


@dataclass(frozen=True)
class DeviceLimits:
    """Launch limits of a device; core checks launch configs against them."""

    max_block_threads: int = 1024
    max_block_dims: tuple[int, int, int] = (1024, 1024, 1024)
    max_grid_dims: tuple[int, int, int] = (2**31 - 1, 65535, 65535)
    max_shared_bytes: int = 64 * 1024
