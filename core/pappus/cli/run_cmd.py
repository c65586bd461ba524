"""``pappus run``: register a function and its libraries, invoke it once, write the outputs."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import add_runtime_options, pairs, read_input, runtime_from


def add_parser(sub: Any, formatter: Any) -> None:
    p = sub.add_parser(
        "run", formatter_class=formatter, help="run a function once on given inputs",
        description="Register the libraries and the function (in a temporary registry unless\n"
                    "--state-dir is given), invoke it, and write each output to OUTPUT_DIR/NAME.bin.\n"
                    "Inputs are raw files, or .npy files whose array data is passed as raw bytes.",
        epilog="example:\n  pappus run examples/matmul/matmul.json --library matmul=build/matmul.so \\\n"
               "      --input A=a.npy -o out/")
    p.add_argument("config", help="function config (JSON)")
    p.add_argument("--library", action="append", metavar="NAME=PATH", help="a library; repeat for several")
    p.add_argument("--input", action="append", metavar="NAME=FILE", help="an input; repeat for several")
    p.add_argument("-o", "--output", metavar="DIR", help="write outputs here (default: only print sizes)")
    p.add_argument("--deadline", type=float, metavar="SECONDS", help="deadline of the invocation")
    p.add_argument("--repeat", type=int, default=1, metavar="N", help="invoke N times and print timings")
    add_runtime_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    libs = pairs(args.library, "--library")
    inputs = {name: read_input(path) for name, path in pairs(args.input, "--input").items()}
    with tempfile.TemporaryDirectory(prefix="pappus-run-") as tmp:
        if args.state_dir is None:
            args.state_dir = tmp
        with runtime_from(args) as rt:
            for name, path in libs.items():
                rt.register_library(name, Path(path), tenant=args.tenant)
            name = Path(args.config).stem
            rt.register_function(name, Path(args.config), tenant=args.tenant)
            times = []
            outputs: dict[str, bytes] = {}
            for _ in range(max(1, args.repeat)):
                t0 = time.perf_counter()
                outputs = rt.invoke(name, inputs, tenant=args.tenant, deadline=args.deadline)
                times.append(time.perf_counter() - t0)
    for out_name, data in outputs.items():
        line = f"{out_name}: {len(data)} bytes"
        if args.output:
            out = Path(args.output)
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{out_name}.bin").write_bytes(data)
            line += f" -> {out / (out_name + '.bin')}"
        print(line)
    if args.repeat > 1:
        times.sort()
        print(f"{len(times)} invocations: p50 {times[len(times) // 2] * 1e3:.3f} ms, "
              f"p99 {times[min(len(times) - 1, int(len(times) * 0.99))] * 1e3:.3f} ms")
    return 0
