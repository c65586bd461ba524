"""The cluster runtime on a real Ray: two local nodes (``ray.cluster_utils.Cluster``, each its
own raylet and object store), the CPU backend's sandboxed engines in the actors, results
checked against numpy. One cluster for the whole module (Ray takes seconds to start)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'pappus[ray]')")

from pappus.bench.workloads import load_workload  # noqa: E402
from pappus.cluster import ClusterRuntime  # noqa: E402
from pappus.cluster.local import OBJECT_STORE_BYTES, local_cluster  # noqa: E402
from pappus.cluster.placement import Placement  # noqa: E402
from pappus.errors import DeadlineExceeded, InvalidInput, LibraryError, WorkerLost  # noqa: E402
from pappus.plugins import get_plugins  # noqa: E402

from .helpers import outcomes, wait_for  # noqa: E402

if not get_plugins().availability(get_plugins().backend("cpu")):  # pragma: no cover
    pytest.skip("the CPU backend is unavailable here", allow_module_level=True)

#: logical CPUs per node: one for this module's actors, one for the served cluster's
CPUS_PER_NODE = 2


@pytest.fixture(scope="module")
def workloads(tmp_path_factory):
    build = tmp_path_factory.mktemp("build")
    return {name: load_workload(name, "cpu", build) for name in ("matmul128", "inference10")}


#: one unit per node: what the node-loss test's actors ask for, so it gets one actor per node
PER_NODE = "pappus_test_node"


@pytest.fixture(scope="module")
def cluster():
    with local_cluster(nodes=2, cpus_per_node=CPUS_PER_NODE, resources={PER_NODE: 1}) as c:
        yield c


@pytest.fixture(scope="module")
def rt(cluster, workloads, tmp_path_factory):
    runtime = ClusterRuntime(None, engine="cpu-sequential", actors=2, prefetch=1,
                             state_dir=tmp_path_factory.mktemp("state"))
    for wl in workloads.values():
        wl.register(runtime)
    all_ready(runtime)
    yield runtime
    runtime.close(drain=False, timeout=10)


def all_ready(runtime: ClusterRuntime, timeout: float = 120.0) -> None:
    """Every actor placed and started (``engine()`` stops waiting once one is, on a busy machine)."""
    wait_for(lambda: all(a.state == "ready" for a in runtime.actors()), timeout, "every actor ready")


def node_ids() -> set[str]:
    return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


def test_actors_on_both_nodes_results_match_numpy(rt, workloads):
    wl = workloads["matmul128"]
    assert {a.node for a in rt.actors()} == node_ids() and len(node_ids()) == 2
    inputs = [wl.inputs(seed) for seed in range(40)]
    futures = [rt.invoke_async(wl.function, inp) for inp in inputs]
    for seed, (inp, fut) in enumerate(zip(inputs, futures, strict=True)):
        wl.check(inp, fut.result(60), seed=seed)
    assert {f.node for f in futures} == node_ids()  # spread over both nodes under load


def test_hot_library_stays_on_its_actor(rt, workloads):
    wl = workloads["matmul128"]
    wl.register(rt, tenant="affine")  # a fresh affinity key: nobody is warm for it yet
    inp = wl.inputs(7)
    actors = []
    for _ in range(12):  # one at a time: the warm actor is never overloaded
        fut = rt.invoke_async(wl.function, inp, tenant="affine")
        wl.check(inp, fut.result(30), seed=7)
        actors.append(fut.actor)
    assert len(set(actors)) == 1
    owner = next(a for a in rt.actors() if a.label == actors[0])
    assert any(key.startswith("affine/") for key in owner.recent)


def test_killed_actor_fails_only_in_flight_and_retries_never_started(rt, workloads):
    wl = workloads["inference10"]  # ~30 ms each: the actor is surely mid-run when killed
    inputs = [wl.inputs(seed) for seed in range(3)]
    futures = [rt.invoke_async(wl.function, inputs[i % 3]) for i in range(30)]
    victim = rt._slots[0]
    wait_for(lambda: victim.in_flight and len(victim.queue) >= 2, what="a busy actor with a queue")
    info = rt.actors()[0]
    ray.kill(info.handle)
    results = outcomes(futures, timeout=120)
    lost = [f for f, e in zip(futures, results, strict=True) if e is not None]
    assert all(isinstance(e, WorkerLost) for e in results if e is not None), results
    assert 1 <= len(lost) <= victim.credits  # what it had been sent: running, or prefetched
    assert all(f.actor == info.label for f in lost)
    for i, (f, e) in enumerate(zip(futures, results, strict=True)):
        if e is None:
            wl.check(inputs[i % 3], f.result(), seed=i % 3)
    moved = [f for f, e in zip(futures, results, strict=True) if e is None and f.moves]
    assert moved, "invocations queued for the dead actor had not started: they must move and succeed"
    wait_for(lambda: rt.actors()[0].state == "ready" and rt.actors()[0].generation == info.generation + 1,
             timeout=120, what="the replacement actor")
    # on whatever node has room (docs/cluster.md, Replacement): SPREAD does not promise the node
    # the dead actor left, so both actors may now share one (the node-loss test pins them by resource)
    assert rt.actors()[0].node in node_ids()
    later = [rt.invoke_async(workloads["matmul128"].function, workloads["matmul128"].inputs(1)) for _ in range(20)]
    assert all(e is None for e in outcomes(later))


def test_tampered_blob_is_refused_by_the_actor(rt, workloads, tmp_path):
    lib = workloads["matmul128"].library_path.read_bytes() + b"\0" * 8  # same code, a new hash
    rt.register_library("tampered", lib, tenant="t")
    config = dict(workloads["matmul128"].config, library="tampered")
    rt.register_function("mm", config, tenant="t")
    sha = rt.registry.get_library("t", "tampered").sha256
    rt._blob_handles[sha] = ray.put(lib[:-1] + b"\1")  # what reaches the actor is not what was registered
    with pytest.raises(LibraryError) as info:
        rt.invoke("mm", workloads["matmul128"].inputs(0), tenant="t")
    assert "sha256" in str(info.value) and "not loaded" in str(info.value)


def test_errors_cross_ray_with_their_types(rt, workloads):
    wl = workloads["inference10"]
    with pytest.raises(InvalidInput):
        rt.invoke_async(wl.function, {"img": b"short"})
    with pytest.raises(DeadlineExceeded) as info:
        rt.invoke(wl.function, wl.inputs(0), deadline=0.01)
    assert info.value.invocation and info.value.deadline == 0.01


def test_pappus_serve_cluster_over_http(cluster, workloads, tmp_path):
    """``pappus serve --cluster ADDRESS`` in a process of its own, joined to this cluster."""
    wl = workloads["matmul128"]
    env = dict(os.environ, PAPPUS_HOME=str(tmp_path))
    cmd = [sys.executable, "-m", "pappus", "serve", "--cluster", cluster.address, "--cluster-actors", "2",
           "--no-auth", "--port", "0", "--state-dir", str(tmp_path / "state"), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "serving on http://" in line and "2 actors" in line, line + proc.stderr.read()
        url = line.split("serving on ")[1].split(" ")[0]
        with httpx.Client(base_url=url, timeout=60) as c:
            assert c.get("/v1/health").json()["status"] == "ok"
            assert c.put(f"/v1/libraries/{wl.library}", content=wl.library_path.read_bytes()).status_code == 201
            assert c.put(f"/v1/functions/{wl.function}", content=json.dumps(wl.config)).status_code == 201
            import base64

            inp = wl.inputs(3)
            body = {"inputs": {k: base64.b64encode(v).decode() for k, v in inp.items()}}
            r = c.post(f"/v1/functions/{wl.function}/invoke", json=body)
            assert r.status_code == 200, r.text
            wl.check(inp, {k: base64.b64decode(v) for k, v in r.json()["outputs"].items()}, seed=3)
            r = c.post(f"/v1/functions/{wl.function}/invoke", json={"inputs": {}})
            assert r.status_code == 422 and r.json()["error"] == "invalid_input"
            metrics = c.get("/metrics").text
            assert 'pappus_engine_healthy{engine="cpu-sequential@actor1"} 1.0' in metrics
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.returncode == 0


def test_node_lost_mid_load_then_replaced_on_a_new_node(cluster, workloads, tmp_path):
    """A whole node goes (its raylet killed): its actor's in-flight invocations fail with
    WorkerLost, its queue moves to the surviving actors; the actor position waits for
    resources and comes back on the node that joins next."""
    wl = workloads["inference10"]
    node_args = {"num_cpus": 1, "resources": {PER_NODE: 1}, "object_store_memory": OBJECT_STORE_BYTES}
    extra = cluster.add_node(**node_args)
    cluster.wait_for_nodes()
    rt = ClusterRuntime(None, engine="cpu-sequential", actors=3, prefetch=1, state_dir=tmp_path / "state",
                        placement=Placement(num_cpus=0.0, resources={PER_NODE: 1.0}))
    try:
        wl.register(rt)
        all_ready(rt)
        assert len({a.node for a in rt.actors()}) == 3
        index = next(a.index for a in rt.actors() if a.node == extra.node_id)
        victim = rt._slots[index]
        inputs = [wl.inputs(seed) for seed in range(3)]
        # enough work that the victim is still busy when its raylet is gone (removing a node
        # takes a while on a slow host: 45 invocations could all finish first, none lost)
        futures = [rt.invoke_async(wl.function, inputs[i % 3]) for i in range(150)]
        wait_for(lambda: victim.in_flight and len(victim.queue) >= 2, what="a busy actor with a queue")
        label = victim.label
        cluster.remove_node(extra, allow_graceful=False)
        results = outcomes(futures, timeout=120)
        lost = [f for f, e in zip(futures, results, strict=True) if e is not None]
        assert all(isinstance(e, WorkerLost) for e in results if e is not None), results
        assert 1 <= len(lost) <= victim.credits and all(f.actor == label for f in lost)
        for i, (f, e) in enumerate(zip(futures, results, strict=True)):
            if e is None:
                wl.check(inputs[i % 3], f.result(), seed=i % 3)
        # (what was queued for it either moved when it died or was taken by idle actors before)
        assert rt.actors()[index].state in ("starting", "dead")  # no node has room for it
        assert rt.invoke(wl.function, inputs[0])  # the others serve meanwhile
        new = cluster.add_node(**node_args)
        wait_for(lambda: rt.actors()[index].state == "ready", timeout=120, what="the actor on the new node")
        assert rt.actors()[index].node == new.node_id
    finally:
        rt.close(drain=False, timeout=10)
