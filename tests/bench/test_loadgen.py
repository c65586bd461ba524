"""The open-loop generator: schedule, latency from the intended time, accounting of every request."""

from __future__ import annotations

import random
import statistics
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from pappus.bench.loadgen import LoadResult, poisson_schedule, run_open_loop
from pappus.errors import Overloaded


def done(value: Any = "ok") -> Future[Any]:
    fut: Future[Any] = Future()
    fut.set_result(value)
    return fut


def failed(exc: BaseException) -> Future[Any]:
    fut: Future[Any] = Future()
    fut.set_exception(exc)
    return fut


def later(delay: float, value: Any = "ok") -> Future[Any]:
    fut: Future[Any] = Future()
    threading.Timer(delay, fut.set_result, args=(value,)).start()
    return fut


# --- schedule -------------------------------------------------------------------------------


def test_poisson_schedule_has_the_rate_and_exponential_gaps() -> None:
    sched = poisson_schedule(1000, 20.0, random.Random(1))
    assert abs(len(sched) - 20_000) < 20_000 * 0.03  # Poisson: sd ~ 141
    gaps = [b - a for a, b in zip(sched, sched[1:], strict=False)]
    assert abs(statistics.mean(gaps) - 1e-3) < 0.05e-3
    # exponential: the standard deviation equals the mean (a fixed-rate schedule would give 0)
    assert abs(statistics.pstdev(gaps) / statistics.mean(gaps) - 1.0) < 0.05
    assert all(0 <= t < 20.0 for t in sched) and sched == sorted(sched)


def test_poisson_schedule_is_reproducible_and_empty_at_zero() -> None:
    assert poisson_schedule(50, 3.0, random.Random(7)) == poisson_schedule(50, 3.0, random.Random(7))
    assert poisson_schedule(50, 3.0, random.Random(7)) != poisson_schedule(50, 3.0, random.Random(8))
    assert poisson_schedule(0, 3.0, random.Random(1)) == []


def test_sends_follow_the_schedule() -> None:
    sent: list[float] = []
    start = time.perf_counter()

    def submit(i: int) -> Future[Any]:
        sent.append(time.perf_counter() - start)
        return done()

    schedule = [0.0, 0.05, 0.1, 0.2]
    result = run_open_loop(submit, 20, 0.25, schedule=schedule)
    assert result.sent == 4 and result.completed == 4
    for want, got in zip(schedule, sent, strict=True):
        assert want - 0.001 <= got < want + 0.02


# --- latency --------------------------------------------------------------------------------


def test_latency_runs_from_the_intended_send_time() -> None:
    """A generator that falls behind (here: a submit that blocks) cannot hide the delay: the
    requests scheduled meanwhile count it in their latency (no coordinated omission)."""

    def submit(i: int) -> Future[Any]:
        if i == 0:
            time.sleep(0.1)
        return done()

    result = run_open_loop(submit, 100, 0.01, schedule=[0.0, 0.001, 0.002])
    lat = sorted(result.latencies_s)
    assert result.completed == 3
    assert lat[0] >= 0.095  # request 0 itself took 0.1 s
    assert lat[1] >= 0.095 and lat[2] >= 0.095  # sent late: the lag counts
    assert result.lag_s >= 0.095


def test_latency_includes_the_time_to_settle() -> None:
    result = run_open_loop(lambda i: later(0.05), 10, 0.1, schedule=[0.0, 0.02])
    assert result.completed == 2
    assert all(0.045 <= x < 0.5 for x in result.latencies_s)
    assert result.percentile(50) is not None and result.percentile(99) >= result.percentile(50)


# --- accounting -----------------------------------------------------------------------------


def test_every_kind_of_failure_is_counted_once() -> None:
    def submit(i: int) -> Future[Any]:
        if i == 0:
            return done("right")
        if i == 1:
            return failed(RuntimeError("boom"))
        if i == 2:
            raise Overloaded("queue full")  # rejected at submission
        if i == 3:
            return done("wrong")
        if i == 4:
            return later(0.2, "right")  # past the deadline
        return Future()  # never settles

    def check(i: int, value: Any) -> None:
        assert value == "right", f"got {value!r}"

    result = run_open_loop(submit, 100, 0.1, schedule=[0.0, 0.001, 0.002, 0.003, 0.004, 0.005],
                           deadline_s=0.1, drain_s=0.5, check=check)
    assert result.sent == 6
    assert result.completed == 1
    assert result.errors == 5
    assert result.error_kinds == {"RuntimeError": 1, "overloaded": 1, "wrong_result": 1, "timeout": 1,
                                  "no_answer": 1}
    assert result.wrong_results and "got 'wrong'" in result.wrong_results[0]
    assert result.error_rate == pytest.approx(5 / 6)
    assert result.sent == result.completed + result.errors


def test_no_request_is_lost_under_concurrency() -> None:
    rng = random.Random(3)
    pool = ThreadPoolExecutor(8)

    def work(i: int) -> int:
        time.sleep(rng.random() * 0.005)
        if i % 17 == 0:
            raise ValueError("odd one")
        return i

    try:
        result = run_open_loop(lambda i: pool.submit(work, i), 2000, 0.5, seed=5, drain_s=10,
                               check=lambda i, v: None)
    finally:
        pool.shutdown()
    n = len(poisson_schedule(2000, 0.5, random.Random(5)))
    assert result.sent == n
    assert result.completed + result.errors == n
    assert result.error_kinds == {"ValueError": len(range(0, n, 17))}
    assert len(result.latencies_s) == result.completed


def test_a_late_answer_after_the_drain_is_not_counted_twice() -> None:
    fut: Future[Any] = Future()
    result = run_open_loop(lambda i: fut, 10, 0.01, schedule=[0.0], drain_s=0.05)
    assert result.error_kinds == {"no_answer": 1}
    fut.set_result("late")  # settles after the level was closed
    assert result.completed == 0 and result.errors == 1 and result.sent == 1


def test_throughput_is_goodput_over_the_real_span() -> None:
    r = LoadResult("x", rps_offered=100, duration_s=1.0, sent=100, completed=90, errors=10, span_s=2.0)
    assert r.throughput == pytest.approx(45.0)  # a backlog that drained after the level: half the rate
    r.span_s = 0.5
    assert r.throughput == pytest.approx(90.0)
    s = r.summary()
    assert s["error_rate"] == pytest.approx(0.1) and "latencies_s" not in s and s["p50_ms"] is None
