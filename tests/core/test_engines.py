"""Both engines, for real (threads and processes), on the reference host backend.

The CPU backend runs the same engine code with real sandboxed kernels (tests/cpu); here the
kernels are trusted numpy functions so the engine mechanisms are tested on their own.
"""

from __future__ import annotations

import os
import random
import signal
import struct
import threading
import time
from concurrent.futures import wait

import numpy as np
import pytest

import pappus
from pappus.engine.multiprocess import HEADER_BYTES, kill_worker
from pappus.errors import DeadlineExceeded, EngineClosed, KernelFault, Overloaded, WorkerLost

from ..conftest import child_pids, open_fds
from .helpers import HOST_LIB, copy_config, fault_config, fill_config, matmul_config, sleep_config

ENGINES = ["host-sequential", "host-multiprocess"]


def make_runtime(tmp_path, engine, **kw):
    rt = pappus.Runtime(engine=engine, state_dir=tmp_path / "state", pool_bytes=4 << 20, **kw)
    rt.register_library("m", HOST_LIB)
    rt.register_function("mm", matmul_config(repeat=2))
    rt.register_function("fault", fault_config())
    rt.register_function("sleep", sleep_config(1500))
    rt.register_function("nap", sleep_config(20))
    rt.register_function("fill", fill_config())
    rt.register_function("peek", copy_config())
    return rt


def check_mm(out, a):
    assert (np.frombuffer(out["B"], np.int64).reshape(a.shape) == a @ a.T + 4).all()


@pytest.fixture(params=ENGINES)
def rt(request, tmp_path):
    runtime = make_runtime(tmp_path, request.param)
    yield runtime
    runtime.close(drain=False, timeout=10)


A = np.arange(32 * 32, dtype=np.int64).reshape(32, 32)


def test_results_and_fault_containment(rt):
    check_mm(rt.invoke("mm", {"A": A.tobytes()}), A)
    with pytest.raises(KernelFault) as info:
        rt.invoke("fault", {})
    assert info.value.kernel == "write_at" and info.value.address == 8 and info.value.invocation
    check_mm(rt.invoke("mm", {"A": A.tobytes()}), A)


def test_no_leftovers_between_invocations(rt):
    assert rt.invoke("fill", {})["X"] == b"\xab" * 4096
    assert rt.invoke("peek", {})["X"] == bytes(4096)


@pytest.mark.parametrize("engine", ENGINES)
def test_cold_invocations_are_counted(tmp_path, engine):
    # cold: the first run of a function on a device looks its kernels up (and loads the module
    # unless another function of the library did); later runs are hot
    rt = make_runtime(tmp_path, engine, workers=1)
    try:
        def cold() -> int:
            (snapshot,) = rt.metrics()
            return snapshot["cold"]

        for _ in range(3):
            check_mm(rt.invoke("mm", {"A": A.tobytes()}), A)
        assert cold() == 1
        rt.invoke("nap", {})
        rt.invoke("nap", {})
        assert cold() == 2
        assert rt.engine().metrics.snapshot()["submitted"] == 5
    finally:
        rt.close()


def test_nothing_is_left_in_a_workers_arena(tmp_path):
    """Inputs and outputs cross between supervisor and worker in a shared arena; once an
    invocation has returned, nothing of either is left there (only the header's run number)."""
    rt = make_runtime(tmp_path, "host-multiprocess", workers=1)
    try:
        slot = rt.engine().slots[0]
        secret = A * 3 + 1
        check_mm(rt.invoke("mm", {"A": secret.tobytes()}), secret)
        assert slot.arena is not None
        used = np.frombuffer(slot.arena.view[HEADER_BYTES:HEADER_BYTES + 4 * secret.nbytes], np.uint8)
        assert not used.any(), "the invocation's inputs or outputs are still in the arena"
    finally:
        rt.close()


def test_deadline_then_serves_again(rt):
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded) as info:
        rt.invoke("sleep", {}, deadline=0.2)
    elapsed = time.monotonic() - t0
    assert info.value.deadline == 0.2
    assert elapsed < 1.0, f"the caller must learn at the deadline, not after {elapsed:.2f} s"
    # The hung kernel cannot be stopped on this device: the engine recovers by replacement.
    check_mm(rt.invoke("mm", {"A": A.tobytes()}, deadline=30), A)


def test_overloaded_when_queue_full(tmp_path):
    rt = make_runtime(tmp_path, "host-sequential", queue_size=2)
    try:
        futures = []
        with pytest.raises(Overloaded) as info:
            for _ in range(10):  # at most one runs and two wait: the fourth cannot be queued
                futures.append(rt.invoke_async("nap", {}))
        assert 2 <= len(futures) <= 3
        assert info.value.retry_after > 0
        wait(futures, timeout=10)
        assert all(f.done() for f in futures)
    finally:
        rt.close()


def test_close_settles_everything(tmp_path):
    rt = make_runtime(tmp_path, "host-sequential")
    futures = [rt.invoke_async("nap", {}) for _ in range(20)]
    rt.close(drain=False, timeout=5)
    done, pending = wait(futures, timeout=10)
    assert not pending
    outcomes = {type(f.exception()).__name__ if f.exception() else "ok" for f in futures}
    assert outcomes <= {"ok", "EngineClosed"} and "EngineClosed" in outcomes
    with pytest.raises(EngineClosed):
        rt.invoke("nap", {})


class _Respawns:
    """An observer plugin: the respawns it hears of."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, int, str]] = []

    @pappus.hookimpl
    def pappus_worker_respawned(self, engine, worker, cause, seconds):
        self.heard.append((engine, worker, cause))


def test_kill_worker_mid_invocation(tmp_path):
    from pappus.plugins import Plugins

    plugins = Plugins().load()  # the runtime's own plugins (not the process's) hear its engines
    observer = _Respawns()
    plugins.register_module(observer, "respawns")
    rt = make_runtime(tmp_path, "host-multiprocess", workers=2, plugins=plugins)
    try:
        engine = rt.engine()
        fut = rt.invoke_async("sleep", {}, deadline=30)
        deadline = time.monotonic() + 20

        def running(s) -> bool:  # the worker has picked the run up (not only been sent it)
            return s.current is not None and struct.unpack_from("<Q", s.arena.view, 0)[0] == s.seq

        while not any(running(s) for s in engine.slots):
            assert time.monotonic() < deadline, "the invocation never started"
            time.sleep(0.01)
        busy = next(i for i, s in enumerate(engine.slots) if running(s))
        victim = kill_worker(engine, busy, signal.SIGKILL)
        with pytest.raises(WorkerLost) as info:
            fut.result(timeout=10)
        assert info.value.signal == "SIGKILL" and info.value.worker == busy
        victims = [victim]
        # respawned, serving, and correct
        for _ in range(4):
            check_mm(rt.invoke("mm", {"A": A.tobytes()}), A)
        assert engine.metrics.respawns >= 1
        assert all(s.pid not in victims for s in engine.slots)
        assert ("host-multiprocess", busy, "SIGKILL") in observer.heard
        # the respawn step by step, as the supervisor saw it and the new worker reported it
        steps = engine.respawn_steps[-1]
        # (reap: from SIGKILL until the old process was gone; the new one is asked for after it)
        assert list(steps) == ["reap", "fork", "scope", "open", "heap_limit", "reserve", "pool", "monitors",
                               "lockdown", "handshake", "total"]
        assert all(seconds >= 0 for seconds in steps.values())
        start = {name: s for name, s in steps.items() if name != "reap"}
        assert sum(start.values()) - steps["total"] <= steps["total"] == engine.respawn_times[-1]
    finally:
        rt.close()


def _eventually(condition, what: str, timeout: float = 20.0):
    end = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < end, what
        time.sleep(0.01)
    return value


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_spare_worker_takes_a_dead_workers_place(tmp_path):
    rt = make_runtime(tmp_path, "host-multiprocess", workers=1, spare_workers=1)
    try:
        engine = rt.engine()
        assert engine.processes == 2  # the spare takes a pool share like a worker
        (spare,) = _eventually(engine.spares.pids, "the spare never started")
        victim = kill_worker(engine, 0, signal.SIGKILL)
        check_mm(rt.invoke("mm", {"A": A.tobytes()}), A)  # found dead, replaced, retried
        assert engine.slots[0].pid == spare  # the slot took the spare, no new process was waited for
        assert list(engine.respawn_steps[-1]) == ["reap", "spare", "total"]
        assert engine.respawn_times[-1] < 0.5
        (refill,) = _eventually(engine.spares.pids, "no new spare after the first was taken")
        assert refill not in (spare, victim)
    finally:
        rt.close()
    assert _eventually(lambda: _gone(refill), "the waiting spare outlived its engine", 10)


def test_a_spare_that_died_waiting_is_never_handed_out(tmp_path):
    rt = make_runtime(tmp_path, "host-multiprocess", workers=1, spare_workers=1)
    try:
        engine = rt.engine()
        (spare,) = _eventually(engine.spares.pids, "the spare never started")
        os.kill(spare, signal.SIGKILL)
        kill_worker(engine, 0, signal.SIGKILL)
        check_mm(rt.invoke("mm", {"A": A.tobytes()}), A)
        assert engine.slots[0].pid not in (None, spare)
        fresh = _eventually(lambda: [p for p in engine.spares.pids() if p != spare], "no spare after one died")
        check_mm(rt.invoke("mm", {"A": A.tobytes()}), A)
        assert fresh
    finally:
        rt.close()


def test_spare_workers_must_not_be_negative(tmp_path):
    rt = make_runtime(tmp_path, "host-multiprocess", spare_workers=-1)
    try:
        with pytest.raises(ValueError, match="spare_workers must be 0 or more, not -1"):
            rt.engine()
    finally:
        rt.close()


def test_many_mixed_invocations_from_threads(tmp_path):
    """1,000 invocations from 8 threads, faults injected: every future settles, results right."""
    fds_before = open_fds()
    kids_before = child_pids()
    for engine in ENGINES:
        rt = make_runtime(tmp_path / engine, engine)
        results: list[tuple[str, object]] = []
        lock = threading.Lock()

        client_errors: list[BaseException] = []

        def client(seed: int, rt=rt, results=results, lock=lock, client_errors=client_errors) -> None:
            try:
                submit_all(seed, rt, results, lock)
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                client_errors.append(exc)

        def submit_all(seed: int, rt, results, lock) -> None:
            rng = random.Random(seed)
            futs = []
            for _ in range(125):
                kind = rng.choice(["mm", "mm", "mm", "fault", "fill", "peek"])
                a = rng.randrange(10)
                inputs = {"A": (A + a).tobytes()} if kind == "mm" else {}
                futs.append((kind, a, rt.invoke_async(kind, inputs)))
            for kind, a, f in futs:
                try:
                    out = f.result(timeout=60)
                    with lock:
                        results.append((kind, (a, out)))
                except Exception as exc:  # noqa: BLE001 - recorded and checked below
                    with lock:
                        results.append((kind, exc))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        rt.close()
        assert not client_errors, client_errors
        assert len(results) == 1000
        for kind, value in results:
            if kind == "fault":
                assert isinstance(value, KernelFault), value
            else:
                assert not isinstance(value, Exception), value
                a, out = value
                if kind == "mm":
                    check_mm(out, A + a)
                elif kind == "fill":
                    assert out["X"] == b"\xab" * 4096
                else:
                    assert out["X"] == bytes(4096)
    time.sleep(0.5)
    assert child_pids() <= kids_before, "worker processes leaked"
    leaked = open_fds() - fds_before
    assert not leaked, f"file descriptors leaked: {[os.readlink(f'/proc/self/fd/{fd}') for fd in leaked if os.path.exists(f'/proc/self/fd/{fd}')]}"


def test_idle_worker_death_is_noticed_and_costs_no_invocation(tmp_path):
    rt = make_runtime(tmp_path, "host-multiprocess", workers=2)
    try:
        engine = rt.engine()
        check_mm(rt.invoke("mm", {"A": A.tobytes()}), A)
        old = {kill_worker(engine, i, signal.SIGKILL) for i in range(2)}  # both die while idle
        for _ in range(3):  # none of these may fail: they were never started on a dead worker
            check_mm(rt.invoke("mm", {"A": A.tobytes()}), A)  # run on this thread
            check_mm(rt.invoke_async("mm", {"A": A.tobytes()}).result(), A)  # queued
        end = time.monotonic() + 10  # a worker nobody used since is noticed by its idle check
        while engine.metrics.respawns < 2 and time.monotonic() < end:
            time.sleep(0.01)
        assert engine.metrics.respawns >= 2
        assert not old & {s.pid for s in engine.slots}
    finally:
        rt.close()


def _settling_thread(engine, rt, name, inputs, how):
    """Start ``name`` through ``engine.call`` or ``engine.submit``; return (future, list that
    receives the id of the thread that settled it)."""
    from pappus.engine import Invocation

    inv = Invocation(rt.function_spec(name), inputs, 30.0, "default")
    settled_by: list[int] = []
    inv.future.add_done_callback(lambda _f: settled_by.append(threading.get_ident()))
    return getattr(engine, how)(inv), settled_by


def test_a_waiting_caller_runs_its_invocation_on_its_own_thread_when_a_worker_is_idle(tmp_path):
    rt = make_runtime(tmp_path, "host-multiprocess", workers=2)
    try:
        engine = rt.engine()
        fut, settled_by = _settling_thread(engine, rt, "mm", {"A": A.tobytes()}, "call")
        assert fut.done() and settled_by == [threading.get_ident()]  # no hand-off to a supervisor thread
        check_mm(fut.result(), A)
        fut, settled_by = _settling_thread(engine, rt, "mm", {"A": A.tobytes()}, "submit")
        check_mm(fut.result(timeout=30), A)
        assert settled_by and settled_by != [threading.get_ident()]  # queued: a supervisor thread ran it
        assert engine.metrics.submitted == 2
    finally:
        rt.close()


def test_the_sequential_engine_keeps_a_device_whose_abort_cannot_end_a_run_on_its_own_thread(tmp_path):
    """The host device cannot stop a running kernel (``abort_ends_run`` False): a caller's thread
    running it could be kept past the deadline, so the engine thread runs it, as queued."""
    rt = make_runtime(tmp_path, "host-sequential")
    try:
        engine = rt.engine()
        rt.invoke("nap", {})
        assert not engine.executor.device.abort_ends_run
        fut, settled_by = _settling_thread(engine, rt, "mm", {"A": A.tobytes()}, "call")
        check_mm(fut.result(timeout=30), A)
        assert settled_by and settled_by != [threading.get_ident()]
    finally:
        rt.close()


def test_a_waiting_caller_queues_when_every_worker_is_busy(tmp_path):
    rt = make_runtime(tmp_path, "host-multiprocess", workers=2)
    rt.register_function("slow", sleep_config(400))
    try:
        engine = rt.engine()
        busy = [rt.invoke_async("slow", {}) for _ in range(2)]
        end = time.monotonic() + 20
        while not all(s.current for s in engine.slots):
            assert time.monotonic() < end, "the slow invocations never started"
            time.sleep(0.005)
        t0 = time.monotonic()
        fut, settled_by = _settling_thread(engine, rt, "mm", {"A": A.tobytes()}, "call")
        assert time.monotonic() - t0 < 0.3 and not fut.done(), "call must queue, not wait for a worker"
        check_mm(fut.result(timeout=30), A)
        assert settled_by != [threading.get_ident()]
        wait(busy, timeout=30)
    finally:
        rt.close()


def test_callers_on_their_own_threads_do_not_starve_the_queue(tmp_path):
    """One caller invoking back to back on a one-worker engine finds it idle between its own
    invocations; queued work must still get the worker as soon as the one running ends."""
    rt = make_runtime(tmp_path, "host-multiprocess", workers=1)
    try:
        rt.invoke("nap", {})
        done = 0
        stop = threading.Event()

        def caller() -> None:
            nonlocal done
            while not stop.is_set() and done < 100:
                rt.invoke("nap", {})  # 20 ms each
                done += 1

        t = threading.Thread(target=caller)
        t.start()
        try:
            time.sleep(0.1)
            queued = rt.invoke_async("mm", {"A": A.tobytes()})
            at = done
            check_mm(queued.result(timeout=30), A)
            assert done - at <= 2, f"the queued invocation waited for {done - at} of the caller's invocations"
        finally:
            stop.set()
            t.join(30)
    finally:
        rt.close()


def test_past_its_deadline_a_callers_worker_is_not_reused_until_dealt_with(tmp_path):
    """The caller learns at the deadline; the worker, still running the hung kernel, goes to
    its supervisor thread, and the next invocation must not take its stale answer for its own."""
    rt = make_runtime(tmp_path, "host-multiprocess", workers=1)
    try:
        engine = rt.engine()
        t0 = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            rt.invoke("sleep", {}, deadline=0.2)  # the kernel sleeps 1.5 s and cannot be aborted
        assert time.monotonic() - t0 < 1.0, "the caller must learn at the deadline, not after the grace"
        check_mm(rt.invoke("mm", {"A": A.tobytes()}, deadline=30), A)
        assert engine.metrics.respawns == 0  # the worker answered within the grace and stays
        assert rt.invoke("fill", {})["X"] == b"\xab" * 4096
    finally:
        rt.close()


def test_a_worker_handed_over_at_a_deadline_is_skipped_by_the_next_caller(tmp_path):
    """Between a caller giving up at its deadline and the supervisor thread taking the worker
    back, the worker still runs the hung kernel: a caller must not drive it meanwhile. The
    supervisor thread's wake-up is held back (it still looks every IDLE_CHECK seconds), so the
    next invocation arrives inside that window."""
    rt = make_runtime(tmp_path, "host-multiprocess", workers=1)
    try:
        engine = rt.engine()
        engine.queue.wake = lambda: None  # the supervisor thread notices the handover by itself
        with pytest.raises(DeadlineExceeded):
            rt.invoke("sleep", {}, deadline=0.2)  # the kernel sleeps 1.5 s and cannot be aborted
        check_mm(rt.invoke("mm", {"A": A.tobytes()}, deadline=30), A)
        assert engine.metrics.outcomes == {"deadline_exceeded": 1, "ok": 1}
        # The worker answered the hung invocation within the grace and stays. A caller that had
        # driven it would have read that stale answer as its own and had the worker replaced
        # (its invocation then retried on the replacement, so the outcomes alone cannot tell).
        assert engine.metrics.respawns == 0
    finally:
        rt.close()


def test_a_caller_interrupted_mid_invocation_leaves_a_working_engine(tmp_path):
    rt = make_runtime(tmp_path, "host-multiprocess", workers=1)
    try:
        engine = rt.engine()
        rt.invoke("nap", {})
        main = threading.get_ident()
        timer = threading.Timer(0.2, lambda: signal.pthread_kill(main, signal.SIGINT))
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            timer.start()
            with pytest.raises(KeyboardInterrupt):
                rt.invoke("sleep", {}, deadline=30)
        finally:
            timer.join()
            signal.signal(signal.SIGINT, previous)
        check_mm(rt.invoke("mm", {"A": A.tobytes()}, deadline=30), A)  # on the respawned worker
        assert engine.metrics.respawns == 1
        assert engine.metrics.outcomes.get("worker_lost") == 1
    finally:
        rt.close()


def test_queued_work_moves_to_the_replacement_of_a_stuck_engine(tmp_path):
    """A kernel that cannot be stopped takes its engine out of service; what was queued behind
    it never started, so it runs on the replacement instead of failing."""
    from pappus.engine import EngineOptions

    opts = EngineOptions(pool_bytes=4 << 20, abort_grace=0.3)
    rt = pappus.Runtime(engine="host-sequential", state_dir=tmp_path / "state",
                        engine_options={"host-sequential": opts})
    try:
        rt.register_library("m", HOST_LIB)
        rt.register_function("mm", matmul_config(repeat=2))
        rt.register_function("stuck", sleep_config(3000))
        first = rt.engine()
        stuck = rt.invoke_async("stuck", {}, deadline=0.2)
        queued = [rt.invoke_async("mm", {"A": A.tobytes()}, deadline=30) for _ in range(5)]
        with pytest.raises(DeadlineExceeded):
            stuck.result(timeout=10)
        for fut in queued:
            check_mm(fut.result(timeout=30), A)
        assert rt.engine() is not first and not first.healthy
    finally:
        rt.close()


class _ProcessBoundHost:
    """The host backend, declared as one whose faults end the process's use of the device (CUDA)."""

    @pappus.hookimpl
    def pappus_register_backends(self, registry):
        import dataclasses

        from pappus.devices.host import HOST_BACKEND

        registry.add(dataclasses.replace(HOST_BACKEND, name="hostproc", faults_end_process=True))


def test_sequential_engine_drives_a_process_bound_device_from_one_worker(tmp_path):
    """Backend.faults_end_process: the sequential engine's device lives in one worker process
    (never in the supervisor), whose death fails only what it ran and which is replaced."""
    from pappus.engine import WorkerSequentialEngine
    from pappus.plugins import Plugins

    plugins = Plugins().load()
    plugins.register_module(_ProcessBoundHost(), "hostproc")
    rt = pappus.Runtime(engine="hostproc-sequential", state_dir=tmp_path / "state", pool_bytes=4 << 20,
                        workers=3, plugins=plugins)
    try:
        rt.register_library("m", HOST_LIB)
        rt.register_function("mm", matmul_config(repeat=2))
        rt.register_function("fault", fault_config())
        rt.register_function("sleep", sleep_config(1500))
        check_mm(rt.invoke("mm", {"A": A.tobytes()}), A)
        engine = rt.engine("hostproc-sequential")
        assert isinstance(engine, WorkerSequentialEngine) and engine.kind == "sequential"
        assert engine.workers == 1  # one device, one invocation at a time, whatever workers= says
        pid = engine.worker_pids()[0]
        assert pid is not None and pid != os.getpid()
        with pytest.raises(KernelFault):
            rt.invoke("fault", {})
        check_mm(rt.invoke("mm", {"A": A.tobytes()}), A)
        with pytest.raises(DeadlineExceeded):
            rt.invoke("sleep", {}, deadline=0.2)
        check_mm(rt.invoke("mm", {"A": A.tobytes()}, deadline=30), A)
        # the device's process lost (as after a sticky CUDA error): it is replaced, the engine serves
        assert kill_worker(engine, 0, signal.SIGKILL) == pid
        check_mm(rt.invoke("mm", {"A": A.tobytes()}, deadline=30), A)
        assert engine.worker_pids()[0] not in (None, pid) and engine.metrics.respawns >= 1
    finally:
        rt.close(drain=False, timeout=10)
