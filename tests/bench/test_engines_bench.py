"""benchmarks/bench_engines.py: its process hop (the yardstick its multiprocess figure is read by),
its summaries and its command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_engines as bench  # noqa: E402


def test_a_process_hop_costs_its_round_trip_minus_the_busy_time_and_ends_cleanly() -> None:
    hop = bench.ProcessHop()
    try:
        busy = 0.02
        times = hop.times(busy, 3)
        idle = hop.times(0.0, 3)
    finally:
        hop.close()
    # The other end stays busy for the time asked before it answers, so what is left is the
    # hop alone: never negative (a slow machine may make it long, not short).
    assert len(times) == 3 and all(0 <= t < 1.0 for t in times), times
    assert len(idle) == 3 and all(0 <= t < 1.0 for t in idle), idle
    assert hop.proc.returncode == 0  # it ended at EOF, not killed


def test_respawn_steps_are_summarised_in_the_order_they_run() -> None:
    spawns = [{"fork": 0.004, "open": 0.010, "total": 0.020},
              {"fork": 0.002, "open": 0.030, "lockdown": 0.001, "total": 0.040},
              {"fork": 0.006, "open": 0.020, "total": 0.030}]  # a worker that reported no lockdown
    medians = bench.step_medians(spawns)
    assert list(medians) == ["fork", "open", "lockdown", "total"]
    assert medians == {"fork": 4.0, "open": 20.0, "total": 30.0, "lockdown": 1.0}


def test_device_options_are_json_where_they_can_be_and_text_otherwise() -> None:
    assert bench.device_option("scrub_on_chip=false") == ("scrub_on_chip", False)
    assert bench.device_option("heap_limit=4096") == ("heap_limit", 4096)
    assert bench.device_option("arch=sm_90") == ("arch", "sm_90")
    assert bench.device_option("context = own") == ("context", "own")
    for bad in ("scrub_on_chip", "=false"):
        with pytest.raises(argparse.ArgumentTypeError, match="NAME=VALUE"):
            bench.device_option(bad)
