"""``pappus demo``: the thesis workloads on the CPU backend, end to end, checked against numpy.

1. build ``examples/matmul`` and ``examples/inference`` for the CPU backend (cached by content);
2. start a runtime on the CPU backend (a temporary registry, never the user's) and register
   the libraries and functions;
3. run each function once on every target and compare with numpy;
4. run a short open-loop sweep of each workload against ``cpu-sequential``,
   ``cpu-multiprocess`` and the ``dedicated`` baseline (the same kernels called directly, no
   isolation), every result checked against numpy;
5. print the latency table and write ``OUT/results.json`` and ``OUT/latency.png``.

A wrong result anywhere fails the demo (exit status 1) with the difference. Works on a fresh
machine: nothing but a C/C++ compiler and Linux (seccomp) is needed; the examples and the
CPU device template are built on first use.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class DemoFailed(Exception):
    """A result differed from numpy, or a workload could not run."""


@dataclass(frozen=True)
class DemoPlan:
    matmul_rps: tuple[float, ...]
    inference: str
    inference_rps: tuple[float, ...]
    duration: float


FULL = DemoPlan(matmul_rps=(50, 200, 400), inference="inference10", inference_rps=(5, 15), duration=2.0)
QUICK = DemoPlan(matmul_rps=(100,), inference="inference5", inference_rps=(10,), duration=1.0)


def run_demo(out: Path, *, quick: bool = False, console: Any = None, workers: int = 2,
             build_dir: Path | None = None) -> dict[str, Any]:
    """Run the demo; return the results document. Raises :class:`DemoFailed` on a wrong result."""
    from rich.console import Console
    from rich.markup import escape

    from .bench.report import new_document, plot_experiments, rich_table, write_json
    from .bench.sweep import Level, run_series
    from .bench.targets import DedicatedTarget, RuntimeTarget
    from .bench.workloads import load_workload
    from .errors import BackendUnavailable
    from .plugins import get_plugins
    from .runtime import Runtime

    console = console or Console()
    plan = QUICK if quick else FULL
    t_start = time.monotonic()
    plugins = get_plugins()
    backend = plugins.backend("cpu")
    availability = plugins.availability(backend)
    if not availability:
        raise BackendUnavailable("cpu", availability.reason)

    console.print("[bold]pappus demo[/bold]" + escape(f": the thesis workloads on the CPU backend ({availability.reason})"))
    t0 = time.monotonic()
    matmul = load_workload("matmul128", "cpu", build_dir)
    inference = load_workload(plan.inference, "cpu", build_dir)
    console.print(f"  built examples/matmul and examples/inference for the CPU backend "
                  f"({time.monotonic() - t0:.1f} s; {matmul.library_path.parent.parent})")  # type: ignore[union-attr]
    workloads = [matmul, inference]
    doc = new_document("demo-quick" if quick else "demo", "pappus demo" + (" --quick" if quick else ""))
    experiments: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pappus-demo-") as state:
        rt = Runtime(engine="cpu-sequential", state_dir=state, workers=workers, queue_size=4096)
        try:
            for wl in workloads:
                wl.register(rt)
            console.print(f"  registered libraries {', '.join(sorted({w.library for w in workloads}))} and "
                          f"functions {', '.join(w.function for w in workloads)} (temporary registry)")
            targets = [RuntimeTarget("cpu-sequential", runtime=rt), RuntimeTarget("cpu-multiprocess", runtime=rt,
                                                                                   workers=workers),
                       DedicatedTarget(workers=workers)]
            try:
                for target in targets:
                    target.setup(workloads if isinstance(target, DedicatedTarget) else [])
                    rt.engine(getattr(target, "engine", "cpu-sequential"))
                _check_once(targets, workloads, console)
                for wl, rates in ((matmul, plan.matmul_rps), (inference, plan.inference_rps)):
                    levels = [Level(x=r, workload=wl, rps=r) for r in rates]
                    series = []
                    for target in targets:
                        with console.status(f"{wl.name} on {target.name} ..."):
                            series.append(run_series(target, levels, duration=plan.duration, deadline=5.0,
                                                     stop_on_error=False, warmup=1, pause=0.1))
                    exp = {"name": wl.name, "title": f"{wl.name} on the CPU backend",
                           "x_label": "offered load (rps)", "x_scale": "linear", "y_scale": "linear",
                           "series": [s.to_dict() for s in series]}
                    experiments.append(exp)
                    console.print(rich_table(exp))
                    wrong = [w for s in series for w in s.wrong_results]
                    if wrong:
                        raise DemoFailed(f"{wl.name}: a result differs from numpy: {wrong[0]}")
                    failed = {k: v for s in series for lv in s.levels for k, v in lv["error_kinds"].items()
                              if k not in ("timeout", "deadline_exceeded")}
                    if failed:
                        raise DemoFailed(f"{wl.name}: invocations failed: {failed}")
            finally:
                for target in targets:
                    target.close()
        finally:
            rt.close(drain=False, timeout=10)
    doc["experiments"] = experiments
    doc["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    doc["elapsed_s"] = round(time.monotonic() - t_start, 1)
    write_json(doc, out / "results.json")
    try:
        plot = f"plot: {plot_experiments(experiments, out / 'latency.png')}"
    except ImportError:
        plot = "no plot (matplotlib is missing: pip install 'pappus[serve]')"
    timeouts = sum(lv["errors"] for e in experiments for s in e["series"] for lv in s["levels"])
    note = f" ({timeouts} requests past their deadline: is the machine busy?)" if timeouts else ""
    console.print("[green]every result matched numpy[/green]"
                  + escape(f"{note}; results: {out / 'results.json'}, {plot} ({time.monotonic() - t_start:.0f} s)"))
    return doc


def _check_once(targets: list[Any], workloads: list[Any], console: Any) -> None:
    """One invocation per workload and target, compared with numpy (the loud failure)."""
    for wl in workloads:
        inputs = wl.inputs(0)
        for target in targets:
            submit = target.submitter(wl, inputs, 60.0, n=1, warm=True)
            try:
                outputs = submit(0).result(timeout=120)
            except Exception as exc:
                raise DemoFailed(f"{wl.name} on {target.name} failed: {exc}") from exc
            try:
                wl.check(inputs, outputs, seed=0)
            except AssertionError as exc:
                raise DemoFailed(str(exc).replace(wl.name, f"{wl.name} on {target.name}", 1)) from None
        console.print(f"  {wl.name}: output matches numpy on {', '.join(t.name for t in targets)}")
