"""Engine-kit figures (issue 4), as ratios measured in one run.

* overhead: p50 of an invocation through an engine minus p50 of the same launch program run
  directly on the same DeviceAPI with preallocated buffers (no queue, no resolution, no pool,
  no zeroing, no copies) — what the engine kit itself costs;
* respawn: time from killing a multiprocess worker until a replacement has served, and the
  replacement's start step by step (fork, the device's open, heap limit, reserve, lockdown, ...),
  or with --spare-workers the time to hand it a spare started ahead;
* throughput: multiprocess (2 workers) vs sequential on a compute-bound function.

Also, to read the multiprocess figure by (no target): a bare process hop in the same rounds, a
message to a process that sleeps until it comes, stays busy as long as the direct run takes, and
answers, minus that busy time: the two wake-ups and messages every multiprocess invocation adds
over a sequential one, whatever the engine does, as this host prices them.

Also, for reference (no target): the same function called directly in this process with
preallocated buffers and no isolation at all (``pappus_cpu.direct``, the building block of
the ``dedicated`` baseline), so the whole path over a bare call is visible too. Engine and
direct measurements are interleaved round by round, so drift on a shared machine hits all.

    python benchmarks/bench_engines.py --backend cpu [--json out.json]
    python benchmarks/bench_engines.py --backend cuda --device-option scrub_on_chip=false
    python benchmarks/bench_engines.py --backend cuda --spare-workers 1
"""

from __future__ import annotations

import argparse
import json
import pickle
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import wait
from multiprocessing import connection
from pathlib import Path
from typing import Any

from json_out import json_file  # benchmarks/json_out.py

import pappus
from pappus.bench.report import write_json
from pappus.bench.workloads import Workload, load_workload
from pappus.engine import replies
from pappus.engine.multiprocess import kill_worker, poll_until


def p50(xs: list[float]) -> float:
    return statistics.median(xs)


def direct_executor(rt: pappus.Runtime) -> Any:
    """An executor of its own on the sequential engine's backend and device options (the
    engine's own is driven from its thread, which may still be zeroing after an invocation),
    which the caller closes."""
    from pappus.engine import Executor, ExecutorConfig

    engine = rt.engine(f"{rt.backend.name}-sequential")
    ex = Executor(engine.device_spec.create, ExecutorConfig(pool_bytes=64 << 20))
    ex.start()
    return ex


def direct_run_times(rt: pappus.Runtime, ex: Any, wl: Workload, inputs: dict[str, bytes], n: int) -> list[float]:
    """The launch program run straight on ``ex``'s DeviceAPI, on preallocated buffers. Where
    the device lets a run start while the last one is ending in another window of the pool
    (``alternate_windows``), the buffers are preallocated in two windows and runs take turns,
    as the engines' pools do: the device's best case."""
    spec = rt.function_spec(wl.function)
    plan = ex.plan(spec)
    handles, _ = ex.modules.kernel_handles(spec)
    res = plan.resolve(inputs)
    names = [b for b, _ in plan.config.blueprint.buffers]
    offsets = dict(zip(names, ex.pool.layout([(b, res.sizes[b]) for b in names]), strict=True))
    shifts = [0]
    step = getattr(ex.device, "alternate_windows", 0)
    if step:  # the same buffers again from the first page past the first window
        low = min(offsets.values())
        second = -(-ex.pool.top // step) * step
        ex.pool.allocate(second + res.top - ex.pool.top, "second window")
        shifts.append(second - low)
    programs = []
    for shift in shifts:
        placed = {name: off + shift for name, off in offsets.items()}
        for name in plan.inputs:  # inputs placed once: preallocated buffers
            ex.device.write(ex.pool.base + placed[name], memoryview(inputs[name]))
        programs.append(plan.program(res, ex.pool.base, handles, placed))
    times = []
    for i in range(n):
        program = programs[i % len(programs)]
        t0 = time.perf_counter()
        ex.device.run(program)
        times.append(time.perf_counter() - t0)
    ex.pool.release()
    return times


def engine_times(rt: pappus.Runtime, wl: Workload, inputs: dict[str, bytes], engine: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        rt.invoke(wl.function, inputs, engine=engine)
        times.append(time.perf_counter() - t0)
    return times


def respawn_time(rt: pappus.Runtime, wl: Workload, inputs: dict[str, bytes], reps: int = 10) -> list[float]:
    engine_name = f"{rt.backend.name}-multiprocess"
    engine = rt.engine(engine_name)
    out = []
    for _ in range(reps):
        rt.invoke(wl.function, inputs, engine=engine_name)
        ready_by = time.monotonic() + 60
        while len(engine.spares.pids()) < engine.spares.wanted:  # each kill finds its spares ready
            if time.monotonic() > ready_by:
                raise RuntimeError(f"{engine_name}: its spare workers did not start within 60 s")
            time.sleep(0.005)
        t0 = time.perf_counter()
        kill_worker(engine, 0, signal.SIGKILL)
        before = engine.metrics.respawns
        # the replacement is ready when the supervisor has counted the respawn; then it serves
        while engine.metrics.respawns == before:
            # the supervisor notices on its next use of the worker: give it one
            futs = [rt.invoke_async(wl.function, inputs, engine=engine_name) for _ in range(2)]
            wait(futs)
        rt.invoke(wl.function, inputs, engine=engine_name)
        out.append(time.perf_counter() - t0)
    return out


def step_medians(spawns: list[dict[str, float]]) -> dict[str, float]:
    """Each start step's median over ``spawns`` in ms, in the order the steps run, the total last."""
    names = sorted(dict.fromkeys(name for steps in spawns for name in steps), key=lambda name: name == "total")
    return {name: p50([steps[name] for steps in spawns if name in steps]) * 1e3 for name in names}


def throughput(rt: pappus.Runtime, wl: Workload, inputs: dict[str, bytes], engine: str, n: int) -> float:
    rt.invoke(wl.function, inputs, engine=engine)
    t0 = time.perf_counter()
    futs = [rt.invoke_async(wl.function, inputs, engine=engine) for _ in range(n)]
    wait(futs)
    for f in futs:
        f.result()
    return n / (time.perf_counter() - t0)


def dedicated_times(wl: Workload, inputs: dict[str, bytes], n: int) -> list[float]:
    """The function called directly in this process, buffers preallocated, no isolation."""
    from pappus_cpu.direct import DirectFunction

    fn = DirectFunction(wl.config, wl.libraries)
    wl.check(inputs, fn(inputs))
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn(inputs)
        times.append(time.perf_counter() - t0)
    return times


_HOP_ECHO = """
import sys, time
from multiprocessing import connection
from pappus.engine import replies
conn = connection.Connection(int(sys.argv[1]))
while True:
    try:
        msg = conn.recv()
    except (EOFError, OSError):
        break
    end = time.perf_counter() + msg[1]
    while time.perf_counter() < end:
        pass
    replies.send(conn, replies.Done(msg[0]))  # a worker's answer, as a worker sends it
"""


class ProcessHop:
    """A process at the other end of a control socket, as a multiprocess worker is: it sleeps
    until a message comes, stays busy for the seconds the message names (as a worker waiting
    on its device keeps a core busy), and answers."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.proc = subprocess.Popen([sys.executable, "-c", _HOP_ECHO, str(theirs.fileno())],
                                     pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        theirs.close()
        self.conn = connection.Connection(ours.detach())
        self.times(0.0, 1)  # the interpreter has started and answers

    def times(self, busy: float, n: int) -> list[float]:
        """Round trips minus ``busy``: what the hop itself costs (messages shaped like the
        engine's run message and answer, sent and awaited the engine's way)."""
        out = []
        for i in range(n):
            t0 = time.perf_counter()
            self.conn.send_bytes(pickle.dumps((f"hop-{i}", busy, "key", None, [("A", 64, 131072)],
                                               [("B", 131136, 131072)]), pickle.HIGHEST_PROTOCOL))
            poll_until(self.conn, time.monotonic() + 10.0)
            replies.receive(self.conn)
            out.append(time.perf_counter() - t0 - busy)
        return out

    def close(self) -> None:
        self.conn.close()
        self.proc.wait(10)


def measure(backend: str = "cpu", workload: str = "matmul128", heavy_name: str = "inference50", n: int = 300,
            rounds: int = 5, respawns: int = 10, n_heavy: int = 40,
            device_options: dict[str, Any] | None = None, spare_workers: int = 0) -> dict[str, Any]:
    """Every figure of this benchmark, as a dict (what ``--json`` writes)."""
    results: dict[str, Any] = {"backend": backend, "device_options": dict(device_options or {}),
                               "spare_workers": spare_workers}
    with tempfile.TemporaryDirectory() as tmp:
        wl = load_workload(workload, backend)
        heavy = load_workload(heavy_name, backend)
        rt = pappus.Runtime(engine=f"{backend}-sequential", state_dir=Path(tmp) / "state", workers=2,
                            queue_size=4096, device_options=device_options, spare_workers=spare_workers)
        with rt:
            for w in (wl, heavy):
                w.register(rt)
            inputs = wl.inputs(0)
            for engine in (f"{backend}-sequential", f"{backend}-multiprocess"):
                wl.check(inputs, rt.invoke(wl.function, inputs, engine=engine))
                engine_times(rt, wl, inputs, engine, 20)
            direct: list[float] = []
            seq: list[float] = []
            multi: list[float] = []
            dedicated: list[float] = []
            hops: list[float] = []
            per = max(1, n // rounds)
            hop = ProcessHop()  # ends by itself when its socket closes, should the next line fail
            ex = direct_executor(rt)
            try:
                for _ in range(rounds):  # interleaved: drift on a shared machine hits every variant
                    direct += direct_run_times(rt, ex, wl, inputs, per)
                    seq += engine_times(rt, wl, inputs, f"{backend}-sequential", per)
                    multi += engine_times(rt, wl, inputs, f"{backend}-multiprocess", per)
                    hops += hop.times(p50(direct), per)
                    if backend == "cpu":
                        dedicated += dedicated_times(wl, inputs, per)
            finally:
                hop.close()
                ex.close()
            results["overhead"] = {
                "workload": wl.name, "direct_p50_us": p50(direct) * 1e6,
                "sequential_p50_us": p50(seq) * 1e6, "multiprocess_p50_us": p50(multi) * 1e6,
                "sequential_overhead_us": (p50(seq) - p50(direct)) * 1e6,
                "multiprocess_overhead_us": (p50(multi) - p50(direct)) * 1e6, "n": len(seq),
                "process_hop_us": p50(hops) * 1e6,
            }
            if dedicated:
                results["overhead"]["dedicated_p50_us"] = p50(dedicated) * 1e6
            rs = respawn_time(rt, wl, inputs, respawns)
            engine = rt.engine(f"{backend}-multiprocess")
            spawn = list(engine.respawn_times)
            results["respawn"] = {"p50_ms": p50(rs) * 1e3, "max_ms": max(rs) * 1e3, "runs": len(rs),
                                  "spawn_p50_ms": p50(spawn) * 1e3 if spawn else None,
                                  "steps_p50_ms": step_medians(list(engine.respawn_steps)[-respawns:])}
            hin = heavy.inputs(0)
            heavy.check(hin, rt.invoke(heavy.function, hin, engine=f"{backend}-multiprocess"))
            t_seq = throughput(rt, heavy, hin, f"{backend}-sequential", n_heavy)
            t_multi = throughput(rt, heavy, hin, f"{backend}-multiprocess", n_heavy)
            results["throughput"] = {"workload": heavy.name, "sequential_rps": t_seq, "multiprocess_rps": t_multi,
                                     "ratio": t_multi / t_seq, "invocations": n_heavy}
    return results


def report(results: dict[str, Any]) -> list[str]:
    backend = results["backend"]
    o, r, t = results["overhead"], results["respawn"], results["throughput"]
    options = results.get("device_options") or {}
    lines = [f"[{backend}] device options: " + ", ".join(f"{k}={v!r}" for k, v in options.items())] if options else []
    lines += [f"[{backend}] {o['workload']}: direct {o['direct_p50_us']:.0f} us, sequential {o['sequential_p50_us']:.0f} us "
             f"(+{o['sequential_overhead_us']:.0f} us, target <= 100), multiprocess {o['multiprocess_p50_us']:.0f} us "
             f"(+{o['multiprocess_overhead_us']:.0f} us, target <= 300)"]
    if "process_hop_us" in o:
        lines.append(f"[{backend}] a bare process hop on this host (two wake-ups and messages, no engine): "
                     f"{o['process_hop_us']:.0f} us; multiprocess minus sequential overhead: "
                     f"{o['multiprocess_overhead_us'] - o['sequential_overhead_us']:.0f} us")
    if "dedicated_p50_us" in o:
        lines.append(f"[{backend}] {o['workload']}: called directly in process, no isolation: "
                     f"{o['dedicated_p50_us']:.0f} us")
    spares = results.get("spare_workers") or 0
    lines.append(f"[{backend}] respawn until serving again"
                 + (f" (with {spares} spare worker{'s' if spares > 1 else ''} ready)" if spares else "")
                 + f": p50 {r['p50_ms']:.1f} ms, max {r['max_ms']:.1f} ms (target <= 50)")
    steps = r.get("steps_p50_ms") or {}
    if steps:
        lines.append(f"[{backend}] a worker's start, p50 ms a step: "
                     + ", ".join(f"{name} {ms:.2f}" for name, ms in steps.items()))
    lines.append(f"[{backend}] {t['workload']}: sequential {t['sequential_rps']:.1f}/s, multiprocess "
                 f"{t['multiprocess_rps']:.1f}/s, ratio {t['ratio']:.2f} (target >= 1.7)")
    return lines


def device_option(text: str) -> tuple[str, Any]:
    """NAME=VALUE, the value read as JSON where it is JSON (false, 3, "x"), else as text."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name.strip(), json.loads(value)
    except json.JSONDecodeError:
        return name.strip(), value.strip()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--workload", default="matmul128")
    ap.add_argument("--heavy", default="inference50", help="compute-bound workload for the throughput ratio")
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("--json", metavar="FILE", type=json_file,
                    help="write the figures as JSON (its directories are created)")
    ap.add_argument("--device-option", metavar="NAME=VALUE", type=device_option, action="append", default=[],
                    help="a device option for both engines (repeatable), e.g. scrub_on_chip=false on cuda: "
                         "what the on-chip scrubs cost")
    ap.add_argument("--spare-workers", type=int, default=0, metavar="N",
                    help="workers each engine starts ahead and holds in reserve (EngineOptions.spare_workers); "
                         "every kill then finds them ready")
    args = ap.parse_args(argv)
    results = measure(args.backend, args.workload, args.heavy, args.n, device_options=dict(args.device_option),
                      spare_workers=args.spare_workers)
    for line in report(results):
        print(line)
    if args.json:
        write_json(results, args.json)


if __name__ == "__main__":
    main()
