"""Direct execution of CPU kernel libraries with no isolation: the ``dedicated`` baseline.

This is what a single-tenant server built for one workload would do with the same compiled
kernels (thesis 5.1): the library is ``dlopen``ed *in this process*, every buffer is allocated
once, up front, and an invocation is "copy the inputs into their buffers, call the kernel entry
points, read the outputs". There is no sandbox (no fork, no seccomp, no Landlock), no zeroing, no
pool, no bounds checks at run time, no queue and no module cache.

**Only ever use it for trusted code** (our own ``examples/``): a library loaded here runs with
all of this process's rights. pappus itself never does this with tenant code; see
``device.py`` for how the backend runs kernels.

Two ways to use it:

* :class:`DirectFunction` in process: ``fn = DirectFunction(library, config, inputs)`` lays out
  buffers and resolves the launch program once for one request shape; ``fn(inputs)`` runs it.
* :func:`worker_main` is the entry point of a dedicated worker process
  (``pappus.bench.dedicated`` spawns them): it maps an arena shared with the frontend, in which
  the frontend writes inputs and reads outputs directly, and runs programs on request.

The launch program comes from core's :class:`pappus.plan.Plan` (sizes, grid, packed arguments),
evaluated once per request shape, so both sides run exactly the same launches with exactly the
same arguments.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import pickle
import struct
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pappus.plan import Launch, Loop

from .abi import ABI_VERSION, ENTRY_PREFIX

DEFAULT_FIBER_STACK = 64 * 1024
DEFAULT_STACKS = 1024
SHARED_BYTES = 64 * 1024
#: A loop body is unrolled into one flat call list when the whole program has at most this many
#: launches (a flat list is a little faster to walk from Python than nested loops).
FLATTEN_LIMIT = 100_000


class LaunchStruct(ctypes.Structure):
    """``struct pappus_launch`` of ``include/pappus_cpu_abi.h``."""

    _fields_ = [("abi", ctypes.c_uint32), ("grid", ctypes.c_uint32 * 3), ("block", ctypes.c_uint32 * 3),
                ("stack_count", ctypes.c_uint32), ("shared_bytes", ctypes.c_uint64),
                ("dyn_shared", ctypes.c_void_p), ("stacks", ctypes.c_void_p), ("stack_stride", ctypes.c_uint64),
                ("heap_base", ctypes.c_void_p), ("heap_size", ctypes.c_uint64), ("heap_used", ctypes.c_void_p)]


_ENTRY = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)


class DirectRuntime:
    """Fiber stacks, a dynamic-shared area and the libraries loaded so far, for one process."""

    def __init__(self, fiber_stack_bytes: int = DEFAULT_FIBER_STACK, stacks: int = DEFAULT_STACKS) -> None:
        page = mmap.PAGESIZE
        self.stride = -(-fiber_stack_bytes // page) * page + page
        self.count = stacks
        self._stacks = mmap.mmap(-1, self.stride * self.count)
        self.stacks_address = ctypes.addressof(ctypes.c_char.from_buffer(self._stacks))
        self._shared = mmap.mmap(-1, SHARED_BYTES)
        self.shared_end = ctypes.addressof(ctypes.c_char.from_buffer(self._shared)) + SHARED_BYTES
        self._heap_used = ctypes.c_uint64(0)
        self._libraries: dict[str, ctypes.CDLL] = {}
        self._entries: dict[tuple[str, str], Any] = {}

    _shared: DirectRuntime | None = None

    @classmethod
    def shared(cls) -> DirectRuntime:
        """The process's runtime. One per process: a library's compatibility runtime may keep
        state that points into the stacks of the launches it ran, so they must stay put."""
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def entry(self, library: str, kernel: str) -> Any:
        """The kernel's entry point (a ctypes function) in ``library`` (loaded on first use)."""
        key = (library, kernel)
        fn = self._entries.get(key)
        if fn is None:
            lib = self._libraries.get(library)
            if lib is None:
                lib = self._libraries[library] = ctypes.CDLL(str(library), mode=os.RTLD_NOW | os.RTLD_LOCAL)
            address = ctypes.cast(getattr(lib, ENTRY_PREFIX + kernel), ctypes.c_void_p).value
            fn = self._entries[key] = _ENTRY(address)
        return fn

    def launch_struct(self, step: Launch) -> LaunchStruct:
        shared = (step.shared_mem_bytes + 15) & ~15
        return LaunchStruct(ABI_VERSION, step.grid, step.block, self.count, step.shared_mem_bytes,
                            self.shared_end - shared, self.stacks_address, self.stride, None, 0,
                            ctypes.addressof(self._heap_used))


class CompiledProgram:
    """A launch program turned into ready-made ctypes calls (arguments packed once)."""

    def __init__(self, runtime: DirectRuntime, program: Any, library_of: Mapping[str, str]) -> None:
        self._keep: list[Any] = [runtime]
        launches = _count(program)
        self.calls: list[Any] = []
        self.tree = self._compile(runtime, program, library_of, flatten=launches <= FLATTEN_LIMIT)

    def _compile(self, runtime: DirectRuntime, steps: Any, library_of: Mapping[str, str], flatten: bool) -> list[Any]:
        out: list[Any] = []
        for step in steps:
            if isinstance(step, Launch):
                fn = runtime.entry(library_of[step.kernel], step.kernel)
                launch = runtime.launch_struct(step)
                bufs = [ctypes.create_string_buffer(bytes(a), max(8, len(a))) for a in step.args]
                argv = (ctypes.c_void_p * max(1, len(bufs)))(*(ctypes.addressof(b) for b in bufs))
                self._keep += [launch, bufs, argv]
                out.append((fn, ctypes.addressof(launch), ctypes.addressof(argv)))
            elif isinstance(step, Loop):
                body = self._compile(runtime, step.body, library_of, flatten)
                if flatten:
                    out.extend(body * step.times)
                else:
                    out.append((step.times, body))
            else:
                raise TypeError(f"unknown program step {type(step).__name__}")
        return out

    def run(self) -> None:
        _run(self.tree)


def _run(tree: list[Any]) -> None:
    for item in tree:
        if len(item) == 3:
            item[0](item[1], item[2])
        else:
            times, body = item
            for _ in range(times):
                _run(body)


def _count(steps: Any) -> int:
    n = 0
    for step in steps:
        n += _count(step.body) * step.times if isinstance(step, Loop) else 1
    return n


def shape_key(inputs: Mapping[str, Any], small: int = 64) -> tuple[Any, ...]:
    """What a program depends on: every input's size, and the bytes of small inputs (values a
    ``FromInput`` sizing may read, such as a repetition count)."""
    return tuple((name, len(data), bytes(data) if len(data) <= small else None)
                 for name, data in sorted(inputs.items()))


class Layout:
    """Where one request shape's buffers live in an arena, and the launch program for it."""

    def __init__(self, plan: Any, inputs: Mapping[str, Any], base: int) -> None:
        res = plan.resolve(inputs)
        self.top = res.top
        self.offsets = dict(res.offsets)
        self.sizes = dict(res.sizes)
        self.inputs = [(name, self.offsets[name]) for name in plan.inputs]
        self.outputs = [(name, self.offsets[name], self.sizes[name]) for name in plan.outputs]
        self.program = plan.program(res, base, {}, self.offsets)

    def describe(self) -> dict[str, Any]:
        return {"top": self.top, "inputs": self.inputs, "outputs": self.outputs}


def make_plan(config: Any, libraries: Mapping[str, str | os.PathLike[str]] | None = None) -> Any:
    """Core's plan of a function config (a dict, path or parsed config); with ``libraries``
    (name -> path), arguments are packed to the kernels' real parameter sizes, read from the
    libraries' manifests, as the engines do."""
    from pappus.config import parse_function
    from pappus.plan import Plan

    from .driver import CPU_LIMITS, CpuDriver

    cfg = config if hasattr(config, "blueprint") else parse_function(config, device=CPU_LIMITS)
    signatures: dict[str, Any] = {}
    infos: dict[str, Any] = {}
    for ref in cfg.kernels if libraries else ():
        if ref.library not in infos:
            infos[ref.library] = CpuDriver().inspect_library(Path(libraries[ref.library]).read_bytes())
        kernel = infos[ref.library].kernel(ref.name)
        if kernel is not None:
            signatures[ref.name] = kernel.params
    return Plan(cfg, signatures, device_limits=CPU_LIMITS)


def library_map(plan: Any, libraries: Mapping[str, str | os.PathLike[str]]) -> dict[str, str]:
    """kernel name -> library path, from the config's kernel references."""
    return {ref.name: str(libraries[ref.library]) for ref in plan.config.kernels}


class DirectFunction:
    """One function run in this process, on buffers allocated once (no isolation at all).

    ``libraries`` maps the config's library names to ``.so`` paths. Each distinct request shape
    (input sizes and small input values) gets its own layout and program, built on first use.
    """

    def __init__(self, config: Any, libraries: Mapping[str, str | os.PathLike[str]],
                 arena_bytes: int = 64 << 20, runtime: DirectRuntime | None = None) -> None:
        self.plan = make_plan(config, libraries)
        self.runtime = runtime or DirectRuntime.shared()
        self.kernels = library_map(self.plan, libraries)
        self._arena = mmap.mmap(-1, arena_bytes)
        self._view = memoryview(self._arena)
        self.base = ctypes.addressof(ctypes.c_char.from_buffer(self._arena))
        self._programs: dict[tuple[Any, ...], tuple[Layout, CompiledProgram]] = {}

    def prepare(self, inputs: Mapping[str, Any]) -> tuple[Layout, CompiledProgram]:
        key = shape_key(inputs)
        entry = self._programs.get(key)
        if entry is None:
            layout = Layout(self.plan, inputs, self.base)
            if layout.top > len(self._arena):
                raise MemoryError(f"the buffers need {layout.top} bytes; the arena has {len(self._arena)}")
            entry = self._programs[key] = (layout, CompiledProgram(self.runtime, layout.program, self.kernels))
        return entry

    def __call__(self, inputs: Mapping[str, Any]) -> dict[str, bytes]:
        layout, program = self.prepare(inputs)
        view = self._view
        for name, off in layout.inputs:
            data = inputs[name]
            view[off:off + len(data)] = data
        program.run()
        return {name: bytes(view[off:off + n]) for name, off, n in layout.outputs}


# --- dedicated worker process ------------------------------------------------------------------
#
# frontend -> worker, on a SOCK_SEQPACKET socket:
#   b"P" + pickle((program_id, config, libraries, shape inputs))   prepare a program
#   b"R" + u32 program_id                                            run it (inputs already in the arena)
#   b"Q"                                                             quit
# worker -> frontend:
#   b"H" + u64 arena address                                         hello
#   b"O" + pickle(layout description)  |  b"E" + utf-8 message       prepared / failed
#   b"D"  |  b"E" + message                                          ran / failed

OP_PREPARE, OP_RUN, OP_QUIT = b"P", b"R", b"Q"
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def worker_main(sock_fd: int, arena_fd: int, arena_bytes: int) -> None:
    """A dedicated worker: kernels run here, on buffers in the arena shared with the frontend."""
    import socket

    sock = socket.socket(fileno=sock_fd)
    arena = mmap.mmap(arena_fd, arena_bytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    os.close(arena_fd)
    base = ctypes.addressof(ctypes.c_char.from_buffer(arena))
    runtime = DirectRuntime.shared()
    programs: dict[int, CompiledProgram] = {}
    sock.send(b"H" + _U64.pack(base))
    recv, send = sock.recv, sock.send
    while True:
        msg = recv(1 << 20)
        if not msg or msg[:1] == OP_QUIT:
            return
        op = msg[:1]
        if op == OP_RUN:
            program = programs.get(_U32.unpack_from(msg, 1)[0])
            if program is None:
                send(b"Eunknown program")
                continue
            try:
                program.run()
            except Exception as exc:  # pragma: no cover - a kernel crash kills the process instead
                send(b"E" + str(exc).encode())
                continue
            send(b"D")
        elif op == OP_PREPARE:
            try:
                pid, config, libraries, shape = pickle.loads(msg[1:])
                shape = {k: bytes(v) if isinstance(v, int) else v for k, v in shape.items()}  # sizes -> zeros
                plan = make_plan(config, libraries)
                layout = Layout(plan, shape, base)
                if layout.top > arena_bytes:
                    raise MemoryError(f"the buffers need {layout.top} bytes; the arena has {arena_bytes}")
                programs[pid] = CompiledProgram(runtime, layout.program, library_map(plan, libraries))
                send(b"O" + pickle.dumps(layout.describe()))
            except Exception as exc:
                send(b"E" + f"{type(exc).__name__}: {exc}".encode())
        else:
            send(b"Eunknown request")


def worker_command(sock_fd: int, arena_fd: int, arena_bytes: int) -> list[str]:
    """argv that starts :func:`worker_main` in a fresh interpreter."""
    return [sys.executable, "-c", "import sys; from pappus_cpu.direct import worker_main; "
            "worker_main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))",
            str(sock_fd), str(arena_fd), str(arena_bytes)]


def library_path(path: str | os.PathLike[str]) -> str:
    return str(Path(path).resolve())


__all__ = ["DirectFunction", "DirectRuntime", "CompiledProgram", "Layout", "make_plan", "shape_key",
           "worker_main", "worker_command"]
