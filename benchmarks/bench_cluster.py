"""Scale-out figures (issue 13): the cluster runtime on local Ray nodes against the local runtime.

* throughput: saturation throughput (closed loop, ``--concurrency`` requests outstanding) of
  the cluster runtime on 1 local Ray node (one actor) and on 2 local nodes (two actors), for a
  short function (matmul128, ~2 ms) and a compute-bound one (inference10, ~30 ms), next to the
  local runtime in one process with one sequential engine and with a 2-worker multiprocess
  engine (the same cores without Ray). Nodes here are raylets on one machine: they share its
  cores, so the ceiling is the cores, not the nodes;
* overhead: p50 of one invocation at a time (no queueing) through the cluster runtime minus
  the p50 of the same invocation through a local runtime, same function, same inputs, rounds
  interleaved so drift hits both: what Ray and the dispatcher add per invocation;
* http (``--http``): ``pappus serve --cluster local`` driven by ``pappus.bench``'s HTTP target
  (open loop, the load generator ``pappus bench`` uses), every answer checked against numpy.

    python benchmarks/bench_cluster.py [--duration 5] [--json out.json] [--http]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from json_out import json_file  # benchmarks/json_out.py

import pappus
from pappus.bench.report import write_json
from pappus.bench.workloads import Workload, load_workload


def closed_loop(submit: Callable[[int], Future[Any]], check: Callable[[int, Any], None], concurrency: int,
                duration: float, warmup: float = 1.0) -> dict[str, Any]:
    """Keep ``concurrency`` requests outstanding; completions per second after ``warmup``."""
    sem = threading.Semaphore(concurrency)
    lock = threading.Lock()
    counts = {"ok": 0, "errors": 0}
    errors: dict[str, int] = {}
    start = time.perf_counter()
    window = [start + warmup, start + warmup + duration]

    def done(i: int, fut: Future[Any]) -> None:
        now = time.perf_counter()
        exc = fut.exception()
        if exc is None:
            try:
                check(i, fut.result())
            except AssertionError as err:
                exc = err
        with lock:
            if window[0] <= now <= window[1]:
                if exc is None:
                    counts["ok"] += 1
                else:
                    counts["errors"] += 1
                    kind = getattr(exc, "code", type(exc).__name__)
                    errors[kind] = errors.get(kind, 0) + 1
        sem.release()

    i = 0
    pending: list[Future[Any]] = []
    while time.perf_counter() < window[1]:
        sem.acquire()
        fut = submit(i)
        fut.add_done_callback(lambda f, i=i: done(i, f))
        pending.append(fut)
        if len(pending) > 4 * concurrency:
            pending = [f for f in pending if not f.done()]
        i += 1
    for fut in pending:
        try:
            fut.result(120)
        except Exception:
            pass
    return {"throughput": counts["ok"] / duration, "completed": counts["ok"], "errors": counts["errors"],
            "error_kinds": errors, "concurrency": concurrency}


def p50_ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1e3


def one_at_a_time(rt: Any, wl: Workload, inputs: dict[str, bytes], n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        rt.invoke(wl.function, inputs)
        times.append(time.perf_counter() - t0)
    return times


def bench_throughput(rt: Any, wls: list[Workload], concurrency: int, duration: float) -> dict[str, Any]:
    out = {}
    for wl in wls:
        inputs = [wl.inputs(seed) for seed in range(4)]
        for seed, inp in enumerate(inputs):  # reference computed once per seed, outside the window
            wl.expected(inp, seed=seed)
        out[wl.name] = closed_loop(lambda i, wl=wl, inputs=inputs: rt.invoke_async(wl.function, inputs[i % 4]),
                                   lambda i, outs, wl=wl, inputs=inputs: wl.check(inputs[i % 4], outs, seed=i % 4),
                                   concurrency, duration)
    return out


def local_runtime(engine: str, state: str, wls: list[Workload]) -> Any:
    rt = pappus.Runtime(engine=engine, state_dir=state, workers=2, queue_size=4096)
    for wl in wls:
        wl.register(rt)
    rt.engine()
    return rt


def cluster_runtime(nodes: int, state: str, wls: list[Workload], prefetch: int = 1) -> Any:
    from pappus.cluster import ClusterRuntime

    rt = ClusterRuntime(None, engine="cpu-sequential", actors=nodes, state_dir=state, queue_size=4096,
                        prefetch=prefetch)
    for wl in wls:
        wl.register(rt)
    for wl in wls:  # every actor warm for every function before measuring
        for fut in [rt.invoke_async(wl.function, wl.inputs(0)) for _ in range(8 * nodes)]:
            fut.result(60)
    return rt


def run(args: argparse.Namespace) -> dict[str, Any]:
    from pappus.cluster.local import local_cluster

    build = Path(args.build_dir) if args.build_dir else None
    wls = [load_workload(name, "cpu", build) for name in ("matmul128", "inference10")]
    mm = wls[0]
    results: dict[str, Any] = {"machine": {"cores": os.cpu_count()}, "duration_s": args.duration,
                               "concurrency": args.concurrency}
    import ray

    results["ray"] = ray.__version__

    # --- baselines without Ray ---
    with tempfile.TemporaryDirectory() as state:
        rt = local_runtime("cpu-sequential", state, wls)
        results["local-sequential"] = bench_throughput(rt, wls, args.concurrency, args.duration)
        rt.close()
    with tempfile.TemporaryDirectory() as state:
        rt = local_runtime("cpu-multiprocess", state, wls)
        results["local-multiprocess-2w"] = bench_throughput(rt, wls, args.concurrency, args.duration)
        rt.close()

    # --- 1 node: throughput, and the overhead against a local runtime, interleaved ---
    with local_cluster(nodes=1, cpus_per_node=1), tempfile.TemporaryDirectory() as state, \
            tempfile.TemporaryDirectory() as state2:
        crt = cluster_runtime(1, state, wls)
        results["cluster-1-node"] = bench_throughput(crt, wls, args.concurrency, args.duration)
        lrt = local_runtime("cpu-sequential", state2, wls)
        inputs = mm.inputs(0)
        local_t: list[float] = []
        cluster_t: list[float] = []
        one_at_a_time(lrt, mm, inputs, 50)
        one_at_a_time(crt, mm, inputs, 50)
        for _ in range(args.rounds):
            local_t += one_at_a_time(lrt, mm, inputs, 50)
            cluster_t += one_at_a_time(crt, mm, inputs, 50)
        results["overhead"] = {"workload": mm.name, "n": len(local_t), "local_p50_ms": p50_ms(local_t),
                               "cluster_p50_ms": p50_ms(cluster_t),
                               "added_p50_ms": p50_ms(cluster_t) - p50_ms(local_t),
                               "local_p99_ms": sorted(local_t)[int(0.99 * len(local_t))] * 1e3,
                               "cluster_p99_ms": sorted(cluster_t)[int(0.99 * len(cluster_t))] * 1e3}
        lrt.close()
        crt.close()

    # --- 2 nodes ---
    with local_cluster(nodes=2, cpus_per_node=1), tempfile.TemporaryDirectory() as state:
        crt = cluster_runtime(2, state, wls)
        results["cluster-2-nodes"] = bench_throughput(crt, wls, args.concurrency, args.duration)
        crt.close()
    with local_cluster(nodes=2, cpus_per_node=1), tempfile.TemporaryDirectory() as state:
        crt = cluster_runtime(2, state, wls, prefetch=0)
        results["cluster-2-nodes-prefetch0"] = bench_throughput(crt, wls, args.concurrency, args.duration)
        crt.close()

    if args.http:
        results["http"] = bench_http(mm, args)
    return results


def bench_http(wl: Workload, args: argparse.Namespace) -> dict[str, Any]:
    """``pappus serve --cluster local`` under the open-loop generator of ``pappus bench``."""
    from pappus.bench.loadgen import run_open_loop
    from pappus.bench.targets import HttpTarget

    with tempfile.TemporaryDirectory() as state:
        env = dict(os.environ, PAPPUS_HOME=state, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
        proc = subprocess.Popen([sys.executable, "-m", "pappus", "serve", "--cluster", "local", "--no-auth",
                                 "--port", "0", "--state-dir", state, "--log-level", "warning"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            line = proc.stdout.readline() if proc.stdout else ""
            if "serving on" not in line:
                raise RuntimeError(f"server did not start: {line}{proc.stderr.read() if proc.stderr else ''}")
            url = line.split("serving on ")[1].split(" ")[0]
            target = HttpTarget(url)
            target.setup([wl])
            inputs = wl.inputs(0)
            submit = target.submitter(wl, inputs, 5.0, n=0)
            for fut in [submit(i) for i in range(20)]:
                fut.result(30)

            def check(i: int, body: bytes) -> None:
                wl.check(inputs, HttpTarget.decode(body), seed=0)

            levels = {}
            for rps in args.http_rps:
                res = run_open_loop(submit, rps, args.duration, label=f"{rps} rps", deadline_s=5.0, check=check)
                s = res.summary()
                levels[str(rps)] = {k: s[k] for k in ("sent", "completed", "errors", "error_kinds", "throughput",
                                                      "p50_ms", "p99_ms")}
            target.close()
            return {"url": url, "workload": wl.name, "levels": levels, "server": line.strip()}
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def report(results: dict[str, Any]) -> str:
    lines = [f"machine: {results['machine']['cores']} cores; ray {results['ray']}; closed loop, "
             f"{results['concurrency']} outstanding, {results['duration_s']:g} s per figure", "",
             f"{'throughput (inv/s)':30} {'matmul128':>10} {'inference10':>12}"]
    for key in ("local-sequential", "local-multiprocess-2w", "cluster-1-node", "cluster-2-nodes",
                "cluster-2-nodes-prefetch0"):
        r = results.get(key)
        if r:
            errs = sum(v["errors"] for v in r.values())
            lines.append(f"{key:30} {r['matmul128']['throughput']:10.1f} {r['inference10']['throughput']:12.1f}"
                         + (f"   ({errs} errors)" if errs else ""))
    one, two = results.get("cluster-1-node"), results.get("cluster-2-nodes")
    if one and two:
        lines.append(f"{'2 nodes / 1 node':30} {two['matmul128']['throughput'] / one['matmul128']['throughput']:10.2f}"
                     f" {two['inference10']['throughput'] / one['inference10']['throughput']:12.2f}")
    o = results.get("overhead")
    if o:
        lines += ["", f"overhead, one {o['workload']} at a time (n={o['n']}): local p50 {o['local_p50_ms']:.2f} ms, "
                  f"cluster p50 {o['cluster_p50_ms']:.2f} ms -> Ray adds {o['added_p50_ms']:.2f} ms "
                  f"(p99 {o['local_p99_ms']:.2f} / {o['cluster_p99_ms']:.2f} ms)"]
    h = results.get("http")
    if h:
        lines += ["", f"http: {h['server']}"]
        for rps, lv in h["levels"].items():
            lines.append(f"  {rps:>5} rps offered: {lv['throughput']:.1f}/s ok, {lv['errors']} errors, "
                         f"p50 {lv['p50_ms']:.2f} ms, p99 {lv['p99_ms']:.2f} ms")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per throughput figure")
    parser.add_argument("--concurrency", type=int, default=16, help="requests outstanding")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds of 50 for the overhead")
    parser.add_argument("--build-dir", help="where examples are built (default: the pappus cache)")
    parser.add_argument("--http", action="store_true", help="also drive pappus serve --cluster local over HTTP")
    parser.add_argument("--http-rps", type=float, nargs="+", default=[50.0, 200.0])
    parser.add_argument("--json", metavar="FILE", type=json_file,
                        help="write the figures here (its directories are created)")
    args = parser.parse_args(argv)
    from pappus.cluster.local import loopback_only

    loopback_only()
    results = run(args)
    print(report(results))
    if args.json:
        write_json(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
