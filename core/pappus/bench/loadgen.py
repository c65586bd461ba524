"""Open-loop load: Poisson arrivals at a fixed rate, latency measured from the intended send time.

Closed-loop generators (send the next request when the last one returns) slow down when the
system does and hide its queueing; this one does not. Each request's latency runs from the time
it was *scheduled* to be sent, so a generator that falls behind cannot hide latency either
(no coordinated omission). Timeouts and errors are counted, as in the thesis, as errors: a
request is an error when it fails, when its result is wrong (``check``), or when its latency
exceeds the per-request deadline. Every request sent is accounted for exactly once: one that
has not settled when the drain time is over counts as an error (``no_answer``).
"""

from __future__ import annotations

import functools
import math
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any

#: ``submit(i)`` sends request ``i`` (0, 1, 2, ...) and returns at once with a future.
Submit = Callable[[int], "Future[Any]"]
#: ``check(i, result)`` raises (AssertionError) when request ``i``'s result is wrong.
Check = Callable[[int, Any], None]


@dataclass
class LoadResult:
    """One load level: what was offered, what came back, and how long it took."""

    label: str
    rps_offered: float
    duration_s: float
    deadline_s: float | None = None
    sent: int = 0
    completed: int = 0  # settled successfully, with a correct result, within the deadline
    errors: int = 0  # everything else: failures, wrong results, timeouts, no answer
    error_kinds: dict[str, int] = field(default_factory=dict)
    wrong_results: list[str] = field(default_factory=list)  # the first few mismatches, verbatim
    latencies_s: list[float] = field(default_factory=list, repr=False)
    lag_s: float = 0.0  # how far the generator itself fell behind its schedule, at most
    span_s: float = 0.0  # from the first scheduled send to the last settlement

    @property
    def error_rate(self) -> float:
        return self.errors / self.sent if self.sent else 0.0

    @property
    def throughput(self) -> float:
        """Achieved throughput (goodput): successful requests per second over the time the
        level really took, sending and draining (never more than what completed)."""
        span = max(self.duration_s, self.span_s)
        return self.completed / span if span else 0.0

    def percentile(self, p: float) -> float | None:
        """Latency percentile of the successful requests (nearest rank)."""
        if not self.latencies_s:
            return None
        ordered = sorted(self.latencies_s)
        k = min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))
        return ordered[k]

    def summary(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "latencies_s"}
        out.update(error_rate=self.error_rate, throughput=self.throughput,
                   p50_ms=_ms(self.percentile(50)), p90_ms=_ms(self.percentile(90)),
                   p99_ms=_ms(self.percentile(99)), max_ms=_ms(self.percentile(100)),
                   mean_ms=_ms(sum(self.latencies_s) / len(self.latencies_s)) if self.latencies_s else None)
        return out


def _ms(v: float | None) -> float | None:
    return None if v is None else v * 1e3


def poisson_schedule(rps: float, duration_s: float, rng: random.Random) -> list[float]:
    """Send offsets (seconds from start) of a Poisson process of rate ``rps``."""
    if rps <= 0:
        return []
    t = 0.0
    out: list[float] = []
    while True:
        t += rng.expovariate(rps)
        if t >= duration_s:
            return out
        out.append(t)


def _kind(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) and code else type(exc).__name__


def run_open_loop(submit: Submit, rps: float, duration_s: float, *, label: str = "", seed: int = 0,
                  deadline_s: float | None = None, drain_s: float = 30.0, check: Check | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  schedule: list[float] | None = None) -> LoadResult:
    """Offer ``rps`` requests per second for ``duration_s``; wait up to ``drain_s`` (after the
    last send) for stragglers.

    ``submit(i)`` must return at once with a future (e.g. ``Runtime.invoke_async``); a submit
    that raises (overload, quota) is an error of that request. ``deadline_s``: a request that
    takes longer, from its scheduled send time, is an error (``timeout``) even if it succeeds.
    ``check(i, result)`` verifies each successful result; a mismatch is an error
    (``wrong_result``). ``schedule`` replaces the Poisson schedule (send offsets in seconds).
    """
    if schedule is None:
        schedule = poisson_schedule(rps, duration_s, random.Random(seed))
    result = LoadResult(label=label, rps_offered=rps, duration_s=duration_s, deadline_s=deadline_s)
    lock = threading.Lock()
    settled = threading.Condition(lock)
    pending = [0]
    last_done = [0.0]
    closed = [False]  # after the drain: late settlements are no longer counted (already errors)
    start = time.perf_counter()

    def error(kind: str) -> None:  # caller holds the lock
        result.errors += 1
        result.error_kinds[kind] = result.error_kinds.get(kind, 0) + 1

    def done(fut: Future[Any], i: int, intended: float) -> None:
        now = time.perf_counter()
        latency = now - intended
        exc = fut.exception()
        problem = None
        if exc is None and check is not None:
            try:
                check(i, fut.result())
            except Exception as err:  # a wrong result is an error of this request, never a crash
                problem = f"request {i}: {err}"
        with lock:
            if closed[0]:
                return
            if exc is not None:
                error(_kind(exc))
            elif problem is not None:
                error("wrong_result")
                if len(result.wrong_results) < 10:
                    result.wrong_results.append(problem)
            elif deadline_s is not None and latency > deadline_s:
                error("timeout")
            else:
                result.completed += 1
                result.latencies_s.append(latency)
            last_done[0] = max(last_done[0], now)
            pending[0] -= 1
            settled.notify_all()

    for i, offset in enumerate(schedule):
        intended = start + offset
        now = time.perf_counter()
        if intended > now:
            _sleep_until(intended)
        else:
            result.lag_s = max(result.lag_s, now - intended)
        with lock:
            result.sent += 1
            pending[0] += 1
        try:
            fut = submit(i)
        except Exception as exc:  # rejected at once (overload, quota): an error like any other
            with lock:
                error(_kind(exc))
                pending[0] -= 1
                last_done[0] = max(last_done[0], time.perf_counter())
            continue
        fut.add_done_callback(functools.partial(_settled, done, i, intended))
        if progress is not None and i % 16 == 0:
            progress(i, len(schedule))
    end = time.perf_counter() + drain_s
    with lock:
        while pending[0] > 0:
            remaining = end - time.perf_counter()
            if remaining <= 0:
                break
            settled.wait(remaining)
        missing = pending[0]
        if missing > 0:  # never settled: counted, and no longer waited for
            error_count = missing
            result.errors += error_count
            result.error_kinds["no_answer"] = result.error_kinds.get("no_answer", 0) + error_count
            pending[0] = 0
            last_done[0] = time.perf_counter()
        closed[0] = True
        result.span_s = max(0.0, (last_done[0] or start) - start)
    if progress is not None:
        progress(len(schedule), len(schedule))
    return result


def _settled(done: Callable[[Future[Any], int, float], None], i: int, intended: float, fut: Future[Any]) -> None:
    done(fut, i, intended)


def _sleep_until(t: float) -> None:
    """Sleep until ``t``: the OS sleeps all but the last 100 us (timer slack), a short spin
    the rest (on a 2-core machine a yielding spin would steal the system under test's CPU)."""
    remaining = t - time.perf_counter()
    if remaining > 0.0002:
        time.sleep(remaining - 0.0001)
    while time.perf_counter() < t:
        pass
