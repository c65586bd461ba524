"""The ``dedicated`` baseline: the thesis's bare-metal server (5.1), on the CPU backend.

A frontend dispatches requests to N threads, each with an associated worker process (the
thesis's dedicated server used two workers per GPU). A worker ``dlopen``s the same compiled
kernel libraries pappus runs and calls their entry points directly on buffers in an arena it
shares with its frontend thread: the frontend writes the inputs straight into their buffers,
the worker runs the launches, the frontend reads the outputs. Nothing else happens on the
request path: no sandbox, no fork per request, no zeroing, no pool, no tenant checks, no fair
queue, no module loading (the server is built for its workloads; there is no cold start).

Requests whose deadline passed while they waited in the queue are failed without running
(``TimeoutError``), exactly as pappus's engines fail them, so an overloaded server sheds load
instead of queueing without bound. Workers run trusted code only (our ``examples/``).

``python -m pappus.bench.dedicated --workload matmul128 --port 8081`` serves the same HTTP
request and response JSON as ``pappus serve`` (``POST /v1/functions/{name}/invoke``,
``GET /v1/health``) from a minimal starlette app under uvicorn, bound the same way.
"""

from __future__ import annotations

import argparse
import os
import pickle
import queue
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

DEFAULT_ARENA = 64 << 20
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class DedicatedError(RuntimeError):
    code = "dedicated_error"


class DeadlineExpired(TimeoutError):
    code = "deadline_exceeded"


class _Job:
    __slots__ = ("function", "inputs", "deadline_at", "future")

    def __init__(self, function: str, inputs: Mapping[str, Any], deadline_at: float) -> None:
        self.function = function
        self.inputs = inputs
        self.deadline_at = deadline_at
        self.future: Future[dict[str, bytes]] = Future()


class _Worker:
    """One worker process and the shared arena its frontend thread writes into."""

    def __init__(self, index: int, arena_bytes: int) -> None:
        import mmap

        self.index = index
        self.arena_bytes = arena_bytes
        fd = os.memfd_create(f"pappus-dedicated-{index}", os.MFD_CLOEXEC)
        os.ftruncate(fd, arena_bytes)
        self.arena = mmap.mmap(fd, arena_bytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.view = memoryview(self.arena)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        from pappus_cpu.direct import worker_command

        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.proc = subprocess.Popen(worker_command(theirs.fileno(), fd, arena_bytes),
                                     pass_fds=(theirs.fileno(), fd), stdin=subprocess.DEVNULL, env=env)
        theirs.close()
        os.close(fd)
        self.sock = ours
        hello = self.sock.recv(64)
        if hello[:1] != b"H":
            raise DedicatedError(f"dedicated worker {index} did not start")
        self.base = _U64.unpack_from(hello, 1)[0]
        # (function, shape key) -> (program id, input offsets, outputs)
        self.programs: dict[tuple[Any, ...], tuple[bytes, list[tuple[str, int]], list[tuple[str, int, int]]]] = {}

    def program(self, function: str, spec: tuple[Any, Mapping[str, str]], inputs: Mapping[str, Any]) -> Any:
        from pappus_cpu.direct import shape_key

        key = (function, shape_key(inputs))
        entry = self.programs.get(key)
        if entry is None:
            pid = len(self.programs) + 1
            config, libraries = spec
            # Sizes, and the bytes of small inputs only (what sizes and repeat counts are read from):
            # the payloads never travel on the control socket.
            shape = {name: bytes(data) if len(data) <= 64 else len(data) for name, data in inputs.items()}
            self.sock.send(b"P" + pickle.dumps((pid, config, dict(libraries), shape)))
            reply = self.sock.recv(1 << 20)
            if reply[:1] != b"O":
                raise DedicatedError(reply[1:].decode(errors="replace") or "worker failed to prepare")
            layout = pickle.loads(reply[1:])
            entry = self.programs[key] = (b"R" + _U32.pack(pid), layout["inputs"], layout["outputs"])
        return entry

    def close(self) -> None:
        try:
            self.sock.send(b"Q")
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.sock.close()
        try:
            self.view.release()
            self.arena.close()
        except (BufferError, ValueError):
            pass


class DedicatedServer:
    """Frontend + N worker processes running registered functions directly (no isolation).

    ``register(name, config, libraries)``: ``config`` is a function config (dict or path),
    ``libraries`` maps its library names to ``.so`` paths (trusted code only).
    ``submit(name, inputs, deadline)`` returns a future of the outputs.
    """

    def __init__(self, workers: int = 2, arena_bytes: int = DEFAULT_ARENA) -> None:
        if workers < 1:
            raise ValueError("a dedicated server needs at least one worker")
        self.functions: dict[str, tuple[Any, dict[str, str]]] = {}
        self.queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.workers = [_Worker(i, arena_bytes) for i in range(workers)]
        self.completed = 0
        self.expired = 0
        self._closed = False
        self._threads = [threading.Thread(target=self._main, args=(w,), name=f"dedicated-{w.index}", daemon=True)
                         for w in self.workers]
        for t in self._threads:
            t.start()

    def register(self, name: str, config: Any, libraries: Mapping[str, str | os.PathLike[str]]) -> None:
        import json

        doc = json.loads(Path(config).read_text()) if isinstance(config, (str, Path)) else config
        self.functions[name] = (doc, {k: str(Path(v).resolve()) for k, v in libraries.items()})

    def submit(self, name: str, inputs: Mapping[str, Any], deadline: float = 30.0) -> Future[dict[str, bytes]]:
        if self._closed:
            raise DedicatedError("the dedicated server is closed")
        if name not in self.functions:
            raise KeyError(f"function {name!r} is not registered")
        job = _Job(name, inputs, time.monotonic() + deadline)
        self.queue.put(job)
        return job.future

    def invoke(self, name: str, inputs: Mapping[str, Any], deadline: float = 30.0) -> dict[str, bytes]:
        return self.submit(name, inputs, deadline).result()

    def _main(self, worker: _Worker) -> None:
        view, sock = worker.view, worker.sock
        while True:
            job = self.queue.get()
            if job is None:
                return
            if not job.future.set_running_or_notify_cancel():
                continue
            if time.monotonic() >= job.deadline_at:  # expired while queued: never start it
                self.expired += 1
                job.future.set_exception(DeadlineExpired("deadline passed while queued"))
                continue
            try:
                run, inputs, outputs = worker.program(job.function, self.functions[job.function], job.inputs)
                for name, off in inputs:
                    data = job.inputs[name]
                    view[off:off + len(data)] = data
                sock.send(run)
                reply = sock.recv(4096)
                if reply != b"D":
                    raise DedicatedError(reply[1:].decode(errors="replace") or f"worker {worker.index} died")
                result = {name: bytes(view[off:off + n]) for name, off, n in outputs}
            except BaseException as exc:
                job.future.set_exception(exc if isinstance(exc, Exception) else DedicatedError(str(exc)))
                continue
            self.completed += 1
            job.future.set_result(result)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self.queue.put(None)
        for t in self._threads:
            t.join(30)
        for w in self.workers:
            w.close()

    def __enter__(self) -> DedicatedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the HTTP face: same JSON as pappus serve ------------------------------------------------


def create_dedicated_app(server: DedicatedServer) -> Any:
    """A minimal starlette app with pappus serve's invoke and health routes and JSON shapes.

    Parsing the body and encoding the outputs use pappus serve's own functions, off the event
    loop as pappus serve does, so the HTTP path differs only by what isolation and tenancy cost.
    """
    import asyncio

    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from ..errors import PappusError
    from ..serve.app import _encode_outputs, parse_invoke_body

    def submit(name: str, data: bytes) -> Future[dict[str, bytes]]:
        inputs, deadline = parse_invoke_body(data)
        return server.submit(name, inputs, deadline or 30.0)

    async def invoke(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in server.functions:
            return JSONResponse({"error": "not_found", "message": f"function {name!r} not found"}, status_code=404)
        try:
            data = await request.body()
            future = await run_in_threadpool(submit, name, data)
            outputs = await asyncio.wrap_future(future)
        except PappusError as exc:
            return JSONResponse(exc.to_dict(), status_code=exc.http_status)
        except DeadlineExpired as exc:
            return JSONResponse({"error": "deadline_exceeded", "message": str(exc)}, status_code=504)
        except Exception as exc:
            return JSONResponse({"error": "internal_error", "message": str(exc)}, status_code=500)
        body = await run_in_threadpool(_encode_outputs, outputs)
        return Response(body, media_type="application/json")

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "engines": {"dedicated": "healthy"}})

    return Starlette(routes=[Route("/v1/functions/{name}/invoke", invoke, methods=["POST"]),
                             Route("/v1/health", health, methods=["GET"])])


def serve(server: DedicatedServer, host: str, port: int, out: Any = None) -> None:
    """Serve under uvicorn on a socket bound as pappus serve binds its own (TCP_NODELAY)."""
    import uvicorn

    from ..serve.server import bind

    sock = bind(host, port)
    app = create_dedicated_app(server)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", server_header=False)
    h, p = sock.getsockname()[:2]
    print(f"dedicated: serving on http://{h}:{p} ({len(server.workers)} workers, "
          f"functions {', '.join(sorted(server.functions))})", file=out or sys.stdout, flush=True)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pappus.bench.dedicated",
                                 description="The dedicated baseline server (no isolation) over HTTP.")
    ap.add_argument("--workload", action="append", required=True,
                    help="a workload to build and serve (repeatable): matmul128, inference50, batched4, ...")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8081)
    ap.add_argument("--build-dir", default=None, help="where to build the examples (default: a cache dir)")
    args = ap.parse_args(argv)
    from .workloads import default_build_dir, load_workload

    build_dir = Path(args.build_dir) if args.build_dir else default_build_dir()
    server = DedicatedServer(workers=args.workers)
    try:
        for name in args.workload:
            wl = load_workload(name, "cpu", build_dir)
            assert wl.library_path is not None
            server.register(wl.function, wl.config, {wl.library: wl.library_path})
        serve(server, args.host, args.port)
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
