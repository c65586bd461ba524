"""Core figures (issue 3): O(1) pool allocation, zeroing bandwidth, validation of big configs.

    python benchmarks/bench_core.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
from json_out import json_file  # benchmarks/json_out.py

from pappus.bench.report import write_json
from pappus.config import parse_function
from pappus.devices.host import HostDevice
from pappus.pool import BufferPool


def alloc_cost(n_buffers: int = 100_000, sample: int = 2000) -> dict[str, float]:
    """Time per allocation around the 10th and the 100,000th buffer."""
    dev = HostDevice(memory_bytes=n_buffers * 256 + 4096)
    dev.open()
    pool = BufferPool(dev, dev.reserve(n_buffers * 256 + 4096), n_buffers * 256 + 4096)
    early, late = [], []
    for _round in range(sample):
        pool.top = 0
        pool.high_water = 0
        for _ in range(9):
            pool.allocate(16)
        t0 = time.perf_counter_ns()
        pool.allocate(16)  # the 10th
        early.append(time.perf_counter_ns() - t0)
    pool.top = 0
    for _ in range(n_buffers - sample):
        pool.allocate(16)
    for _ in range(sample):
        t0 = time.perf_counter_ns()
        pool.allocate(16)  # the ~100,000th
        late.append(time.perf_counter_ns() - t0)
    e, lt = statistics.median(early), statistics.median(late)
    return {"ns_10th": e, "ns_100000th": lt, "ratio": lt / e}


def zeroing_bandwidth(size: int = 64 << 20, reps: int = 20) -> dict[str, float]:
    dev = HostDevice(memory_bytes=size)
    dev.open()
    pool = BufferPool(dev, dev.reserve(size), size)
    ref = np.empty(size, dtype=np.uint8)
    fill_t, zero_t = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        ref.fill(0)
        fill_t.append(time.perf_counter() - t0)
        pool.allocate(size)
        t0 = time.perf_counter()
        pool.release()
        zero_t.append(time.perf_counter() - t0)
    fill_bw = size / statistics.median(fill_t) / 1e9
    zero_bw = size / statistics.median(zero_t) / 1e9
    return {"numpy_fill_GBps": fill_bw, "pool_zero_GBps": zero_bw, "ratio": zero_bw / fill_bw}


def validation_time(kernels: int = 1000, reps: int = 10) -> dict[str, float]:
    names = [f"k{i}" for i in range(kernels)]
    doc = {
        "schema": "pappus/function@1", "library": "lib", "kernels": names,
        "blueprint": {
            "inputs": ["A"], "buffers": {f"b{i}": {"Sizeof": "A"} for i in range(64)}, "outputs": ["b0"],
            "control_flow": [{"ExecKernel": {"name": n, "args": [{"Ptr": "A"}, {"Sizeof": "A"}, {"Ptr": f"b{i % 64}"},
                                                                 {"Constant": {"type": "f32", "value": 1.5}}],
                                             "grid": [64, {"CeilDiv": [{"Sizeof": "A"}, 256]}, 1], "block": [256]}}
                             for i, n in enumerate(names)],
        },
    }
    text = json.dumps(doc)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        parse_function(text)
        times.append(time.perf_counter() - t0)
    return {"kernels": kernels, "ms_median": statistics.median(times) * 1e3, "bytes": len(text)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", metavar="FILE", type=json_file,
                    help="write results here (its directories are created)")
    args = ap.parse_args(argv)
    results = {"alloc": alloc_cost(), "zeroing": zeroing_bandwidth(), "validation": validation_time()}
    print(f"pool allocation: 10th {results['alloc']['ns_10th']:.0f} ns, 100,000th "
          f"{results['alloc']['ns_100000th']:.0f} ns, ratio {results['alloc']['ratio']:.2f} (target <= 1.5)")
    z = results["zeroing"]
    print(f"zeroing: pool {z['pool_zero_GBps']:.1f} GB/s vs numpy fill {z['numpy_fill_GBps']:.1f} GB/s, "
          f"ratio {z['ratio']:.2f} (target >= 0.8)")
    v = results["validation"]
    print(f"validation of a {v['kernels']}-kernel blueprint: {v['ms_median']:.1f} ms (target < 50 ms)")
    if args.json:
        write_json(results, args.json)


if __name__ == "__main__":
    main()
