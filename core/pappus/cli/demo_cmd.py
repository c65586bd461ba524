"""``pappus demo``: build the thesis workloads, run them on the CPU backend, check them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import whole_number

EPILOG = """\
examples:
  pappus demo                   # about half a minute on 2 cores
  pappus demo --quick           # one load level per workload
  pappus demo --out /tmp/demo

Every result is compared with numpy; a difference fails the demo (exit status 1).
"""


def add_parser(sub: Any, formatter: Any) -> None:
    p = sub.add_parser("demo", formatter_class=formatter, help="the thesis workloads on the CPU backend",
                       description="Build examples/matmul and examples/inference for the CPU backend, register "
                                   "them in a temporary registry, run each once per target and check it against "
                                   "numpy, then run a short open-loop sweep against cpu-sequential, "
                                   "cpu-multiprocess and the dedicated baseline (no isolation). Prints the "
                                   "latency table; writes OUT/results.json and OUT/latency.png.",
                       epilog=EPILOG)
    p.add_argument("--out", metavar="DIR", default="out/demo", help="results and plot here (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="one short load level per workload")
    p.add_argument("--workers", type=whole_number(1), default=2, metavar="N",
                   help="workers of cpu-multiprocess and dedicated (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from ..demo import DemoFailed, run_demo

    console = Console()
    try:
        run_demo(Path(args.out), quick=args.quick, console=console, workers=args.workers)
    except DemoFailed as exc:
        console.print(f"[bold red]pappus demo FAILED[/bold red]: {escape(str(exc))}")
        return 1
    return 0
