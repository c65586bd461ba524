"""The HTTP API over real HTTP: round trips, bad requests (4xx naming the field), body limits,
overload (503 + Retry-After), the event loop stays free, health and metrics."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from pappus.tenants import TenantStore

from .helpers import (
    HOST_LIB,
    UNLIMITED_RATE,
    A,
    add_tenants,
    b64,
    invoke_mm,
    matmul_config,
    mm_expected,
    mm_result,
    register_mm,
    sleep_config,
    thread_server,
)


@pytest.fixture
def server(tmp_path):
    tokens = add_tenants(tmp_path, "alice", "ops", **UNLIMITED_RATE)
    TenantStore(tmp_path).update("ops", operator=True)
    with thread_server(tmp_path, max_body_bytes=64 * 1024) as srv:
        srv.tokens = tokens
        yield srv


def test_register_invoke_list_delete(server):
    with server.client(server.tokens["alice"]) as c:
        register_mm(c, repeat=2)
        assert (mm_result(invoke_mm(c)) == mm_expected(A, 2)).all()
        r = c.put("/v1/libraries/m", content=HOST_LIB)
        assert r.status_code == 200, "replacing one's own library answers 200, creating 201"
        assert [x["name"] for x in c.get("/v1/libraries").json()["libraries"]] == ["m"]
        assert [x["name"] for x in c.get("/v1/functions").json()["functions"]] == ["mm"]
        got = c.get("/v1/functions/mm").json()
        assert got["config"]["library"] == "m" and got["libraries"]["m"] == c.get("/v1/libraries/m").json()["sha256"]
        assert c.delete("/v1/functions/mm").status_code == 204
        r = c.post("/v1/functions/mm/invoke", json={"inputs": {}})
        assert r.status_code == 404 and r.json()["error"] == "not_found"
        assert c.delete("/v1/functions/mm").status_code == 404
        assert c.delete("/v1/libraries/m").status_code == 204
        assert c.get("/v1/libraries").json() == {"libraries": []}


def test_bad_invoke_bodies_name_the_field(server):
    with server.client(server.tokens["alice"]) as c:
        register_mm(c)
        cases = [
            (b"{", "body"),
            (b"[1]", "body"),
            (b"\xff\xfe", "body"),
            (b'{"deadline": NaN, "inputs": {}}', "body"),
            (b"{}", "inputs"),
            (b'{"inputs": []}', "inputs"),
            (b'{"inputs": {"A": 5}}', "inputs.A"),
            (b'{"inputs": {"A": "not base64!"}}', "inputs.A"),
            (b'{"inputs": {"A": "QQ="}}', "inputs.A"),
            (json.dumps({"inputs": {"A": b64(A.tobytes())}, "deadline": "soon"}).encode(), "deadline"),
            (json.dumps({"inputs": {"A": b64(A.tobytes())}, "deadline": 0}).encode(), "deadline"),
            (json.dumps({"inputs": {"A": b64(A.tobytes())}, "deadline": True}).encode(), "deadline"),
            (json.dumps({"inputs": {"A": b64(A.tobytes())}, "extra": 1}).encode(), "extra"),
            (json.dumps({"inputs": {}}).encode(), "inputs.A"),  # the function's own input check
        ]
        for body, field in cases:
            r = c.post("/v1/functions/mm/invoke", content=body)
            assert r.status_code == 422, (body, r.text)
            doc = r.json()
            assert doc["error"] in ("validation_error", "invalid_input")
            assert any(e["path"] == field or e["path"].startswith(field) for e in doc["errors"]), (body, doc)
        # Every problem at once.
        r = c.post("/v1/functions/mm/invoke", content=json.dumps({"inputs": {"A": 1}, "deadline": -1, "x": 0}))
        assert {e["path"] for e in r.json()["errors"]} == {"inputs.A", "deadline", "x"}


def test_bad_names_and_configs_change_nothing(server):
    with server.client(server.tokens["alice"]) as c:
        register_mm(c, repeat=1)
        for name in ["UPPER", "a" * 65, "..", "-x"]:
            r = c.put(f"/v1/libraries/{name}", content=HOST_LIB)
            assert r.status_code in (404, 422), (name, r.text)
            if r.status_code == 422:
                assert r.json()["errors"][0]["path"] == "name"
        bad = matmul_config(repeat=1)
        bad["kernels"] = ["matmul_at_i64", "nope"]
        r = c.put("/v1/functions/mm", content=json.dumps(bad))
        assert r.status_code == 422 and r.json()["errors"], r.text
        r = c.put("/v1/functions/mm", content=b"{not json")
        assert r.status_code == 422 and r.json()["errors"][0]["path"] == ""
        r = c.put("/v1/functions/mm?format=yaml", content=json.dumps(matmul_config()))
        assert r.status_code == 422 and r.json()["errors"][0]["path"] == "format"
        r = c.put("/v1/libraries/m", content=b"garbage, not a library")
        assert r.status_code == 422 and r.json()["error"] == "library_error"
        r = c.put("/v1/libraries/m", content=b"")
        assert r.status_code == 422
        # The old function and library are untouched and still work.
        assert (mm_result(invoke_mm(c)) == mm_expected(A, 1)).all()
        assert len(c.get("/v1/functions").json()["functions"]) == 1


def test_body_limit_is_413_with_the_limit(server):
    with server.client(server.tokens["alice"]) as c:
        big = b"x" * (64 * 1024 + 1)
        r = c.put("/v1/libraries/big", content=big)
        assert r.status_code == 413 and r.json()["limit"] == 64 * 1024, r.text
        # Without Content-Length (chunked): refused while streaming.
        r = c.put("/v1/libraries/big", content=iter([b"x" * 40000, b"x" * 40000]))
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
        assert c.get("/v1/libraries").json() == {"libraries": []}


def test_unknown_routes_and_methods_get_json(server):
    with server.client(server.tokens["alice"]) as c:
        r = c.get("/v2/nothing")
        assert r.status_code == 404 and r.json()["error"] == "not_found"
        r = c.post("/v1/libraries/x")
        assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


def test_405_allow_lists_every_method_of_the_path(server):
    expected = {
        "/v1/functions/mm": "GET, HEAD, PUT, DELETE",
        "/v1/libraries/m": "GET, HEAD, PUT, DELETE",
        "/v1/functions/mm/invoke": "POST",
        "/v1/functions": "GET, HEAD",
        "/v1/health": "GET, HEAD",
    }
    with server.client(server.tokens["alice"]) as c:
        for path, allow in expected.items():
            r = c.request("PATCH", path)
            assert r.status_code == 405 and r.json()["error"] == "method_not_allowed", (path, r.text)
            assert r.headers["allow"] == allow, path
        # Every method named in Allow is routed (answered, not 405), one path per route.
        register_mm(c)
        assert c.get("/v1/functions/mm").status_code == 200
        assert c.head("/v1/libraries/m").status_code == 200
        assert c.put("/v1/libraries/m", content=HOST_LIB).status_code == 200
        assert c.delete("/v1/functions/mm").status_code == 204
        assert c.delete("/v1/libraries/m").status_code == 204


def test_overload_is_503_with_retry_after(tmp_path):
    tokens = add_tenants(tmp_path, "alice", **UNLIMITED_RATE)
    with thread_server(tmp_path, queue_size=2, quotas={"queued_invocations": None,
                                                       "concurrent_invocations": None}) as srv:
        with srv.client(tokens["alice"]) as c:
            c.put("/v1/libraries/m", content=HOST_LIB)
            c.put("/v1/functions/nap", content=json.dumps(sleep_config(300)))
        statuses: list[tuple[int, str | None]] = []
        clients = [srv.client(tokens["alice"]) for _ in range(8)]  # made first: they arrive together

        def call(c) -> None:
            with c:
                r = c.post("/v1/functions/nap/invoke", json={"inputs": {}})
                statuses.append((r.status_code, r.headers.get("retry-after")))

        threads = [threading.Thread(target=call, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        codes = sorted(s for s, _ in statuses)
        assert 200 in codes and 503 in codes, codes
        assert all(ra is not None and int(ra) >= 1 for s, ra in statuses if s == 503)


def test_invocations_do_not_block_the_event_loop(server):
    with server.client(server.tokens["alice"]) as c:
        c.put("/v1/libraries/m", content=HOST_LIB)
        c.put("/v1/functions/slow", content=json.dumps(sleep_config(1000)))
    result: list[int] = []

    def slow() -> None:
        with server.client(server.tokens["alice"]) as c:
            result.append(c.post("/v1/functions/slow/invoke", json={"inputs": {}}).status_code)

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.2)
    with server.client() as c:
        t0 = time.monotonic()
        assert c.get("/v1/health").status_code == 200
        assert time.monotonic() - t0 < 0.5
    t.join(10)
    assert result == [200]


def test_health_needs_no_token_and_metrics_need_an_operator(server):
    with server.client() as c:
        r = c.get("/v1/health")
        assert r.status_code == 200 and r.json()["status"] == "ok"
        assert c.get("/metrics").status_code == 401
    with server.client(server.tokens["alice"]) as c:
        register_mm(c)
        invoke_mm(c)
        r = c.get("/metrics")
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
    with server.client(server.tokens["ops"]) as c:
        text = c.get("/metrics").text
    assert 'pappus_invocations_total{outcome="ok",tenant="alice"} 1.0' in text
    assert 'pappus_invocation_latency_seconds_count{tenant="alice"} 1.0' in text
    assert 'pappus_http_requests_total{method="GET",route="/metrics",status="403"} 1.0' in text
    assert 'pappus_queue_depth{engine="host-sequential",tenant="alice"} 0.0' in text
    assert 'pappus_in_flight{engine="host-sequential",tenant="alice"} 0.0' in text
    assert 'pappus_cold_invocations_total{engine="host-sequential"} 1.0' in text  # its first run
    for name in ("pappus_faults_total", "pappus_respawns_total", "pappus_engine_queue_depth",
                 "pappus_auth_failures_total", "pappus_engine_healthy"):
        assert name in text, name


def test_no_auth_puts_everyone_in_default(tmp_path):
    with thread_server(tmp_path, no_auth=True) as srv:
        with srv.client() as c:
            register_mm(c)
            assert (mm_result(invoke_mm(c)) == mm_expected(A, 1)).all()
            assert c.get("/metrics").status_code == 200
        assert [r.name for r in srv.runtime.registry.list_functions("default")] == ["mm"]


def test_outputs_and_inputs_round_trip_exact_bytes(server):
    with server.client(server.tokens["alice"]) as c:
        register_mm(c, repeat=0)
        a = np.random.default_rng(1).integers(-1000, 1000, (8, 8), dtype=np.int64)
        assert (mm_result(invoke_mm(c, a=a), a) == a @ a.T).all()
