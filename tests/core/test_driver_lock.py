"""DriverLock: who drives an executor or worker now, the engine thread or an idle caller.

The engines' tests show that callers run on their own thread; these show the rule that keeps
queued work from starving behind callers that invoke back to back, which a scheduler-dependent
engine test cannot pin down: once the engine thread waits for its turn, callers stand aside,
even at an instant when the lock itself is free.
"""

from __future__ import annotations

import threading

from pappus.engine.base import DriverLock

from ..cluster.helpers import wait_for


def test_a_caller_drives_an_idle_driver_and_no_second_one_joins_it():
    lock = DriverLock()
    assert lock.try_acquire()
    assert not lock.try_acquire()
    lock.release()
    assert lock.try_acquire()
    lock.release()


def test_callers_stand_aside_while_the_engine_thread_waits_for_its_turn():
    lock = DriverLock()
    assert lock.try_acquire()  # a caller drives
    order: list[str] = []
    engine_may_finish = threading.Event()

    def engine() -> None:
        with lock.engine_turn():
            order.append("engine")
            engine_may_finish.wait(5)

    thread = threading.Thread(target=engine, daemon=True)  # a failure here must not hang the run
    thread.start()
    wait_for(lambda: lock.engine_waiting, 5, "the engine thread to wait for its turn")
    lock.release()  # the caller is done; the engine thread may not have woken yet
    assert not lock.try_acquire(), "a caller took the driver from the engine thread that waits for it"
    wait_for(lambda: order == ["engine"], 5, "the engine thread to drive")
    assert not lock.engine_waiting
    assert not lock.try_acquire()  # the engine thread drives now
    engine_may_finish.set()
    thread.join(5)
    assert lock.try_acquire()  # its turn is over: callers may drive again
    lock.release()


def test_the_engine_threads_own_upkeep_waits_like_a_plain_lock():
    lock = DriverLock()
    with lock:
        assert not lock.try_acquire()
        assert not lock.engine_waiting
    assert lock.try_acquire()
    lock.release()
