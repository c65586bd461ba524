"""``pappus bench``: open-loop load against engines, the dedicated baseline or an HTTP endpoint."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from ..errors import FieldError, ValidationError
from .common import whole_number

EPILOG = """\
examples:
  pappus bench matmul128 --target cpu-sequential,cpu-multiprocess,dedicated --sweep 100:600:100
  pappus bench inference50 --target cpu-multiprocess --workers 4 --rps 5,10,15 --deadline 2
  pappus bench matmul128 --hot 0 --target cpu-sequential        # every request cold
  pappus bench matmul128 --hot 0.5                               # half the requests cold
  pappus bench matmul128 --http http://127.0.0.1:8080 --token $TOKEN --rps 100,200
  pappus bench --suite quick --out out/bench                     # the thesis evaluation

Load is open loop: Poisson arrivals at each rate; latency runs from the scheduled send time.
A sweep stops when a level's error rate passes --max-error (timeouts past --deadline count as
errors). Every result is checked against numpy. --hot 0 runs the engine with module_cache_size=0;
a fraction sends each cold request to a tenant registered just before the level (first
invocation after registration). Results: a table, OUT/bench.json and OUT/latency.png.
"""


def add_parser(sub: Any, formatter: Any) -> None:
    p = sub.add_parser("bench", formatter_class=formatter, help="open-loop load: latency and throughput",
                       description="Offer open-loop load (Poisson arrivals) to pappus engines in this process, "
                                   "the dedicated baseline (the same kernels called directly, no isolation) or an "
                                   "HTTP endpoint, and report p50/p99 latency and achieved throughput per level.",
                       epilog=EPILOG)
    p.add_argument("workload", nargs="?", default="matmul128",
                   help="matmul128, matmul128-tiled, inference<N>, batched<B> (default: %(default)s)")
    p.add_argument("--target", default="cpu-sequential", metavar="LIST",
                   help="comma-separated: an engine (<backend>-<kind>: cpu-sequential, cuda-multiprocess, ...; "
                        "the workload is built for that backend), dedicated (the CPU baseline) "
                        "(default: %(default)s); ignored with --http")
    rates = p.add_mutually_exclusive_group()
    rates.add_argument("--rps", metavar="LIST", help="offered loads, e.g. 20,50,100 (default: 50,100,200)")
    rates.add_argument("--sweep", metavar="START:STOP:STEP", help="offered loads from START to STOP (inclusive)")
    p.add_argument("--duration", type=float, default=5.0, metavar="SECONDS", help="per level (default: %(default)s)")
    p.add_argument("--deadline", type=float, default=1.0, metavar="SECONDS",
                   help="per request; later answers are errors (default: %(default)s)")
    p.add_argument("--hot", type=float, default=1.0, metavar="FRACTION",
                   help="share of hot requests, 0..1 (default: %(default)s)")
    p.add_argument("--workers", type=whole_number(1), default=2, metavar="N",
                   help="workers of cpu-multiprocess and of dedicated (default: %(default)s)")
    p.add_argument("--http", metavar="URL", help="offer the load to this pappus serve (or dedicated) endpoint")
    p.add_argument("--token", metavar="TOKEN", help="bearer token for --http")
    p.add_argument("--no-register", action="store_true",
                   help="with --http: do not PUT the library and function first (the dedicated server)")
    p.add_argument("--max-error", type=float, default=0.01, metavar="RATE",
                   help="stop a sweep past this error rate (default: %(default)s)")
    p.add_argument("--no-stop", action="store_true", help="run every level, whatever the error rate")
    p.add_argument("--retries", type=whole_number(0), default=0, metavar="N",
                   help="run a level again (up to N times) when other processes took over 10%% of the "
                        "machine's CPU during it; the least disturbed run is kept (default: %(default)s)")
    p.add_argument("--check-every", type=whole_number(1), default=1, metavar="N",
                   help="check every N-th result against numpy (default: every one)")
    p.add_argument("--seed", type=int, default=0, help="inputs and arrival times (default: %(default)s)")
    p.add_argument("--out", metavar="DIR", default="out/bench-run", help="JSON and plot here (default: %(default)s)")
    p.add_argument("--no-plot", action="store_true", help="write no plot")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--suite", choices=["quick", "full"],
                   help="run the thesis evaluation (every experiment of pappus.bench.suite) instead")
    p.add_argument("--only", metavar="LIST", help="with --suite: only these experiments (comma-separated)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=False, quiet=False)
    out = Path(args.out)
    command = "pappus " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "pappus bench"
    if args.suite:
        return _suite(args, out, console, command)
    from ..bench.report import (
        max_throughput_lines,
        new_document,
        plot_experiment,
        rich_table,
        write_json,
    )
    from ..bench.sweep import Level, rps_levels, run_series
    from ..bench.targets import make_target
    from ..bench.workloads import load_workload, workload

    if not 0.0 <= args.hot <= 1.0:
        raise ValidationError(FieldError("--hot", f"must be between 0 and 1, not {args.hot}"), what="arguments")
    if args.duration <= 0 or args.deadline <= 0:
        raise ValidationError(FieldError("--duration" if args.duration <= 0 else "--deadline",
                                         "must be a positive number of seconds"), what="arguments")
    workload(args.workload)  # an unknown name fails before anything is built
    rates = rps_levels(args.sweep or args.rps or "50,100,200")
    names = ["http"] if args.http else [t.strip() for t in args.target.split(",") if t.strip()]
    if not names:
        raise ValidationError(FieldError("--target", "names no target"), what="arguments")
    built: dict[str, Any] = {}  # backend -> the workload built for it (cuda-* targets run cubins)
    doc = new_document("cli", command)
    series = []
    for name in names:
        with make_target(name, workers=args.workers, hot=args.hot, http=args.http, token=args.token,
                         register=not args.no_register) as target:
            if target.backend not in built:
                built[target.backend] = load_workload(args.workload, target.backend)
            wl = built[target.backend]
            levels = [Level(x=r, workload=wl, rps=r) for r in rates]
            target.setup([wl])
            progress = None if args.quiet else _progress(console)
            if progress is not None:
                with progress:
                    s = run_series(target, levels, duration=args.duration, deadline=args.deadline,
                                   max_error=args.max_error, stop_on_error=not args.no_stop, seed=args.seed,
                                   check_every=args.check_every, retries=args.retries, progress=progress)
            else:
                s = run_series(target, levels, duration=args.duration, deadline=args.deadline,
                               max_error=args.max_error, stop_on_error=not args.no_stop, seed=args.seed,
                               check_every=args.check_every, retries=args.retries)
            series.append(s)
    exp: dict[str, Any] = {"name": f"{wl.name}", "title": f"{wl.name}: open-loop load ({args.hot:.0%} hot)",
                           "x_label": "offered load (rps)", "x_scale": "linear", "y_scale": "linear",
                           "fixed": f"deadline {args.deadline:g} s, {args.duration:g} s per level",
                           "series": [s.to_dict(args.max_error) for s in series]}
    if not args.no_plot and any(s.levels for s in series):
        try:
            exp["plot"] = plot_experiment(exp, out / "latency.png").name
        except ImportError:
            console.print("no plot: matplotlib is missing (pip install 'pappus[serve]')", markup=False)
            args.no_plot = True
    doc["experiments"].append(exp)
    write_json(doc, out / "bench.json")
    console.print(rich_table(exp))
    for line in max_throughput_lines(exp):
        console.print(f"  {line}", markup=False)
    console.print(f"results: {out / 'bench.json'}" + ("" if args.no_plot else f", plot: {out / 'latency.png'}"),
                  markup=False)
    wrong = [w for s in series for w in s.wrong_results]
    if wrong:
        console.print(f"[red]wrong results[/red]: {escape(str(wrong[0]))}")
        return 1
    return 0


def _progress(console: Any) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


def _suite(args: argparse.Namespace, out: Path, console: Any, command: str) -> int:
    from ..bench.suite import (
        EXPERIMENTS,
        figures_markdown,
        results_markdown,
        run_suite,
        target_figures,
    )

    only = [e.strip() for e in args.only.split(",")] if args.only else None
    for name in only or []:
        if name not in EXPERIMENTS:
            raise ValidationError(FieldError("--only", f"unknown experiment {name!r} (known: "
                                             f"{', '.join(EXPERIMENTS)})"), what="arguments")
    doc = run_suite(out, args.suite, only=only, console=None if args.quiet else console, command=command,
                    workers=args.workers)
    figures = target_figures(doc)
    doc["targets"] = figures
    (out / "results.md").write_text(results_markdown(doc, figures))
    console.print(figures_markdown(figures), markup=False)
    console.print(f"results: {out / 'results.json'}, {out / 'results.md'}", markup=False)
    return 0
