"""The seams of pappus: what a backend provides and what core builds on it.

A backend is a :class:`Backend` bundle registered through the ``pappus_register_backends`` hook.
Its one substantial piece is a :class:`DeviceAPI`; the engines (sequential and multiprocess), the
pool, the interpreter and the dispatcher are core's, written once and generic over it.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .kernels import DeviceLimits, LibraryInfo

if TYPE_CHECKING:
    from .plan import Launch, Program


class Capability(str, enum.Enum):
    """What a backend claims. The conformance suite tests every claim; unclaimed ones are reported
    as "not claimed", never as passed."""

    ZEROING = "zeroing"  # no data of one invocation is readable by a later one
    MALLOC_HEAP_LIMIT = "malloc_heap_limit"  # device malloc is bounded (0 by default)
    FAULT_CONTAINMENT = "fault_containment"  # a faulting invocation fails alone; the engine recovers
    WATCHDOG = "watchdog"  # deadlines end hung kernels
    SANDBOX = "sandbox"  # kernel code cannot make system calls or touch host memory
    SIGNATURES = "signatures"  # kernel signatures are checked at registration


@dataclass(frozen=True)
class Availability:
    available: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.available


@dataclass(frozen=True)
class LibraryImage:
    """A library's bytes as the registry holds them: verified against ``sha256`` before loading."""

    sha256: str
    data: bytes
    path: str | None = None


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    total_memory: int
    free_memory: int
    limits: DeviceLimits = field(default_factory=DeviceLimits)
    heap_limit: int | None = None  # device malloc heap as read back from the device
    details: Mapping[str, Any] = field(default_factory=dict)


# --- DeviceAPI ------------------------------------------------------------------------------


class DeviceAPI(abc.ABC):
    """One device as one engine (or one multiprocess worker) drives it.

    Addresses are plain integers in the device's address space. Errors are raised as pappus
    errors (``KernelFault``, ``DeviceError``, ...), never as status tuples. One instance is used by
    one thread at a time, except :meth:`abort`, which the engine may call from another thread.
    """

    #: True when kernels cannot write outside the pool range handed to the current invocation
    #: (e.g. the CPU backend's guard pages); otherwise the pool also scrubs before use.
    bounds_writes: bool = False

    #: Nonzero (a power of two, e.g. the page size) when a run may still be ending after
    #: :meth:`run` returned (the CPU backend's sandbox process tearing down) and the device fences
    #: each run to its window of the pool (``Program.start`` .. ``Program.extent``) at this
    #: granularity: the pool then alternates consecutive invocations between disjoint windows,
    #: so that the next one need not wait for the last to be gone. The device must still keep
    #: every access that overlaps a run that is ending (and the zeroing of its window) until it
    #: is gone. 0: runs are over when ``run`` returns.
    alternate_windows: int = 0

    #: True when :meth:`abort` makes a :meth:`run` in progress return (raise) within moments,
    #: whatever its kernel does (the CPU backend kills the sandbox process running it). The
    #: sequential engine then runs an invocation on its caller's own thread when it is idle,
    #: sparing two thread hand-offs: a kernel hung past its deadline cannot keep that thread.
    abort_ends_run: bool = False

    @abc.abstractmethod
    def open(self) -> DeviceInfo:
        """Attach to the device; called once before anything else, in the process that uses it."""

    @abc.abstractmethod
    def reserve(self, nbytes: int) -> int:
        """Allocate the pool (once); return its base address."""

    @abc.abstractmethod
    def write(self, address: int, data: memoryview) -> None:
        """Copy host bytes to device memory."""

    @abc.abstractmethod
    def read(self, address: int, out: memoryview) -> None:
        """Copy device memory into a host buffer of ``out.nbytes``."""

    def read_bytes(self, address: int, nbytes: int) -> bytes:
        """Device memory as a new ``bytes`` (an output handed to the caller). The default reads
        into a bytearray and copies it; a device with host-visible memory does one copy."""
        out = bytearray(nbytes)
        if nbytes:
            self.read(address, memoryview(out))
        return bytes(out)

    @abc.abstractmethod
    def memset(self, address: int, value: int, nbytes: int) -> None:
        """Fill device memory; used to zero the pool."""

    @abc.abstractmethod
    def load_module(self, image: LibraryImage) -> Any:
        """Load a library (already validated at registration); return a module handle."""

    @abc.abstractmethod
    def get_kernel(self, module: Any, name: str) -> Any:
        """Look a kernel up in a loaded module; return a handle for :meth:`launch`."""

    @abc.abstractmethod
    def launch(self, launch: Launch) -> None:
        """Enqueue one kernel launch (arguments already packed to the kernel's signature)."""

    @abc.abstractmethod
    def synchronize(self) -> None:
        """Wait for everything enqueued; raise KernelFault if a kernel faulted."""

    def run(self, program: Program) -> None:
        """Execute a launch program. The default walks it launch by launch, then synchronizes;
        backends whose launches are expensive to issue one by one ship the whole program."""
        from .plan import Launch

        def walk(steps: Program) -> None:
            for step in steps:
                if isinstance(step, Launch):
                    self.launch(step)
                else:
                    for _ in range(step.times):
                        walk(step.body)

        walk(program)
        self.synchronize()

    def unload_module(self, module: Any) -> None:  # noqa: B027 - optional, a no-op by default
        """Drop a module (module cache eviction). Default: nothing."""

    def set_malloc_heap_limit(self, nbytes: int) -> int:
        """Bound device-side malloc; return the limit the device reports back."""
        return nbytes

    def clear_private_state(self) -> None:  # noqa: B027 - optional, a no-op by default
        """Clear what kernels keep outside the pool between invocations (a GPU's shared and local
        memory); called with every pool release, after the pool's memset. Default: nothing."""

    def reset(self) -> int | None:
        """Recover after a fault; return the pool's new base address if the reset moved it.
        Raise if the device cannot recover in-process (the engine then replaces the whole worker
        or device instance)."""
        raise NotImplementedError

    def abort(self) -> None:
        """Stop whatever runs now, from another thread (deadlines). Default: cannot."""
        raise NotImplementedError

    @property
    def healthy(self) -> bool:
        """False once the device must not be used again (e.g. a sticky CUDA error)."""
        return True

    def close(self) -> None:  # noqa: B027 - optional, a no-op by default
        """Release the pool and the device."""


# --- memory domain and contexts -------------------------------------------------------------


@runtime_checkable
class Context(Protocol):
    """A byte region with named item sets (inputs, outputs) that an invocation's data travels in."""

    def write(self, item_set: str, name: str, data: Any) -> memoryview: ...

    def view(self, item_set: str, name: str) -> memoryview: ...

    def items(self, item_set: str) -> Mapping[str, memoryview]: ...

    def release(self) -> None: ...


@runtime_checkable
class MemoryDomain(Protocol):
    """A context factory: where function inputs and outputs live on the host side."""

    def acquire_context(self, size: int) -> Context: ...


# --- driver, engine, fault monitor ----------------------------------------------------------


class Engine(abc.ABC):
    """Runs invocations. Every submitted invocation settles exactly once."""

    name: str

    @abc.abstractmethod
    def submit(self, invocation: Any) -> Any:
        """Queue an invocation; return a future."""

    def call(self, invocation: Any) -> Any:
        """Start an invocation whose caller waits for it; return a future. Engines may run it
        on the calling thread when idle; by default it is queued like :meth:`submit`."""
        return self.submit(invocation)

    @abc.abstractmethod
    def close(self, drain: bool = True, timeout: float | None = None) -> None: ...

    @property
    @abc.abstractmethod
    def capacity(self) -> int:
        """Pool bytes one invocation may use."""


@dataclass(frozen=True)
class FaultEvent:
    """A device fault as a fault monitor observes it."""

    address: int | None
    reasons: tuple[str, ...]
    agent: str | None = None
    timestamp: float | None = None


class FaultMonitor(abc.ABC):
    """Reports device faults so an engine can fail exactly the invocation that caused them."""

    name: str = "fault-monitor"

    @abc.abstractmethod
    def availability(self) -> Availability: ...

    @abc.abstractmethod
    def start(self, on_fault: Callable[[FaultEvent], None]) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None: ...


class Driver(abc.ABC):
    """Reads libraries of a backend's format without running them."""

    @abc.abstractmethod
    def inspect_library(self, data: bytes) -> LibraryInfo:
        """Parse a library statically; raise LibraryError with the reason if it is unusable."""

    def device_limits(self) -> DeviceLimits:
        return DeviceLimits()


@dataclass(frozen=True)
class DeviceSpec:
    """How to create a backend's DeviceAPI in any process: an importable factory and options.

    Multiprocess workers receive this (not a live object) and build their own device.
    """

    factory: str  # "module:callable"
    options: Mapping[str, Any] = field(default_factory=dict)

    def create(self, **extra: Any) -> DeviceAPI:
        import importlib

        module_name, _, attr = self.factory.partition(":")
        factory = getattr(importlib.import_module(module_name), attr)
        device = factory(**{**dict(self.options), **extra})
        if not isinstance(device, DeviceAPI):
            raise TypeError(f"{self.factory} returned {type(device).__name__}, not a DeviceAPI")
        return device


@dataclass(frozen=True)
class Backend:
    """A backend bundle: registered by a plugin through ``pappus_register_backends``.

    ``device`` builds the DeviceAPI (``DeviceSpec``), ``driver`` inspects libraries, ``check``
    answers whether the backend can run here (and why not), ``engine_kinds`` names the engines
    core builds for it (``<name>-sequential``, ``<name>-multiprocess``).
    """

    name: str
    description: str
    driver: Driver
    device: Callable[..., DeviceSpec]
    check: Callable[[], Availability]
    capabilities: frozenset[Capability] = frozenset()
    engine_kinds: tuple[str, ...] = ("sequential", "multiprocess")
    library_suffixes: tuple[str, ...] = ()
    #: Where kernels run. "device": on an accelerator, so the sequential engine may drive it from
    #: a supervisor thread. The CPU backend also qualifies: its DeviceAPI runs kernels only in
    #: sandboxed child processes, never in the calling process.
    execution: str = "device"
    defaults: Mapping[str, Any] = field(default_factory=dict)
    #: Build targets this backend compiles HIP source for (fnmatch patterns: "cpu", "gfx*", "sm_*").
    build_targets: tuple[str, ...] = ()
    #: ``build(source, out_dir, targets) -> [paths written]``; used by ``pappus build``.
    build: Callable[[Any, Any, list[str]], list[Any]] | None = None
    #: The build target matching the device here (``"cpu"``, ``"gfx90a"``, ``"sm_90"``): what the
    #: conformance suite and the benchmarks build their kernels for (:meth:`default_target`).
    #: Where it can answer without the device, the suite's static checks run without it.
    native_target: Callable[[], str] | None = None
    #: A fault leaves the device unusable for the rest of the process (CUDA's sticky errors: after
    #: CUDA_ERROR_ILLEGAL_ADDRESS the driver refuses even a new primary context in that process).
    #: The sequential engine then drives its device from one worker process, which it replaces
    #: after such a fault, instead of from a supervisor thread; the supervisor never opens it.
    faults_end_process: bool = False
    #: Calls of the worker lockdown's deny-list (``engine/lockdown.py``) this backend's device
    #: still makes after ``open`` in a worker process (the CPU backend: ``execve``, since
    #: ``reset`` starts a new device template).
    worker_keeps: frozenset[str] = frozenset()
    #: Known gaps: conformance test name (or ``property::test`` glob) -> reason. The suite runs
    #: them as strict expected failures: one that starts passing fails as a stale entry.
    known_gaps: Mapping[str, str] = field(default_factory=dict)
    plugin: str = ""

    def engine_names(self) -> list[str]:
        return [f"{self.name}-{kind}" for kind in self.engine_kinds]

    def default_target(self) -> str:
        """What to build for when no target is named: :attr:`native_target`, else the first
        build target that is not a pattern. ValueError when there is neither."""
        if self.native_target is not None:
            return self.native_target()
        exact = [t for t in self.build_targets if not any(c in t for c in "*?[")]
        if not exact:
            raise ValueError(f"backend {self.name!r} has no native target and builds only for patterns "
                             f"({', '.join(self.build_targets) or 'none'}): name a target")
        return exact[0]

    def engine_kind(self, engine: str) -> str:
        """``sequential`` or ``<name>-sequential`` -> ``sequential``; ValueError naming the accepted
        values if this backend has no such engine."""
        kind = engine.removeprefix(f"{self.name}-")
        if kind not in self.engine_kinds:
            accepted = ", ".join(f"{k} (or {self.name}-{k})" for k in self.engine_kinds)
            raise ValueError(f"backend {self.name!r} has no engine {engine!r}; use {accepted}")
        return kind


def capabilities(*names: str | Capability) -> frozenset[Capability]:
    return frozenset(Capability(n) for n in names)


def iter_engine_names(backends: Iterable[Backend]) -> list[str]:
    return [name for b in backends for name in b.engine_names()]
