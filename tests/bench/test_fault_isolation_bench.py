"""benchmarks/bench_fault_isolation.py on the CPU backend, short: its figures and its fault quota."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_fault_isolation as bench  # noqa: E402

pytestmark = pytest.mark.usefixtures("cpu_backend")


def test_fault_quota_parses_rate_and_burst() -> None:
    assert bench.parse_quota("2") == (2.0, None)
    assert bench.parse_quota("0.5:3") == (0.5, 3)
    for bad in ("x", "1:y", "-1", "1:0"):
        with pytest.raises(argparse.ArgumentTypeError, match="--fault-quota"):
            bench.parse_quota(bad)


def test_under_a_fault_quota_the_faulting_tenant_is_refused_and_the_other_is_untouched() -> None:
    res = bench.measure("cpu-sequential", rate=20, faults=10, rounds=1, duration=1.5, fault_quota=(1.0, 2))
    m = res["m_outcomes"]
    # The warm-up's faults take the burst; a token a second comes back, so a few of M's 15
    # invocations reach the device and the rest are refused before they do.
    assert 2 <= m.get("kernel_fault", 0) <= 5, m
    assert m.get("quota_exceeded", 0) >= 8, m
    assert set(m) <= {"kernel_fault", "quota_exceeded"}, m
    assert res["b_errors"] == {}
    assert res["alone"]["n"] > 0 and res["faulting"]["n"] > 0
    assert res["fault_quota"] == {"fault_rate": 1.0, "fault_burst": 2}
