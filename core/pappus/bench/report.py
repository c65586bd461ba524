"""Results of sweeps as tables (terminal, markdown), JSON and plots in the thesis's style.

Plots: latency (ms) against the swept variable, one colour per target, p99 solid with markers
and p50 dashed (the thesis plots P99 and mentions P50 where they differ). matplotlib with the
Agg backend only, so no display is ever needed.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from .._procfs import iter_process_stats

SCHEMA = "pappus/bench@1"


def machine_info() -> dict[str, Any]:
    """The machine a run was measured on."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 0
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / (1024 * 1024), 1)
    except OSError:
        pass
    from .._version import __version__

    return {"cpu": model, "cores": os.cpu_count(), "usable_cores": usable, "memory_gib": mem,
            "kernel": platform.release(), "os": platform.platform(), "python": platform.python_version(),
            "pappus": __version__, "commit": _git_commit(), "loadavg": _loadavg()}


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class CpuMeter:
    """CPU seconds used on the whole machine and by this process and its descendants (workers,
    device templates, sandbox children, servers started from here), so a measurement can say
    how much of the machine *other* processes took while it ran (the machine may be shared)."""

    def __init__(self) -> None:
        self.start = self.sample()

    @staticmethod
    def sample() -> tuple[float, float, float]:
        """(wall seconds, busy CPU seconds of the machine, CPU seconds of our process tree)."""
        wall = time.monotonic()
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
            busy = (user + nice + system + irq + softirq + steal) / _TICK
        except (OSError, ValueError):
            return wall, 0.0, 0.0
        return wall, busy, _tree_cpu(os.getpid())

    def foreign_share(self) -> float | None:
        """Share of the machine's CPU (0..1, all cores) that other processes used since start."""
        wall, busy, ours = self.sample()
        w0, b0, o0 = self.start
        cores = os.cpu_count() or 1
        if wall <= w0 or busy == 0.0:
            return None
        return max(0.0, ((busy - b0) - (ours - o0)) / ((wall - w0) * cores))


def _tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and every descendant (children reaped inside the tree included)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for pid, fields in iter_process_stats():
        parents[pid] = int(fields[1])
        times[pid] = sum(int(v) for v in fields[11:15]) / _TICK  # utime stime cutime cstime
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        total += times.get(pid, 0.0)
        stack.extend(children.get(pid, ()))
    return total


def _loadavg() -> list[float] | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def _git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return out.stdout.strip() + ("+changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def new_document(profile: str, command: str) -> dict[str, Any]:
    return {"schema": SCHEMA, "profile": profile, "command": command,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info(), "experiments": []}


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n")  # paths and the like as text
    os.replace(tmp, path)


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.{digits}f}"
    return str(v)


COLUMNS = ("target", "x", "rps", "achieved", "p50 ms", "p99 ms", "errors", "sent", "other cpu")


def _x_is_rps(experiment: dict[str, Any]) -> bool:
    return str(experiment.get("x_label", "")).startswith("offered load")


def columns(experiment: dict[str, Any]) -> list[str]:
    cols = [c for c in COLUMNS if not (c == "x" and _x_is_rps(experiment))]
    return [_short_x(experiment) if c == "x" else c for c in cols]


def _short_x(experiment: dict[str, Any]) -> str:
    return str(experiment.get("x_label", "x")).split(" (")[0]


def rows(experiment: dict[str, Any]) -> list[list[str]]:
    out = []
    x_col = not _x_is_rps(experiment)
    for series in experiment["series"]:
        for lv in series["levels"]:
            err = f"{lv['error_rate']:.1%}" if lv["errors"] else "0"
            row = [series["target"]["name"]] + ([_fmt(lv["x"])] if x_col else [])
            other = lv.get("foreign_cpu")
            row += [_fmt(lv["rps_offered"]), _fmt(lv["throughput"]), _fmt(lv["p50_ms"]), _fmt(lv["p99_ms"]), err,
                    str(lv["sent"]), "-" if other is None else f"{other:.0%}"]
            out.append(row)
    return out


def rich_table(experiment: dict[str, Any]) -> Any:
    from rich.markup import escape
    from rich.table import Table

    # Cells are data (target names, figures, notes): never Rich markup.
    table = Table(title=escape(experiment.get("title", experiment["name"])), title_justify="left")
    for col in columns(experiment):
        table.add_column(escape(col), justify="left" if col == "target" else "right", no_wrap=col == "target")
    for row in rows(experiment):
        table.add_row(*(escape(cell) for cell in row))
    return table


def max_throughput_lines(experiment: dict[str, Any]) -> list[str]:
    out = []
    for series in experiment["series"]:
        mt = series.get("max_throughput")
        sat = "" if series.get("saturated") else " (not saturated: a lower bound)"
        stop = f"; stopped: {series['stopped']}" if series.get("stopped") else ""
        out.append(f"{series['target']['name']}: max throughput {_fmt(mt)} rps{sat}{stop}")
    return out


def markdown_table(experiment: dict[str, Any]) -> str:
    head = columns(experiment)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows(experiment)]
    return "\n".join(lines)


_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def plot_experiment(experiment: dict[str, Any], path: Path, *, dpi: int = 90) -> Path:
    """Latency vs the swept variable, p99 solid, p50 dashed; returns ``path``."""
    return plot_experiments([experiment], path, dpi=dpi)


def plot_experiments(experiments: list[dict[str, Any]], path: Path, *, dpi: int = 90) -> Path:
    """One panel per experiment, side by side, in one PNG."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    n = len(experiments)
    fig, axes = plt.subplots(1, n, figsize=(6.4 * n, 4.0), squeeze=False)
    for ax, experiment in zip(axes[0], experiments, strict=True):
        _panel(ax, experiment)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _panel(ax: Any, experiment: dict[str, Any]) -> None:
    for k, series in enumerate(experiment["series"]):
        color = _COLORS[k % len(_COLORS)]
        pts = [(lv["x"], lv["p50_ms"], lv["p99_ms"]) for lv in series["levels"] if lv["p50_ms"] is not None]
        if not pts:
            continue
        xs = [p[0] for p in pts]
        name = series["target"]["name"]
        ax.plot(xs, [p[2] for p in pts], "-o", color=color, markersize=3.5, linewidth=1.6, label=f"{name} p99")
        ax.plot(xs, [p[1] for p in pts], "--", color=color, linewidth=1.1, alpha=0.8, label=f"{name} p50")
    ax.set_xlabel(experiment.get("x_label", "x"))
    ax.set_ylabel("latency (ms)")
    if experiment.get("x_scale") == "log":
        ax.set_xscale("log")
    if experiment.get("y_scale") == "log":
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    title = experiment.get("title", experiment["name"])
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(experiment["series"]) > 2 else 1)
