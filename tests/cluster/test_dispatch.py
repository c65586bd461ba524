"""The cluster dispatcher without Ray: engine hosts in this process (``InProcessTransport``),
host backend kernels. The same protocol as the Ray actors, so the rules are checked here
exactly, where every host's intake can be observed: at most once, retry of what never
started, bounded queues, affinity, typed errors, hash checks."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import numpy as np
import pytest

from pappus.cluster import ClusterRuntime, InProcessTransport
from pappus.cluster.host import EngineHost
from pappus.cluster.router import Router
from pappus.devices.host import host_library
from pappus.errors import (
    DeadlineExceeded,
    EngineClosed,
    InvalidInput,
    KernelFault,
    LibraryError,
    NotFound,
    Overloaded,
    WorkerLost,
)

from ..core.helpers import HOST_LIB, fault_config, matmul_config, sleep_config
from .helpers import outcomes, wait_for

A = np.arange(64, dtype=np.int64).reshape(8, 8)


def expected(a: np.ndarray, repeat: int = 3) -> bytes:
    return (a @ a.T + 2 * repeat).tobytes()


@pytest.fixture
def intake(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[tuple[str, bool]]]:
    """Every request each host received: label -> [(invocation id, answered 'not started')]."""
    seen: dict[str, list[tuple[str, bool]]] = {}
    lock = threading.Lock()
    real = EngineHost.submit

    def submit(self: EngineHost, request):  # type: ignore[no-untyped-def]
        answer = real(self, request)
        refused = answer.done() and not answer.result().get("ok") and not answer.result().get("started")
        with lock:
            seen.setdefault(self.label, []).append((request["id"], refused))
        return answer

    monkeypatch.setattr(EngineHost, "submit", submit)
    return seen


def make(tmp_path, **kw):  # type: ignore[no-untyped-def]
    kw.setdefault("actors", 2)
    rt = ClusterRuntime(engine="host-sequential", state_dir=tmp_path, transport=InProcessTransport(nodes=2), **kw)
    rt.register_library("m", HOST_LIB)
    rt.register_function("mm", matmul_config())
    rt.register_function("nap", sleep_config(60))
    return rt


def test_results_correct_and_spread_over_both_nodes(tmp_path):
    with make(tmp_path) as rt:
        inputs = [np.arange(64, dtype=np.int64).reshape(8, 8) * (i + 1) for i in range(30)]
        futures = [rt.invoke_async("mm", {"A": a.tobytes()}) for a in inputs]
        for a, fut in zip(inputs, futures, strict=True):
            assert fut.result(30)["B"] == expected(a)
        assert {f.node for f in futures} == {"node-0", "node-1"}
        assert sum(a.ran for a in rt.actors()) == 30


def test_affinity_same_actor_while_not_overloaded(tmp_path):
    with make(tmp_path) as rt:
        rt.register_library("m", HOST_LIB, tenant="bob")
        rt.register_function("mm", matmul_config(repeat=1), tenant="bob")
        first = rt.invoke_async("mm", {"A": A.tobytes()})
        first.result(10)
        runs_a = []
        runs_b = []
        for _ in range(10):  # one at a time: never overloaded
            fa = rt.invoke_async("mm", {"A": A.tobytes()})
            fa.result(10)
            runs_a.append(fa.actor)
            fb = rt.invoke_async("mm", {"A": A.tobytes()}, tenant="bob")
            assert fb.result(10)["B"] == expected(A, repeat=1)
            runs_b.append(fb.actor)
        assert len(set(runs_a)) == 1 and runs_a[0] == first.actor
        assert len(set(runs_b)) == 1
        # Under load the same function spreads (the warm actor is past its spill threshold).
        futures = [rt.invoke_async("nap", {}) for _ in range(8)]
        outcomes(futures)
        assert len({f.actor for f in futures}) == 2


def test_killed_actor_fails_only_what_it_was_running_and_retries_the_rest(tmp_path, intake):
    with make(tmp_path, prefetch=1) as rt:
        rt.invoke("nap", {})
        futures = [rt.invoke_async("nap", {}) for _ in range(20)]
        victim = rt._slots[0]
        wait_for(lambda: victim.in_flight and len(victim.queue) >= 2, what="a busy actor with a queue")
        label = victim.label
        rt.actors()[0].handle.kill()
        results = outcomes(futures)
        lost = [f for f, e in zip(futures, results, strict=True) if e is not None]
        assert all(isinstance(e, WorkerLost) for e in results if e is not None), results
        assert 1 <= len(lost) <= victim.credits
        assert all(f.actor == label for f in lost)
        assert all("not run again" in str(f.exception()) for f in lost)
        moved = [f for f, e in zip(futures, results, strict=True) if e is None and f.moves]
        assert moved, "queued invocations of the dead actor should have moved and succeeded"
        # At most once: an invocation a host accepted was never given to another host.
        accepted: dict[str, list[str]] = {}
        for host, reqs in intake.items():
            for inv_id, refused in reqs:
                if not refused:
                    accepted.setdefault(inv_id, []).append(host)
        assert all(len(hosts) == 1 for hosts in accepted.values()), accepted
        # The dead actor is replaced, on the node it left, and takes work again.
        wait_for(lambda: rt.actors()[0].state == "ready" and rt.actors()[0].generation == 2, what="replacement")
        assert rt.actors()[0].restarts == 1
        assert {f.node for f in [rt.invoke_async("nap", {}) for _ in range(6)] if f.result(30) == {"X": bytes(64)}} \
            == {"node-0", "node-1"}


def test_all_queues_full_is_overloaded(tmp_path):
    with make(tmp_path, queue_size=2, prefetch=0) as rt:
        rt.register_function("slow", sleep_config(300))
        accepted = []
        with pytest.raises(Overloaded) as info:
            for _ in range(20):
                accepted.append(rt.invoke_async("slow", {}))
        assert len(accepted) == 2 * (1 + 2)  # each actor: one running, two queued
        assert "every actor's queue is full" in str(info.value)
        assert all(e is None for e in outcomes(accepted))


def test_expired_in_the_driver_queue_is_never_sent(tmp_path, intake):
    with make(tmp_path, actors=1, prefetch=0) as rt:
        rt.register_function("slow", sleep_config(300))
        first = rt.invoke_async("slow", {})
        late = rt.invoke_async("mm", {"A": A.tobytes()}, deadline=0.05)
        with pytest.raises(DeadlineExceeded):
            late.result(10)
        first.result(10)
        assert late.actor is None  # never left the driver
        assert all(inv != late.exception().invocation for reqs in intake.values() for inv, _ in reqs)


def test_errors_keep_their_types_and_facts(tmp_path):
    with make(tmp_path) as rt:
        rt.register_function("fault", fault_config(1 << 40))
        with pytest.raises(NotFound):
            rt.invoke("nope", {})
        with pytest.raises(InvalidInput):  # checked in the driver, before anything is queued
            rt.invoke_async("mm", {})
        with pytest.raises(KernelFault) as info:  # raised on an actor, rebuilt here
            rt.invoke("fault", {})
        assert info.value.kernel == "write_at" and info.value.invocation
        assert rt.invoke("mm", {"A": A.tobytes()})["B"] == expected(A)  # the actor recovered


def test_tampered_blob_is_refused_before_loading(tmp_path):
    with make(tmp_path) as rt:
        lib = host_library(["matmul_at_i64", "add_i64"])
        rt.register_library("t", lib)
        rt.register_function("t1", matmul_config(library="t"))
        sha = rt.registry.get_library("default", "t").sha256
        # In transit / in the object store: the actor checks what it fetched against the hash.
        rt._blob_handles[sha] = rt.transport.put_blob(lib.replace(b"add_i64", b"add_i32"))
        with pytest.raises(LibraryError) as info:
            rt.invoke("t1", {"A": A.tobytes()})
        assert "sha256" in str(info.value) and "not loaded" in str(info.value)
        # In the driver's store, on disk: refused before it is shipped at all.
        lib2 = host_library(["matmul_at_i64", "add_i64", "fill_u8"])
        rt.register_library("u", lib2)
        rt.register_function("u1", matmul_config(library="u"))
        path = rt.registry.blob_path(rt.registry.get_library("default", "u").sha256)
        os.chmod(path, 0o644)
        path.write_bytes(lib2.replace(b"fill_u8", b"copy_u8"))
        with pytest.raises(LibraryError) as info:
            rt.invoke("u1", {"A": A.tobytes()})
        assert "does not match its sha256" in str(info.value)
        assert rt.invoke("mm", {"A": A.tobytes()})["B"] == expected(A)


def test_close_drains_or_fails_queued(tmp_path):
    rt = make(tmp_path, actors=1, prefetch=0)
    rt.register_function("slow", sleep_config(200))
    futures = [rt.invoke_async("slow", {}) for _ in range(3)]
    rt.close(drain=False, timeout=5)
    results = outcomes(futures)
    assert sum(isinstance(e, EngineClosed) for e in results) >= 1
    assert all(e is None or isinstance(e, (EngineClosed, WorkerLost)) for e in results)
    with pytest.raises(EngineClosed):
        rt.invoke_async("slow", {})
    rt2 = make(tmp_path, actors=1, prefetch=0)
    futures = [rt2.invoke_async("nap", {}) for _ in range(3)]
    rt2.close(drain=True, timeout=30)
    assert all(e is None for e in outcomes(futures))


@dataclass
class FakeSlot:
    index: int
    load: int = 0
    ready: bool = True
    accepting: bool = True
    spill_at: int = 2
    room: bool = True
    warm: set[str] = field(default_factory=set)

    def has_room(self) -> bool:
        return self.room

    def is_warm(self, key: str) -> bool:
        return key in self.warm


def test_router_rules():
    r = Router()
    a, b = FakeSlot(0), FakeSlot(1)
    assert r.choose([a, b], "k") in (a, b)
    a.warm.add("k")
    a.load, b.load = 1, 0
    assert r.choose([a, b], "k") is a  # warm and under its spill threshold
    a.load = 2
    assert r.choose([a, b], "k") is b  # warm but overloaded: the least loaded
    b.load = 3
    assert r.choose([a, b], "k") is a  # still the least loaded
    a.room = False
    assert r.choose([a, b], "k") is b
    b.room = False
    assert r.choose([a, b], "k") is None
    a.room = b.room = True
    a.ready, a.load, b.load = False, 0, 5
    assert r.choose([a, b], "x") is b  # ready ones first
    b.accepting = False
    assert r.choose([a, b], "x") is a


def test_actor_that_forgot_a_function_gets_it_again(tmp_path, intake):
    with make(tmp_path) as rt:
        first = rt.invoke_async("mm", {"A": A.tobytes()})
        first.result(10)
        host = next(a.handle.host for a in rt.actors() if a.label == first.actor)
        host.specs.clear()  # evicted (a host keeps a bounded number): it answers "need spec"
        again = rt.invoke_async("mm", {"A": A.tobytes()})
        assert again.result(10)["B"] == expected(A) and again.actor == first.actor
        answered = [refused for reqs in intake.values() for inv, refused in reqs if inv == again.invocation]
        assert answered == [True, False]  # refused once (not started), then run once


def test_placement_per_backend(monkeypatch, tmp_path):
    from pappus.cluster import placement as pl

    cpu = pl.placement_for("cpu", "sequential")
    assert cpu.ray_options() == {"num_cpus": 1.0, "scheduling_strategy": "SPREAD"}
    assert pl.placement_for("cpu", "multiprocess", workers=3).num_cpus == 3.0
    cuda = pl.placement_for("cuda", "sequential").ray_options()
    assert cuda["num_gpus"] == 1.0 and "resources" not in cuda
    amd = pl.placement_for("hip", "multiprocess")
    assert amd.ray_options()["resources"] == {"amd_gpu": 1.0} and amd.claim_index_of == "amd_gpu"
    assert cpu.slots_in({"CPU": 5.0}) == 5 and cuda.get("num_gpus") and \
        pl.placement_for("cuda", "x").slots_in({"CPU": 16.0, "GPU": 2.0}) == 2
    assert amd.slots_in({"CPU": 8.0, "amd_gpu": 4.0}) == 4 and amd.slots_in({"CPU": 8.0}) == 1
    # Device indices on a node: each claim takes the lowest free one, held while the fd lives.
    monkeypatch.setattr(pl, "_LOCK_DIR", str(tmp_path))
    held = list(pl._held)
    try:
        assert [pl.claim_device_index(2, "t"), pl.claim_device_index(2, "t")] == [0, 1]
        with pytest.raises(RuntimeError):
            pl.claim_device_index(2, "t")
    finally:
        for fd in pl._held[len(held):]:
            os.close(fd)
        pl._held[:] = held


def test_the_cluster_runtime_takes_what_runtime_takes():
    """``pappus serve --cluster`` puts a ClusterRuntime where the HTTP API expects a Runtime: a
    parameter added to one and not the other is a 500 over HTTP there (``engine=`` of
    ``register_function`` was, until this test)."""
    import inspect

    import pappus

    shared = ("register_library", "register_function", "remove_function", "remove_library", "list_libraries",
              "list_functions", "function_spec", "invoke_async", "invoke", "engine", "active", "metrics", "close")
    for name in shared:
        ours = inspect.signature(getattr(ClusterRuntime, name)).parameters
        theirs = inspect.signature(getattr(pappus.Runtime, name)).parameters
        assert [(p.name, p.kind, p.default) for p in ours.values()] == \
               [(p.name, p.kind, p.default) for p in theirs.values()], name
