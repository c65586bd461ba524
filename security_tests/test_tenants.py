"""Cross-tenant attacks over real HTTP: a tenant can never list, read, replace or invoke another
tenant's objects, cannot learn whether another tenant registered something (answers, errors
and timing), cannot authenticate without its own token, and cannot starve others past its
quotas."""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import threading
import time

import pytest
from tests.serve.helpers import (
    HOST_LIB,
    UNLIMITED_RATE,
    A,
    add_tenants,
    invoke_mm,
    matmul_config,
    mm_expected,
    mm_result,
    register_mm,
    serve_command,
    sleep_config,
    thread_server,
)

from pappus.devices.host import host_library
from pappus.registry import Registry
from pappus.tenants import TenantStore


@pytest.fixture
def two(tmp_path):
    """A server with tenants alice (A) and bob (B); each has registered library m and
    function mm (alice: repeat 1, bob: repeat 7)."""
    tokens = add_tenants(tmp_path, "alice", "bob", **UNLIMITED_RATE)
    with thread_server(tmp_path, auth_failure_burst=1000) as srv:
        a, b = srv.client(tokens["alice"]), srv.client(tokens["bob"])
        register_mm(a, repeat=1)
        register_mm(b, name="mine", repeat=7, library="blib")
        srv.tokens, srv.a, srv.b, srv.state = tokens, a, b, tmp_path
        try:
            yield srv
        finally:
            a.close()
            b.close()


def without_name(doc, name):
    """``doc`` with the quoted name (a value, or quoted in a message) replaced by NAME."""
    name = name.strip("'")
    text = json.dumps(doc).replace(f'"{name}"', '"NAME"').replace(f"'{name}'", "'NAME'")
    return json.loads(text)


def test_each_tenant_invokes_its_own_function(two):
    assert (mm_result(invoke_mm(two.a)) == mm_expected(A, 1)).all()
    assert (mm_result(invoke_mm(two.b, "mine")) == mm_expected(A, 7)).all()
    # The same name in both namespaces resolves to each caller's own function.
    register_mm(two.b, name="mm", repeat=3, library="blib")
    assert (mm_result(invoke_mm(two.a)) == mm_expected(A, 1)).all()
    assert (mm_result(invoke_mm(two.b)) == mm_expected(A, 3)).all()


def test_other_tenants_objects_are_answered_as_absent(two):
    for method, path, kw in [
        ("POST", "/v1/functions/{}/invoke", {"json": {"inputs": {"A": ""}}}),
        ("GET", "/v1/functions/{}", {}),
        ("DELETE", "/v1/functions/{}", {}),
        ("GET", "/v1/libraries/{}", {}),
        ("DELETE", "/v1/libraries/{}", {}),
    ]:
        name = "mm" if "functions" in path else "m"
        theirs = two.b.request(method, path.format(name), **kw)
        nobody = two.b.request(method, path.format("zz" + name), **kw)
        assert theirs.status_code == nobody.status_code == 404, (method, path)
        assert without_name(theirs.json(), name) == without_name(nobody.json(), "zz" + name)
        assert theirs.headers.keys() == nobody.headers.keys()
    assert [x["name"] for x in two.b.get("/v1/functions").json()["functions"]] == ["mine"]
    assert [x["name"] for x in two.b.get("/v1/libraries").json()["libraries"]] == ["blib"]
    assert (mm_result(invoke_mm(two.a)) == mm_expected(A, 1)).all(), "alice's objects survived"


def test_cannot_name_another_tenants_library(two):
    cfg = matmul_config(repeat=1, library="m")  # alice's library name, not bob's
    theirs = two.b.put("/v1/functions/steal", content=json.dumps(cfg))
    cfg = matmul_config(repeat=1, library="zzm")
    nobody = two.b.put("/v1/functions/steal", content=json.dumps(cfg))
    assert theirs.status_code == nobody.status_code == 422
    assert without_name(theirs.json(), "'m'") == without_name(nobody.json(), "'zzm'")


def test_cannot_replace_another_tenants_library_or_function(two):
    sha_before = two.a.get("/v1/libraries/m").json()["sha256"]
    evil = host_library(["matmul_at_i64", "add_i64"])
    r = two.b.put("/v1/libraries/m", content=evil)
    assert r.status_code == 201, "bob created his own 'm'; it does not replace alice's"
    cfg = matmul_config(repeat=50)
    assert two.b.put("/v1/functions/mm", content=json.dumps(cfg)).status_code == 201
    assert two.a.get("/v1/libraries/m").json()["sha256"] == sha_before
    assert (mm_result(invoke_mm(two.a)) == mm_expected(A, 1)).all()
    assert two.b.delete("/v1/libraries/m").status_code == 204  # his own
    assert two.a.get("/v1/libraries/m").status_code == 200


def test_tenant_comes_from_the_token_only(two):
    for headers in ({"X-Tenant": "alice"}, {"X-Pappus-Tenant": "alice"}, {"Cookie": "tenant=alice"}):
        r = two.b.post("/v1/functions/mm/invoke", json={"inputs": {"A": ""}}, headers=headers)
        assert r.status_code == 404
    for path in ["/v1/functions/..%2F..%2Falice%2Ffunctions%2Fmm/invoke", "/v1/functions/%2E%2E/invoke",
                 "/v1/functions/alice%2Fmm/invoke"]:
        r = two.b.post(path, json={"inputs": {}})
        assert r.status_code in (404, 422), (path, r.status_code)
        assert "outputs" not in r.text


def test_no_token_and_wrong_tokens_get_401(two):
    url = "/v1/functions/mm/invoke"
    body = {"inputs": {"A": ""}}
    with two.client() as anon:
        for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Bearer wrong"},
                        {"Authorization": "Basic " + two.tokens["alice"]},
                        {"Authorization": "Bearer " + two.tokens["alice"][:-1]},
                        {"Authorization": "Bearer " + two.tokens["alice"] + "x"},
                        {"Authorization": "Bearer " + "a" * 4000}):
            for method, path in (("POST", url), ("GET", "/v1/libraries"), ("PUT", "/v1/libraries/x"),
                                 ("GET", "/metrics")):
                r = anon.request(method, path, headers=headers, **({"json": body} if method == "POST" else {}))
                assert r.status_code == 401, (headers, path, r.text)
                assert r.json()["error"] == "unauthorized" and r.headers["www-authenticate"].startswith("Bearer")
        assert anon.get("/v1/health").status_code == 200


def test_rotated_and_removed_tokens_stop_working(two):
    store = TenantStore(two.state)
    old = two.tokens["bob"]
    new = store.rotate("bob")
    time.sleep(0.15)  # the server re-reads the store at most every 0.1 s
    with two.client(old) as c:
        assert c.get("/v1/libraries").status_code == 401
    with two.client(new) as c:
        assert c.get("/v1/libraries").status_code == 200
    store.remove("bob")
    time.sleep(0.15)
    with two.client(new) as c:
        assert c.get("/v1/libraries").status_code == 401
    assert Registry(two.state).list_functions("bob") == []


def test_failed_authentications_are_rate_limited_per_address(tmp_path):
    tokens = add_tenants(tmp_path, "alice", **UNLIMITED_RATE)
    with thread_server(tmp_path, auth_failure_rate=0.5, auth_failure_burst=5) as srv:
        with srv.client("guess") as bad, srv.client(tokens["alice"]) as good:
            codes = [bad.get("/v1/libraries").status_code for _ in range(8)]
            assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}, codes
            r = good.get("/v1/libraries")  # same address: no more guesses are evaluated
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
            assert r.json()["error"] == "too_many_auth_failures"
            time.sleep(2.1)
            assert good.get("/v1/libraries").status_code == 200


def test_no_auth_is_refused_off_loopback(tmp_path):
    res = subprocess.run(serve_command("--no-auth", "--host", "0.0.0.0", "--engine", "host-sequential",
                                       "--state-dir", str(tmp_path)),
                         capture_output=True, text=True, timeout=60, env=dict(os.environ, PAPPUS_HOME=str(tmp_path)))
    assert res.returncode != 0 and "loopback" in res.stderr


def test_quotas_give_429_at_exactly_the_limit(tmp_path):
    tokens = add_tenants(tmp_path, "alice", "bob", libraries=2, request_rate=None)
    TenantStore(tmp_path).update("bob", quotas={"request_rate": 1, "request_burst": 3})
    with thread_server(tmp_path) as srv, srv.client(tokens["alice"]) as a, srv.client(tokens["bob"]) as b:
        assert a.put("/v1/libraries/l1", content=HOST_LIB).status_code == 201
        assert a.put("/v1/libraries/l2", content=HOST_LIB).status_code == 201
        r = a.put("/v1/libraries/l3", content=HOST_LIB)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        doc = r.json()
        assert (doc["error"], doc["quota"], doc["limit"], doc["tenant"]) == ("quota_exceeded", "libraries", 2, "alice")
        assert [x["name"] for x in a.get("/v1/libraries").json()["libraries"]] == ["l1", "l2"]
        codes = [b.get("/v1/libraries").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429], codes
        r = b.get("/v1/libraries")
        assert r.json()["quota"] == "request_rate" and int(r.headers["retry-after"]) >= 1
        assert a.get("/v1/libraries").status_code == 200, "one tenant's rate does not limit another"


def test_a_burst_past_the_concurrency_quota_does_not_starve_others(tmp_path):
    tokens = add_tenants(tmp_path, "alice", "bob", **UNLIMITED_RATE)
    TenantStore(tmp_path).update("alice", quotas={"concurrent_invocations": 2})
    with thread_server(tmp_path, engine="host-multiprocess", workers=3) as srv:
        for t, ms in (("alice", 800), ("bob", 20)):
            with srv.client(tokens[t]) as c:
                c.put("/v1/libraries/m", content=HOST_LIB)
                c.put("/v1/functions/nap", content=json.dumps(sleep_config(ms)))
        codes: list[int] = []
        clients = [srv.client(tokens["alice"]) for _ in range(6)]

        def hammer(c) -> None:
            with c:
                codes.append(c.post("/v1/functions/nap/invoke", json={"inputs": {}}).status_code)

        threads = [threading.Thread(target=hammer, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        time.sleep(0.2)
        with srv.client(tokens["bob"]) as c:  # alice holds 2 of 3 workers at most: bob runs at once
            t0 = time.monotonic()
            assert c.post("/v1/functions/nap/invoke", json={"inputs": {}}).status_code == 200
            assert time.monotonic() - t0 < 0.6
        for t in threads:
            t.join(20)
        assert sorted(codes) == [200, 200, 429, 429, 429, 429], codes


# --- the existence oracle ------------------------------------------------------------------


def _variant(i: int, pad: int = 48) -> bytes:
    """Host libraries of equal length and distinct bytes."""
    base = host_library(["matmul_at_i64", "add_i64"])
    return b"{" + b" " * i + base[1:-1] + b" " * (pad - i) + b"}"


def test_uploading_bytes_another_tenant_has_reveals_nothing(two):
    secret = _variant(0)
    assert two.a.put("/v1/libraries/secret", content=secret).status_code == 201
    shared = two.b.put("/v1/libraries/guess", content=secret)  # byte-identical to alice's
    fresh = two.b.put("/v1/libraries/guess2", content=_variant(1))  # nobody has these bytes
    assert shared.status_code == fresh.status_code == 201
    s, f = shared.json(), fresh.json()
    assert s.keys() == f.keys() and shared.headers.keys() == fresh.headers.keys()
    assert s["sha256"] == hashlib.sha256(secret).hexdigest()  # only what bob computes himself
    assert {k: v for k, v in s.items() if k not in ("name", "sha256", "registered_at")} == \
           {k: v for k, v in f.items() if k not in ("name", "sha256", "registered_at")}
    # Bob removing his copy does not take alice's away (blobs are shared, never reference-counted).
    assert two.b.delete("/v1/libraries/guess").status_code == 204
    cfg = matmul_config(repeat=1, library="secret")
    assert two.a.put("/v1/functions/s", content=json.dumps(cfg)).status_code == 201
    assert (mm_result(invoke_mm(two.a, "s")) == mm_expected(A, 1)).all()


def test_storing_a_blob_does_the_same_work_whether_or_not_it_exists(tmp_path, monkeypatch):
    reg = Registry(tmp_path)
    calls: list[str] = []
    for name in ("fsync", "replace", "open", "write", "chmod"):
        real = getattr(os, name)

        def spy(*a, _real=real, _name=name, **k):
            calls.append(_name)
            return _real(*a, **k)

        monkeypatch.setattr(os, name, spy)
    reg.put_blob(b"new bytes")
    first = list(calls)
    calls.clear()
    reg.put_blob(b"new bytes")  # now it exists
    assert calls == first and "fsync" in first and "replace" in first


def test_blob_store_timing_does_not_tell_whether_bytes_exist(tmp_path):
    """The storage layer on its own, where a shortcut would show most: storing bytes that are
    already there costs what storing new bytes costs (a shortcut would be ~100x faster)."""
    reg = Registry(tmp_path)
    known = os.urandom(4096)
    reg.put_blob(known)
    existing, fresh = [], []
    for _ in range(30):
        for data, out in ((known, existing), (os.urandom(4096), fresh)):
            t0 = time.perf_counter()
            reg.put_blob(data)
            out.append(time.perf_counter() - t0)
    ratio = statistics.median(existing) / statistics.median(fresh)
    assert 0.5 < ratio < 2.0, (ratio, statistics.median(existing), statistics.median(fresh))


def test_upload_timing_does_not_tell_whether_bytes_exist(two):
    """End to end: interleaved uploads by bob of bytes alice has vs bytes nobody has take the
    same time (a coarse check; the blob store's own is above)."""
    secret = _variant(0)
    two.a.put("/v1/libraries/secret", content=secret)
    existing, fresh = [], []
    for i in range(1, 25):
        for data, out in ((secret, existing), (_variant(i), fresh)):
            t0 = time.perf_counter()
            r = two.b.put("/v1/libraries/probe", content=data)
            out.append(time.perf_counter() - t0)
            assert r.status_code in (200, 201)
    ratio = statistics.median(existing) / statistics.median(fresh)
    assert 0.6 < ratio < 1.67, (ratio, statistics.median(existing), statistics.median(fresh))


def test_metrics_are_for_operators_only(two):
    r = two.b.get("/metrics")
    assert r.status_code == 403 and "alice" not in r.text
