"""NVIDIA figures of issue 12 that no other benchmark measures: zeroing, on-chip scrubs, fault recovery.

    python benchmarks/bench_cuda.py [--pool-gib 8] [--faults 10] [--json out.json]

* zeroing: what the pool's release costs (``BufferPool.release`` -> ``CudaDevice.memset``, one
  ``cuMemsetD8`` over the used range, then ``cuCtxSynchronize``) against the driver's own peak on
  the same memory (``cuMemsetD8`` and ``cuMemsetD32`` straight through the bindings), per size;
* on-chip scrubs: what each scrub of ``pappus_cuda.onchip`` adds to a pool release (its launch,
  the residency check and the synchronisation): registers alone (after every invocation), and
  with shared memory and each local-memory frame size (after kernels that used them);
* fault recovery: a tenant's kernel writes far outside every allocation (``kernels/oob.hip``,
  ``CUDA_ERROR_ILLEGAL_ADDRESS``, sticky: the context is lost). Measured per engine: from the
  moment the faulting invocation has failed until the next invocation of another tenant has
  returned a correct result (both engines replace the worker process that held the lost
  context: ``Backend.faults_end_process``), and that next invocation's latency against a hot one.

Latency, throughput and respawn of the engines come from ``bench_engines.py --backend cuda``,
open-loop load from ``pappus bench matmul128 --target cuda-sequential,cuda-multiprocess``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_fault_isolation import FAR_OFFSET, two_tenants  # noqa: E402
from json_out import json_file  # noqa: E402

from pappus.bench.report import write_json  # noqa: E402

SIZES = [1 << 16, 1 << 20, 16 << 20, 256 << 20, 1 << 30, 4 << 30]


def _timed(fn: Any, reps: int) -> float:
    """Median seconds of ``fn()`` (which synchronizes) over ``reps`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def zeroing(pool_bytes: int, reps: int = 10) -> dict[str, Any]:
    from pappus.pool import BufferPool
    from pappus_cuda import runtime
    from pappus_cuda.device import CudaDevice

    dev = CudaDevice()
    info = dev.open()
    try:
        base = dev.reserve(pool_bytes)
        drv = dev.driver

        def call(api: str, *args: Any) -> None:
            runtime.checked(drv, api, *args)
        pool = BufferPool(dev, base, pool_bytes, scrub_before_use=True)
        rows = []
        for size in (s for s in SIZES if s <= pool_bytes):
            def release(size: int = size) -> None:
                pool.allocate(size)
                pool.release()
                dev.synchronize()

            def d8(size: int = size) -> None:
                call("cuMemsetD8", base, 0, size)
                call("cuCtxSynchronize")

            def d32(size: int = size) -> None:
                call("cuMemsetD32", base, 0, size // 4)
                call("cuCtxSynchronize")

            n = reps if size <= (256 << 20) else max(3, reps // 2)
            t_pool, t_d8, t_d32 = _timed(release, n), _timed(d8, n), _timed(d32, n)
            rows.append({"bytes": size, "pool_release_us": t_pool * 1e6, "cuMemsetD8_us": t_d8 * 1e6,
                         "cuMemsetD32_us": t_d32 * 1e6, "pool_GBps": size / t_pool / 1e9,
                         "cuMemsetD8_GBps": size / t_d8 / 1e9, "cuMemsetD32_GBps": size / t_d32 / 1e9})
        return {"device": info.name, "pool_bytes": pool_bytes, "rows": rows}
    finally:
        dev.close()


#: (label, shared, local bytes, registers): the scrubs a release can run
SCRUBS = [("registers", False, 0, True), ("shared", True, 0, False), ("shared+registers", True, 0, True),
          ("local 1k+registers", False, 1024, True), ("local 4k+registers", False, 4096, True),
          ("local 16k+registers", False, 16384, True), ("all (shared, local 16k, registers)", True, 16384, True)]


def scrubs(reps: int = 50) -> dict[str, Any]:
    """Median time of each on-chip scrub (synchronous, as a release runs it) on this GPU."""
    from pappus_cuda.device import CudaDevice
    from pappus_cuda.onchip import OnChipScrubber

    dev = CudaDevice(scrub_on_chip=False)
    info = dev.open()
    try:
        dev.reserve(64 << 20)
        scrubber = OnChipScrubber(dev)
        rows = []
        for label, shared, local, registers in SCRUBS:
            t = _timed(lambda s=shared, lo=local, r=registers: scrubber.run(s, lo, r), reps)
            rows.append({"scrub": label, "us": t * 1e6})
        return {"device": info.name, "sms": scrubber.sms, "grids": dict(scrubber.grids), "reps": reps, "rows": rows}
    finally:
        dev.close()


def recovery(engine: str, faults: int) -> dict[str, Any]:
    import pappus

    rt, inputs, want = two_tenants(engine, 2, FAR_OFFSET)
    try:
        def check(out: dict[str, bytes]) -> None:
            got = np.frombuffer(out["B"], np.int64).reshape(128, 128)
            assert np.array_equal(got, want), "matmul gave a wrong result"

        for _ in range(20):
            check(rt.invoke("matmul", inputs, tenant="b"))
        hot = []
        for _ in range(50):
            t0 = time.perf_counter()
            check(rt.invoke("matmul", inputs, tenant="b"))
            hot.append(time.perf_counter() - t0)
        fault_s, recover_s, statuses = [], [], {}
        for _ in range(faults):
            t0 = time.perf_counter()
            try:
                rt.invoke("oob", {}, tenant="m", deadline=30)
                statuses["no fault"] = statuses.get("no fault", 0) + 1
            except pappus.PappusError as exc:
                key = f"{type(exc).__name__}:{exc.fields.get('status') or getattr(exc, 'code', '?')}"
                statuses[key] = statuses.get(key, 0) + 1
            t1 = time.perf_counter()
            check(rt.invoke("matmul", inputs, tenant="b", deadline=30))
            t2 = time.perf_counter()
            fault_s.append(t1 - t0)
            recover_s.append(t2 - t1)
        metrics = {m["engine"]: m for m in rt.metrics()}.get(engine, {})
        return {"engine": engine, "faults": faults, "fault_outcomes": statuses,
                "hot_p50_ms": statistics.median(hot) * 1e3,
                "faulting_invocation_p50_ms": statistics.median(fault_s) * 1e3,
                "recovery_p50_ms": statistics.median(recover_s) * 1e3, "recovery_max_ms": max(recover_s) * 1e3,
                "respawns": metrics.get("respawns"), "metrics": metrics}
    finally:
        rt.close(drain=False, timeout=30)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool-gib", type=float, default=8.0, help="pool for the zeroing figures (default: %(default)s)")
    ap.add_argument("--faults", type=int, default=10, help="faults per engine (default: %(default)s)")
    ap.add_argument("--engine", action="append", help="engines for recovery (default: both cuda engines)")
    ap.add_argument("--skip-zeroing", action="store_true")
    ap.add_argument("--skip-scrubs", action="store_true")
    ap.add_argument("--json", metavar="FILE", type=json_file,
                    help="write the figures as JSON (its directories are created)")
    args = ap.parse_args(argv)
    results: dict[str, Any] = {}

    def save() -> None:  # after every part: a later part that fails loses nothing measured before it
        if args.json:
            write_json(results, args.json)  # anything JSON lacks is written as str

    if not args.skip_zeroing:
        z = results["zeroing"] = zeroing(int(args.pool_gib * (1 << 30)))
        print(f"zeroing on {z['device']}:")
        for r in z["rows"]:
            print(f"  {r['bytes'] / (1 << 20):10.2f} MiB: pool release {r['pool_release_us']:9.1f} us "
                  f"({r['pool_GBps']:7.1f} GB/s), cuMemsetD8 {r['cuMemsetD8_us']:9.1f} us ({r['cuMemsetD8_GBps']:7.1f} GB/s), "
                  f"cuMemsetD32 {r['cuMemsetD32_us']:9.1f} us ({r['cuMemsetD32_GBps']:7.1f} GB/s)")
        save()
    if not args.skip_scrubs:
        sc = results["scrubs"] = scrubs()
        print(f"on-chip scrubs on {sc['device']} ({sc['sms']} SMs), median of {sc['reps']}:")
        for r in sc["rows"]:
            print(f"  {r['scrub']:40s} {r['us']:8.1f} us")
        save()
    results["recovery"] = []
    for engine in args.engine or ["cuda-sequential", "cuda-multiprocess"]:
        r = recovery(engine, args.faults)
        results["recovery"].append(r)
        print(f"{engine}: hot matmul128 p50 {r['hot_p50_ms']:.3f} ms; faulting invocation p50 "
              f"{r['faulting_invocation_p50_ms']:.1f} ms; next invocation after a fault p50 {r['recovery_p50_ms']:.1f} ms "
              f"(max {r['recovery_max_ms']:.1f}); outcomes {r['fault_outcomes']}; respawns {r['respawns']}")
        save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
