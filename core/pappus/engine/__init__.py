"""The engine kit: sequential and multiprocess engines, written once, generic over the DeviceAPI."""

from __future__ import annotations

from ..interfaces import Backend
from .base import EngineBase, EngineOptions, Metrics
from .executor import Executor, ExecutorConfig, ModuleCache
from .invocation import FunctionSpec, Invocation, InvocationRecord, LibraryRef
from .multiprocess import MultiprocessEngine, WorkerSequentialEngine
from .queue import FairQueue
from .sequential import SequentialEngine

ENGINE_KINDS = {"sequential": SequentialEngine, "multiprocess": MultiprocessEngine}


def create_engine(backend: Backend, kind: str, options: EngineOptions) -> EngineBase:
    """Start an engine of ``kind`` for ``backend`` (it starts its device in the background)."""
    try:
        cls = ENGINE_KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown engine kind {kind!r} (known: {', '.join(ENGINE_KINDS)})") from None
    if cls is SequentialEngine and backend.faults_end_process:
        cls = WorkerSequentialEngine  # its device lives in a worker process it can replace
    return cls(backend, options)


__all__ = [
    "ENGINE_KINDS", "EngineBase", "EngineOptions", "Executor", "ExecutorConfig", "FairQueue", "FunctionSpec",
    "Invocation", "InvocationRecord", "LibraryRef", "Metrics", "ModuleCache", "MultiprocessEngine",
    "SequentialEngine", "WorkerSequentialEngine", "create_engine",
]
