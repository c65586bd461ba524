"""CpuDevice: the CPU backend's DeviceAPI. Runs in the trusted process, never loads tenant code.

It drives a device template process (``csrc/pappus_cpu_device.c``) over a socket. The pool
is a memfd mapped here and in the template, so ``write``/``read``/``memset`` are plain memory
copies with no IPC; device addresses are the template's (and its children's) addresses of the
pool. ``run`` writes the whole launch program into a shared command region (one per parity of
the invocation number) and wakes the template's pre-forked child with one byte. The child
answers with one byte on its done pipe when the program has finished, before its process is
torn down, and ``run`` returns then: the outputs are complete. The child is then *ending*:
nothing touches its window of the pool again (zeroing is deferred, writes wait) until the
template has reaped it and reported it, so the teardown overlaps with handing the outputs over,
and with the next run when that one's window is disjoint (the pool alternates windows:
``alternate_windows``). A kernel that forges the byte early gains only wrong outputs of its own;
one that then keeps running is killed after ``EXIT_GRACE``.

Isolation per invocation comes from the fresh child: every global, static, stack and the malloc
arena start from their load-time image. Pool contents are zeroed by the buffer pool on release;
with a known extent (``Program.extent``, :meth:`bind_pool` or :meth:`set_extent`) the child
cannot touch the pool past the invocation's buffers at all, and without one anything it wrote
past them is zeroed when the pool is released (see :meth:`memset`).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import mmap
import os
import select
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pappus._procfs import iter_process_stats
from pappus.errors import DeviceError, KernelFault, LibraryError, SandboxViolation
from pappus.interfaces import DeviceAPI, DeviceInfo, LibraryImage
from pappus.kernels import LibraryInfo
from pappus.plan import Launch, Loop

from . import native
from . import protocol as P
from .driver import CPU_LIMITS, CpuDriver, loadable_image

log = logging.getLogger("pappus.cpu")

DEFAULT_MEMORY = 512 * 1024 * 1024
DEFAULT_FIBER_STACK = 64 * 1024
DEFAULT_GUARDED_STACKS = 64
DEFAULT_CMD_BYTES = 1 << 20
HELLO_TIMEOUT = 20.0
REQUEST_TIMEOUT = 60.0
#: Seconds a child that said it finished gets to exit before the pool is reused anyway (it is
#: killed first). Normal exits take well under a millisecond.
EXIT_GRACE = 0.25


@dataclass(eq=False)
class CpuModule:
    """A library loaded into the template (one dlopen handle there)."""

    id: int
    sha256: str
    info: LibraryInfo | None
    loaded: bool = True


@dataclass(eq=False)
class CpuKernel:
    """A kernel entry point: its address in the template (valid in every child forked later)."""

    name: str
    address: int
    module: CpuModule
    sizes: tuple[int, ...] | None = None


@dataclass
class _Reply:
    op: int
    err: int
    a: int
    b: int
    c: int
    d: int
    payload: bytes = b""
    fds: list[int] = field(default_factory=list)


@dataclass(eq=False)
class _Ending:
    """A run whose child said it finished, until the template reports it gone."""

    seq: int
    lo: int  # what it can reach: pool offsets [lo, hi), whole pages
    hi: int
    known: bool = True  # False: it ran without a known window (it can reach the whole pool)
    left: list[tuple[int, int]] = field(default_factory=list)  # (offset, bytes) to zero once it is gone
    deadline: float = 0.0  # when it must be gone (monotonic); then it is killed
    killed: bool = False


class CpuDevice(DeviceAPI):
    """One sandboxed CPU "device": a template process and its per-invocation children."""

    bounds_writes = True
    alternate_windows = mmap.PAGESIZE  # each child is fenced to the pages of its window
    abort_ends_run = True  # abort kills the sandbox child, so run raises at once

    def __init__(self, memory_bytes: int | None = None, fiber_stack_bytes: int = DEFAULT_FIBER_STACK,
                 max_block_threads: int = CPU_LIMITS.max_block_threads, guarded_stacks: int = DEFAULT_GUARDED_STACKS,
                 cmd_bytes: int = DEFAULT_CMD_BYTES,
                 hide_other_modules: bool = True, revalidate: bool = True,
                 cache_dir: str | None = None, **_: Any) -> None:
        env_memory = os.environ.get("PAPPUS_CPU_MEMORY")
        self.memory_bytes = int(memory_bytes if memory_bytes is not None else (env_memory or DEFAULT_MEMORY))
        self.fiber_stack_bytes = int(fiber_stack_bytes)
        self.max_block_threads = int(max_block_threads)
        self.guarded_stacks = int(guarded_stacks)
        self.hide_other_modules = hide_other_modules
        self.revalidate = revalidate
        self.cache_dir = cache_dir
        self.cmd_bytes = max(int(cmd_bytes), 64 * 1024)
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._go_fds: list[int] = []
        self._done_fds: list[int] = []
        self._pollers: list[Any] = []  # per child slot: the socket and that slot's done pipe
        self._ending: dict[int, _Ending] = {}  # by invocation number, in the order they said done
        self._send_lock = threading.Lock()
        self._reap_lock = threading.Lock()
        self._alive = False
        self._closed = False
        self._details: dict[str, Any] = {}
        self._page = mmap.PAGESIZE
        # pool
        self._base = 0
        self._pool_size = 0
        self._pool_fd = -1
        self._pool_guard = 0  # no-access bytes on each side of the pool in the template
        self._pool_mm: mmap.mmap | None = None
        self._pool_mv: memoryview | None = None
        self._pool_np: np.ndarray | None = None
        self._dirty_top = 0  # pool bytes a child may have written past the last release
        self._bound_pool: Any = None
        self._next_extent: int | None = None
        # command region
        self._cmd_mm: list[mmap.mmap | None] = [None, None]  # one command region per parity
        self._cmd_size = [0, 0]
        self._seq = 0
        self._running_seq = 0
        self._heap_limit = 0
        self._heap_address = 0  # the malloc arena in the template (0: none)
        self._validated: dict[str, LibraryInfo] = {}
        self._modules: dict[int, CpuModule] = {}
        self._pending: list[Launch] = []
        self._encoded: list[tuple[Any, int, list[str], tuple[int, ...]] | None] = [None, None]
        self._prog_off = P.HEADER_BYTES  # where the program starts in the command region
        self.runs = 0

    # --- lifecycle -----------------------------------------------------------------------------

    def open(self) -> DeviceInfo:
        if self._proc is not None or self._closed:
            raise DeviceError("the CPU device is already open (or closed)", api="open")
        self._spawn()
        return DeviceInfo(name="cpu (sandboxed child process per invocation)", total_memory=self.memory_bytes,
                          free_memory=self.memory_bytes, limits=CPU_LIMITS, heap_limit=self._heap_limit,
                          details=dict(self._details))

    def _spawn(self) -> None:
        """Start a template, receive its wake-up pipes and map a command region into it."""
        binary = native.device_binary(self.cache_dir)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [str(binary), str(theirs.fileno()), str(os.getpid()), str(self.fiber_stack_bytes),
                 str(self.max_block_threads), str(self.guarded_stacks)],
                pass_fds=(theirs.fileno(),), close_fds=True, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"},
                start_new_session=True)
        except OSError as exc:
            ours.close()
            raise DeviceError(f"cannot start the CPU device template: {exc.strerror}", api="open") from None
        finally:
            theirs.close()
        self._sock = ours
        self._alive = True
        try:
            hello = self._recv(timeout=HELLO_TIMEOUT)
            self._go_fds, self._done_fds = hello.fds[:2], hello.fds[2:]
            if hello.op != P.OP_HELLO or hello.err:
                raise DeviceError(f"the CPU device template failed to start: "
                                  f"{hello.payload.decode(errors='replace') or hello.err}", api="open")
            if len(self._go_fds) != 2 or len(self._done_fds) != 2:
                raise DeviceError("the CPU device template sent no wake-up and done pipes", api="open")
            for fd in hello.fds:  # a full wake-up pipe already holds a wake-up: never block on it
                os.set_blocking(fd, False)
            self._pollers = []
            for fd in self._done_fds:
                poller = select.poll()
                poller.register(ours.fileno(), select.POLLIN)
                poller.register(fd, select.POLLIN)
                self._pollers.append(poller)
            self._details = self._parse_hello(hello)
            for parity in (0, 1):
                self._map_cmd(self.cmd_bytes, parity)
        except BaseException:
            self._stop_template()
            raise

    def _stop_template(self) -> None:
        self._alive = False
        sock, self._sock = self._sock, None
        if sock is not None:
            try:  # the template kills and reaps its children, then exits: its end closes
                sock.send(P.MSG.pack(P.OP_QUIT, 0, 0, 0, 0, 0))
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and select.select([sock], [], [], deadline - time.monotonic())[0]:
                    if not sock.recv(P.MSG.size + P.MSG_MAX):
                        break
            except OSError:
                pass
            sock.close()
        self._kill_group()
        self._reap()
        self._proc = None
        for fd in self._go_fds + self._done_fds:
            os.close(fd)
        self._go_fds, self._done_fds, self._pollers = [], [], []
        self._all_gone()  # the template killed and reaped them
        for parity in (0, 1):
            mm, self._cmd_mm[parity] = self._cmd_mm[parity], None
            if mm is not None:
                mm.close()
        self._encoded = [None, None]
        for module in self._modules.values():
            module.loaded = False
        self._modules.clear()

    def _parse_hello(self, hello: _Reply) -> dict[str, Any]:
        details: dict[str, Any] = {}
        for line in hello.payload.decode("utf-8", "replace").splitlines():
            key, _, value = line.partition("=")
            details[key] = value
        self._stacks = int(details.pop("stacks", "0"), 16)
        self._stack_stride = int(details.pop("stack_stride", "0"))
        self._stack_count = int(details.get("stack_count", "0"))
        self._dyn_end = int(details.pop("dyn_shared_end", "0"), 16)
        details["template_pid"] = hello.a
        details["landlock_abi"] = int(details.get("landlock_abi", "0"))
        details["landlock_active"] = bool(hello.d & 1)
        details["isolation"] = "fresh forked child per invocation; seccomp allow-list in the child"
        details["module_loading"] = "validated statically, sha256-checked, loaded from a sealed memfd"
        details["fiber_stack_bytes"] = self._stack_stride - self._page
        details["fiber_stacks"] = self._stack_count
        details["guarded_fiber_stacks"] = int(details.pop("stack_guarded", "0"))
        details["hide_other_modules"] = self.hide_other_modules
        return details

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop_template()
        self._pool_np = None
        if self._pool_mv is not None:
            self._pool_mv.release()
            self._pool_mv = None
        if self._pool_mm is not None:
            self._pool_mm.close()
            self._pool_mm = None
        if self._pool_fd >= 0:
            os.close(self._pool_fd)
            self._pool_fd = -1

    @property
    def healthy(self) -> bool:
        return self._alive and not self._template_exited()

    def _template_exited(self) -> bool:
        """Whether the template ended, without reaping it (see :meth:`_kill_group`)."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def _reap(self) -> int | None:
        """Reap the template (only after :meth:`_kill_group`); its exit code, negative for a signal."""
        proc = self._proc
        if proc is None:
            return None
        with self._reap_lock:
            return proc.wait()

    def reset(self) -> int | None:
        """After a fault nothing needs resetting: the faulting child is gone and the next one is
        fresh. If the template itself died, start a new one on the same pool memory (modules
        must be loaded again) and return the pool's base address there, which may differ."""
        if self.healthy:
            return None
        if self._closed:
            raise DeviceError("the CPU device is closed", api="reset")
        self._stop_template()
        self._spawn()
        if self._heap_limit:
            self.set_malloc_heap_limit(self._heap_limit)
        if self._pool_fd >= 0:
            self._base = self._map_pool()
            self._dirty_top = self._pool_size  # whatever the dead template's child wrote goes at release
        return self._base

    def __enter__(self) -> CpuDevice:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- messages ------------------------------------------------------------------------------

    def _send(self, op: int, a: int = 0, b: int = 0, c: int = 0, d: int = 0, payload: bytes = b"",
              fd: int | None = None) -> None:
        sock = self._sock
        if sock is None or not self._alive:
            raise DeviceError("the CPU device is not open", api="send")
        data = P.MSG.pack(op, 0, a, b, c, d) + payload
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))] if fd is not None else []
        try:
            with self._send_lock:
                sock.sendmsg([data], ancillary)
        except OSError as exc:
            self._died(f"sending to it failed: {exc.strerror}")

    def _recv(self, timeout: float | None = None) -> _Reply:
        sock = self._sock
        if sock is None:
            raise DeviceError("the CPU device is not open", api="recv")
        if timeout is not None:
            ready, _, _ = select.select([sock], [], [], timeout)
            if not ready:
                self._died(f"it did not answer within {timeout:g} s")
        try:
            data, ancdata, _flags, _addr = sock.recvmsg(P.MSG.size + P.MSG_MAX, socket.CMSG_SPACE(4 * 4))
        except OSError as exc:
            self._died(f"reading from it failed: {exc.strerror}")
        fds: list[int] = []
        for level, kind, raw in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.extend(struct.unpack(f"{len(raw) // 4}i", raw[: len(raw) // 4 * 4]))
        if len(data) < P.MSG.size:
            for fd in fds:
                os.close(fd)
            self._died("it closed the connection" if not data else "it sent a short message")
        op, err, a, b, c, d = P.MSG.unpack_from(data)
        return _Reply(op, err, a, b, c, d, data[P.MSG.size:], fds)

    def _request(self, op: int, a: int = 0, b: int = 0, payload: bytes = b"", fd: int | None = None,
                 c: int = 0) -> _Reply:
        self._await_exit()  # nothing changes under a child that is still on its way out
        self._send(op, a, b, c, payload=payload, fd=fd)
        while True:
            rep = self._recv(timeout=REQUEST_TIMEOUT)
            for extra in rep.fds:
                os.close(extra)
            if rep.op == op:
                return rep
            # A DONE that arrives here belongs to no run (cannot happen in order); ignore it.

    def _await_exit(self) -> None:
        """Return once every ending child (it said done) has been reaped by the template."""
        if self._ending:
            self._await(list(self._ending))

    def _await(self, seqs: Iterable[int]) -> None:
        """Return once the children of runs ``seqs`` are gone (reaped and reported; their
        deferred zeroing done). One that does not exit within ``EXIT_GRACE`` of saying done is
        killed."""
        while True:
            waiting = [e for seq in seqs if (e := self._ending.get(seq)) is not None]
            if not waiting:
                return
            sock = self._sock
            if sock is None:
                self._all_gone()
                return
            # Reports already waiting are read first: a child past its grace may long be gone.
            first = min(e.deadline for e in waiting)
            if not select.select([sock], [], [], max(0.0, first - time.monotonic()))[0]:
                self._overdue(time.monotonic())
                continue
            rep = self._recv()
            for extra in rep.fds:
                os.close(extra)
            self._note(rep)

    def _note(self, rep: _Reply) -> None:
        """A message that is not the answer being waited for: an ending child's exit report."""
        if rep.op == P.OP_DONE:
            ending = self._ending.pop(rep.a, None)
            if ending is not None:
                self._zero_left(ending)

    def _overdue(self, now: float) -> None:
        """Kill ending children past their grace; give up on the template if one outlives that."""
        for ending in list(self._ending.values()):
            if ending.deadline > now:
                continue
            if ending.killed:
                self._died(f"a child that finished did not exit within {EXIT_GRACE + REQUEST_TIMEOUT:g} s")
            log.warning("a CPU kernel reported done but its process did not exit within %g s; killing it",
                        EXIT_GRACE)
            self._send(P.OP_ABORT, a=ending.seq)
            ending.killed, ending.deadline = True, now + REQUEST_TIMEOUT

    def _zero_left(self, ending: _Ending) -> None:
        """Once a child is gone: the zeroing deferred until then, and the bytes past its buffers
        in their last page (its fence is page-granular)."""
        assert self._pool_np is not None
        for off, nbytes in ending.left:
            self._pool_np[off:off + nbytes] = 0
        ending.left.clear()

    def _all_gone(self) -> None:
        """Every child is gone (the template and its process group were killed)."""
        endings = list(self._ending.values())
        self._ending.clear()
        if self._pool_np is not None:
            for ending in endings:
                self._zero_left(ending)

    def _ending_over(self, off: int, nbytes: int) -> list[int]:
        """Ending children whose reach overlaps ``[off, off + nbytes)`` of the pool."""
        end = off + nbytes
        return [seq for seq, e in self._ending.items() if e.lo < end and off < e.hi and nbytes]

    def _kill_group(self) -> None:
        """SIGKILL the template and every child it forked, and wait until none can run.

        The template leads its own process group, and its pid (so the group id) stays reserved
        until we reap it. A child killed by PDEATHSIG may run on for a moment after its
        template died: the pool must not be zeroed and handed to the next tenant before it is
        gone, so this waits (bounded) until every member is dead or a zombie.
        """
        proc = self._proc
        if proc is None:
            return
        with self._reap_lock:
            if proc.returncode is not None:  # reaped: its pid, so the group id, may be reused
                return
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                return
            deadline = time.monotonic() + 5
            while _group_running(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.001)

    def _died(self, why: str) -> Any:
        self._alive = False
        self._kill_group()
        self._all_gone()
        code = self._reap()
        if code is not None and code < 0:
            how = f"; it was killed by {signal.Signals(-code).name}"
        elif code is not None:
            how = f"; it exited with status {code}"
        else:
            how = ""
        raise DeviceError(f"the CPU device template is unusable: {why}{how}", api="template")

    # --- pool ----------------------------------------------------------------------------------

    def reserve(self, nbytes: int) -> int:
        if self._pool_mm is not None:
            raise DeviceError("the pool is already reserved", api="reserve")
        if nbytes <= 0:
            raise DeviceError(f"cannot reserve a pool of {nbytes} bytes", api="reserve")
        size = -(-nbytes // self._page) * self._page
        fd = os.memfd_create("pappus-pool", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            self._pool_mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        self._pool_fd = fd  # kept: a respawned template maps the same memory
        self._pool_size = size
        self._pool_mv = memoryview(self._pool_mm)
        self._pool_np = np.frombuffer(self._pool_mm, dtype=np.uint8)
        self._base = self._map_pool()
        return self._base

    def _map_pool(self) -> int:
        rep = self._request(P.OP_POOL, a=self._pool_size, fd=self._pool_fd)
        if rep.err:
            raise DeviceError(f"mapping the pool in the CPU device failed: {rep.payload.decode(errors='replace')}",
                              api="reserve")
        self._pool_guard = int(rep.b)
        return int(rep.a)

    def _offset(self, address: int, nbytes: int, api: str) -> int:
        off = address - self._base
        if self._pool_mm is None or off < 0 or nbytes < 0 or off + nbytes > self._pool_size:
            raise DeviceError(f"{api} of {nbytes} bytes at {address:#x} is outside the pool", api=api)
        return off

    def write(self, address: int, data: memoryview) -> None:
        view = data if isinstance(data, memoryview) else memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        off = self._offset(address, view.nbytes, "write")
        if self._ending and (seqs := self._ending_over(off, view.nbytes)):
            self._await(seqs)
        self._pool_mv[off:off + view.nbytes] = view  # type: ignore[index]

    def read(self, address: int, out: memoryview) -> None:
        view = out if isinstance(out, memoryview) else memoryview(out)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        off = self._offset(address, view.nbytes, "read")
        if self._ending:
            self._await_deferred(off, view.nbytes)
        view[:] = self._pool_mv[off:off + view.nbytes]  # type: ignore[index]

    def read_bytes(self, address: int, nbytes: int) -> bytes:
        off = self._offset(address, nbytes, "read")
        if self._ending:
            self._await_deferred(off, nbytes)
        return self._pool_mm[off:off + nbytes]  # type: ignore[index]  # one copy, into the bytes

    def _await_deferred(self, off: int, nbytes: int) -> None:
        """A read of what was released reads zeros: wait for the zeroing deferred there."""
        end = off + nbytes
        seqs = [seq for seq, e in self._ending.items() if any(o < end and off < o + n for o, n in e.left)]
        if seqs:
            self._await(seqs)

    def memset(self, address: int, value: int, nbytes: int) -> None:
        off = self._offset(address, nbytes, "memset")
        if self._ending and (seqs := self._ending_over(off, nbytes)):
            ending = self._ending[seqs[0]]
            if value == 0 and len(seqs) == 1 and ending.known and ending.lo <= off and off + nbytes <= ending.hi:
                ending.left.append((off, nbytes))  # a release: done once that child is gone
                return
            self._await(seqs)
        if nbytes:
            self._pool_np[off:off + nbytes] = value & 0xFF  # type: ignore[index]
        if off == 0 and value == 0 and self._dirty_top > nbytes:
            # A release: a child ran without a known extent and may have written past the
            # invocation's buffers. Zero the rest of what it could have reached.
            self._await_exit()
            self._zero_beyond(nbytes, self._dirty_top)
        if off == 0 and value == 0:
            self._dirty_top = 0

    def _zero_beyond(self, start: int, end: int) -> None:
        page = self._page
        aligned = -(-start // page) * page
        if aligned > start:
            self._pool_np[start:min(aligned, end)] = 0  # type: ignore[index]
        if end > aligned:
            # Frees the memfd's pages (a hole reads as zeros): cheap where nothing was written.
            self._pool_mm.madvise(mmap.MADV_REMOVE, aligned, end - aligned)  # type: ignore[union-attr]

    def bind_pool(self, pool: Any) -> None:
        """Take each run's extent from ``pool.high_water`` (a :class:`pappus.pool.BufferPool`)."""
        self._bound_pool = pool

    def set_extent(self, nbytes: int) -> None:
        """Bytes of the pool (from its base) the next run may touch."""
        self._next_extent = int(nbytes)

    def _window(self, program: Any) -> tuple[int, int | None]:
        """``(start, extent)`` of the pool a run may touch; extent None: unknown (all of it)."""
        extent = getattr(program, "extent", None)
        start = getattr(program, "start", 0) if extent is not None else 0
        if extent is None and self._next_extent is not None:
            extent, self._next_extent = self._next_extent, None
        if extent is None and self._bound_pool is not None:
            extent, start = int(self._bound_pool.high_water), int(getattr(self._bound_pool, "low", 0))
        if extent is None:
            return 0, None
        extent = min(max(int(extent), 0), self._pool_size)
        return min(max(int(start), 0), extent), extent

    # --- malloc heap -----------------------------------------------------------------------------

    def set_malloc_heap_limit(self, nbytes: int) -> int:
        if nbytes < 0:
            raise DeviceError("the malloc heap limit cannot be negative", api="set_malloc_heap_limit")
        rep = self._request(P.OP_HEAP, a=int(nbytes))
        if rep.err:
            raise DeviceError(f"setting the malloc heap limit failed: {rep.payload.decode(errors='replace')}",
                              api="set_malloc_heap_limit")
        self._heap_limit = rep.a
        self._heap_address = rep.b
        return rep.a

    # --- modules ---------------------------------------------------------------------------------

    def load_module(self, image: LibraryImage) -> CpuModule:
        data = image.data
        sha = hashlib.sha256(data).hexdigest()
        if sha != image.sha256:
            raise LibraryError("library bytes do not match their registered sha256")
        info = self._validated.get(sha)
        if info is None and self.revalidate:
            info = CpuDriver().inspect_library(data)
            self._validated[sha] = info
        image_bytes = loadable_image(data)  # its SONAME emptied: it cannot stand in for another load
        fd = os.memfd_create(f"pappus-lib-{sha[:16]}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(image_bytes)
            while view:
                view = view[os.write(fd, view):]
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                        fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
            rep = self._request(P.OP_LOAD, fd=fd)
        finally:
            os.close(fd)
        if rep.err:
            raise LibraryError(f"the CPU device could not load the library: {rep.payload.decode(errors='replace')}")
        if not 0 <= rep.a < P.MAX_MODULES:
            self._died(f"it named a module slot {rep.a} outside 0..{P.MAX_MODULES - 1}")
        module = CpuModule(id=rep.a, sha256=sha, info=info)
        self._modules[module.id] = module
        return module

    def unload_module(self, module: Any) -> None:
        if not isinstance(module, CpuModule) or not module.loaded:
            return
        module.loaded = False
        self._modules.pop(module.id, None)
        self._encoded = [None, None]
        if self._alive:
            self._request(P.OP_UNLOAD, a=module.id)

    def get_kernel(self, module: Any, name: str) -> CpuKernel:
        if not isinstance(module, CpuModule) or not module.loaded:
            raise DeviceError(f"kernel {name!r}: its module is not loaded", api="get_kernel")
        sizes = None
        if module.info is not None:
            kinfo = module.info.kernel(name)
            if kinfo is None:
                raise DeviceError(f"kernel {name!r} is not in the library", api="get_kernel")
            sizes = tuple(p.size for p in kinfo.params)
        rep = self._request(P.OP_SYM, a=module.id, payload=name.encode() + b"\0")
        if rep.err:
            raise DeviceError(f"kernel {name!r}: {rep.payload.decode(errors='replace')}", api="get_kernel")
        return CpuKernel(name=name, address=rep.a, module=module, sizes=sizes)

    # --- running ---------------------------------------------------------------------------------

    def launch(self, launch: Launch) -> None:
        self._pending.append(launch)

    def synchronize(self) -> None:
        pending, self._pending = tuple(self._pending), []
        if pending:
            self.run(pending)

    def run(self, program: Any) -> None:
        if not self._alive:
            raise DeviceError("the CPU device is not usable", api="run")
        if self._pool_mm is None:
            raise DeviceError("run before reserve", api="run")
        start, extent = self._window(program)
        seq = P.next_seq(self._seq)
        parity = seq & 1
        ending = self._ending_for(seq, start, extent)
        # Before this run starts: the child that used this parity's command region (and child
        # slot) last, and every ending child whose reach overlaps this run's, must be gone. An
        # ending child of the other parity with a disjoint window (the pool alternates windows)
        # can still be on its way out: it sees neither this run's buffers nor its command.
        waits = {s for s in self._ending if s & 1 == parity} | set(self._ending_over(ending.lo, ending.hi - ending.lo))
        if waits:
            self._await(waits)
        cached = self._encoded[parity]
        if cached is not None and (cached[0] is program or cached[0] == program):  # already in place
            _, end, names, keep = cached
        else:
            self._encoded[parity] = None
            modules: set[int] = set()
            names = []
            end = self._encode(program, names, modules, parity)
            keep = P.keep_bitmap(modules if self.hide_other_modules else range(P.MAX_MODULES))
            self._encoded[parity] = (program, end, names, keep)
        done_fd = self._done_fds[parity]
        _drain(done_fd)  # bytes a dead child wrote past its own: never taken for this run's
        # `go` = 0, every other field, then `go`; the child trusts `go` only after its wake-up byte.
        P.CMD_HEADER.pack_into(self._cmd_mm[parity], 0, seq, P.CMD_MAGIC, self._prog_off, end - self._prog_off,
                               P.EXTENT_UNKNOWN if extent is None else extent, start, *keep)
        self._seq = seq
        if extent is None:
            self._dirty_top = self._pool_size  # it can write anywhere: zeroed at the next release
        self._running_seq = seq
        try:
            try:
                os.write(self._go_fds[seq & 1], _WAKE[seq & 0xFF])
            except BlockingIOError:  # cannot happen: each child reads the bytes before its own
                self._died("its wake-up pipe is full")
            except OSError as exc:
                self._died(f"waking it failed: {exc.strerror}")
            rep = self._wait_run(seq, done_fd)
        finally:
            self._running_seq = 0
        self.runs += 1
        if rep is None:  # it said done: it is ending
            ending.deadline = time.monotonic() + EXIT_GRACE
            self._ending[seq] = ending
            return
        self._zero_left(ending)  # it is gone
        self._check(rep, names, start, extent)

    def _ending_for(self, seq: int, start: int, extent: int | None) -> _Ending:
        """What run ``seq`` can reach in the pool (its window, page-rounded), and the bytes of
        that reach past its buffers, which nobody else zeroes."""
        if extent is None:
            return _Ending(seq, 0, self._pool_size, known=False)
        page = self._page
        lo = start // page * page
        hi = min(-(-extent // page) * page, self._pool_size)
        return _Ending(seq, lo, max(hi, lo), left=[(extent, hi - extent)] if hi > extent else [])

    def _wait_run(self, seq: int, done_fd: int) -> _Reply | None:
        """Wait for run ``seq``: None when its child said it finished (it is then ending), else
        the template's report of how the child ended. Meanwhile earlier ending children are
        reported gone, or killed when past their grace."""
        poller = self._pollers[seq & 1]
        mine = seq & 0xFF
        while True:
            timeout = None
            if self._ending:
                timeout = max(0, int((min(e.deadline for e in self._ending.values()) - time.monotonic()) * 1000) + 1)
            events = poller.poll(timeout)
            if not events:
                self._overdue(time.monotonic())
                continue
            for fd, _events in events:
                if fd == done_fd:
                    try:
                        said = os.read(done_fd, 64)
                    except BlockingIOError:
                        continue
                    if mine in said:
                        return None
                    continue
                rep = self._recv()
                for extra in rep.fds:
                    os.close(extra)
                if rep.op == P.OP_DONE and rep.a == seq:
                    return rep
                self._note(rep)

    def abort(self) -> None:
        """Kill the child running now (from any thread); its ``run`` raises KernelFault(SIGKILL)."""
        seq = self._running_seq
        if seq and self._alive:
            try:
                self._send(P.OP_ABORT, a=seq)
            except DeviceError:
                pass

    def _encode(self, program: Any, names: list[str], modules: set[int], parity: int) -> int:
        """Write the program into the command region of ``parity``; return the end offset."""
        while True:
            try:
                return self._encode_into(program, names, modules, parity)
            except _NoRoom:
                names.clear()
                modules.clear()
                self._map_cmd(self._cmd_size[parity] * 2, parity)

    def _encode_into(self, program: Any, names: list[str], modules: set[int], parity: int) -> int:
        buf = self._cmd_mm[parity]
        assert buf is not None
        limit = self._cmd_size[parity]
        launch_pack = P.LAUNCH.pack_into
        loop_pack = P.LOOP.pack_into

        def emit(steps: Any, pos: int) -> int:
            for step in steps:
                if isinstance(step, Launch):
                    k = step.handle
                    if not isinstance(k, CpuKernel):
                        raise DeviceError(f"kernel {step.kernel!r} has no CPU kernel handle (got "
                                          f"{type(k).__name__})", api="run")
                    if not k.module.loaded:
                        raise DeviceError(f"kernel {step.kernel!r}: its module was unloaded", api="run")
                    args = step.args
                    if k.sizes is not None and tuple(len(a) for a in args) != k.sizes:
                        raise DeviceError(f"kernel {step.kernel!r} takes arguments of "
                                          f"{list(k.sizes)} bytes, got {[len(a) for a in args]}", api="run")
                    gx, gy, gz = step.grid
                    bx, by, bz = step.block
                    if min(gx, gy, gz, bx, by, bz) < 1 or bx * by * bz > self._stack_count:
                        raise DeviceError(f"kernel {step.kernel!r}: launch of {step.grid} x {step.block} "
                                          "is outside the device limits", api="run")
                    if step.shared_mem_bytes > P.SHARED_MAX or len(args) > P.MAX_ARGS:
                        raise DeviceError(f"kernel {step.kernel!r}: launch is outside the device limits",
                                          api="run")
                    nargs = len(args)
                    data_at = P.LAUNCH.size + 8 * nargs
                    size = data_at + sum((len(a) + 7) & ~7 for a in args)
                    if pos + size > limit:
                        raise _NoRoom
                    launch_pack(buf, pos, P.NODE_LAUNCH, size, k.address, gx, gy, gz, bx, by, bz,
                                step.shared_mem_bytes, len(names), nargs)
                    table = pos + P.LAUNCH.size
                    at = data_at
                    for i, a in enumerate(args):
                        struct.pack_into("<II", buf, table + 8 * i, at, len(a))
                        buf[pos + at:pos + at + len(a)] = a
                        at += (len(a) + 7) & ~7
                    names.append(step.kernel)
                    modules.add(k.module.id)
                    pos += size
                elif isinstance(step, Loop):
                    head = pos
                    pos += P.LOOP.size
                    if pos > limit:
                        raise _NoRoom
                    body_end = emit(step.body, pos)
                    loop_pack(buf, head, P.NODE_LOOP, P.LOOP.size, step.times, body_end - pos)
                    pos = body_end
                else:
                    raise DeviceError(f"unknown program step {type(step).__name__}", api="run")
            return pos

        return emit(program, self._prog_off)

    def _map_cmd(self, size: int, parity: int) -> None:
        """A (bigger) command region for the invocations of ``parity``, shared with the template."""
        size = -(-max(size, self._prog_off + 4096) // self._page) * self._page
        fd = os.memfd_create("pappus-cmd", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            # `go`: the last invocation started (of either parity: numbers only grow).
            P.CMD_HEADER.pack_into(mm, 0, self._seq, P.CMD_MAGIC, self._prog_off, 0, 0, 0,
                                   *P.keep_bitmap(()))
            rep = self._request(P.OP_CMD, a=size, b=parity, c=self._seq, fd=fd)
        finally:
            os.close(fd)
        if rep.err:
            mm.close()
            raise DeviceError(f"mapping the command region failed: {rep.payload.decode(errors='replace')}",
                              api="run")
        old, self._cmd_mm[parity] = self._cmd_mm[parity], mm
        if old is not None:
            old.close()
        self._cmd_size[parity] = size
        self._encoded[parity] = None

    # --- results ---------------------------------------------------------------------------------

    def _check(self, rep: _Reply, names: list[str], start: int, extent: int | None) -> None:
        if len(rep.payload) < P.STATUS.size:
            raise DeviceError("the CPU device sent a short status", api="run")
        state, sig, code, sysnr, arch, launch_id, trap, _r, addr, pc = P.STATUS.unpack_from(rep.payload)
        ws = rep.b
        aborted = bool(rep.c & 1)
        kernel = names[launch_id] if 0 <= launch_id < len(names) and state != P.ST_IDLE else None
        where = f"kernel {kernel!r}" if kernel else "the function"
        if os.WIFEXITED(ws) and os.WEXITSTATUS(ws) == 0 and state == P.ST_DONE and not aborted:
            return
        if aborted:
            raise KernelFault(f"{where} was stopped before it finished (deadline)", kernel=kernel,
                              signal="SIGKILL", reasons=["aborted"])
        if os.WIFEXITED(ws) and os.WEXITSTATUS(ws) == P.EXIT_FAULT and state == P.ST_FAULT and sig > 0:
            self._raise_fault(where, kernel, sig, code, sysnr, arch, trap, addr, pc, start, extent)
        if os.WIFSIGNALED(ws) and os.WTERMSIG(ws) == signal.SIGSYS:
            # A trapped system call whose SIGSYS handler could not report it.
            raise SandboxViolation(f"{where} made a system call the sandbox forbids",
                                   syscall="unknown", kernel=kernel, signal="SIGSYS", reasons=["syscall"])
        if os.WIFSIGNALED(ws):
            name = _signame(os.WTERMSIG(ws))
            raise KernelFault(f"{where} crashed: the process was killed by {name}", kernel=kernel,
                              signal=name, reasons=["crashed"])
        if state == P.ST_BAD_COMMAND:
            raise KernelFault(f"{where} failed: the sandbox could not run its command block", kernel=kernel,
                              reasons=["bad_command"])
        status = os.WEXITSTATUS(ws) if os.WIFEXITED(ws) else ws
        raise KernelFault(f"{where} ended the process before finishing (exit status {status})",
                          kernel=kernel, reasons=["early_exit"])

    def _raise_fault(self, where: str, kernel: str | None, sig: int, code: int, sysnr: int, arch: int,
                     trap: int, addr: int, pc: int, start: int, extent: int | None) -> None:
        name = _signame(sig)
        if sig == signal.SIGSYS:
            from .syscalls import syscall_name

            call = syscall_name(sysnr, arch)
            raise SandboxViolation(f"{where} made a system call the sandbox forbids: {call} (#{sysnr})",
                                   syscall=call, kernel=kernel, signal=name, reasons=["syscall"],
                                   syscall_number=sysnr, pc=pc)
        if sig in (signal.SIGSEGV, signal.SIGBUS):
            reasons = ["memory_fault", *self._classify(addr, start, extent)]
            what = {"out_of_bounds": "outside its buffers", "stack_overflow": "past the end of a thread's stack",
                    "shared_out_of_bounds": "past its dynamic shared memory",
                    "null_pointer": "near address 0"}.get(reasons[-1], "at an unmapped or protected address")
            raise KernelFault(f"{where} faulted: {name} accessing {addr:#x} ({what})", kernel=kernel,
                              address=addr, signal=name, reasons=reasons, pc=pc)
        if sig == signal.SIGFPE:
            reasons = ["arithmetic", *(["division_by_zero"] if code in (1, 3) else [])]  # FPE_INTDIV, FPE_FLTDIV
            raise KernelFault(f"{where} faulted: {name} (arithmetic error)", kernel=kernel, address=addr,
                              signal=name, reasons=reasons, pc=pc)
        if sig in (signal.SIGILL, signal.SIGTRAP):
            reason = "trap" if trap or sig == signal.SIGTRAP else "illegal_instruction"
            text = "hit a trap (abort, assert or __builtin_trap)" if reason == "trap" else "executed an illegal instruction"
            raise KernelFault(f"{where} {text} ({name})", kernel=kernel, address=addr, signal=name,
                              reasons=[reason], pc=pc)
        if sig == signal.SIGABRT:
            raise KernelFault(f"{where} aborted ({name})", kernel=kernel, signal=name, reasons=["trap"], pc=pc)
        raise KernelFault(f"{where} faulted: {name}", kernel=kernel, address=addr, signal=name,
                          reasons=["fault"], pc=pc)

    def _classify(self, addr: int, start: int, extent: int | None) -> list[str]:
        page = self._page
        base, size, guard = self._base, self._pool_size, max(self._pool_guard, self._page)
        if base - guard <= addr < base + size + guard and not base <= addr < base + size:
            return ["out_of_bounds"]
        if extent is not None and base + -(-extent // page) * page <= addr < base + size:
            return ["out_of_bounds"]
        if extent is not None and base <= addr < base + start // page * page:
            return ["out_of_bounds"]
        if self._stacks <= addr < self._stacks + self._stack_stride * self._stack_count:
            if (addr - self._stacks) % self._stack_stride < page:
                return ["stack_overflow"]
        if self._dyn_end <= addr < self._dyn_end + page:
            return ["shared_out_of_bounds"]
        heap_end = self._heap_address + -(-self._heap_limit // page) * page
        if self._heap_address and heap_end <= addr < heap_end + page:
            return ["heap_out_of_bounds"]
        if 0 <= addr < 65536:
            return ["null_pointer"]
        return []

    # --- introspection (tests, diagnostics) --------------------------------------------------

    @property
    def template_pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def ping(self) -> tuple[int, int]:
        """(children forked, runs completed) as the template counts them."""
        rep = self._request(P.OP_PING)
        return rep.a, rep.b

    @property
    def details(self) -> Mapping[str, Any]:
        return dict(self._details)


class _NoRoom(Exception):
    pass


#: The byte that wakes the child of invocation ``seq``: ``seq``'s low byte, so that a child
#: never takes a byte left over from an earlier invocation (whose child died before reading it)
#: for its own.
_WAKE = [bytes((i,)) for i in range(256)]


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _group_running(pgid: int) -> bool:
    """Whether a process of group ``pgid`` is alive and not a zombie."""
    return any(int(fields[2]) == pgid and fields[0] not in (b"Z", b"X") for _, fields in iter_process_stats())


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def create_device(**options: Any) -> CpuDevice:
    return CpuDevice(**options)


__all__ = ["CpuDevice", "CpuKernel", "CpuModule", "create_device"]
