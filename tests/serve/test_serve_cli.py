"""``pappus serve`` as a process: the --no-auth loopback rule, config files, graceful shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from pappus.errors import ValidationError
from pappus.serve.limits import is_loopback
from pappus.serve.settings import FIELD_NAMES, load_config_file, make_settings

from .helpers import (
    HOST_LIB,
    UNLIMITED_RATE,
    add_tenants,
    process_server,
    serve_command,
    sleep_config,
)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "example.invalid"])
def test_no_auth_refused_off_loopback(tmp_path, host):
    res = subprocess.run(serve_command("--no-auth", "--host", host, "--engine", "host-sequential",
                                       "--state-dir", str(tmp_path)),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert "--no-auth" in res.stderr and "loopback" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.1.2.3")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("10.0.0.1")


def test_config_file_and_flags(tmp_path):
    cfg = tmp_path / "serve.toml"
    cfg.write_text('engine = "host-multiprocess"\nworkers = 3\nspare-workers = 1\nmax-body-bytes = 4096\n'
                   '[quotas]\nlibraries = 5\n')
    s = make_settings(cfg, workers=4)
    assert (s.engine, s.workers, s.spare_workers, s.max_body_bytes, s.base_quotas().libraries) == (
        "host-multiprocess", 4, 1, 4096, 5)
    cfg.write_text('engine = "x"\nwrokers = 3\nport = "http"\n[quotas]\nlibrarys = 1\n')
    with pytest.raises(Exception) as info:
        make_settings(cfg)
    assert "wrokers" in str(info.value)
    cfg.write_text('port = "http"\n[quotas]\nlibrarys = 1\n')
    with pytest.raises(Exception) as info:
        make_settings(cfg)
    assert {e.path for e in info.value.errors} == {"port", "quotas.librarys"}
    res = subprocess.run(serve_command("--config", str(cfg), "--state-dir", str(tmp_path)),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "quotas.librarys" in res.stderr and "Traceback" not in res.stderr


def test_config_file_reports_every_problem_at_once(tmp_path):
    cfg = tmp_path / "serve.toml"
    cfg.write_text('engin = "cpu-sequential"\nworkers = "four"\nspare-workers = -1\nmax-body-bytes = -1\n'
                   'queue-sise = 4\n'
                   '[quotas]\nlibrarys = 1\nfunctions = -2\n')
    with pytest.raises(ValidationError) as info:
        make_settings(cfg)
    assert [(e.path, e.message.split(" (known:")[0]) for e in info.value.errors] == [
        ("engin", "unknown setting, did you mean 'engine'?"),
        ("workers", "must be a whole number >= 1"),
        ("spare-workers", "must be a whole number >= 0"),
        ("max-body-bytes", "must be a whole number of bytes >= 1024"),
        ("queue-sise", "unknown setting, did you mean 'queue-size'?"),
        ("quotas.librarys", "unknown quota 'librarys', did you mean 'libraries'?"),
        ("quotas.functions", "must not be negative"),
    ]
    with pytest.raises(ValidationError) as info:  # the same from the file alone
        load_config_file(cfg)
    assert len(info.value.errors) == 7
    # A value a flag replaces is not the file's problem; no close match, no suggestion.
    cfg.write_text('workers = "four"\nzzz = 1\n')
    with pytest.raises(ValidationError) as info:
        make_settings(cfg, workers=2)
    assert [str(e) for e in info.value.errors] == [
        "zzz: unknown setting (known: " + ", ".join(sorted(FIELD_NAMES)) + ")"]
    res = subprocess.run(serve_command("--config", str(cfg), "--state-dir", str(tmp_path)),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "workers: must be a whole number" in res.stderr and "zzz: unknown setting" in res.stderr, res.stderr


def test_sigterm_drains_in_flight_invocations_then_exits(tmp_path):
    tokens = add_tenants(tmp_path, "alice", **UNLIMITED_RATE)
    with process_server(tmp_path, "--engine", "host-sequential", "--drain-timeout", "10") as srv:
        with srv.client(tokens["alice"]) as c:
            c.put("/v1/libraries/m", content=HOST_LIB)
            c.put("/v1/functions/nap", content=json.dumps(sleep_config(800)))
        results: list[httpx.Response] = []

        def call() -> None:
            with srv.client(tokens["alice"]) as c:
                results.append(c.post("/v1/functions/nap/invoke", json={"inputs": {}}))

        t = threading.Thread(target=call)
        t.start()
        time.sleep(0.3)
        srv.proc.send_signal(signal.SIGTERM)
        t.join(20)
        assert results and results[0].status_code == 200, results and results[0].text
        assert srv.proc.wait(20) == 0
        with pytest.raises(httpx.TransportError):
            httpx.get(srv.url + "/v1/health", timeout=2)


def test_sigterm_past_the_drain_timeout_fails_what_is_left(tmp_path):
    tokens = add_tenants(tmp_path, "alice", **UNLIMITED_RATE)
    with process_server(tmp_path, "--engine", "host-sequential", "--drain-timeout", "0.5") as srv:
        with srv.client(tokens["alice"]) as c:
            c.put("/v1/libraries/m", content=HOST_LIB)
            c.put("/v1/functions/nap", content=json.dumps(sleep_config(600)))
        results: list[int] = []

        def call() -> None:
            with srv.client(tokens["alice"]) as c:
                try:
                    results.append(c.post("/v1/functions/nap/invoke", json={"inputs": {}}).status_code)
                except httpx.TransportError:
                    results.append(-1)

        threads = [threading.Thread(target=call) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(20)
        assert srv.proc.wait(20) == 0
        assert time.monotonic() - t0 < 8
        # The running one finishes; the queued ones are answered 503 (engine closed), none cut off.
        assert sorted(results)[0] != -1 and 200 in results and 503 in results, results


def test_serve_help_and_missing_engine(tmp_path):
    res = subprocess.run([sys.executable, "-m", "pappus", "serve", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and "--no-auth" in res.stdout and "--engine" in res.stdout
    env = dict(os.environ, PAPPUS_HOME=str(tmp_path))
    res = subprocess.run(serve_command("--engine", "nope-sequential", "--state-dir", str(tmp_path)),
                         capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr


def test_an_address_in_use_is_named_and_nothing_else_is_blamed_on_it(tmp_path):
    import socket

    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        res = subprocess.run(serve_command("--engine", "host-sequential", "--port", str(port), "--state-dir",
                                           str(tmp_path)), capture_output=True, text=True, timeout=60)
    finally:
        taken.close()
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in res.stderr


def _ready_line(state, *args: str) -> str:
    env = dict(os.environ, PAPPUS_HOME=str(state), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(serve_command("--engine", "host-sequential", "--state-dir", str(state), *args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        return proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_the_ready_line_says_when_no_tenant_can_get_in(tmp_path):
    line = _ready_line(tmp_path)
    assert "pappus: serving on http://127.0.0.1:" in line, line
    assert "no tenant yet, so every request gets 401: pappus tenant add NAME" in line, line
    add_tenants(tmp_path, "alice")
    line = _ready_line(tmp_path)
    assert line.rstrip().endswith("(engine host-sequential, bearer tokens)"), line
