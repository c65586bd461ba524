"""``pappus bench`` and ``pappus demo`` from the command line; HTTP targets end to end."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pappus.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def test_bench_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--rps", "--sweep", "--hot", "--http", "--token", "--workers", "--deadline", "--suite"):
        assert flag in out


def test_demo_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--help"])
    assert exc.value.code == 0
    assert "--quick" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["bench", "matmul999"], "unknown workload"),
    (["bench", "--rps", "0,5"], "rps"),
    (["bench", "--hot", "1.5"], "--hot"),
    (["bench", "--target", "dedicated", "--hot", "0.5", "--rps", "5", "--duration", "0.1"], "no cold start"),
    (["bench", "--suite", "quick", "--only", "nope"], "unknown experiment"),
])
def test_bench_bad_arguments_fail_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str],
                                               cpu_backend: None) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("pappus: error:") and message in err and "Traceback" not in err


def test_bench_one_second_run(tmp_path: Path, capsys: pytest.CaptureFixture[str], cpu_backend: None) -> None:
    out = tmp_path / "b"
    code = main(["bench", "matmul128", "--target", "cpu-sequential,dedicated", "--rps", "20,40", "--duration", "0.5",
                 "--out", str(out), "--quiet"])
    assert code == 0
    text = capsys.readouterr().out
    assert "cpu-sequential" in text and "dedicated" in text and "p99 ms" in text
    doc = json.loads((out / "bench.json").read_text())
    assert doc["schema"] == "pappus/bench@1"
    assert {"cpu", "cores", "kernel", "python"} <= set(doc["machine"])
    (exp,) = doc["experiments"]
    assert [s["target"]["name"] for s in exp["series"]] == ["cpu-sequential", "dedicated"]
    for series in exp["series"]:
        assert [lv["x"] for lv in series["levels"]] == [20, 40]
        assert all(lv["errors"] == 0 and lv["completed"] == lv["sent"] for lv in series["levels"])
    assert (out / "latency.png").read_bytes()[:8] == PNG


def test_demo_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str], cpu_backend: None) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "every result matched numpy" in text
    assert "matmul128 on the CPU backend" in text and "p50 ms" in text
    doc = json.loads((out / "results.json").read_text())
    assert [e["name"] for e in doc["experiments"]] == ["matmul128", "inference5"]
    for exp in doc["experiments"]:
        assert [s["target"]["name"] for s in exp["series"]] == ["cpu-sequential", "cpu-multiprocess", "dedicated"]
    assert (out / "latency.png").read_bytes()[:8] == PNG


def test_demo_fails_loudly_on_a_wrong_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str], cpu_backend: None) -> None:
    from pappus.bench import workloads

    real = workloads.Workload.expected

    def wrong(self: Any, inputs: Any, seed: Any = None) -> Any:
        want = dict(real(self, inputs, seed))
        if self.name == "matmul128":
            want["B"] = b"\1" + want["B"][1:]
        return want

    monkeypatch.setattr(workloads.Workload, "expected", wrong)
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "matmul128" in out and "differs from numpy" in out


# --- HTTP -----------------------------------------------------------------------------------


class _Uvicorn:
    """An ASGI app under uvicorn in a thread, on a free port."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        from pappus.serve.server import bind

        self.sock = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        end = time.monotonic() + 30
        while not self.server.started and time.monotonic() < end:
            time.sleep(0.02)
        assert self.server.started

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


@pytest.fixture
def dedicated_http(cpu_backend: None) -> Iterator[str]:
    from pappus.bench.dedicated import DedicatedServer, create_dedicated_app
    from pappus.bench.workloads import load_workload

    wl = load_workload("matmul128")
    with DedicatedServer(workers=1) as srv:
        srv.register(wl.function, wl.config, wl.libraries)
        server = _Uvicorn(create_dedicated_app(srv))
        try:
            yield server.url
        finally:
            server.close()


@pytest.fixture
def pappus_http(tmp_path: Path, cpu_backend: None) -> Iterator[tuple[str, str]]:
    from pappus.runtime import Runtime
    from pappus.serve.app import create_app
    from pappus.tenants import TenantStore

    rt = Runtime(engine="cpu-sequential", state_dir=tmp_path / "state")
    token = TenantStore(registry=rt.registry).add("bench")
    rt.tenants.refresh(force=True)
    server = _Uvicorn(create_app(rt))
    try:
        yield server.url, token
    finally:
        server.close()


def test_http_targets_pappus_serve_and_dedicated(pappus_http: tuple[str, str], dedicated_http: str) -> None:
    from pappus.bench.sweep import Level, run_series
    from pappus.bench.targets import HttpTarget
    from pappus.bench.workloads import load_workload

    wl = load_workload("matmul128")
    url, token = pappus_http
    for target in (HttpTarget(url, token, name="pappus"), HttpTarget(dedicated_http, register=False, name="ded")):
        with target:
            target.setup([wl])  # PUTs library and function to pappus serve; nothing to the dedicated one
            series = run_series(target, [Level(20, wl, 20)], duration=0.5, deadline=5.0, warmup=1)
        (lv,) = series.levels
        assert lv["errors"] == 0 and lv["completed"] == lv["sent"] > 0, lv["error_kinds"]


def test_http_errors_are_counted_with_the_server_code(pappus_http: tuple[str, str]) -> None:
    from pappus.bench.loadgen import run_open_loop
    from pappus.bench.targets import HttpTarget
    from pappus.bench.workloads import load_workload

    wl = load_workload("matmul128")
    url, _ = pappus_http
    with HttpTarget(url, "not-a-token") as target:
        submit = target.submitter(wl, wl.inputs(0), 5.0)
        result = run_open_loop(submit, 10, 0.2, schedule=[0.0, 0.01])
    assert result.error_kinds == {"unauthorized": 2}
