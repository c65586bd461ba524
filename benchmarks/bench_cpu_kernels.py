"""CPU backend benchmarks: what the compatibility runtime and the sandbox cost.

    python benchmarks/bench_cpu_kernels.py [--iterations 300] [--rounds 5] [--json]

1. Kernel code: the naive 128x128 int64 A x A^T kernel (examples/matmul) called through the
   compatibility runtime (its exported entry point, in this process) against the same loop
   compiled as plain C. Target: within 2x.
2. Sandbox: the same kernel as a cpu-sequential invocation (core's run_invocation on a
   CpuDevice: fresh child per invocation, seccomp, pool extents) against the direct call with
   preallocated buffers, back to back; also the fixed cost of an empty invocation, and the full
   Runtime(engine="cpu-sequential") path including the engine. Issue 5's target for an
   invocation (within 1.3x of the dedicated baseline at p50) is measured by ``pappus bench``'s
   p50-compare experiment (``benchmarks/run_all.py --only p50-compare``), where invocations
   arrive at the thesis's base-latency load as they would at a server; here nothing ever waits
   between calls, so the in-process call keeps a hot, never-idle core that a sandboxed child
   cannot have: a stress figure with no target, reported to show where the sandbox's time goes.

Measurements are interleaved round by round so drift on a shared machine hits every variant.
Only our own example kernel is loaded into this process (for the direct call); tenant code
never is.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "matmul"
N = 128

PLAIN_C = r"""
#include <stdint.h>
void matmul_plain(const int64_t* A, int64_t* B, int n) {
    for (int row = 0; row < n; row++)
        for (int col = 0; col < n; col++) {
            int64_t sum = 0;
            for (int k = 0; k < n; k++) sum += A[row * n + k] * A[col * n + k];
            B[row * n + col] = sum;
        }
}
"""


class Launch(ctypes.Structure):  # struct pappus_launch (include/pappus_cpu_abi.h)
    _fields_ = [("abi", ctypes.c_uint32), ("grid", ctypes.c_uint32 * 3), ("block", ctypes.c_uint32 * 3),
                ("stack_count", ctypes.c_uint32), ("shared_bytes", ctypes.c_uint64), ("dyn_shared", ctypes.c_void_p),
                ("stacks", ctypes.c_void_p), ("stack_stride", ctypes.c_uint64), ("heap_base", ctypes.c_void_p),
                ("heap_size", ctypes.c_uint64), ("heap_used", ctypes.c_void_p)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t) / 1000.0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=200, help="timed calls per variant per round")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--no-runtime", action="store_true", help="skip the full Runtime(engine=...) path")
    args = ap.parse_args()

    sys.path.insert(0, str(REPO / "plugins"))
    from pappus.config import parse_function
    from pappus.interfaces import LibraryImage
    from pappus.interpreter import run_invocation
    from pappus.plan import Plan
    from pappus.pool import BufferPool
    from pappus_cpu.build import build_library
    from pappus_cpu.device import CpuDevice
    from pappus_cpu.driver import CPU_LIMITS, CpuDriver

    work = Path(tempfile.mkdtemp(prefix="pappus-bench-cpu-"))
    os.environ.setdefault("PAPPUS_CPU_CACHE", str(work / "cache"))
    try:
        so = build_library(EXAMPLE / "matmul.hip", work, ["cpu"])[0]
        data = so.read_bytes()
        info = CpuDriver().inspect_library(data)
        cc = shutil.which("cc") or shutil.which("gcc")
        plain_src = work / "plain.c"
        plain_src.write_text(PLAIN_C)
        plain_so = work / "plain.so"
        subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(plain_so), str(plain_src)], check=True)

        rng = np.random.default_rng(0)
        a = rng.integers(-1000, 1000, size=(N, N), dtype=np.int64)
        want = a @ a.T
        b = np.zeros_like(a)

        # --- direct call of the compatibility-runtime kernel (trusted: our own example) ---------
        lib = ctypes.CDLL(str(so))
        entry = lib.__pappus_entry_matmul_at
        entry.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        stride, count = 68 * 1024, 1024
        stacks = mmap.mmap(-1, stride * count)
        stacks_addr = ctypes.addressof(ctypes.c_char.from_buffer(stacks))
        launch = Launch(1, (8, 8, 1), (16, 16, 1), count, 0, None, stacks_addr, stride, None, 0, None)
        argv = [ctypes.c_uint64(a.ctypes.data), ctypes.c_uint64(a.nbytes), ctypes.c_uint64(b.ctypes.data)]
        argp = (ctypes.c_void_p * 3)(*(ctypes.addressof(x) for x in argv))

        def direct() -> None:
            entry(ctypes.byref(launch), argp)

        direct()
        assert (b == want).all(), "direct call gave a wrong result"

        plain = ctypes.CDLL(str(plain_so)).matmul_plain
        plain.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        b2 = np.zeros_like(a)

        def plain_c() -> None:
            plain(a.ctypes.data, b2.ctypes.data, N)

        plain_c()
        assert (b2 == want).all(), "plain C gave a wrong result"

        # --- the sandboxed invocation ---------------------------------------------------------------
        device = CpuDevice(memory_bytes=64 << 20)
        dev_info = device.open()
        device.set_malloc_heap_limit(0)
        base = device.reserve(64 << 20)
        # as the engines' pools are: alternating windows, so a run need not wait for the last one's exit
        pool = BufferPool(device, base, 64 << 20, scrub_before_use=not device.bounds_writes,
                          alternate=device.alternate_windows)
        device.bind_pool(pool)
        module = device.load_module(LibraryImage(info_sha(data), data))
        cfg = parse_function(str(EXAMPLE / "matmul.json"), device=CPU_LIMITS)
        plan = Plan(cfg, {"matmul_at": info.kernels["matmul_at"].params}, device_limits=CPU_LIMITS)
        handles = {"matmul_at": device.get_kernel(module, "matmul_at")}
        inputs = {"A": a.tobytes()}
        empty_cfg = parse_function({
            "schema": "pappus/function@1", "library": "m", "kernels": ["matmul_at"],
            "blueprint": {"inputs": [], "buffers": {"A": 8, "B": 8}, "outputs": [], "control_flow": [
                {"ExecKernel": {"name": "matmul_at", "args": [{"Ptr": "A"}, {"Sizeof": "A"}, {"Ptr": "B"}],
                                "grid": [1], "block": [1]}}]}}, device=CPU_LIMITS)
        empty_plan = Plan(empty_cfg, {"matmul_at": info.kernels["matmul_at"].params}, device_limits=CPU_LIMITS)

        def sandboxed() -> None:
            run_invocation(device, pool, plan, inputs, handles)

        def empty() -> None:
            run_invocation(device, pool, empty_plan, {}, handles)

        out = run_invocation(device, pool, plan, inputs, handles)
        assert np.array_equal(np.frombuffer(out["B"], dtype=np.int64).reshape(N, N), want), "sandbox gave a wrong result"

        variants: dict[str, Callable[[], None]] = {
            "direct call (compat runtime, in process)": direct,
            "plain C loop (in process)": plain_c,
            "cpu-sequential invocation (run_invocation)": sandboxed,
            "empty invocation (fixed sandbox cost)": empty,
        }
        rt = None
        if not args.no_runtime:
            import pappus

            rt = pappus.Runtime(engine="cpu-sequential", state_dir=work / "state", pool_bytes=64 << 20)
            rt.register_library("matmul", str(so))
            rt.register_function("matmul", str(EXAMPLE / "matmul.json"))
            rt.invoke("matmul", inputs)
            variants["Runtime.invoke, engine cpu-sequential"] = lambda: rt.invoke("matmul", inputs)

        samples: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, fn in variants.items():
                timed(fn, 5)  # warm
                samples[name] += timed(fn, args.iterations)
        if rt is not None:
            rt.close()
        device.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    direct_p50 = statistics.median(samples["direct call (compat runtime, in process)"])
    rows = []
    for name, values in samples.items():
        p50, p99 = statistics.median(values), percentile(values, 0.99)
        rows.append({"variant": name, "p50_us": round(p50, 1), "p99_us": round(p99, 1),
                     "p50_vs_direct": round(p50 / direct_p50, 3), "n": len(values)})
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, {platform.platform()}",
        "python": platform.python_version(),
        "sandbox": {k: dev_info.details.get(k) for k in ("landlock", "seccomp", "guarded_fiber_stacks")},
        "results": rows,
        "targets": {
            "compat runtime vs plain C (p50)": round(statistics.median(samples["direct call (compat runtime, in process)"])
                                                     / statistics.median(samples["plain C loop (in process)"]), 3),
        },
        "figures": {  # no target: see the module's docstring
            "sandboxed invocation vs direct, back to back (p50)": round(
                statistics.median(samples["cpu-sequential invocation (run_invocation)"]) / direct_p50, 3),
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"machine: {result['machine']}")
    print(f"{'variant':48} {'p50 us':>10} {'p99 us':>10} {'p50/direct':>11}")
    for row in rows:
        print(f"{row['variant']:48} {row['p50_us']:>10.1f} {row['p99_us']:>10.1f} {row['p50_vs_direct']:>11.3f}")
    for k, v in result["targets"].items():
        print(f"{k}: {v}x (target <= 2x)")
    for k, v in result["figures"].items():
        print(f"{k}: {v}x (no target; the 1.3x target is p50-compare's, against the dedicated baseline)")
    return 0


def info_sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


if __name__ == "__main__":
    raise SystemExit(main())
