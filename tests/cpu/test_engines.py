"""The cpu backend behind pappus.Runtime: both engine kinds, deadlines, faults, violations."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

import pappus
from pappus.engine.invocation import SETTLE_GRACE
from pappus.errors import DeadlineExceeded, DeviceError, KernelFault, SandboxViolation

from .conftest import EXAMPLES, Builder, Built, load_json, single


@pytest.fixture(scope="module")
def matmul_lib(build: Builder) -> Built:
    return build(EXAMPLES / "matmul" / "matmul.hip")


def make_runtime(engine: str, tmp: Path, matmul_lib: Built, sandbox_lib: Built, workers: int = 2) -> pappus.Runtime:
    rt = pappus.Runtime(engine=engine, state_dir=tmp, pool_bytes=16 << 20, workers=workers)
    rt.register_library("matmul", str(matmul_lib.path))
    rt.register_library("k", str(sandbox_lib.path))
    rt.register_function("matmul", load_json(EXAMPLES / "matmul" / "matmul.json"))
    spin = single("spin", [{"Ptr": "out"}], buffers={"out": 64}, outputs=["out"])
    rt.register_function("spin", spin)
    rt.register_function("escape", single("do_open", [{"Ptr": "out"}], buffers={"out": 64}, outputs=["out"]))
    rt.register_function("oob", single("write_at", [{"Ptr": "out"}, {"Constant": {"type": "i64", "value": 1 << 24}}],
                                       buffers={"out": 64}, outputs=["out"]))
    return rt


@pytest.fixture(scope="module", params=["cpu-sequential", "cpu-multiprocess"])
def runtime(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, matmul_lib: Built,
            sandbox_lib: Built) -> Iterator[pappus.Runtime]:
    rt = make_runtime(request.param, tmp_path_factory.mktemp("state"), matmul_lib, sandbox_lib)
    yield rt
    rt.close()


def check_matmul(rt: pappus.Runtime, seed: int) -> None:
    a = np.random.default_rng(seed).integers(-100, 100, size=(128, 128), dtype=np.int64)
    out = rt.invoke("matmul", {"A": a.tobytes()})
    assert np.array_equal(np.frombuffer(out["B"], dtype=np.int64).reshape(128, 128), a @ a.T)


def test_invoke_matmul(runtime: pappus.Runtime) -> None:
    for seed in range(3):
        check_matmul(runtime, seed)


def test_a_waiting_caller_runs_its_invocation_on_its_own_thread(runtime: pappus.Runtime) -> None:
    """Both engines run ``invoke`` on the caller's thread when idle: the CPU device's abort
    ends a run at once (``abort_ends_run``), so a hung kernel cannot keep that thread."""
    from pappus.engine import Invocation

    engine = runtime.engine()
    a = np.arange(128 * 128, dtype=np.int64).reshape(128, 128) % 7
    inv = Invocation(runtime.function_spec("matmul"), {"A": a.tobytes()}, 30.0, "default")
    settled_by: list[int] = []
    inv.future.add_done_callback(lambda _f: settled_by.append(threading.get_ident()))
    fut = engine.call(inv)
    assert fut.done() and settled_by == [threading.get_ident()]
    assert np.array_equal(np.frombuffer(fut.result()["B"], dtype=np.int64).reshape(128, 128), a @ a.T)


def _spin_past(spin: Callable[[float], object], deadline: float) -> str | None:
    """Call ``spin(deadline)`` and return the kernel its DeadlineExceeded names.
    concepts.md's contract: the kernel is named when the abort ends the run within SETTLE_GRACE
    of the deadline, and otherwise the caller is not kept longer than that, so an error without
    the kernel must not come sooner."""
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded) as info:
        spin(deadline)
    late = time.monotonic() - t0 - deadline
    assert late < 1.0, f"settled {late:.3f} s past its deadline"
    kernel = info.value.kernel
    assert kernel in ("spin", None), kernel
    if kernel is None:  # the watchdog settled it: only once the grace had passed
        assert late >= SETTLE_GRACE * 0.9, f"no kernel named, yet settled {late * 1e3:.1f} ms past the deadline"
    return kernel


def test_deadline_ends_a_hung_kernel_and_the_engine_recovers(runtime: pappus.Runtime) -> None:
    runtime.engine()  # started: the deadline is spent running the kernel, not starting the device
    # On this thread (the abort must free it), then queued (the engine's own thread). The CPU
    # device's abort ends a run within a few ms, so the error names the kernel; a loaded host can
    # take longer than the grace, so up to three tries are given to see the name.
    for deadline, spin in ((0.5, lambda d: runtime.invoke("spin", {}, deadline=d)),
                           (0.3, lambda d: runtime.invoke_async("spin", {}, deadline=d).result(timeout=10))):
        named: list[str | None] = []
        while "spin" not in named and len(named) < 3:
            named.append(_spin_past(spin, deadline))
        assert "spin" in named, named
        check_matmul(runtime, 10)


def test_violations_and_faults_fail_alone(runtime: pappus.Runtime) -> None:
    with pytest.raises(SandboxViolation) as info:
        runtime.invoke("escape", {})
    assert info.value.syscall == "openat"
    with pytest.raises(KernelFault) as fault:
        runtime.invoke("oob", {})
    assert fault.value.kernel == "write_at"
    check_matmul(runtime, 11)


def _template_of(worker_pid: int) -> int:
    """The CPU device template a worker started (its one child named pappus-cpu-device)."""
    children = Path(f"/proc/{worker_pid}/task/{worker_pid}/children").read_text().split()
    found = [int(c) for c in children if Path(f"/proc/{c}/comm").read_text().startswith("pappus-cpu-dev")]
    assert len(found) == 1, found
    return found[0]


def test_a_locked_down_worker_still_restarts_its_dead_template(tmp_path: Path, matmul_lib: Built,
                                                                 sandbox_lib: Built) -> None:
    """A cpu-multiprocess worker is locked down (engine/lockdown.py) less ``execve``, which the
    CPU device needs for ``reset``, and scoped: a worker whose template died kills what is left of
    it and recovers in place."""
    rt = make_runtime("cpu-multiprocess", tmp_path, matmul_lib, sandbox_lib, workers=1)
    try:
        check_matmul(rt, 20)
        engine = rt.engine("cpu-multiprocess")
        for slot in engine.slots:
            state = slot.details["worker_lockdown"]
            assert state.startswith("seccomp deny-list (EPERM): execveat, ptrace"), state
            # scoped before its device opened, it still signals the template it started (below)
            assert slot.details["worker_scope"].startswith(("Landlock: abstract unix sockets, signals", "none:"))
        [pid] = engine.worker_pids()
        assert pid is not None
        old = _template_of(pid)
        os.kill(old, signal.SIGKILL)
        try:  # the worker notices on its next run (or before it), resets its device, serves again
            check_matmul(rt, 21)
        except DeviceError as exc:
            assert "template" in str(exc)
        check_matmul(rt, 22)
        assert engine.worker_pids() == [pid] and engine.metrics.respawns == 0  # recovered, not replaced
        assert _template_of(pid) != old
    finally:
        rt.close()
