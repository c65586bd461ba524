"""Every benchmark of pappus in one run: the thesis evaluation and the engine-kit figures.

    python benchmarks/run_all.py --out out/bench            # the full profile (~30 min on 2 cores)
    python benchmarks/run_all.py --out out/bench --quick    # every experiment, short (~4 min)
    python benchmarks/run_all.py --out out/bench --only matmul-hot,http-matmul --no-others

Writes into OUT:
  results.json        every level of every sweep, the machine, the figures with their targets
  results.md          the same as markdown tables, with the plots and the targets table
  *.png               one plot per experiment (latency vs load / repetitions / batch size)
  engines.json        benchmarks/bench_engines.py (engine-kit overhead, respawn, throughput)
  cpu_kernels.json    benchmarks/bench_cpu_kernels.py (compat runtime vs C; sandbox vs direct)
  others/*.json       bench_core.py, bench_auth_quota.py, bench_fairness.py, bench_fault_isolation.py
                      (unless --no-others)

``--publish DIR`` copies the plots into DIR (docs/results for the documentation).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from pappus.bench.report import write_json  # noqa: E402
from pappus.bench.suite import (  # noqa: E402
    EXPERIMENTS,
    figures_markdown,
    results_markdown,
    run_suite,
    target_figures,
)

OTHERS = {
    "bench_core": ["--json", "{out}"],
    "bench_auth_quota": ["--n", "50000", "--json", "{out}"],
    "bench_fairness": ["--duration", "5", "--json", "{out}"],
    "bench_fairness_cpu": ["--engine", "cpu-multiprocess", "--workers", "2", "--duration", "10", "--json", "{out}"],
    "bench_fault_isolation": ["--json", "{out}"],
}
SCRIPTS = {"bench_fairness_cpu": "bench_fairness"}  # the same script, other arguments


def run_engines(out: Path, quick: bool, console: Any) -> dict[str, Any] | None:
    import bench_engines

    console.print("[bold]engine kit[/bold] (benchmarks/bench_engines.py)")
    try:
        results = bench_engines.measure("cpu", n=150 if quick else 600, respawns=5 if quick else 20,
                                        n_heavy=16 if quick else 40)
    except Exception as exc:  # one broken benchmark must not lose the rest of the run
        console.print(f"[red]bench_engines failed[/red]: {exc}")
        return {"error": str(exc)}
    for line in bench_engines.report(results):
        console.print(f"  {line}")
    write_json(results, out / "engines.json")
    return results


def run_script(name: str, args: list[str], out: Path, console: Any, timeout: float = 900) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / f"{SCRIPTS.get(name, name)}.py"), *args]
    console.print(f"[bold]{name}[/bold]: {' '.join(cmd[1:])}")
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    entry: dict[str, Any] = {"command": " ".join(cmd[1:]), "exit": proc.returncode,
                             "seconds": round(time.monotonic() - t0, 1), "stdout": proc.stdout[-4000:]}
    if proc.returncode != 0:
        entry["stderr"] = proc.stderr[-4000:]
        console.print(f"  [red]exit {proc.returncode}[/red]: {proc.stderr.strip().splitlines()[-1:]}")
    return entry


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out/bench", help="output folder (default: %(default)s)")
    ap.add_argument("--quick", action="store_true", help="the quick profile (every experiment, short levels)")
    ap.add_argument("--only", help=f"comma-separated experiments ({', '.join(EXPERIMENTS)})")
    ap.add_argument("--no-engines", action="store_true", help="skip bench_engines.py and bench_cpu_kernels.py")
    ap.add_argument("--no-others", action="store_true", help="skip bench_core, bench_auth_quota, bench_fairness")
    ap.add_argument("--workers", type=int, default=2, help="workers of cpu-multiprocess and dedicated")
    ap.add_argument("--publish", metavar="DIR", help="copy the plots here (e.g. docs/results)")
    ap.add_argument("--merge", action="store_true",
                    help="keep OUT/results.json and replace only what this run measures: the --only "
                         "experiments (none without --only), and the engine figures unless --no-engines")
    args = ap.parse_args()

    from rich.console import Console

    console = Console()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    profile = "quick" if args.quick else "full"
    command = "python benchmarks/run_all.py " + " ".join(sys.argv[1:])
    only = [e.strip() for e in args.only.split(",")] if args.only else None
    t0 = time.monotonic()
    engines = None
    old: dict[str, Any] | None = None
    if args.merge and (out / "results.json").exists():
        old = json.loads((out / "results.json").read_text())
        engines = old.get("engines")
        old.setdefault("merged", []).append({"command": command, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                             "only": only, "engines": not args.no_engines})
    if not args.no_engines:
        # First, on an idle machine: the per-invocation figures are the most sensitive to noise.
        from pappus.bench.report import CpuMeter, _loadavg

        load, meter = _loadavg(), CpuMeter()
        engines = run_engines(out, args.quick, console)
        if engines is not None:
            engines["loadavg"] = {"start": load, "end": _loadavg()}
            engines["foreign_cpu"] = meter.foreign_share()
            write_json(engines, out / "engines.json")
        kernels = run_script("bench_cpu_kernels", ["--json", "--rounds", "3" if args.quick else "5"], out, console)
        if kernels.get("exit") == 0:
            try:
                write_json(json.loads(kernels["stdout"]), out / "cpu_kernels.json")
            except ValueError:
                pass
    doc = run_suite(out, profile, only=only if only or old is None else [], console=console, command=command,
                    workers=args.workers, doc=old)
    if engines is not None:
        doc["engines"] = engines
        if (out / "cpu_kernels.json").exists():
            doc["cpu_kernels"] = json.loads((out / "cpu_kernels.json").read_text())
    if not args.no_others and not (old is not None and only):
        others = out / "others"
        others.mkdir(exist_ok=True)
        doc["others"] = {}
        for name, template in OTHERS.items():
            path = others / f"{name}.json"
            entry = run_script(name, [a.format(out=path) for a in template], out, console)
            if path.exists():
                try:
                    entry["results"] = json.loads(path.read_text())
                except ValueError:
                    pass
            doc["others"][name] = entry
    figures = target_figures(doc, engines if engines and "error" not in engines else None)
    doc["targets"] = figures
    doc["elapsed_s"] = round(time.monotonic() - t0, 1) + (old or {}).get("elapsed_s", 0)
    write_json(doc, out / "results.json")
    (out / "results.md").write_text(results_markdown(doc, figures))
    if args.publish:
        dest = Path(args.publish)
        dest.mkdir(parents=True, exist_ok=True)
        for png in out.glob("*.png"):
            shutil.copy2(png, dest / png.name)
        (out / "results_docs.md").write_text(results_markdown(doc, figures, image_prefix=f"{dest.name}/"))
        console.print(f"plots copied to {dest}; tables with links to them: {out / 'results_docs.md'}")
    console.print(figures_markdown(figures))
    console.print(f"done in {doc['elapsed_s']:.0f} s: {out / 'results.json'}, {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
