"""Fair scheduling across tenants (issue 16): a tenant offering 10x what the engine can serve
must not push a light tenant's latency up without bound.

    python benchmarks/bench_fairness.py [--engine host-multiprocess] [--workers 4]
        [--kernel-ms 20] [--duration 10] [--heavy 10] [--light 0.1] [--json out.json]
    python benchmarks/bench_fairness.py --engine cpu-multiprocess --workers 2   # kernels/spin.hip
    # other backends: a library and a config whose function takes no inputs and runs ~kernel-ms
    python benchmarks/bench_fairness.py --engine hip-multiprocess --library sleep.hsaco --config sleep.json

Steps: measure the engine's capacity (invocations/s, closed loop); run tenant B alone, open
loop (Poisson arrivals) at ``--light`` x capacity; run B again while tenant A offers
``--heavy`` x capacity. Latency is counted from each invocation's scheduled arrival, so a
submitter that falls behind does not hide queueing. A's excess is refused at admission
(``QuotaExceeded`` for its per-tenant queue bound), which is the point: it waits behind
itself, not in front of B. Target: B's p99 with A <= 2x B's p99 alone.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, wait
from pathlib import Path
from typing import Any

from json_out import json_file  # benchmarks/json_out.py

from pappus.bench.report import write_json


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p * len(s)))] if s else float("nan")


class OpenLoop(threading.Thread):
    """Submits invocations of ``tenant`` at Poisson arrivals of ``rate``/s for ``duration`` s."""

    def __init__(self, rt: Any, tenant: str, rate: float, duration: float, seed: int, function: str = "work",
                 inputs: dict[str, bytes] | None = None) -> None:
        super().__init__(daemon=True, name=f"load-{tenant}")
        self.rt, self.tenant, self.rate, self.duration = rt, tenant, rate, duration
        self.function, self.inputs = function, inputs or {}
        self.rng = random.Random(seed)
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}
        self.rejected: dict[str, int] = {}
        self.futures: list[Future[Any]] = []
        self.lock = threading.Lock()

    def run(self) -> None:
        from pappus.errors import PappusError

        start = time.perf_counter()
        t = start
        while True:
            t += self.rng.expovariate(self.rate)
            if t - start > self.duration:
                break
            delay = t - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            scheduled = t
            try:
                fut = self.rt.invoke_async(self.function, self.inputs, tenant=self.tenant)
            except PappusError as exc:
                key = exc.fields.get("quota") or exc.code
                self.rejected[key] = self.rejected.get(key, 0) + 1
                continue
            fut.add_done_callback(lambda f, s=scheduled: self._done(f, s))
            self.futures.append(fut)

    def _done(self, fut: Future[Any], scheduled: float) -> None:
        now = time.perf_counter()
        exc = fut.exception()
        with self.lock:
            if exc is None:
                self.latencies.append(now - scheduled)
            else:
                code = getattr(exc, "code", type(exc).__name__)
                self.errors[code] = self.errors.get(code, 0) + 1

    def summary(self) -> dict[str, Any]:
        wait(self.futures, timeout=120)
        lat = self.latencies
        return {"rate_offered": self.rate, "completed": len(lat), "rejected": dict(self.rejected),
                "errors": dict(self.errors), "p50_ms": pct(lat, 0.5) * 1e3, "p99_ms": pct(lat, 0.99) * 1e3,
                "max_ms": max(lat) * 1e3 if lat else float("nan")}


def capacity(rt: Any, seconds: float, concurrency: int) -> float:
    """Invocations per second the engine completes with ``concurrency`` always outstanding."""
    done = 0
    end = time.perf_counter() + seconds
    lock = threading.Lock()

    def client() -> None:
        nonlocal done
        while time.perf_counter() < end:
            rt.invoke("work", {}, tenant="probe")
            with lock:
                done += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done / (time.perf_counter() - t0)


def cpu_spin_function(kernel_ms: float) -> tuple[Path, dict[str, Any]]:
    """The CPU backend's stand-in for ``sleep_ms``: ``kernels/spin.hip`` built for the host,
    with its iteration count calibrated so one run takes about ``kernel_ms`` of CPU time."""
    from pappus_cpu.build import build_library
    from pappus_cpu.direct import DirectFunction

    out = Path(tempfile.mkdtemp(prefix="pappus-bench-spin-"))
    library = next(p for p in build_library(Path(__file__).parent / "kernels" / "spin.hip", out)
                   if p.suffix == ".so")

    def config(iterations: int) -> dict[str, Any]:
        return {"schema": "pappus/function@1", "library": "lib", "kernels": ["spin"],
                "blueprint": {"inputs": [], "buffers": {"X": 8}, "outputs": ["X"], "control_flow": [
                    {"ExecKernel": {"name": "spin", "args": [{"Constant": {"type": "u64", "value": iterations}},
                                                             {"Ptr": "X"}], "grid": [1], "block": [1]}}]}}

    probe = 2_000_000
    fn = DirectFunction(config(probe), {"lib": library})
    fn({})  # warm
    t0 = time.perf_counter()
    for _ in range(5):
        fn({})
    per_iteration = (time.perf_counter() - t0) / 5 / probe
    return library, config(max(1, int(kernel_ms / 1000 / per_iteration)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", default="host-multiprocess", help="engine (default: %(default)s)")
    ap.add_argument("--workers", type=int, default=4, help="workers of a multiprocess engine (default: %(default)s)")
    ap.add_argument("--kernel-ms", type=int, default=20, help="host sleep_ms kernel duration (default: %(default)s)")
    ap.add_argument("--library", help="library file for non-host engines")
    ap.add_argument("--config", help="function config (JSON) for non-host engines; takes no inputs")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per phase (default: %(default)s)")
    ap.add_argument("--heavy", type=float, default=10.0, help="A's load, x capacity (default: %(default)s)")
    ap.add_argument("--light", type=float, default=0.1, help="B's load, x capacity (default: %(default)s)")
    ap.add_argument("--queued", type=int, default=32, help="per-tenant queued_invocations quota (default: %(default)s)")
    ap.add_argument("--json", metavar="FILE", type=json_file,
                    help="write the figures as JSON (its directories are created)")
    args = ap.parse_args(argv)

    import pappus
    from pappus.devices.host import host_library
    from pappus.tenants import TenantStore

    state = Path(tempfile.mkdtemp(prefix="pappus-bench-fair-"))
    store = TenantStore(state)
    store.set_defaults({"queued_invocations": args.queued, "concurrent_invocations": None})
    if args.library:
        library: Any = Path(args.library)
        config: Any = json.loads(Path(args.config).read_text())
    elif args.engine.startswith("cpu-"):
        library, config = cpu_spin_function(args.kernel_ms)
    else:
        library = host_library(["sleep_ms"])
        config = {"schema": "pappus/function@1", "library": "lib", "kernels": ["sleep_ms"],
                  "blueprint": {"inputs": [], "buffers": {"X": 64}, "outputs": ["X"], "control_flow": [
                      {"ExecKernel": {"name": "sleep_ms", "args": [{"Constant": {"type": "u64",
                                                                                 "value": args.kernel_ms}}],
                                      "grid": [1], "block": [1]}}]}}
    rt = pappus.Runtime(engine=args.engine, state_dir=state, workers=args.workers, tenants=store,
                        pool_bytes=1 << 20 if args.engine.startswith("host") else None)
    for tenant in ("a", "b", "probe"):
        rt.register_library(config.get("library", "lib"), library, tenant=tenant)
        rt.register_function("work", config, tenant=tenant)
    rt.engine()
    for _ in range(2 * args.workers):  # warm every worker's module cache
        rt.invoke("work", {}, tenant="probe")
    cap = capacity(rt, min(3.0, args.duration), concurrency=2 * args.workers)
    print(f"engine {args.engine}, {args.workers} workers: capacity {cap:.1f} invocations/s")

    light = OpenLoop(rt, "b", args.light * cap, args.duration, seed=1)
    light.start()
    light.join()
    alone = light.summary()
    print(f"B alone      ({alone['rate_offered']:.1f}/s): p50 {alone['p50_ms']:.1f} ms  p99 {alone['p99_ms']:.1f} ms"
          f"  ({alone['completed']} done)")

    heavy = OpenLoop(rt, "a", args.heavy * cap, args.duration, seed=2)
    light = OpenLoop(rt, "b", args.light * cap, args.duration, seed=3)
    heavy.start()
    time.sleep(0.5)  # A's backlog is in place before B starts
    light.start()
    light.join()
    heavy.join()
    with_a = light.summary()
    a = heavy.summary()
    rt.close(drain=False, timeout=10)
    ratio = with_a["p99_ms"] / alone["p99_ms"]
    print(f"B with A     ({with_a['rate_offered']:.1f}/s): p50 {with_a['p50_ms']:.1f} ms  "
          f"p99 {with_a['p99_ms']:.1f} ms  ({with_a['completed']} done, errors {with_a['errors'] or 'none'}, "
          f"rejected {with_a['rejected'] or 'none'})")
    print(f"A            ({a['rate_offered']:.1f}/s): {a['completed']} done, p50 {a['p50_ms']:.0f} ms, "
          f"rejected {a['rejected']}")
    ok = ratio <= 2.0 and not with_a["errors"] and not with_a["rejected"]
    print(f"B p99 with A / alone: {ratio:.2f} (target <= 2): {'met' if ok else 'NOT met'}")
    if args.json:
        write_json({"engine": args.engine, "workers": args.workers, "kernel_ms": args.kernel_ms,
                    "capacity_per_s": cap, "b_alone": alone, "b_with_a": with_a, "a": a, "p99_ratio": ratio},
                   args.json)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
