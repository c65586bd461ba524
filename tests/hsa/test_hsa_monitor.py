"""HsaFaultMonitor end to end against a fake runtime library (csrc/fake_hsa.c): dlopen through
the lookup override, hsa_init, registration of the real cffi callback, faults delivered from the
"runtime's" own pthread, stop semantics, and the failure paths."""

from __future__ import annotations

import shutil
import threading

import pytest

from pappus.errors import DeviceError
from pappus.interfaces import FaultEvent, FaultMonitor
from pappus_hsa import binding
from pappus_hsa.monitor import HsaFaultMonitor

from .hsa_support import Helper, fault, make_events

HSA_STATUS_ERROR_OUT_OF_RESOURCES = 0x1008


class Collector(list):
    def __init__(self) -> None:
        super().__init__()
        self.threads: set[str] = set()

    def __call__(self, event: FaultEvent) -> None:
        self.append(event)
        self.threads.add(threading.current_thread().name)


@pytest.fixture
def fake(helper_path, tmp_path):
    """A private copy of the fake runtime (its own static state), configured to work."""
    path = tmp_path / "libhsa-runtime64.so.1"
    shutil.copy(helper_path, path)
    h = Helper(path)  # same path => the same dlopen handle the monitor gets
    h.lib.fake_hsa_configure(0, 0)
    return h


def test_is_a_fault_monitor():
    assert issubclass(HsaFaultMonitor, FaultMonitor)
    assert HsaFaultMonitor.name == "hsa"


def test_start_registers_once_and_faults_arrive_from_the_runtime_thread(fake, monkeypatch):
    monkeypatch.setenv(binding.ENV_LIBRARY, str(fake.path))  # the lookup override
    monitor = HsaFaultMonitor()
    avail = monitor.availability()
    assert avail and str(fake.path) in avail.reason
    assert fake.counts() == {"inits": 1, "shut_downs": 1, "refcount": 0, "handlers": 0}

    got = Collector()
    monitor.start(got)
    monitor.start(Collector())  # idempotent: no second registration, the first on_fault stays
    assert fake.counts() == {"inits": 2, "shut_downs": 1, "refcount": 1, "handlers": 1}
    assert monitor.running

    events = make_events(fault(0xAB, 0x7000_1000, 0b1001), (1, 0xAB, 0, 0), fault(0xCD, 0x42, 1 << 31))
    handled, unhandled = fake.fire(events)
    assert (handled, unhandled) == (2, 1)  # the non-fault event is left to the runtime
    assert monitor.wait_idle(5)
    assert [(e.address, e.reasons, e.agent) for e in got] == [
        (0x7000_1000, ("page_not_present", "host_only"), "hsa:0xab"),
        (0x42, ("hang",), "hsa:0xcd")]
    assert got.threads == {"pappus-hsa-faults"}
    stats = monitor.stats()
    assert stats["library"] == str(fake.path)
    assert (stats["faults"], stats["ignored"], stats["delivered"], stats["callback_errors"]) == (2, 1, 2, 0)
    assert monitor.availability().reason.endswith("fault handler registered")

    # stop(): nothing more is delivered, and the runtime's default handling applies again
    monitor.stop()
    monitor.stop()
    assert not monitor.running
    assert fake.fire(events) == (0, 3)
    assert len(got) == 2

    # start again: subscribes without touching HSA
    again = Collector()
    monitor.start(again)
    assert fake.counts()["handlers"] == 1 and fake.counts()["inits"] == 2
    assert fake.fire(events, repeat=10) == (20, 10)
    assert monitor.wait_idle(5)
    assert len(again) == 20
    monitor.stop()


def test_monitors_share_one_registration_per_process(fake):
    a, b = HsaFaultMonitor(library=str(fake.path)), HsaFaultMonitor(library=str(fake.path))
    got_a, got_b = Collector(), Collector()
    a.start(got_a)
    b.start(got_b)
    assert fake.counts()["handlers"] == 1 and fake.counts()["refcount"] == 1
    assert fake.fire(make_events(fault(1, 0x1000))) == (1, 0)
    assert a.wait_idle(5)
    assert len(got_a) == len(got_b) == 1
    a.stop()
    assert fake.fire(make_events(fault(1, 0x2000))) == (1, 0)  # b still listens
    assert b.wait_idle(5)
    assert len(got_a) == 1 and len(got_b) == 2
    b.stop()
    assert fake.fire(make_events(fault(1, 0x3000))) == (0, 1)


def test_fault_storm_through_the_monitor(fake):
    monitor = HsaFaultMonitor(library=str(fake.path), capacity=128)
    got = Collector()
    monitor.start(got)
    events = make_events(*[fault(7, 0x10_0000 + i, 1) for i in range(1000)])
    handled, unhandled = fake.fire(events, repeat=5)
    assert (handled, unhandled) == (5000, 0)
    assert monitor.wait_idle(10)
    stats = monitor.stats()
    assert stats["callback_errors"] == 0
    assert stats["accepted"] + stats["dropped"] == 5000
    assert stats["delivered"] == stats["accepted"] == len(got)
    assert stats["capacity"] == 128 and stats["high_water"] <= 128
    monitor.stop()


def test_hsa_init_failure_is_reported_with_the_status(fake):
    fake.lib.fake_hsa_configure(HSA_STATUS_ERROR_OUT_OF_RESOURCES, 0)
    monitor = HsaFaultMonitor(library=str(fake.path))
    avail = monitor.availability()
    assert not avail
    assert avail.reason.startswith("hsa_init failed: HSA_STATUS_ERROR_OUT_OF_RESOURCES (0x1008): "
                                   "fake runtime out of resources")
    with pytest.raises(DeviceError) as info:
        monitor.start(lambda e: None)
    assert info.value.api == "hsa_init" and info.value.status == "HSA_STATUS_ERROR_OUT_OF_RESOURCES"
    assert not monitor.running
    assert fake.counts()["handlers"] == 0


def test_registration_failure_releases_the_runtime(fake):
    fake.lib.fake_hsa_configure(0, 0x1000)
    monitor = HsaFaultMonitor(library=str(fake.path))
    with pytest.raises(DeviceError) as info:
        monitor.start(lambda e: None)
    assert info.value.api == "hsa_amd_register_system_event_handler"
    assert info.value.status == "HSA_STATUS_ERROR"
    assert "hsa_amd_register_system_event_handler failed: HSA_STATUS_ERROR (0x1000)" in str(info.value)
    assert fake.counts()["refcount"] == 0  # hsa_init was undone
    fake.lib.fake_hsa_configure(0, 0)
    monitor.start(lambda e: None)  # a later start can still succeed
    assert fake.counts()["handlers"] == 1
    monitor.stop()


def test_on_fault_must_be_callable(fake):
    with pytest.raises(TypeError):
        HsaFaultMonitor(library=str(fake.path)).start(None)  # type: ignore[arg-type]


def test_availability_never_raises(monkeypatch):
    import pappus_hsa.monitor as mod

    monkeypatch.setattr(mod, "_probe", lambda library: 1 / 0)
    avail = HsaFaultMonitor().availability()
    assert not avail and avail.reason.startswith("ZeroDivisionError")


def test_stop_before_start_and_wait_idle_are_harmless():
    monitor = HsaFaultMonitor(library="/nonexistent/libhsa-runtime64.so.1")
    monitor.stop()
    assert monitor.wait_idle(0) is True
    assert monitor.stats() == {"running": False}


def test_a_forked_child_does_not_inherit_a_working_monitor(fake):
    """The runtime and the dispatcher do not survive fork(): in the child, the inherited monitor
    is not running, and starting one on the parent's runtime is refused with the reason."""
    import os

    monitor = HsaFaultMonitor(library=str(fake.path))
    monitor.start(lambda e: None)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report through the pipe, never return into pytest
        code = 1
        try:
            lines = [str(monitor.running)]
            try:
                HsaFaultMonitor(library=str(fake.path)).start(lambda e: None)
                lines.append("started")
            except DeviceError as exc:
                lines.append(f"{exc.api}: {exc}")
            lines.append(HsaFaultMonitor(library=str(fake.path)).availability().reason)
            os.write(write, "\n".join(lines).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as fh:
        out = fh.read().splitlines()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert out[0] == "False"
    assert out[1].startswith("fork: hsa fault monitor cannot start: this process was forked")
    assert out[2].startswith("this process was forked from one that had initialised")
    assert monitor.running  # the parent is unaffected
    monitor.stop()
