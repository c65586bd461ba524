"""The thesis evaluation (chapter 5) on the CPU backend, as named experiments in two profiles.

=================  =====================================================================
experiment         what (thesis section)
=================  =====================================================================
matmul-hot         matmul 128x128 int64 A x A^T, 100 % hot load sweep (5.2.1, fig. 5.1)
matmul-cold        the same, 0 % hot (every invocation loads its module; 5.2.2, fig. 5.2),
                   and a 50 % hot mix (cold requests go to freshly registered tenants)
cold-first         first invocation after registration vs hot, one at a time (issue 10)
inference-reps     conv5x5+ReLU+maxpool on 224x224 f32, repetition sweep at a fixed low load
                   (5.3.1, fig. 5.3)
inference-load     the same at 50 repetitions, load sweep (5.3.2, fig. 5.4)
workers            cpu-multiprocess with 2 vs 4 workers, inference-50 load sweep (5.4, fig. 5.5)
batched-size       batched inference, batch-size sweep at a fixed load (5.5.1, fig. 5.6)
batched-load-2/8   batched inference load sweeps at batch 2 and 8 (5.5.2, fig. 5.7)
http-matmul        matmul 128 over HTTP: pappus serve (both engines) vs the dedicated server
=================  =====================================================================

Rates are scaled to the machine: the thesis had 4 MI210 GPUs, 128 cores and a separate load
generator; here the "device" of the CPU backend is a CPU core (a kernel's blocks run one after
another on one core), the load generator shares the machine, and the profiles below are sized
for 2 cores. ``quick`` runs every experiment in a few minutes; ``full`` is the recorded run.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .report import (
    CpuMeter,
    markdown_table,
    max_throughput_lines,
    plot_experiment,
    rich_table,
    write_json,
)
from .sweep import Level, Series, run_series, warm_up
from .targets import DedicatedTarget, HttpTarget, RuntimeTarget, Target
from .workloads import Workload, load_workload

SEQ, MP = "cpu-sequential", "cpu-multiprocess"
#: Over HTTP the load generator shares the 2 cores with the server: it decodes and checks every
#: 10th response body (base64 JSON, 175 KB for matmul), not every one.
HTTP_CHECK_EVERY = 10


@dataclass
class Plan:
    """Levels and durations of every experiment in one profile."""

    name: str
    duration: float  # seconds per load level
    matmul_rps: list[float]
    cold_rps: list[float]
    cold_first: int  # fresh tenants for the cold-first figure
    reps: list[int]
    reps_rps: float
    reps_duration: float
    inference_rps: list[float]
    inference_duration: float
    batch_sizes: list[int]
    batch_rps: float
    batched2_rps: list[float]
    batched8_rps: list[float]
    http_rps: list[float]
    compare_rounds: int = 8
    compare_window: float = 2.0  # seconds per target per round (matmul; inference: 2.5x)
    mix_hot: float = 0.5
    extra: dict[str, Any] = field(default_factory=dict)


PROFILES: dict[str, Plan] = {
    "quick": Plan(
        name="quick", duration=2.0,
        matmul_rps=[100, 300, 600], cold_rps=[50, 150], cold_first=12,
        reps=[1, 10, 50], reps_rps=2.0, reps_duration=4.0,
        inference_rps=[4, 8, 14, 20], inference_duration=3.0,
        batch_sizes=[1, 2, 4, 8], batch_rps=8.0,
        batched2_rps=[50, 150], batched8_rps=[10, 30],
        http_rps=[50, 150, 300],
        compare_rounds=3, compare_window=1.0,
    ),
    "full": Plan(
        name="full", duration=6.0,
        matmul_rps=[50, 100, 200, 300, 400, 500, 600, 700, 800, 1000, 1200],
        cold_rps=[25, 50, 100, 150, 200, 250, 300, 400, 500], cold_first=60,
        reps=[1, 10, 50, 100, 250, 500], reps_rps=0.5, reps_duration=20.0,
        inference_rps=[2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26], inference_duration=10.0,
        batch_sizes=[1, 2, 3, 4, 6, 8, 10], batch_rps=10.0,
        batched2_rps=[25, 50, 100, 150, 200, 250, 300, 350, 400, 500],
        batched8_rps=[10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 120],
        http_rps=[50, 100, 150, 200, 250, 300, 350, 400, 500, 600],
        compare_rounds=10, compare_window=2.0,
    ),
}

EXPERIMENTS = ["p50-compare", "matmul-hot", "matmul-cold", "cold-first", "inference-reps", "inference-load", "workers",
               "batched-size", "batched-load-2", "batched-load-8", "http-matmul"]


class Context:
    """What every experiment needs: the plan, the build folder, output, progress and the doc."""

    def __init__(self, plan: Plan, out: Path, doc: dict[str, Any], console: Any = None, workers: int = 2,
                 build_dir: Path | None = None, seed: int = 0, retries: int = 1) -> None:
        self.plan = plan
        self.retries = retries
        self.out = out
        self.doc = doc
        self.console = console
        self.workers = workers
        self.build_dir = build_dir
        self.seed = seed
        self._workloads: dict[str, Workload] = {}

    def workload(self, name: str) -> Workload:
        wl = self._workloads.get(name)
        if wl is None:
            wl = self._workloads[name] = load_workload(name, "cpu", self.build_dir)
        return wl

    def say(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text)

    def progress(self) -> Any:
        if self.console is None:
            return _NoProgress()
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=self.console, transient=True)

    def series(self, make: Callable[[], Target], levels: list[Level], *, duration: float, deadline: float,
               stop: bool = True, workloads: list[Workload] | None = None, check_every: int = 1) -> Series:
        with make() as target, self.progress() as progress:
            target.setup(workloads or _unique([lv.workload for lv in levels]))
            return run_series(target, levels, duration=duration, deadline=deadline, seed=self.seed,
                              stop_on_error=stop, check_every=check_every, retries=self.retries,
                              progress=progress if self.console is not None else None)

    def record(self, name: str, title: str, series: list[Series], *, x_label: str = "offered load (rps)",
               fixed: str = "", x_scale: str = "linear", y_scale: str = "linear", notes: str = "",
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
        exp: dict[str, Any] = {"name": name, "title": title, "x_label": x_label, "x_scale": x_scale,
                               "y_scale": y_scale, "fixed": fixed, "notes": notes,
                               "series": [s.to_dict() for s in series]}
        if extra:
            exp.update(extra)
        if any(s.levels for s in series):
            plot = plot_experiment(exp, self.out / f"{name}.png")
            exp["plot"] = plot.name
        self.doc["experiments"] = [e for e in self.doc["experiments"] if e["name"] != name] + [exp]
        write_json(self.doc, self.out / "results.json")
        if self.console is not None:
            self.console.print(rich_table(exp))
            for line in max_throughput_lines(exp):
                self.console.print(f"  {line}")
        return exp


class _NoProgress:
    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _unique(wls: list[Workload]) -> list[Workload]:
    seen: dict[str, Workload] = {}
    for wl in wls:
        seen.setdefault(wl.function, wl)
    return list(seen.values())


# --- experiments -------------------------------------------------------------------------------


def _levels(wl: Workload, rates: list[float]) -> list[Level]:
    return [Level(x=r, workload=wl, rps=r) for r in rates]


def p50_compare(ctx: Context) -> None:
    """Base latency of each target at a low load, interleaved: the targets take turns, round
    after round, so drift on a shared machine (frequency, neighbours) hits all of them alike.
    The source of the issue-10 p50 ratios (matmul 128 at 50 rps, inference 50 at 2 rps)."""
    from .loadgen import run_open_loop
    from .sweep import checker

    p, w = ctx.plan, ctx.workers
    cases = [("matmul128", 50.0, p.compare_window, 0.5), ("inference50", 2.0, p.compare_window * 2.5, 5.0)]
    result: dict[str, Any] = {"name": "p50-compare", "title": "base latency at a low load, targets interleaved",
                              "rounds": p.compare_rounds, "cases": {}}
    with ExitStack() as stack:
        targets: list[Target] = [stack.enter_context(t) for t in (RuntimeTarget(SEQ), RuntimeTarget(MP, workers=w),
                                                                  DedicatedTarget(workers=w))]
        wls = [ctx.workload(name) for name, *_ in cases]
        for t in targets:
            t.setup(wls)
        for (name, rps, window, deadline), wl in zip(cases, wls, strict=True):
            inputs = wl.inputs(ctx.seed)
            lat: dict[str, list[float]] = {t.name: [] for t in targets}
            errors: dict[str, int] = {t.name: 0 for t in targets}
            for t in targets:
                warm_up(t, wl, inputs, ctx.seed, 3)
            meter = CpuMeter()
            with ctx.progress() as progress:
                task = progress.add_task(f"{name}: interleaved", total=p.compare_rounds) \
                    if ctx.console is not None else None
                for r in range(p.compare_rounds):
                    order = targets[r % len(targets):] + targets[:r % len(targets)]
                    for t in order:
                        res = run_open_loop(t.submitter(wl, inputs, deadline), rps, window, seed=ctx.seed + r,
                                            deadline_s=deadline, drain_s=deadline + 10,
                                            check=checker(t, wl, inputs, ctx.seed))
                        lat[t.name] += res.latencies_s
                        errors[t.name] += res.errors
                    if task is not None:
                        progress.advance(task)
            case: dict[str, Any] = {"rps": rps, "window_s": window, "targets": {},
                                    "foreign_cpu": meter.foreign_share()}
            for t in targets:
                xs = lat[t.name]
                case["targets"][t.name] = {"p50_ms": statistics.median(xs) * 1e3 if xs else None,
                                           "p99_ms": _pct(xs, 99) * 1e3 if xs else None, "n": len(xs),
                                           "errors": errors[t.name]}
            ded = case["targets"]["dedicated"]["p50_ms"]
            for t in targets:
                v = case["targets"][t.name]
                v["vs_dedicated"] = v["p50_ms"] / ded if ded and v["p50_ms"] else None
                ctx.say(f"  {name} at {rps:g} rps: {t.name} p50 {v['p50_ms']:.3f} ms, p99 {v['p99_ms']:.3f} ms "
                        f"({v['vs_dedicated']:.3f}x dedicated, n={v['n']}, errors {v['errors']})")
            result["cases"][name] = case
    ctx.doc["experiments"] = [e for e in ctx.doc["experiments"] if e["name"] != "p50-compare"] + [result]
    write_json(ctx.doc, ctx.out / "results.json")


def matmul_hot(ctx: Context) -> None:
    wl, p, w = ctx.workload("matmul128"), ctx.plan, ctx.workers
    levels = _levels(wl, p.matmul_rps)
    series = [ctx.series(lambda: RuntimeTarget(SEQ), levels, duration=p.duration, deadline=0.5),
              ctx.series(lambda: RuntimeTarget(MP, workers=w), levels, duration=p.duration, deadline=0.5),
              ctx.series(lambda: DedicatedTarget(workers=w), levels, duration=p.duration, deadline=0.5)]
    ctx.record("matmul-hot", "matmul 128x128 int64, 100% hot (thesis fig. 5.1)", series,
               fixed="deadline 0.5 s", notes="in-process load generator; dedicated = direct calls, 2 workers")


def matmul_cold(ctx: Context) -> None:
    wl, p, w = ctx.workload("matmul128"), ctx.plan, ctx.workers
    levels = _levels(wl, p.cold_rps)
    series = [ctx.series(lambda: RuntimeTarget(SEQ, hot=0.0), levels, duration=p.duration, deadline=0.5),
              ctx.series(lambda: RuntimeTarget(MP, workers=w, hot=0.0), levels, duration=p.duration, deadline=0.5),
              ctx.series(lambda: RuntimeTarget(SEQ, hot=p.mix_hot), levels, duration=p.duration, deadline=0.5)]
    ctx.record("matmul-cold", "matmul 128x128 int64, 0% hot (thesis fig. 5.2) and a 50% mix", series,
               fixed="deadline 0.5 s",
               notes="0% hot: module_cache_size=0 (every invocation loads its library); 50%: cold requests "
                     "go to tenants registered just before the level that never invoked")


def cold_first(ctx: Context) -> None:
    """First invocation after registration vs a hot one, one request at a time (no queueing)."""
    wl, n = ctx.workload("matmul128"), ctx.plan.cold_first
    inputs = wl.inputs(ctx.seed)
    result: dict[str, Any] = {"name": "cold-first", "title": "matmul 128: first invocation after registration "
                              "vs hot, one at a time", "series": [], "engines": {}}
    for engine in (SEQ, MP):
        target = RuntimeTarget(engine, workers=ctx.workers)
        with target:
            target.setup([wl])
            rt = target.rt
            for _ in range(5):
                wl.check(inputs, rt.invoke(wl.function, inputs, engine=engine), ctx.seed)
            cold, hot, register = [], [], []
            for i in range(n):
                tenant = f"fresh{i}"
                t0 = time.perf_counter()
                wl.register(rt, tenant=tenant)
                register.append(time.perf_counter() - t0)
                time.sleep(0.01)
                t0 = time.perf_counter()
                out = rt.invoke(wl.function, inputs, tenant=tenant, engine=engine)
                cold.append(time.perf_counter() - t0)
                wl.check(inputs, out, ctx.seed)
                for _ in range(2):
                    time.sleep(0.005)
                    t0 = time.perf_counter()
                    out = rt.invoke(wl.function, inputs, engine=engine)
                    hot.append(time.perf_counter() - t0)
                wl.check(inputs, out, ctx.seed)
        result["engines"][engine] = {
            "cold_p50_ms": statistics.median(cold) * 1e3, "cold_p99_ms": _pct(cold, 99) * 1e3,
            "hot_p50_ms": statistics.median(hot) * 1e3, "hot_p99_ms": _pct(hot, 99) * 1e3,
            "ratio_p50": statistics.median(cold) / statistics.median(hot),
            "register_p50_ms": statistics.median(register) * 1e3, "n": n}
        ctx.say(f"{engine}: cold p50 {statistics.median(cold) * 1e3:.2f} ms vs hot p50 "
                f"{statistics.median(hot) * 1e3:.2f} ms: {statistics.median(cold) / statistics.median(hot):.2f}x "
                f"(target <= 3x); registration p50 {statistics.median(register) * 1e3:.1f} ms")
    ctx.doc["experiments"] = [e for e in ctx.doc["experiments"] if e["name"] != "cold-first"] + [result]
    write_json(ctx.doc, ctx.out / "results.json")


def _pct(xs: list[float], p: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered))) - 1))]


def inference_reps(ctx: Context) -> None:
    p, w = ctx.plan, ctx.workers
    levels = [Level(x=r, workload=ctx.workload(f"inference{r}"), rps=p.reps_rps) for r in p.reps]
    # One registered function serves every repetition count (cfg input); deadline above the
    # largest base latency so a level fails only when it queues.
    deadline = max(5.0, 0.004 * max(p.reps) * 5)
    first = [levels[0].workload]
    series = [ctx.series(lambda: RuntimeTarget(SEQ), levels, duration=p.reps_duration, deadline=deadline,
                         workloads=first),
              ctx.series(lambda: RuntimeTarget(MP, workers=w), levels, duration=p.reps_duration, deadline=deadline,
                         workloads=first),
              ctx.series(lambda: DedicatedTarget(workers=w), levels, duration=p.reps_duration, deadline=deadline,
                         workloads=first)]
    ctx.record("inference-reps", f"inference: repetition sweep at {p.reps_rps:g} rps (thesis fig. 5.3)", series,
               x_label="repetitions", x_scale="log", y_scale="log", fixed=f"{p.reps_rps:g} rps, deadline {deadline:g} s")


def inference_load(ctx: Context) -> None:
    wl, p, w = ctx.workload("inference50"), ctx.plan, ctx.workers
    levels = _levels(wl, p.inference_rps)
    d = p.inference_duration
    series = [ctx.series(lambda: RuntimeTarget(SEQ), levels, duration=d, deadline=2.0),
              ctx.series(lambda: RuntimeTarget(MP, workers=w), levels, duration=d, deadline=2.0),
              ctx.series(lambda: DedicatedTarget(workers=w), levels, duration=d, deadline=2.0)]
    ctx.record("inference-load", "inference, 50 repetitions: load sweep (thesis fig. 5.4)", series,
               fixed="deadline 2 s")


def workers_sweep(ctx: Context) -> None:
    wl, p = ctx.workload("inference50"), ctx.plan
    levels = _levels(wl, p.inference_rps)
    d = p.inference_duration
    two = _reuse(ctx, "inference-load", MP)
    series = [two or ctx.series(lambda: RuntimeTarget(MP, workers=2), levels, duration=d, deadline=2.0),
              ctx.series(lambda: RuntimeTarget(MP, workers=4, name=f"{MP}-4w"), levels, duration=d, deadline=2.0)]
    ctx.record("workers", "inference-50 load sweep: cpu-multiprocess with 2 vs 4 workers (thesis fig. 5.5)",
               series, fixed="deadline 2 s", notes="the 2-worker series is the one of inference-load when "
               "that ran in the same run")


def _reuse(ctx: Context, experiment: str, target: str) -> Series | None:
    for exp in ctx.doc["experiments"]:
        if exp["name"] == experiment:
            for s in exp["series"]:
                if s["target"]["name"] == target:
                    return Series(target=s["target"], levels=s["levels"], stopped=s["stopped"])
    return None


def batched_size(ctx: Context) -> None:
    p, w = ctx.plan, ctx.workers
    levels = [Level(x=b, workload=ctx.workload(f"batched{b}"), rps=p.batch_rps) for b in p.batch_sizes]
    first, d = [levels[0].workload], p.duration
    series = [ctx.series(lambda: RuntimeTarget(SEQ), levels, duration=d, deadline=2.0, workloads=first),
              ctx.series(lambda: RuntimeTarget(MP, workers=w), levels, duration=d, deadline=2.0, workloads=first),
              ctx.series(lambda: DedicatedTarget(workers=w), levels, duration=d, deadline=2.0, workloads=first)]
    ctx.record("batched-size", f"batched inference: batch-size sweep at {p.batch_rps:g} rps (thesis fig. 5.6)",
               series, x_label="batch size", fixed=f"{p.batch_rps:g} rps, deadline 2 s")


def batched_load(ctx: Context, batch: int) -> None:
    p, w = ctx.plan, ctx.workers
    wl = ctx.workload(f"batched{batch}")
    levels = _levels(wl, p.batched2_rps if batch == 2 else p.batched8_rps)
    series = [ctx.series(lambda: RuntimeTarget(SEQ), levels, duration=p.duration, deadline=1.0),
              ctx.series(lambda: RuntimeTarget(MP, workers=w), levels, duration=p.duration, deadline=1.0)]
    ctx.record(f"batched-load-{batch}", f"batched inference, batch {batch}: load sweep (thesis fig. 5.7)", series,
               fixed="deadline 1 s")


def http_matmul(ctx: Context) -> None:
    wl, p, w = ctx.workload("matmul128"), ctx.plan, ctx.workers
    levels = _levels(wl, p.http_rps)
    series = []
    for engine in (SEQ, MP):
        with HttpServer.pappus(engine, w) as server:
            series.append(ctx.series(_http_target(server.url, server.token, f"http pappus {engine}"),
                                     levels, duration=p.duration, deadline=1.0, check_every=HTTP_CHECK_EVERY))
    with HttpServer.dedicated(["matmul128"], w, ctx.build_dir) as server:
        series.append(ctx.series(_http_target(server.url, None, "http dedicated", register=False),
                                 levels, duration=p.duration, deadline=1.0, check_every=HTTP_CHECK_EVERY))
    ctx.record("http-matmul", "matmul 128 over HTTP: pappus serve vs the dedicated server", series,
               fixed="deadline 1 s", notes="servers run as separate processes under uvicorn on the same "
               f"machine as the load generator (httpx, asyncio); every {HTTP_CHECK_EVERY}th response is decoded "
               "and checked against numpy (every one is checked for status 200)")


def _http_target(url: str, token: str | None, name: str, register: bool = True) -> Callable[[], Target]:
    return lambda: HttpTarget(url, token, name=name, register=register)


class HttpServer:
    """A server process (pappus serve or the dedicated server) for the duration of a ``with``."""

    def __init__(self, argv: list[str], pattern: str, token: str | None = None, state: Any = None) -> None:
        self.token = token
        self._state = state
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     stdin=subprocess.DEVNULL, env=env)
        self.url = ""
        seen = []
        deadline = time.monotonic() + 120
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            m = re.search(pattern, line)
            if m:
                self.url = m.group(1)
                break
        if not self.url:
            self.close()
            raise RuntimeError("server did not start:\n" + "".join(seen[-20:]))
        import threading

        threading.Thread(target=self._drain, daemon=True).start()
        _wait_healthy(self.url)

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for _ in self.proc.stdout:
            pass

    @classmethod
    def pappus(cls, engine: str, workers: int) -> HttpServer:
        from ..registry import Registry
        from ..tenants import TenantStore

        state = tempfile.TemporaryDirectory(prefix="pappus-bench-serve-")
        token = TenantStore(registry=Registry(state.name)).add("bench")
        argv = [sys.executable, "-m", "pappus", "serve", "--engine", engine, "--workers", str(workers), "--port", "0",
                "--state-dir", state.name, "--log-level", "warning"]
        return cls(argv, r"serving on (http://\S+)", token, state)

    @classmethod
    def dedicated(cls, workloads: list[str], workers: int, build_dir: Path | None) -> HttpServer:
        argv = [sys.executable, "-m", "pappus.bench.dedicated", "--workers", str(workers), "--port", "0"]
        for wl in workloads:
            argv += ["--workload", wl]
        if build_dir is not None:
            argv += ["--build-dir", str(build_dir)]
        return cls(argv, r"serving on (http://\S+)")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._state is not None:
            self._state.cleanup()

    def __enter__(self) -> HttpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wait_healthy(url: str, timeout: float = 60.0) -> None:
    import httpx

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become healthy within {timeout:g} s")


RUNNERS: dict[str, Callable[[Context], None]] = {
    "p50-compare": p50_compare,
    "matmul-hot": matmul_hot,
    "matmul-cold": matmul_cold,
    "cold-first": cold_first,
    "inference-reps": inference_reps,
    "inference-load": inference_load,
    "workers": workers_sweep,
    "batched-size": batched_size,
    "batched-load-2": lambda ctx: batched_load(ctx, 2),
    "batched-load-8": lambda ctx: batched_load(ctx, 8),
    "http-matmul": http_matmul,
}


def run_suite(out: Path, profile: str = "full", only: list[str] | None = None, console: Any = None,
              doc: dict[str, Any] | None = None, command: str = "", build_dir: Path | None = None,
              workers: int = 2, keep_going: bool = True, retries: int = 1) -> dict[str, Any]:
    """Run the experiments (all, or ``only``) and return the results document."""
    from .report import new_document

    plan = PROFILES[profile]
    out.mkdir(parents=True, exist_ok=True)
    doc = doc if doc is not None else new_document(profile, command)
    ctx = Context(plan, out, doc, console=console, workers=workers, build_dir=build_dir, retries=retries)
    names = EXPERIMENTS if only is None else only
    for name in names:
        if name not in RUNNERS:
            raise ValueError(f"unknown experiment {name!r} (known: {', '.join(EXPERIMENTS)})")
    from .report import _loadavg

    for name in names:
        ctx.say(f"[bold]{name}[/bold]")
        t0 = time.monotonic()
        # The machine may be shared: what else ran is part of the result.
        doc.setdefault("loadavg", {})[name] = {"start": _loadavg()}
        meter = CpuMeter()
        try:
            RUNNERS[name](ctx)
        except Exception as exc:  # one broken experiment must not lose the others
            import traceback

            doc.setdefault("errors", {})[name] = traceback.format_exc()
            ctx.say(f"[red]{name} failed[/red]: {type(exc).__name__}: {exc}")
            if not keep_going:
                raise
        doc.setdefault("timings_s", {})[name] = round(time.monotonic() - t0, 1)
        doc["loadavg"][name]["end"] = _loadavg()
        doc.setdefault("foreign_cpu", {})[name] = meter.foreign_share()
    doc["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    doc["machine"]["loadavg_end"] = _loadavg()
    write_json(doc, out / "results.json")
    return doc


# --- the figures the issues set targets for ------------------------------------------------------


def _exp(doc: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((e for e in doc.get("experiments", []) if e["name"] == name), None)


def _series(exp: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    if exp is None:
        return None
    return next((s for s in exp["series"] if s["target"]["name"] == name), None)


def _level(series: dict[str, Any] | None, x: float | None = None) -> dict[str, Any] | None:
    if series is None or not series["levels"]:
        return None
    if x is None:
        return series["levels"][0]
    return next((lv for lv in series["levels"] if lv["x"] == x), None)


def target_figures(doc: dict[str, Any], engines: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Issue 10's figures (and issue 4's, from ``engines``: bench_engines.py's JSON), each with
    its target, the measured value and whether it is met."""
    out: list[dict[str, Any]] = []

    def add(figure: str, target: str, value: float | None, ok: bool | None, detail: str) -> None:
        out.append({"figure": figure, "target": target, "measured": None if value is None else round(value, 3),
                    "met": ok, "detail": detail})

    hot = _exp(doc, "matmul-hot")
    cmp = _exp(doc, "p50-compare")
    for case, label, limit in (("matmul128", "matmul 128", 1.3), ("inference50", "inference 50 reps", 1.05)):
        c = (cmp or {}).get("cases", {}).get(case)
        if c:
            s, d = c["targets"][SEQ], c["targets"]["dedicated"]
            if s["p50_ms"] and d["p50_ms"]:
                r = s["p50_ms"] / d["p50_ms"]
                add(f"in-process cpu-sequential p50 / dedicated p50, {label}", f"<= {limit}x", r, r <= limit,
                    f"{s['p50_ms']:.3f} vs {d['p50_ms']:.3f} ms at {c['rps']:g} rps, interleaved, "
                    f"n={s['n']}/{d['n']}")
            m = c["targets"].get(MP)
            if case == "matmul128" and m and m["p50_ms"] and s["p50_ms"]:  # the sandbox cost of issue 5
                r = m["p50_ms"] / s["p50_ms"]
                add(f"in-process cpu-multiprocess p50 / cpu-sequential p50, {label}", "<= 1.3x", r, r <= 1.3,
                    f"{m['p50_ms']:.3f} vs {s['p50_ms']:.3f} ms at {c['rps']:g} rps, interleaved, "
                    f"n={m['n']}/{s['n']}")
            continue
        exp = hot if case == "matmul128" else _exp(doc, "inference-reps")
        x = None if case == "matmul128" else 50
        seq, ded = _level(_series(exp, SEQ), x), _level(_series(exp, "dedicated"), x)
        if seq and ded and seq["p50_ms"] and ded["p50_ms"]:
            r = seq["p50_ms"] / ded["p50_ms"]
            add(f"in-process cpu-sequential p50 / dedicated p50, {label}", f"<= {limit}x", r, r <= limit,
                f"{seq['p50_ms']:.3f} vs {ded['p50_ms']:.3f} ms at {seq['rps_offered']:g} rps")
    http = _exp(doc, "http-matmul")
    dmax = (_series(http, "http dedicated") or {}).get("max_throughput")
    for engine in (MP, SEQ):
        s = _series(http, f"http pappus {engine}")
        if s and dmax and s.get("max_throughput"):
            r = s["max_throughput"] / dmax
            sat = "" if s.get("saturated") and (_series(http, "http dedicated") or {}).get("saturated") \
                else " (a sweep did not saturate: max throughputs are lower bounds)"
            add(f"HTTP max throughput, pappus serve {engine} / dedicated server, matmul 128", ">= 0.8x", r,
                r >= 0.8, f"{s['max_throughput']:.0f} vs {dmax:.0f} rps{sat}")
    load = _exp(doc, "inference-load")
    s, m = _series(load, SEQ), _series(load, MP)
    if s and m and s.get("max_throughput") and m.get("max_throughput"):
        r = m["max_throughput"] / s["max_throughput"]
        add("max throughput cpu-multiprocess (2 workers) / cpu-sequential, inference 50", ">= 1.7x", r, r >= 1.7,
            f"{m['max_throughput']:.1f} vs {s['max_throughput']:.1f} rps")
    cold = _exp(doc, "cold-first")
    if cold:
        for engine, v in cold["engines"].items():
            add(f"cold (first invocation after registration) p50 / hot p50, matmul 128, {engine}", "<= 3x",
                v["ratio_p50"], v["ratio_p50"] <= 3.0, f"{v['cold_p50_ms']:.2f} vs {v['hot_p50_ms']:.2f} ms")
    mc = _exp(doc, "matmul-cold")
    for engine in (SEQ, MP):
        c, h = _level(_series(mc, f"{engine} (0% hot)")), _level(_series(hot, engine))
        if c and h and c["p50_ms"] and h["p50_ms"]:
            r = c["p50_ms"] / h["p50_ms"]
            add(f"0%-hot p50 / 100%-hot p50 at the lowest load, matmul 128, {engine}", "<= 3x", r, r <= 3.0,
                f"{c['p50_ms']:.2f} ms at {c['x']:g} rps vs {h['p50_ms']:.2f} ms at {h['x']:g} rps")
    if engines:
        o = engines.get("overhead", {})
        if o:
            add("engine-kit overhead, cpu-sequential (p50 over the same launches run on the DeviceAPI)",
                "<= 100 us", o["sequential_overhead_us"], o["sequential_overhead_us"] <= 100,
                f"{o['sequential_p50_us']:.0f} vs {o['direct_p50_us']:.0f} us")
            add("engine-kit overhead, cpu-multiprocess", "<= 300 us", o["multiprocess_overhead_us"],
                o["multiprocess_overhead_us"] <= 300, f"{o['multiprocess_p50_us']:.0f} vs {o['direct_p50_us']:.0f} us")
            if "process_hop_us" in o:
                add("a bare process hop, two wake-ups and messages (not a target: the least cpu-multiprocess adds "
                    "over cpu-sequential)", "-", o["process_hop_us"], None,
                    f"multiprocess minus sequential overhead "
                    f"{o['multiprocess_overhead_us'] - o['sequential_overhead_us']:.0f} us")
            if "dedicated_p50_us" in o:
                add("whole path over a direct in-process call, cpu-sequential (not a target: includes the sandbox)",
                    "-", o["sequential_p50_us"] - o["dedicated_p50_us"], None,
                    f"{o['sequential_p50_us']:.0f} vs {o['dedicated_p50_us']:.0f} us")
        r = engines.get("respawn", {})
        if r:
            add("worker respawn after a crash until serving again", "<= 50 ms", r["p50_ms"], r["p50_ms"] <= 50,
                f"p50 {r['p50_ms']:.1f} ms, max {r['max_ms']:.1f} ms over {r['runs']} kills")
        t = engines.get("throughput", {})
        if t:
            add(f"throughput cpu-multiprocess (2 workers) / cpu-sequential, {t['workload']}, closed loop", ">= 1.7x",
                t["ratio"], t["ratio"] >= 1.7, f"{t['multiprocess_rps']:.1f} vs {t['sequential_rps']:.1f} /s")
    return out


def figures_markdown(figures: list[dict[str, Any]]) -> str:
    lines = ["| figure | target | measured | met |", "| --- | --- | --- | --- |"]
    for f in figures:
        met = "yes" if f["met"] else "n/a" if f["met"] is None else "**no**"
        val = "-" if f["measured"] is None else f"{f['measured']:g}"
        lines.append(f"| {f['figure']} | {f['target']} | {val} ({f['detail']}) | {met} |")
    return "\n".join(lines)


def results_markdown(doc: dict[str, Any], figures: list[dict[str, Any]], image_prefix: str = "") -> str:
    m = doc["machine"]
    parts = [f"# pappus bench: {doc.get('profile')} profile", "",
             f"- machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), {m.get('memory_gib')} GiB, "
             f"Linux {m['kernel']}, Python {m['python']}, pappus {m['pappus']} ({m.get('commit')})",
             f"- load average at start / end: {m.get('loadavg')} / {m.get('loadavg_end')}",
             f"- started {doc.get('started')}, finished {doc.get('finished')}",
             f"- command: `{doc.get('command')}`", "", "## Targets", "", figures_markdown(figures), ""]
    for exp in doc["experiments"]:
        parts += [f"## {exp['name']}: {exp.get('title', '')}", ""]
        if exp.get("plot"):
            parts += [f"![{exp['name']}]({image_prefix}{exp['plot']})", ""]
        if exp.get("series"):
            parts += [markdown_table(exp), ""]
            parts += [f"- {line}" for line in max_throughput_lines(exp)] + [""]
        if exp.get("cases"):
            parts += ["| workload | rps | target | p50 ms | p99 ms | vs dedicated | n |",
                      "| --- | --- | --- | --- | --- | --- | --- |"]
            for case, c in exp["cases"].items():
                for name, v in c["targets"].items():
                    parts.append(f"| {case} | {c['rps']:g} | {name} | {v['p50_ms']:.3f} | {v['p99_ms']:.3f} | "
                                 f"{v['vs_dedicated']:.3f} | {v['n']} |")
            parts.append("")
        if exp.get("engines"):
            parts += ["| engine | cold p50 ms | hot p50 ms | ratio | registration p50 ms |", "| --- | --- | --- | --- | --- |"]
            for engine, v in exp["engines"].items():
                parts.append(f"| {engine} | {v['cold_p50_ms']:.2f} | {v['hot_p50_ms']:.2f} | {v['ratio_p50']:.2f} | "
                             f"{v['register_p50_ms']:.1f} |")
            parts.append("")
        if exp.get("notes"):
            parts += [f"_{exp['notes']}_", ""]
    return "\n".join(parts)
