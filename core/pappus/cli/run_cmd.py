"""``pappus run``: register a function and its libraries, invoke it once, write the outputs."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import FieldError, LibraryError, ValidationError
from .common import (
    add_runtime_options,
    gave,
    output_dir,
    read_input,
    read_library_file,
    read_named_files,
    runtime_from,
    whole_number,
)


def add_parser(sub: Any, formatter: Any) -> None:
    p = sub.add_parser(
        "run", formatter_class=formatter, help="run a function once on given inputs",
        description="Register the libraries and the function (in a temporary registry unless\n"
                    "--state-dir is given; $PAPPUS_HOME is not used), invoke it, and write each output\n"
                    "to OUTPUT_DIR/NAME.bin. Inputs are raw files, or .npy files whose array data is\n"
                    "passed as raw bytes.",
        epilog="example:\n  pappus run examples/matmul/matmul.json --library matmul=build/matmul.so \\\n"
               "      --input A=a.npy -o out/")
    p.add_argument("config", help="function config (JSON)")
    p.add_argument("--library", action="append", metavar="NAME=PATH", help="a library; repeat for several")
    p.add_argument("--input", action="append", metavar="NAME=FILE", help="an input; repeat for several")
    p.add_argument("-o", "--output", metavar="DIR", help="write outputs here (default: only print sizes)")
    p.add_argument("--deadline", type=float, metavar="SECONDS", help="deadline of the invocation")
    p.add_argument("--repeat", type=whole_number(1), default=1, metavar="N", help="invoke N times and print timings")
    add_runtime_options(p, state_dir_help="registry directory to register in and keep (default: a temporary "
                                          "registry, removed afterwards)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    libs = read_named_files(args.library, "--library", read_library_file)
    inputs = read_named_files(args.input, "--input", read_input)
    out = output_dir(args.output) if args.output else None
    with tempfile.TemporaryDirectory(prefix="pappus-run-") as tmp:
        if args.state_dir is None:
            args.state_dir = tmp
        with runtime_from(args) as rt:
            for name, data in libs.items():
                try:
                    rt.register_library(name, data, tenant=args.tenant)
                except LibraryError as exc:
                    raise ValidationError([FieldError(f"--library {name}", e.message) for e in exc.errors],
                                          what="arguments") from None
            name = Path(args.config).stem
            try:
                rt.register_function(name, Path(args.config), tenant=args.tenant)
            except ValidationError as exc:
                raise _name_given_libraries(exc, list(libs)) from None
            times = []
            outputs: dict[str, bytes] = {}
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                outputs = rt.invoke(name, inputs, tenant=args.tenant, deadline=args.deadline)
                times.append(time.perf_counter() - t0)
    for out_name, data in outputs.items():
        line = f"{out_name}: {len(data)} bytes"
        if out is not None:
            (out / f"{out_name}.bin").write_bytes(data)
            line += f" -> {out / (out_name + '.bin')}"
        print(line)
    if args.repeat > 1:
        times.sort()
        print(f"{len(times)} invocations: p50 {times[len(times) // 2] * 1e3:.3f} ms, "
              f"p99 {times[min(len(times) - 1, int(len(times) * 0.99))] * 1e3:.3f} ms")
    return 0


def _name_given_libraries(exc: ValidationError, given: list[str]) -> ValidationError:
    """A library the config names but no --library gave: say which names --library did give."""
    def unregistered(e: FieldError) -> bool:
        return e.message.startswith("library ") and e.message.endswith(" is not registered")

    if not any(unregistered(e) for e in exc.errors):
        return exc
    errors = [FieldError(e.path, f"{e.message} (the config names it; {gave('--library', given)})")
              if unregistered(e) else e for e in exc.errors]
    return ValidationError(errors, what=exc.fields.get("what", "config"))
