"""The conformance suite catches each violation: a backend broken in one way fails exactly the
matching property (and a stale known-gap entry fails the run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cpu_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where every run of this module finds the CPU device templates (the real one and the
    broken ones) built once: each test has a PAPPUS_HOME of its own, which would rebuild them."""
    return tmp_path_factory.mktemp("cpu-cache")


def run_suite(backend: str, tmp_path: Path, cpu_cache: Path, *pytest_args: str) -> dict:
    env = dict(os.environ, PAPPUS_PLUGIN_MODULES="tests.conformance.broken_backends", PAPPUS_CPU_CACHE=str(cpu_cache),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("PYTEST_XDIST_WORKER", None)
    report = tmp_path / "report"
    cmd = [sys.executable, "-m", "pappus", "conformance", "--backend", backend, "--engine", "sequential",
           "-n", "0", "--report", str(report), "--", "-p", "no:cacheprovider", *pytest_args]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    summary = json.loads((report / "summary.json").read_text())
    summary["returncode"] = res.returncode
    summary["output"] = res.stdout[-3000:] + res.stderr[-3000:]
    return summary


def outcomes(summary: dict, prop: str) -> dict[str, int]:
    return summary["properties"].get(prop, {})


@pytest.mark.parametrize("backend,prop,selection", [
    ("brokennozero", "zeroing", "test_after_success or test_high_water"),
    ("brokenzeroerror", "zeroing", "test_after_success or test_after_trap or test_after_out_of_bounds"),
    ("brokenheap", "malloc_heap", "test_default_limit or test_small_limit"),
    ("brokenfaults", "fault_containment", "test_fault_fails_alone"),
])
def test_broken_backend_fails_its_property(tmp_path, cpu_cache, backend, prop, selection):
    summary = run_suite(backend, tmp_path, cpu_cache, "-k", selection)
    assert summary["returncode"] != 0, summary["output"]
    counts = outcomes(summary, prop)
    assert counts.get("failed", 0) > 0, (counts, summary["output"])
    if backend == "brokenzeroerror":
        # Zeroing holds after success and breaks only on the error paths: the suite says which.
        results = {r["test"]: r["outcome"] for r in summary["tests"]}
        assert all(v == "passed" for k, v in results.items() if "after_success" in k), results
        assert any(v == "failed" for k, v in results.items() if "after_trap" in k or "after_out_of_bounds" in k)


#: A test of another property that needs a working device: a broken backend passes it, so what
#: fails is the property it breaks, not the backend as a whole.
SOUND = "test_a_fitting_launch_registers_and_runs"


@pytest.mark.parametrize("backend,prop,selection,failing,passing", [
    # abort() returns without stopping the run, while abort_ends_run says a run ends at once: a
    # caller running the invocation on its own thread is kept seconds past its deadline too
    # (test_deadline_is_kept, left out here: it costs the engine's whole give-up time).
    ("brokenabort", "bounded_execution", f"test_the_backend_stops or {SOUND}",
     ["test_the_backend_stops_the_kernel_itself"], [SOUND]),
    # abort() cannot stop a run: the caller is told at the deadline and the kernel runs on until
    # the engine takes itself out of service, which only the backend_stops test sees.
    ("brokennoabort", "bounded_execution", f"test_the_backend_stops or {SOUND}",
     ["test_the_backend_stops_the_kernel_itself"], [SOUND]),
    # The child's allow-list is left off: the template's deny-list still stops exec and sockets.
    ("brokenseccomp", "no_host_escape", f"test_attempt_is_stopped or {SOUND}",
     ["try_open", "try_fork", "try_mprotect_exec"], ["try_socket", "try_exec", SOUND]),
    ("brokenfence", "no_host_escape", f"test_memory_past_the_buffers or try_socket or {SOUND}",
     ["test_memory_past_the_buffers_is_out_of_reach"], ["try_socket", SOUND]),
    # Every loaded library stays readable in a run: another tenant's code object is reachable.
    ("brokenhide", "no_host_escape", f"test_another_tenants_library or test_memory_past_the_buffers or {SOUND}",
     ["test_another_tenants_library_is_out_of_reach"], ["test_memory_past_the_buffers_is_out_of_reach", SOUND]),
    ("brokenparams", "signatures", "test_a_fitting_launch or test_an_argument_of_the_wrong_size",
     [SOUND, "test_an_argument_of_the_wrong_size"], []),
    # Every parameter an 8-byte word: right for the affine kernel, wrong for a 4-byte one.
    ("brokensizes", "signatures", "test_signatures or try_socket", ["test_a_narrow_parameter_takes_exactly_its_width"],
     [SOUND, "test_too_few_and_too_many", "test_an_argument_of_the_wrong_size", "test_every_mismatch", "try_socket"]),
    # Arguments back to back where the kernel reads them aligned: only a narrow one shows it.
    ("brokenlayout", "signatures", "test_signatures or try_socket", ["test_scalars_of_every_width_and_kind"],
     [SOUND, "test_a_narrow_parameter_takes_exactly_its_width", "test_each_reported_kind", "try_socket"]),
    # Pointers reported as plain words: every launch still runs right; only the kinds show it.
    ("brokenkinds", "signatures", "test_signatures", ["test_each_reported_kind"],
     [SOUND, "test_scalars_of_every_width_and_kind", "test_every_mismatch"]),
])
def test_broken_isolation_is_caught(tmp_path, cpu_cache, backend, prop, selection, failing, passing):
    """bounded_execution, no_host_escape and signatures: the broken backend fails exactly the
    tests that see its breakage, and passes those that need the rest of it working."""
    summary = run_suite(backend, tmp_path, cpu_cache, "-k", selection)
    assert summary["returncode"] != 0, summary["output"]
    assert outcomes(summary, prop).get("failed", 0) > 0, (outcomes(summary, prop), summary["output"])
    results = {r["test"]: r["outcome"] for r in summary["tests"]}
    for name in failing:
        assert {v for k, v in results.items() if name in k} == {"failed"}, (name, results, summary["output"])
    for name in passing:
        assert {v for k, v in results.items() if name in k} == {"passed"}, (name, results, summary["output"])


def test_stale_known_gap_fails_the_run(tmp_path, cpu_cache):
    summary = run_suite("stalegap", tmp_path, cpu_cache, "-k", "test_after_success")
    assert summary["returncode"] != 0
    assert outcomes(summary, "zeroing") == {"xpassed-stale": 1}, summary["tests"]
