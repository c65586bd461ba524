"""The tenant store: tokens shown once and stored only as keyed hashes, rotation, removal,
quotas with defaults and overrides, reload across processes, token buckets."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import time

import pytest

from pappus.cli import main
from pappus.errors import NotFound, ValidationError
from pappus.tenants import BUILTIN_QUOTAS, RateLimiter, TenantStore, TokenBucket


def test_token_is_random_shown_once_and_only_its_keyed_hash_is_stored(tmp_path):
    store = TenantStore(tmp_path)
    token = store.add("alice")
    other = store.add("bob")
    assert token != other and len(token) >= 43  # 32 random bytes, urlsafe base64
    raw = (tmp_path / "tenants.json").read_text()
    assert token not in raw and other not in raw
    key = (tmp_path / "tenants.key").read_bytes()
    assert len(key) == 32 and (tmp_path / "tenants.key").stat().st_mode & 0o077 == 0
    stored = json.loads(raw)["tenants"]["alice"]["token_hash"]
    assert stored == hmac.new(key, token.encode(), hashlib.sha256).hexdigest()
    assert store.authenticate(token) == "alice"
    assert store.authenticate(other) == "bob"


@pytest.mark.parametrize("bad", [None, "", "x", "Bearer", "a" * 10_000, "\udcff\x00"])
def test_wrong_tokens_are_refused(tmp_path, bad):
    store = TenantStore(tmp_path)
    store.add("alice")
    assert store.authenticate(bad) is None


def test_no_tenants_means_no_valid_token(tmp_path):
    assert TenantStore(tmp_path).authenticate("anything") is None


def test_rotate_and_remove(tmp_path):
    store = TenantStore(tmp_path)
    old = store.add("alice")
    new = store.rotate("alice")
    assert store.authenticate(old) is None and store.authenticate(new) == "alice"
    store.remove("alice")
    assert store.authenticate(new) is None
    with pytest.raises(NotFound):
        store.rotate("alice")
    with pytest.raises(ValidationError):
        store.add("../evil")
    store.add("alice")
    with pytest.raises(ValidationError) as info:
        store.add("alice")
    assert "already exists" in str(info.value)
    actions = [json.loads(line)["action"] for line in (tmp_path / "audit.log").read_text().splitlines()]
    assert actions == ["add", "rotate", "remove", "add"]


def test_remove_purges_the_namespace_by_default(tmp_path):
    import pappus

    from ..core.helpers import HOST_LIB, matmul_config

    store = TenantStore(tmp_path)
    store.add("alice")
    with pappus.Runtime(engine="host-sequential", state_dir=tmp_path) as rt:
        rt.register_library("m", HOST_LIB, tenant="alice")
        rt.register_function("mm", matmul_config(), tenant="alice")
        assert store.remove("alice") == ["function/mm", "library/m"]
        assert rt.registry.list_libraries("alice") == [] and rt.registry.list_functions("alice") == []
    lines = [json.loads(x) for x in (tmp_path / "audit.log").read_text().splitlines()]
    removed = [x for x in lines if x["action"] == "remove" and x["kind"] in ("library", "function")]
    assert {x["name"] for x in removed} == {"m", "mm"} and all(x["sha256"] for x in removed)


def test_quotas_defaults_and_overrides(tmp_path):
    store = TenantStore(tmp_path)
    store.add("alice", quotas={"libraries": 3, "request_rate": "2.5"})
    store.add("bob")
    assert store.quotas("alice").libraries == 3 and store.quotas("alice").request_rate == 2.5
    assert store.quotas("bob") == BUILTIN_QUOTAS
    store.set_defaults({"functions": 7, "library_bytes": "none"})
    assert store.quotas("bob").functions == 7 and store.quotas("bob").library_bytes is None
    assert store.quotas("alice").functions == 7 and store.quotas("alice").libraries == 3
    assert store.quotas("nobody").functions == 7  # unknown tenants (Python API) get the defaults
    store.update("alice", weight=3, operator=True, quotas={"libraries": None})
    assert store.quotas("alice").libraries is None and store.weights() == {"alice": 3}
    assert store.is_operator("alice") and not store.is_operator("bob")
    with pytest.raises(ValidationError) as info:
        store.update("alice", quotas={"nope": 1, "libraries": -1, "functions": "many", "request_rate": True})
    assert {e.path for e in info.value.errors} == {"quotas.nope", "quotas.libraries", "quotas.functions",
                                                   "quotas.request_rate"}
    with pytest.raises(ValidationError):
        store.update("alice", weight=0)


def test_changes_reach_another_store_instance(tmp_path):
    running = TenantStore(tmp_path, refresh_interval=0.05)  # a server's store
    assert running.authenticate("x") is None
    token = TenantStore(tmp_path).add("alice")  # pappus tenant add, elsewhere
    time.sleep(0.06)
    assert running.authenticate(token) == "alice"
    TenantStore(tmp_path).remove("alice")
    time.sleep(0.06)
    assert running.authenticate(token) is None


def test_cli_add_prints_the_token_as_the_last_line(tmp_path, capsys):
    assert main(["tenant", "add", "alice", "--state-dir", str(tmp_path), "--quota", "libraries=2"]) == 0
    token = capsys.readouterr().out.rstrip("\n").splitlines()[-1]
    assert TenantStore(tmp_path).authenticate(token) == "alice"
    assert main(["tenant", "rotate", "alice", "--state-dir", str(tmp_path)]) == 0
    new = capsys.readouterr().out.rstrip("\n").splitlines()[-1]
    store = TenantStore(tmp_path)
    assert store.authenticate(token) is None and store.authenticate(new) == "alice"
    assert main(["tenant", "list", "--json", "--state-dir", str(tmp_path)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["name"] == "alice" and listed[0]["quotas"] == {"libraries": 2}
    assert "token" not in json.dumps(listed).replace("token_hash", "")
    assert main(["tenant", "remove", "alice", "--state-dir", str(tmp_path)]) == 0
    assert main(["tenant", "remove", "alice", "--state-dir", str(tmp_path)]) == 1
    assert "no tenant named 'alice'" in capsys.readouterr().err


def test_cli_as_a_process(tmp_path):
    res = subprocess.run([sys.executable, "-m", "pappus", "tenant", "add", "carol", "--state-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert TenantStore(tmp_path).authenticate(res.stdout.splitlines()[-1]) == "carol"


def test_token_bucket():
    b = TokenBucket(rate=10, burst=3, now=0.0)
    assert [b.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take(0.0) == pytest.approx(0.1)
    assert b.take(0.1) == 0.0  # refilled one token
    assert b.take(0.1) > 0
    limiter = RateLimiter(max_keys=2)
    assert limiter.take("a", None, None) == 0.0  # unlimited
    assert limiter.take("a", 1, 1, now=0.0) == 0.0 and limiter.take("a", 1, 1, now=0.0) > 0
    assert limiter.peek("a", now=0.5) == pytest.approx(0.5)
    limiter.take("b", 1, 1, now=0.0)
    limiter.take("c", 1, 1, now=0.0)  # evicts the least recently used key
    assert len(limiter._buckets) == 2


def test_a_broken_store_file_keeps_a_running_server_on_its_last_good_view(tmp_path):
    store = TenantStore(tmp_path, refresh_interval=0.0)
    token = store.add("alice")
    (tmp_path / "tenants.json").write_text('{"version": 1, "tenants": {"alice": {"quotas": {"libraries": "x"}}}}')
    assert store.authenticate(token) == "alice"
    with pytest.raises(ValidationError) as info:
        TenantStore(tmp_path)  # a new process refuses to start on it, naming the field
    assert info.value.errors[0].path == "tenants.alice.quotas.libraries"
