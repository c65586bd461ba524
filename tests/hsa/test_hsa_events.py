"""The real event path without a GPU: real ``hsa_amd_event_t`` structs, built through the
binding's declarations, handed to the actual cffi callback object, called through its C
function-pointer type from Python and from foreign (C-created) pthreads."""

from __future__ import annotations

import threading
import time

import pytest

from pappus.interfaces import FaultEvent
from pappus_hsa.binding import HSA_STATUS_ERROR, HSA_STATUS_SUCCESS, ffi
from pappus_hsa.events import EventHub, FaultChannel, HsaFault

from .hsa_support import fault, make_events

AGENT = 0x5A5A0000


class Collector:
    def __init__(self) -> None:
        self.events: list[FaultEvent] = []
        self.threads: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, event: FaultEvent) -> None:
        with self.lock:
            self.events.append(event)
            self.threads.add(threading.current_thread().name)


@pytest.fixture
def hub():
    h = EventHub(capacity=64, name="test-hsa-faults")
    yield h
    h.close()


def as_c_pointer(hub: EventHub):
    """The callback as the runtime holds it: a plain C function pointer."""
    fn = ffi.cast("hsa_amd_system_event_callback_t", hub.callback)
    assert ffi.typeof(fn) is ffi.typeof("hsa_amd_system_event_callback_t")
    return fn


def test_fault_through_the_c_function_pointer(hub):
    got = Collector()
    hub.subscribe(got)
    events = make_events(fault(AGENT, 0x7FFF_0000_1234, 0b101))
    before = time.monotonic()
    assert as_c_pointer(hub)(events, ffi.NULL) == HSA_STATUS_SUCCESS
    assert hub.wait_idle(5)
    assert got.events == [FaultEvent(address=0x7FFF_0000_1234, reasons=("page_not_present", "nx"),
                                     agent=f"hsa:0x{AGENT:x}", timestamp=got.events[0].timestamp)]
    assert before <= got.events[0].timestamp <= time.monotonic()
    assert got.threads == {"test-hsa-faults"}  # delivered on the dispatcher, not the caller
    assert hub.stats()["callback_errors"] == 0


def test_event_is_copied_out_of_the_c_struct(hub):
    """Overwriting (or freeing) the C struct after the callback returns changes nothing."""
    got = Collector()
    hub.subscribe(got)
    block = threading.Event()
    hub.subscribe(lambda e: block.wait(5))  # keep the dispatcher busy so the fault waits in the channel
    events = make_events(fault(AGENT, 0x1000, 1), fault(AGENT, 0x2000, 2))
    fn = as_c_pointer(hub)
    fn(events, ffi.NULL)
    fn(events + 1, ffi.NULL)
    events[0].memory_fault.virtual_address = 0xBAD
    events[1].memory_fault.fault_reason_mask = 0xFF
    del events
    block.set()
    assert hub.wait_idle(5)
    assert [(e.address, e.reasons) for e in got.events] == [(0x1000, ("page_not_present",)),
                                                            (0x2000, ("read_only",))]


def test_hsa_fault_is_immutable():
    f = HsaFault(agent_handle=1, address=2, reason_mask=1, reasons=("page_not_present",), timestamp=0.0)
    with pytest.raises(AttributeError):
        f.address = 3  # type: ignore[misc]
    assert f.to_fault_event() == FaultEvent(2, ("page_not_present",), "hsa:0x1", 0.0)


def test_non_fault_events_are_ignored_and_counted(hub):
    got = Collector()
    hub.subscribe(got)
    events = make_events((1, AGENT, 0x1000, 1), (2, AGENT, 0x2000, 1), (0x7FFFFFFF, 0, 0, 0))
    fn = as_c_pointer(hub)
    # Not ours: answered HSA_STATUS_ERROR so the runtime (or another handler) deals with them.
    assert [fn(events + i, ffi.NULL) for i in range(3)] == [HSA_STATUS_ERROR] * 3
    assert fn(ffi.NULL, ffi.NULL) == HSA_STATUS_ERROR
    assert hub.wait_idle(5)
    stats = hub.stats()
    assert got.events == []
    assert (stats["ignored"], stats["invalid"], stats["faults"], stats["events"]) == (3, 1, 0, 4)
    assert stats["callback_errors"] == 0


def test_nobody_listening_means_runtime_default(hub):
    """Without subscribers (every monitor stopped) faults are answered HSA_STATUS_ERROR."""
    fn = as_c_pointer(hub)
    events = make_events(fault(AGENT, 0x1000))
    assert fn(events, ffi.NULL) == HSA_STATUS_ERROR
    got = Collector()
    sub = hub.subscribe(got)
    assert fn(events, ffi.NULL) == HSA_STATUS_SUCCESS
    assert hub.wait_idle(5)
    hub.unsubscribe(sub)
    assert fn(events, ffi.NULL) == HSA_STATUS_ERROR
    assert len(got.events) == 1
    assert hub.stats()["unhandled"] == 2


def test_unsubscribed_gets_nothing_already_queued(hub):
    """stop() semantics: faults still in the channel are not delivered to a stopped monitor."""
    got, other = Collector(), Collector()
    release = threading.Event()
    hub.subscribe(lambda e: release.wait(5))
    sub = hub.subscribe(got)
    hub.subscribe(other)
    fn = as_c_pointer(hub)
    events = make_events(fault(AGENT, 0x1000), fault(AGENT, 0x2000))
    fn(events, ffi.NULL)  # the dispatcher blocks in the first subscriber on this one
    time.sleep(0.05)
    fn(events + 1, ffi.NULL)  # this one waits in the channel
    hub.unsubscribe(sub)
    release.set()
    assert hub.wait_idle(5)
    assert [e.address for e in other.events] == [0x1000, 0x2000]
    assert got.events == []


def test_an_exception_inside_the_callback_never_reaches_c(hub, monkeypatch, capfd):
    got = Collector()
    hub.subscribe(got)

    def broken(info, now):
        raise MemoryError("simulated")

    monkeypatch.setattr(hub, "_copy_fault", broken)
    events = make_events(fault(AGENT, 0x1000))
    fn = as_c_pointer(hub)
    assert fn(events, ffi.NULL) == HSA_STATUS_SUCCESS  # someone listens: handled, not abort()
    stats = hub.stats()
    assert stats["callback_errors"] == 1
    assert hub.last_callback_error == "MemoryError: simulated"
    assert "Traceback" not in capfd.readouterr().err  # onerror consumed it; cffi printed nothing
    hub.close()
    assert fn(events, ffi.NULL) == HSA_STATUS_ERROR  # closed: nobody listens any more
    assert hub.stats()["callback_errors"] == 2


def test_a_failing_subscriber_does_not_stop_delivery(hub, caplog):
    got = Collector()

    def bad(event):
        raise RuntimeError("subscriber bug")

    bad_sub = hub.subscribe(bad)
    hub.subscribe(got)
    fn = as_c_pointer(hub)
    events = make_events(fault(AGENT, 0x1000), fault(AGENT, 0x2000))
    fn(events, ffi.NULL)
    fn(events + 1, ffi.NULL)
    assert hub.wait_idle(5)
    assert [e.address for e in got.events] == [0x1000, 0x2000]
    assert bad_sub.errors == 2 and bad_sub.delivered == 0
    assert hub.stats()["callback_errors"] == 0


def test_foreign_thread_delivery(hub, helper):
    got = Collector()
    hub.subscribe(got)
    specs = [fault(AGENT + i % 2, 0x10_0000 + i * 0x1000, 1 << (i % 7)) for i in range(20)]
    events = make_events(*specs)
    ok, other = helper.pump(hub.callback, events, repeat=1, threads=1)
    assert (ok, other) == (20, 0)
    assert hub.wait_idle(5)
    assert [(e.agent, e.address, e.reasons) for e in got.events] == [
        (f"hsa:0x{a:x}", addr, (("page_not_present", "read_only", "nx", "host_only", "dramecc",
                                 "imprecise", "sramecc")[i % 7],))
        for i, (_, a, addr, _) in enumerate(specs)]
    assert got.threads == {"test-hsa-faults"}


def test_fault_storm_from_foreign_threads(helper):
    """Thousands of faults from 4 C threads at once into a small channel: nothing escapes the
    callback, memory stays bounded, and every event is either delivered or counted as dropped."""
    hub = EventHub(capacity=256, name="storm")
    try:
        got = Collector()
        slow = threading.Event()

        def slow_consumer(event):
            got(event)
            if not slow.is_set():
                time.sleep(0.0005)

        hub.subscribe(slow_consumer)
        specs = [fault(AGENT, 0x4000_0000 + i * 8, 1 | (i & 0x7E)) for i in range(500)]
        events = make_events(*specs)
        non_fault = make_events((1, AGENT, 0, 0))
        ok, other = helper.pump(hub.callback, events, repeat=4, threads=4)  # 8000 faults
        ok2, other2 = helper.pump(hub.callback, non_fault, repeat=100, threads=2)
        slow.set()
        assert hub.wait_idle(10)
        stats = hub.stats()
        total = 500 * 4 * 4
        assert (ok, other) == (total, 0)  # every fault handled: no abort() for anyone
        assert (ok2, other2) == (0, 200)  # non-fault events are not claimed
        assert stats["callback_errors"] == 0
        assert stats["faults"] == total and stats["ignored"] == 200
        assert stats["accepted"] + stats["dropped"] == total
        assert stats["dropped"] > 0, "the storm should overflow a 256-slot channel"
        assert stats["high_water"] <= 256
        assert stats["dispatched"] == stats["accepted"] == len(got.events)
        assert stats["pending"] == 0
        # what was delivered is intact
        addresses = {0x4000_0000 + i * 8 for i in range(500)}
        assert all(e.address in addresses and e.reasons[0] == "page_not_present" for e in got.events)
    finally:
        hub.close()


def test_channel_is_bounded_and_counts_drops():
    ch = FaultChannel(capacity=3)
    assert [ch.offer(i) for i in range(5)] == [True, True, True, False, False]
    assert (ch.accepted, ch.dropped, len(ch)) == (3, 2, 3)
    assert ch.take(0) == 0
    ch.done()
    assert not ch.wait_idle(0.01)
    assert ch.offer(5)
    assert [ch.take(0) for _ in range(3)] == [1, 2, 5]
    for _ in range(3):
        ch.done()
    assert ch.wait_idle(0)
    assert ch.take(0.01) is None
    ch.close()
    assert ch.take() is None
    assert not ch.offer(6) and ch.dropped == 3
    with pytest.raises(ValueError):
        FaultChannel(0)
