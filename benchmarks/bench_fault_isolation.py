"""Fault containment costs the other tenants nothing (issue 5): B's latency while M faults.

    python benchmarks/bench_fault_isolation.py [--engine cpu-multiprocess] [--rate 50]
        [--faults 10] [--fault-quota RATE[:BURST]] [--rounds 3] [--duration 6] [--json out.json]

Tenant B runs matmul 128 (``examples/matmul``) open loop at ``--rate`` invocations/s (Poisson
arrivals; latency counted from each scheduled arrival). Tenant M runs ``kernels/oob.hip``, a
kernel that writes 1 GiB past its buffer, ``--faults`` times a second; each of those ends in a
``KernelFault``. Phases alternate, B alone and B with M faulting, ``--rounds`` times, so drift
on a shared machine hits both. Target: B's p99 with M faulting <= 1.5x B's p99 alone, and no
error for B.

``--fault-quota`` gives M a ``fault_rate`` quota (docs/tenants.md): past it M's invocations are
refused (``quota_exceeded``) before they reach a device. Where a fault costs the device itself a
recovery (a GPU: hundreds of milliseconds), containment alone does not keep B's p99; this shows
what the quota buys.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_fairness import OpenLoop, pct  # noqa: E402
from json_out import json_file  # noqa: E402

from pappus.bench.report import write_json  # noqa: E402

REPO = HERE.parent


class Faulter(threading.Thread):
    """Invokes M's out-of-bounds function ``rate`` times a second; counts how each ended."""

    def __init__(self, rt: Any, rate: float, duration: float) -> None:
        super().__init__(daemon=True, name="faulter")
        self.rt, self.rate, self.duration = rt, rate, duration
        self.outcomes: dict[str, int] = {}

    def run(self) -> None:
        start = time.perf_counter()
        n = 0
        while True:
            at = start + n / self.rate
            if at - start > self.duration:
                return
            delay = at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            n += 1
            try:
                self.rt.invoke("oob", {}, tenant="m", deadline=10)
                key = "ok"
            except Exception as exc:  # the point: each one faults
                key = getattr(exc, "code", type(exc).__name__)
            self.outcomes[key] = self.outcomes.get(key, 0) + 1


def build(backend: str = "cpu") -> tuple[Path, Path]:
    """matmul and the out-of-bounds kernel, compiled for ``backend`` (its native target)."""
    from pappus.plugins import get_plugins

    be = get_plugins().backend(backend)
    target = be.default_target()
    out = Path(tempfile.mkdtemp(prefix="pappus-bench-faults-"))

    def library(source: Path, dest: Path) -> Path:
        return next(p for p in map(Path, be.build(source, dest, [target])) if p.suffix in be.library_suffixes)

    return library(REPO / "examples" / "matmul" / "matmul.hip", out / "m"), library(HERE / "kernels" / "oob.hip", out / "o")


#: how far past its buffer M writes: 1 GiB lands in the CPU device's no-access guard; a GPU pool
#: spans most of the card, so there M writes far beyond any allocation (an illegal address)
DEFAULT_OFFSET = {"cpu": 1 << 30}
FAR_OFFSET = 1 << 47


def oob_config(offset: int) -> dict[str, Any]:
    return {"schema": "pappus/function@1", "library": "lib", "kernels": ["write_past"],
            "blueprint": {"inputs": [], "buffers": {"X": 8}, "outputs": ["X"], "control_flow": [
                {"ExecKernel": {"name": "write_past", "args": [{"Ptr": "X"}, {"Constant": {"type": "u64",
                                                                                           "value": offset}}],
                                "grid": [1], "block": [1]}}]}}


def two_tenants(engine: str, workers: int, offset: int) -> tuple[Any, dict[str, bytes], Any]:
    """A runtime on ``engine`` with tenant B's matmul 128 and tenant M's out-of-bounds writer
    (``offset`` bytes past its buffer); B's inputs and the result they must give."""
    import pappus

    matmul, oob = build(engine.rsplit("-", 1)[0])
    state = Path(tempfile.mkdtemp(prefix="pappus-bench-faults-state-"))
    rt = pappus.Runtime(engine=engine, state_dir=state, workers=workers)
    rt.register_library("matmul", matmul, tenant="b")
    rt.register_function("matmul", REPO / "examples" / "matmul" / "matmul.json", tenant="b")
    rt.register_library("lib", oob, tenant="m")
    rt.register_function("oob", oob_config(offset), tenant="m")
    a = np.random.default_rng(0).integers(-1000, 1000, size=(128, 128), dtype=np.int64)
    return rt, {"A": a.tobytes()}, a @ a.T


def parse_quota(text: str) -> tuple[float, int | None]:
    """``RATE`` or ``RATE:BURST`` (faults a second, and how many at once)."""
    rate, _, burst = text.partition(":")
    try:
        value = (float(rate), int(burst) if burst else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--fault-quota wants RATE or RATE:BURST, got {text!r}") from None
    if value[0] < 0 or (value[1] is not None and value[1] < 1):
        raise argparse.ArgumentTypeError(f"--fault-quota wants a rate >= 0 and a burst >= 1, got {text!r}")
    return value


def measure(engine: str, rate: float, faults: float, rounds: int, duration: float, workers: int = 2,
            offset: int | None = None, fault_quota: tuple[float, int | None] | None = None) -> dict[str, Any]:
    import pappus

    backend = engine.rsplit("-", 1)[0]
    offset = offset if offset is not None else DEFAULT_OFFSET.get(backend, FAR_OFFSET)
    rt, inputs, want = two_tenants(engine, workers, offset)
    quota = None if fault_quota is None else {"fault_rate": fault_quota[0], "fault_burst": fault_quota[1]}
    if quota is not None:
        rt.tenants.add("m", quotas=quota)
    got = np.frombuffer(rt.invoke("matmul", inputs, tenant="b")["B"], np.int64).reshape(128, 128)
    assert np.array_equal(got, want), "matmul gave a wrong result"
    for _ in range(2 * workers):
        rt.invoke("matmul", inputs, tenant="b")
        try:
            rt.invoke("oob", {}, tenant="m")
        except pappus.PappusError:
            pass
    alone: list[float] = []
    faulting: list[float] = []
    errors: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    for r in range(rounds):
        for with_faults in (False, True):
            load = OpenLoop(rt, "b", rate, duration, seed=2 * r + with_faults, function="matmul", inputs=inputs)
            faulter = Faulter(rt, faults, duration) if with_faults else None
            if faulter:
                faulter.start()
            load.start()
            load.join()
            summary = load.summary()
            if faulter:
                faulter.join()
                for k, v in faulter.outcomes.items():
                    outcomes[k] = outcomes.get(k, 0) + v
            (faulting if with_faults else alone).extend(load.latencies)
            for k, v in summary["errors"].items():
                errors[k] = errors.get(k, 0) + v
    # B's results are still right after all of it
    got = np.frombuffer(rt.invoke("matmul", inputs, tenant="b")["B"], np.int64).reshape(128, 128)
    assert np.array_equal(got, want), "matmul gave a wrong result after the faults"
    metrics = {m["engine"]: m for m in rt.metrics()}
    rt.close(drain=False, timeout=10)
    return {
        "engine": engine, "workers": workers, "offset": offset, "rate": rate, "faults_per_s": faults, "rounds": rounds,
        "duration_s": duration, "fault_quota": quota,
        "alone": {"n": len(alone), "p50_ms": pct(alone, 0.5) * 1e3, "p99_ms": pct(alone, 0.99) * 1e3},
        "faulting": {"n": len(faulting), "p50_ms": pct(faulting, 0.5) * 1e3, "p99_ms": pct(faulting, 0.99) * 1e3},
        "p99_ratio": pct(faulting, 0.99) / pct(alone, 0.99),
        "b_errors": errors, "m_outcomes": outcomes,
        "respawns": metrics.get(engine, {}).get("respawns"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", action="append", help="engine (repeatable; default: cpu-multiprocess and "
                                                      "cpu-sequential)")
    ap.add_argument("--rate", type=float, default=50.0, help="B's invocations/s (default: %(default)s)")
    ap.add_argument("--faults", type=float, default=10.0, help="M's faults/s (default: %(default)s)")
    ap.add_argument("--fault-quota", type=parse_quota, metavar="RATE[:BURST]",
                    help="give M a fault_rate quota (faults/s) and optionally a fault_burst; past it M's "
                         "invocations are refused before they reach a device")
    ap.add_argument("--rounds", type=int, default=3, help="alone/faulting phase pairs (default: %(default)s)")
    ap.add_argument("--duration", type=float, default=6.0, help="seconds per phase (default: %(default)s)")
    ap.add_argument("--offset", type=int, help="bytes past its buffer M writes (default: 1 GiB on cpu, "
                                                "2**47 elsewhere)")
    ap.add_argument("--json", metavar="FILE", type=json_file,
                    help="write the figures as JSON (its directories are created)")
    args = ap.parse_args(argv)
    results = []
    for engine in args.engine or ["cpu-multiprocess", "cpu-sequential"]:
        res = measure(engine, args.rate, args.faults, args.rounds, args.duration, offset=args.offset,
                      fault_quota=args.fault_quota)
        results.append(res)
        print(f"{engine}: B alone p50 {res['alone']['p50_ms']:.2f} ms p99 {res['alone']['p99_ms']:.2f} ms "
              f"(n={res['alone']['n']}); with M faulting {args.faults:g}/s p50 {res['faulting']['p50_ms']:.2f} ms "
              f"p99 {res['faulting']['p99_ms']:.2f} ms (n={res['faulting']['n']}); p99 ratio "
              f"{res['p99_ratio']:.2f} (target <= 1.5); B errors {res['b_errors'] or 'none'}; "
              f"M{' under its fault quota' if args.fault_quota else ''}: {res['m_outcomes']}")
    if args.json:
        write_json({"results": results}, args.json)
    return 0 if all(r["p99_ratio"] <= 1.5 and not r["b_errors"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
