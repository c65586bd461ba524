"""Sweeps: one target through a list of levels (load, repetitions or batch size), open loop.

A series runs its levels in order, each a fresh open-loop run of ``duration`` seconds at the
level's offered load, every result checked against numpy. As in the thesis, a load sweep stops
once a level's error rate passes ``max_error`` (1 %; timeouts count as errors). The *maximum
throughput* of a series is the highest achieved throughput of a level whose error rate stayed
within ``max_error``. Achieved throughput is goodput: correct answers within the deadline per
second of the time the level really took (sending and draining), so a level past saturation
shows the capacity, not the offered load. A series *saturated* when some level did not keep up
(errors past ``max_error``, or goodput below 90 % of what it offered: the backlog drained after
the level, latency spiking); a series that never saturated reports a lower bound.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .loadgen import LoadResult, poisson_schedule, run_open_loop
from .report import CpuMeter
from .targets import HttpTarget, Target
from .workloads import Workload

MAX_ERROR = 0.01
#: A level during which other processes took more than this share of the machine's CPU (a
#: quarter: half a core of 2) was disturbed (the machine may be shared): with ``retries`` it is
#: run again, after waiting (at most 15 s) for a quiet second, and the least disturbed run is
#: kept. Every level records the share it saw (``foreign_cpu``).
FOREIGN_LIMIT = 0.25


#: A level "kept up" when its goodput reached this share of the rate it really offered.
KEPT_UP = 0.9


def kept_up(level: dict[str, Any], max_error: float = MAX_ERROR) -> bool:
    """Whether a level was served: error rate within ``max_error`` (timeouts included) and
    goodput at least 90 % of the load really offered (sent / duration), i.e. latency did not
    run away into a backlog that only drained after the level."""
    if not level["completed"] or level["error_rate"] > max_error:
        return False
    offered = level["sent"] / level["duration_s"] if level["duration_s"] else 0.0
    return level["throughput"] >= KEPT_UP * offered


@dataclass
class Level:
    """One point of a sweep: ``x`` is what the plot's x axis shows."""

    x: float
    workload: Workload
    rps: float


@dataclass
class Series:
    target: dict[str, Any]
    levels: list[dict[str, Any]] = field(default_factory=list)
    stopped: str | None = None
    wrong_results: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.target["name"])

    def max_throughput(self, max_error: float = MAX_ERROR) -> float | None:
        ok = [lv["throughput"] for lv in self.levels if lv["completed"] and lv["error_rate"] <= max_error]
        return max(ok) if ok else None

    def saturated(self, max_error: float = MAX_ERROR) -> bool:
        return any(not kept_up(lv, max_error) for lv in self.levels)

    def to_dict(self, max_error: float = MAX_ERROR) -> dict[str, Any]:
        return {"target": self.target, "levels": self.levels, "stopped": self.stopped,
                "max_throughput": self.max_throughput(max_error), "saturated": self.saturated(max_error),
                "wrong_results": self.wrong_results}


def checker(target: Target, wl: Workload, inputs: dict[str, bytes], seed: int,
            every: int = 1) -> Callable[[int, Any], None]:
    """``check(i, result)`` for a level: compare request ``i``'s outputs with numpy (every
    ``every``-th request; the first always). HTTP bodies are decoded only when checked."""
    wl.expected(inputs, seed)  # computed once, before the level

    def check(i: int, result: Any) -> None:
        if i % every:
            return
        outputs = HttpTarget.decode(bytes(result)) if isinstance(result, (bytes, bytearray)) else result
        wl.check(inputs, outputs, seed)

    return check


def warm_up(target: Target, wl: Workload, inputs: dict[str, bytes], seed: int, n: int = 3,
            deadline: float = 60.0) -> None:
    """A few invocations one at a time (engines started, code paths warm), each checked."""
    check = checker(target, wl, inputs, seed)
    submit = target.submitter(wl, inputs, deadline, n=n, seed=seed, warm=True)
    for i in range(n):
        check(0, submit(i).result(timeout=deadline + 30))


def run_series(target: Target, levels: Sequence[Level], *, duration: float, deadline: float,
               max_error: float = MAX_ERROR, stop_on_error: bool = True, seed: int = 0, check_every: int = 1,
               warmup: int = 3, progress: Any = None, pause: float = 0.3, retries: int = 0,
               foreign_limit: float = FOREIGN_LIMIT,
               on_level: Callable[[Series, dict[str, Any]], None] | None = None) -> Series:
    """Run ``levels`` in order against ``target``; return the series with one summary per level."""
    series = Series(target=target.info())
    warmed: set[str] = set()
    task = None
    if progress is not None:
        task = progress.add_task(f"{target.name}", total=len(levels))
    for k, level in enumerate(levels):
        wl = level.workload
        inputs = wl.inputs(seed)
        if wl.name not in warmed and warmup:
            warm_up(target, wl, inputs, seed, warmup)
            warmed.add(wl.name)
        if progress is not None and task is not None:
            progress.update(task, description=f"{target.name}: {wl.name} @ {level.rps:g} rps")
        schedule = poisson_schedule(level.rps, duration, random.Random(seed + k))
        best: tuple[float, LoadResult] | None = None
        shares: list[float | None] = []
        for attempt in range(retries + 1):
            if attempt:
                _wait_quiet(foreign_limit)
            meter = CpuMeter()
            submit = target.submitter(wl, inputs, deadline, n=len(schedule), seed=seed + k)
            result = run_open_loop(submit, level.rps, duration, label=f"{target.name} {wl.name}", seed=seed + k,
                                   deadline_s=deadline, drain_s=deadline + 10.0, schedule=schedule,
                                   check=checker(target, wl, inputs, seed, check_every))
            share = meter.foreign_share()
            shares.append(None if share is None else round(share, 3))
            if best is None or (share or 0.0) < best[0]:
                best = (share or 0.0, result)
            if share is None or share <= foreign_limit or result.error_kinds.get("wrong_result"):
                break
            time.sleep(pause)
        assert best is not None
        result = best[1]
        summary = _summary(level, result)
        summary["foreign_cpu"] = round(best[0], 3)
        if len(shares) > 1:
            summary["foreign_cpu_attempts"] = shares
        series.levels.append(summary)
        series.wrong_results += result.wrong_results[: max(0, 10 - len(series.wrong_results))]
        if progress is not None and task is not None:
            progress.advance(task)
        if on_level is not None:
            on_level(series, summary)
        if result.error_kinds.get("wrong_result"):
            series.stopped = f"wrong results at {level.x:g}: {result.wrong_results[0]}"
            break
        if stop_on_error and result.error_rate > max_error:
            series.stopped = (f"error rate {result.error_rate:.1%} > {max_error:.0%} at x={level.x:g} "
                              f"({_kinds(result)})")
            break
        time.sleep(pause)  # let stragglers of the last level clear
    if progress is not None and task is not None:
        progress.update(task, completed=len(levels))
    return series


def _wait_quiet(limit: float, window: float = 1.0, patience: float = 15.0) -> None:
    """Wait (at most ``patience`` seconds) for a ``window`` in which other processes use less
    than ``limit`` of the machine."""
    end = time.monotonic() + patience
    while time.monotonic() < end:
        meter = CpuMeter()
        time.sleep(window)
        share = meter.foreign_share()
        if share is None or share <= limit:
            return


def _kinds(result: LoadResult) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(result.error_kinds.items())) or "none"


def _summary(level: Level, result: LoadResult) -> dict[str, Any]:
    s = result.summary()
    s.update(x=level.x, workload=level.workload.name)
    for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms", "throughput", "error_rate", "lag_s", "span_s"):
        if isinstance(s.get(key), float):
            s[key] = round(s[key], 4)
    return s


def rps_levels(values: str) -> list[float]:
    """``"20,50,100"`` or ``"start:stop:step"`` (inclusive) -> offered loads."""
    from ..errors import FieldError, ValidationError

    text = values.strip()
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) != 3 or parts[2] <= 0 or parts[0] <= 0 or parts[1] < parts[0]:
                raise ValueError
            start, stop, step = parts
            out, v = [], start
            while v <= stop + 1e-9:
                out.append(round(v, 6))
                v += step
            return out
        out = [float(p) for p in text.split(",") if p.strip()]
        if not out or any(v <= 0 for v in out):
            raise ValueError
        return out
    except ValueError:
        raise ValidationError(FieldError("rps", f"{values!r} is not a list of positive rates (20,50,100) "
                                         "or start:stop:step"), what="arguments") from None
