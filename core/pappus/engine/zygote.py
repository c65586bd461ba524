"""A warm template process that forks multiprocess workers on request.

Why not ``multiprocessing``'s forkserver: it re-imports the caller's ``__main__`` in every
child, which would run a user's script in each worker. The zygote is started once per engine
(``python -c "...zygote.main(...)"``), imports pappus and the backend (and calls the preloads
given as ``module:function``, which warm what every worker would otherwise build anew), and then
only forks: a respawn costs a ``fork()`` plus device set-up, not an interpreter start.

Protocol (SOCK_SEQPACKET, pickled tuples, file descriptors as SCM_RIGHTS):
  supervisor -> zygote: (request_id, "module:function", args) + fds passed as the first args
  zygote -> supervisor: ("ready", pid) | ("spawned", request_id, pid) | ("error", request_id, text)
                        | ("exited", pid, exitcode)   (exitcode < 0: killed by that signal)
"""

from __future__ import annotations

import gc
import importlib
import itertools
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import Future
from typing import Any

_MAX_MSG = 1 << 20


# --- supervisor side -------------------------------------------------------------------------


class Zygote:
    def __init__(self, preload: list[str], name: str = "pappus-zygote") -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        # Workers must import what this process can (plugins and test backends included).
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from pappus.engine.zygote import main; main(sys.argv[1:])",
             str(theirs.fileno()), *preload],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, env=env, close_fds=True,
        )
        theirs.close()
        self.sock = ours
        self._ids = itertools.count(1)
        self._pending: dict[int, Future[int]] = {}
        self._exits: dict[int, Future[int]] = {}
        self._lock = threading.Lock()
        self._ready: Future[int] = Future()
        self._closed = False
        self._reader = threading.Thread(target=self._read, name=f"{name}-reader", daemon=True)
        self._reader.start()
        self.pid = self._ready.result(timeout=120)

    def _exit_future(self, pid: int) -> Future[int]:
        with self._lock:
            fut = self._exits.get(pid)
            if fut is None:
                fut = self._exits[pid] = Future()
            return fut

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(_MAX_MSG)
            except OSError:
                data = b""
            if not data:
                break
            msg = pickle.loads(data)
            if msg[0] == "ready":
                self._ready.set_result(msg[1])
            elif msg[0] == "spawned":
                fut = self._pending.pop(msg[1], None)
                if fut:
                    fut.set_result(msg[2])
            elif msg[0] == "error":
                fut = self._pending.pop(msg[1], None)
                if fut:
                    fut.set_exception(RuntimeError(msg[2]))
            elif msg[0] == "exited":
                fut = self._exit_future(msg[1])
                if not fut.done():
                    fut.set_result(msg[2])
        # The zygote is gone: nothing pending will ever be answered.
        err = RuntimeError("the worker template process exited")
        if not self._ready.done():
            self._ready.set_exception(err)
        for fut in list(self._pending.values()):
            if not fut.done():
                fut.set_exception(err)

    def spawn(self, target: str, fds: list[int], args: tuple[Any, ...], timeout: float = 30.0) -> int:
        """Fork a child running ``target(*fds_as_sockets, *args)``; return its pid."""
        req = next(self._ids)
        fut: Future[int] = Future()
        self._pending[req] = fut
        socket.send_fds(self.sock, [pickle.dumps((req, target, args))], fds)
        pid = fut.result(timeout=timeout)
        self._exit_future(pid)  # exit notices for this pid are kept from now on
        return pid

    def wait_exit(self, pid: int, timeout: float) -> int | None:
        try:
            return self._exit_future(pid).result(timeout=timeout)
        except Exception:
            return None

    def forget(self, pid: int) -> None:
        with self._lock:
            self._exits.pop(pid, None)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._reader.join(5)


# --- zygote side -----------------------------------------------------------------------------


def _resolve(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def main(argv: list[str]) -> None:
    # No PR_SET_PDEATHSIG here: it fires when the *thread* that started us exits, and engines are
    # often started from short-lived client threads. The supervisor's death closes our socket.
    sock = socket.socket(fileno=int(argv[0]))
    for preload in argv[1:]:  # "module" to import, or "module:function" to call once
        try:
            if ":" in preload:
                _resolve(preload)()
            else:
                importlib.import_module(preload)
        except Exception:  # a preload is an optimisation; the child imports what it needs
            pass
    # Everything loaded so far lives as long as every worker: out of the collector's sight, a
    # worker's full collection neither walks it (about 12 ms here) nor writes to its pages,
    # which would copy some 9 MB of this process into each worker (the gc module's advice for
    # processes that fork without exec).
    gc.collect()
    gc.freeze()
    rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wfd)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def send(msg: tuple[Any, ...]) -> None:
        sock.send(pickle.dumps(msg))

    send(("ready", os.getpid()))
    children: set[int] = set()
    while True:
        readable, _, _ = select.select([sock.fileno(), rfd], [], [])
        if rfd in readable:
            try:
                while os.read(rfd, 4096):
                    pass
            except BlockingIOError:
                pass
        while children:  # reap every child that ended and say how
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            children.discard(pid)
            send(("exited", pid, os.waitstatus_to_exitcode(status)))
        if sock.fileno() not in readable:
            continue
        try:
            data, fds, _, _ = socket.recv_fds(sock, _MAX_MSG, 16)
        except OSError:
            data = b""
        if not data:  # the supervisor is gone: so are we (workers die with us)
            for pid in children:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            os._exit(0)
        req, target, args = pickle.loads(data)
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            send(("error", req, f"fork failed: {exc}"))
            continue
        if pid == 0:
            code = 0
            try:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                sock.close()
                os.close(rfd)
                os.close(wfd)
                _resolve(target)(*fds, *args)
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)
        children.add(pid)
        send(("spawned", req, pid))


if __name__ == "__main__":
    main(sys.argv[1:])
