"""pappus_cuda: the NVIDIA backend of pappus (CUDA driver API through cuda-bindings).

Importing it is cheap and never touches a GPU: cuda-bindings is imported only when a device is
opened or availability is asked. The code-object reader (:mod:`pappus_cuda.cubin`) and the builder
(:mod:`pappus_cuda.build`) need neither cuda-bindings nor a GPU.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CudaDevice", "CudaDriver", "read_library", "build_cuda"]


def __getattr__(name: str) -> Any:
    if name == "CudaDevice":
        from .device import CudaDevice

        return CudaDevice
    if name == "CudaDriver":
        from .driver import CudaDriver

        return CudaDriver
    if name == "read_library":
        from .cubin import read_library

        return read_library
    if name == "build_cuda":
        from .build import build_cuda

        return build_cuda
    raise AttributeError(f"module 'pappus_cuda' has no attribute {name!r}")
