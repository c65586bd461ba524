"""pappus: run untrusted GPU functions serverlessly, many tenants on one accelerator.

Importing pappus is cheap: plugins load and engines start only when first used.

    import pappus
    rt = pappus.Runtime(engine="cpu-sequential")
    rt.register_library("matmul", "matmul.so")
    rt.register_function("matmul", "matmul.json")
    out = rt.invoke("matmul", {"A": a_bytes})
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    BackendUnavailable,
    DeadlineExceeded,
    DeviceError,
    EngineClosed,
    FieldError,
    InvalidInput,
    KernelFault,
    LibraryError,
    NotFound,
    OutOfMemory,
    Overloaded,
    PappusError,
    QuotaExceeded,
    SandboxViolation,
    ValidationError,
    WorkerLost,
)
from .hookspecs import hookimpl

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = [
    "__version__", "Runtime", "hookimpl", "PappusError", "ValidationError", "FieldError", "LibraryError",
    "InvalidInput", "NotFound", "OutOfMemory", "KernelFault", "SandboxViolation", "DeadlineExceeded",
    "WorkerLost", "Overloaded", "QuotaExceeded", "EngineClosed", "BackendUnavailable", "DeviceError",
]


def __getattr__(name: str) -> Any:
    if name == "Runtime":
        from .runtime import Runtime

        return Runtime
    raise AttributeError(f"module 'pappus' has no attribute {name!r}")
