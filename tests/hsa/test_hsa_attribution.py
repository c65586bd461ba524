"""FaultAttributor: generic attribution of device faults to in-flight invocations, on its own
and fed by the real callback path (C struct -> cffi callback on a foreign thread -> dispatcher)."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import pytest

from pappus.errors import KernelFault
from pappus.interfaces import FaultEvent
from pappus_hsa.attribution import FaultAttributor
from pappus_hsa.events import EventHub

from .hsa_support import fault, make_events

GPU0, GPU1 = "hsa:0x100", "hsa:0x200"
MiB = 1 << 20


class Engine:
    """A stand-in engine: one future per invocation, failed through the attributor."""

    def __init__(self, attributor: FaultAttributor) -> None:
        self.attributor = attributor
        self.futures: dict[str, Future] = {}

    def start(self, inv: str, agent: str | None, start: int, end: int) -> Future:
        fut: Future = Future()
        self.futures[inv] = fut
        self.attributor.register(inv, agent, start, end, fut.set_exception)
        return fut

    def failed(self) -> dict[str, KernelFault]:
        return {k: f.exception() for k, f in self.futures.items() if f.done()}


@pytest.fixture
def setup():
    att = FaultAttributor()
    eng = Engine(att)
    base = 0x7F00_0000_0000
    # three invocations on GPU0 with adjacent pool slices, one on GPU1 at the same addresses
    eng.start("a", GPU0, base, base + MiB)
    eng.start("b", GPU0, base + MiB, base + 2 * MiB)
    eng.start("c", GPU0, base + 2 * MiB, base + 3 * MiB)
    eng.start("x", GPU1, base, base + 3 * MiB)
    return att, eng, base


def test_fault_address_picks_exactly_the_owning_invocation(setup):
    att, eng, base = setup
    result = att.attribute(FaultEvent(base + MiB + 0x40, ("page_not_present", "read_only"), GPU0, 1.0))
    assert result.outcome == "matched" and result.failed == ("b",)
    failed = eng.failed()
    assert list(failed) == ["b"]
    err = failed["b"]
    assert isinstance(err, KernelFault)
    assert err.address == base + MiB + 0x40
    assert err.reasons == ["page_not_present", "read_only"]
    assert err.invocation == "b" and err.agent == GPU0 and err.attribution == "matched"
    assert f"0x{base + MiB + 0x40:x}" in str(err)
    assert "write to a read-only page" in str(err)


def test_range_bounds_are_half_open(setup):
    att, eng, base = setup
    assert att.attribute(FaultEvent(base + MiB - 1, (), GPU0)).failed == ("a",)
    assert att.attribute(FaultEvent(base + 2 * MiB, (), GPU0)).failed == ("c",)
    assert set(eng.failed()) == {"a", "c"}


def test_unknown_address_fails_everything_on_that_agent_only(setup):
    att, eng, base = setup
    result = att.attribute(FaultEvent(0xDEAD_0000, ("page_not_present",), GPU0))
    assert result.outcome == "agent" and set(result.failed) == {"a", "b", "c"}
    failed = eng.failed()
    assert set(failed) == {"a", "b", "c"}  # "x" on GPU1 is untouched
    for inv, err in failed.items():
        assert err.invocation == inv
        assert err.failed_together == 3
        assert ("fault address not in any invocation's pool; failing all invocations on agent "
                f"{GPU0}") in str(err)


def test_no_invocation_in_flight_is_an_orphan():
    att = FaultAttributor()
    event = FaultEvent(0x1000, ("page_not_present",), GPU0)
    assert att.attribute(event).outcome == "orphan"
    att.register("y", GPU1, 0x1000, 0x2000, lambda e: pytest.fail("wrong agent failed"))
    assert att.attribute(event).outcome == "orphan"  # in flight, but on another agent
    assert att.orphans == 2 and list(att.recent_orphans) == [event, event]
    assert att.stats()["orphans"] == 2


def test_a_storm_fails_each_invocation_once(setup):
    att, eng, base = setup
    calls: list[str] = []
    att.register("d", GPU0, base + 3 * MiB, base + 4 * MiB, lambda e: calls.append("d"))
    outcomes = [att.attribute(FaultEvent(base + 3 * MiB + i, ("page_not_present",), GPU0)).outcome
                for i in range(100)]
    assert outcomes == ["matched"] + ["repeat"] * 99
    assert calls == ["d"]
    # an unmatched storm fails the others once, then only repeats
    outcomes = [att.attribute(FaultEvent(0xBAD0 + i, (), GPU0)).outcome for i in range(10)]
    assert outcomes == ["agent"] + ["repeat"] * 9
    assert set(eng.failed()) == {"a", "b", "c"}
    assert att.stats() == {"in_flight": 5, "matched": 1, "unmatched": 1, "repeats": 108,
                           "orphans": 0, "callback_errors": 0}


def test_inexact_addresses_are_not_trusted(setup):
    att, eng, base = setup
    result = att.attribute(FaultEvent(base + 0x10, ("page_not_present", "imprecise"), GPU0))
    assert result.outcome == "agent" and set(result.failed) == {"a", "b", "c"}
    assert "fault address not exact; failing all invocations on agent" in str(result.error)


def test_event_without_address_or_agent(setup):
    att, eng, base = setup
    result = att.attribute(FaultEvent(None, ("sramecc",), None))
    assert result.outcome == "agent"
    assert set(eng.failed()) == {"a", "b", "c", "x"}  # agent unknown: every agent
    assert "at an unknown address (SRAM ECC failure)" in str(result.error)


def test_invocation_registered_without_agent_matches_every_agent():
    att = FaultAttributor()
    got: list[KernelFault] = []
    att.register("any", None, 0x1000, 0x2000, got.append)
    assert att.attribute(FaultEvent(0x1800, (), GPU1)).outcome == "matched"
    assert got[0].invocation == "any"


def test_register_and_unregister_rules():
    att = FaultAttributor()
    att.register(1, GPU0, 0x1000, 0x1000, lambda e: None)  # empty range is allowed
    with pytest.raises(ValueError, match="already registered"):
        att.register(1, GPU0, 0x1000, 0x2000, lambda e: None)
    with pytest.raises(ValueError, match="bad pool range"):
        att.register(2, GPU0, 0x2000, 0x1000, lambda e: None)
    with pytest.raises(TypeError):
        att.register(3, GPU0, 0, 1, None)  # type: ignore[arg-type]
    assert att.in_flight() == [1] and att.in_flight(GPU1) == []
    assert att.unregister(1) is True
    assert att.unregister(1) is False
    assert att.attribute(FaultEvent(0x1000, (), GPU0)).outcome == "orphan"


def test_empty_range_never_matches_by_address():
    att = FaultAttributor()
    failed: list[KernelFault] = []
    att.register("empty", GPU0, 0x1000, 0x1000, failed.append)
    result = att.attribute(FaultEvent(0x1000, (), GPU0))
    assert result.outcome == "agent"  # still fails it: it is the only one on the agent


def test_a_raising_fail_callback_does_not_stop_the_others(setup):
    att, eng, base = setup
    att.register("boom", GPU0, 0, 1, lambda e: (_ for _ in ()).throw(RuntimeError("engine bug")))
    result = att.attribute(FaultEvent(0x42, (), GPU0))
    assert set(result.failed) == {"a", "b", "c", "boom"}
    assert set(eng.failed()) == {"a", "b", "c"}
    assert att.callback_errors == 1


def test_fail_callback_may_reenter_the_attributor():
    att = FaultAttributor()
    seen = []

    def settle(err):  # an engine settling the invocation from inside the callback
        seen.append(att.unregister("r"))
        att.register("next", GPU0, 0, 1, lambda e: None)

    att.register("r", GPU0, 0x1000, 0x2000, settle)
    assert att.attribute(FaultEvent(0x1000, (), GPU0)).failed == ("r",)
    assert seen == [True] and att.in_flight() == ["next"]


def test_thread_safety_under_concurrent_use():
    att = FaultAttributor()
    failures: dict[int, int] = {}
    lock = threading.Lock()

    def fail_of(i):
        def fail(err):
            with lock:
                failures[i] = failures.get(i, 0) + 1
        return fail

    def engine(worker):
        for n in range(300):
            inv = worker * 1000 + n
            att.register(inv, GPU0, inv * 0x1000, inv * 0x1000 + 0x1000, fail_of(inv))
            if n % 3 == 0:
                att.attribute(FaultEvent(inv * 0x1000 + 8, ("page_not_present",), GPU0))
            att.unregister(inv)

    def monitor():
        for n in range(1000):
            att.attribute(FaultEvent(0xFFFF_FFFF_0000 + n, (), GPU0))

    threads = [threading.Thread(target=engine, args=(w,)) for w in range(4)]
    threads.append(threading.Thread(target=monitor))
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads)
    assert max(failures.values()) == 1  # nobody failed twice
    assert att.stats()["in_flight"] == 0
    for w in range(4):
        for n in range(0, 300, 3):
            assert failures.get(w * 1000 + n) == 1  # its own fault (or an earlier one) failed it


def test_end_to_end_from_a_foreign_thread(helper):
    """C thread -> real cffi callback -> channel -> dispatcher -> attributor -> futures."""
    att = FaultAttributor()
    eng = Engine(att)
    agent0, agent1 = 0xA000, 0xB000
    g0, g1 = f"hsa:0x{agent0:x}", f"hsa:0x{agent1:x}"
    base = 0x7E00_0000_0000
    for i in range(8):
        eng.start(f"inv{i}", g0, base + i * MiB, base + (i + 1) * MiB)
    eng.start("other-gpu", g1, base, base + 8 * MiB)
    hub = EventHub(capacity=1024)
    try:
        hub.subscribe(att)
        # one fault inside inv5's slice, a storm of repeats, a fault on agent1 outside any pool,
        # and a non-fault event
        events = make_events(fault(agent0, base + 5 * MiB + 0x123, 0b11),
                             *[fault(agent0, base + 5 * MiB + i, 1) for i in range(50)],
                             (1, agent1, base, 1),
                             fault(agent1, 0x1000, 0b100))
        ok, other = helper.pump(hub.callback, events, threads=1)
        assert (ok, other) == (52, 1)
        assert hub.wait_idle(5)
        failed = eng.failed()
        assert set(failed) == {"inv5", "other-gpu"}
        assert failed["inv5"].address == base + 5 * MiB + 0x123
        assert failed["inv5"].reasons == ["page_not_present", "read_only"]
        assert failed["inv5"].agent == g0
        assert "failing all invocations on agent " + g1 in str(failed["other-gpu"])
        assert failed["other-gpu"].reasons == ["nx"]
        assert att.stats()["repeats"] == 50
        assert hub.stats()["callback_errors"] == 0
    finally:
        hub.close()
