"""Real servers for tests: uvicorn in a thread of the test process, or ``pappus serve`` in a
subprocess, on a free port, spoken to over real HTTP with httpx."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

import pappus
from pappus.serve.server import bind
from pappus.serve.settings import ServeSettings
from pappus.tenants import TenantStore

from ..core.helpers import HOST_LIB, matmul_config, sleep_config

__all__ = ["HOST_LIB", "matmul_config", "sleep_config", "ThreadServer", "thread_server", "process_server",
           "add_tenants", "b64", "unb64", "mm_expected", "A"]

A = np.arange(16, dtype=np.int64).reshape(4, 4)
UNLIMITED_RATE = {"request_rate": None}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def mm_expected(a: np.ndarray, repeat: int) -> np.ndarray:
    return a @ a.T + 2 * repeat


def add_tenants(state: Path, *names: str, **quotas: Any) -> dict[str, str]:
    """Create tenants in ``state``; returns name -> token."""
    store = TenantStore(state)
    return {n: store.add(n, quotas=quotas) for n in names}


class ThreadServer:
    """uvicorn serving ``create_app(runtime)`` in a thread; ``client(token)`` talks to it."""

    def __init__(self, runtime: Any, settings: ServeSettings) -> None:
        import uvicorn

        from pappus.serve import create_app

        self.runtime = runtime
        self.app = create_app(runtime, settings)
        self.sock = bind("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.01)

    def client(self, token: str | None = None, **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=kw.pop("timeout", 30), **kw)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


@contextlib.contextmanager
def thread_server(state: Path, engine: str = "host-sequential", *, runtime_kw: dict[str, Any] | None = None,
                  **settings: Any) -> Iterator[ThreadServer]:
    settings.setdefault("engine", engine)
    settings.setdefault("state_dir", str(state))
    settings.setdefault("pool_bytes", 4 << 20)
    s = ServeSettings(**settings).check()
    store = TenantStore(state, base_quotas=s.base_quotas())
    rt = pappus.Runtime(engine=engine, state_dir=state, tenants=store, pool_bytes=s.pool_bytes,
                        queue_size=s.queue_size, workers=s.workers, deadline=s.deadline, **(runtime_kw or {}))
    server = ThreadServer(rt, s)
    try:
        yield server
    finally:
        server.stop()
        rt.close(drain=False, timeout=5)


class ProcessServer:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url

    def client(self, token: str | None = None, **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=kw.pop("timeout", 30), **kw)


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pappus", "serve", "--port", "0", "--log-level", "warning", *args]


@contextlib.contextmanager
def process_server(state: Path, *args: str, timeout: float = 60) -> Iterator[ProcessServer]:
    """``pappus serve --port 0 ARGS`` in a subprocess; waits for its 'serving on' line."""
    env = dict(os.environ, PAPPUS_HOME=str(state), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(serve_command("--state-dir", str(state), *args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = _wait_for_url(proc, timeout)
        yield ProcessServer(proc, url)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def _wait_for_url(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    result: list[str] = []

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            m = re.search(r"serving on (http://\S+)", line)
            if m:
                result.append(m.group(1))
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    if not result:
        proc.kill()
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"pappus serve did not start: {err[-2000:]}")
    return result[0]


def register_mm(client: httpx.Client, name: str = "mm", repeat: int = 1, library: str = "m",
                lib: bytes = HOST_LIB) -> None:
    r = client.put(f"/v1/libraries/{library}", content=lib)
    assert r.status_code in (200, 201), r.text
    r = client.put(f"/v1/functions/{name}", content=json.dumps(matmul_config(repeat=repeat, library=library)))
    assert r.status_code in (200, 201), r.text


def invoke_mm(client: httpx.Client, name: str = "mm", a: np.ndarray = A) -> httpx.Response:
    return client.post(f"/v1/functions/{name}/invoke", json={"inputs": {"A": b64(a.tobytes())}})


def mm_result(resp: httpx.Response, a: np.ndarray = A) -> np.ndarray:
    assert resp.status_code == 200, resp.text
    return np.frombuffer(unb64(resp.json()["outputs"]["B"]), np.int64).reshape(a.shape)
