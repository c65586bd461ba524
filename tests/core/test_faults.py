"""Fault monitors in the engine kit: a device fault fails exactly the invocation it belongs to.

The monitor here is scripted (it emits events when told); the attribution and the engine's
handling of the attributed fault are the real code. The HSA monitor's own event path is tested
against real C structs in tests/hsa.
"""

from __future__ import annotations

import threading
import time

import pytest

import pappus
from pappus.engine import EngineOptions
from pappus.interfaces import Availability, FaultEvent, FaultMonitor

from .helpers import HOST_LIB, matmul_config

TWOS = (2).to_bytes(8, "little") * 16  # zeros times zeros, plus 2


class ScriptedMonitor(FaultMonitor):
    name = "scripted"
    started: list[ScriptedMonitor] = []

    def availability(self) -> Availability:
        return Availability(True)

    def start(self, on_fault) -> None:
        self.on_fault = on_fault
        ScriptedMonitor.started.append(self)

    def stop(self) -> None:
        pass


def naps(count: int) -> dict:
    """Many short launches: an aborted host device stops at the next one."""
    return {
        "schema": "pappus/function@1", "library": "m", "kernels": ["sleep_ms"],
        "blueprint": {"inputs": [], "buffers": {"X": 64}, "outputs": ["X"], "control_flow": [
            {"Repeat": {"times": count, "body": [
                {"ExecKernel": {"name": "sleep_ms", "args": [{"Constant": {"type": "u64", "value": 10}}],
                                "grid": [1], "block": [1]}}]}}]},
    }


@pytest.fixture
def rt(tmp_path):
    ScriptedMonitor.started.clear()
    options = EngineOptions(pool_bytes=1 << 20, fault_monitors=(ScriptedMonitor,))
    runtime = pappus.Runtime(engine="host-sequential", state_dir=tmp_path,
                             engine_options={"host-sequential": options})
    runtime.register_library("m", HOST_LIB)
    runtime.register_function("naps", naps(300))
    runtime.register_function("mm", matmul_config(repeat=1))
    yield runtime
    runtime.close(drain=False)


def fire_when_running(rt, event_for):
    engine = rt.engine()
    monitor = ScriptedMonitor.started[-1]

    def fire():
        while engine._current is None:
            time.sleep(0.005)
        time.sleep(0.05)
        monitor.on_fault(event_for(engine.executor.pool))

    t = threading.Thread(target=fire)
    t.start()
    return t


def test_fault_in_pool_fails_that_invocation_with_address(rt):
    t = fire_when_running(rt, lambda pool: FaultEvent(address=pool.base + 64, reasons=("page_not_present",)))
    t0 = time.monotonic()
    with pytest.raises(pappus.KernelFault) as info:
        rt.invoke("naps", {}, deadline=30)
    t.join()
    err = info.value
    assert err.attribution == "matched"
    assert err.reasons == ["page_not_present"]
    assert err.address == rt.engine().executor.pool.base + 64
    assert time.monotonic() - t0 < 2.5, "the device is aborted when a fault is attributed"
    assert rt.invoke("mm", {"A": bytes(8 * 16)})["B"] == TWOS  # serves again


def test_fault_outside_any_pool_fails_all_on_agent(rt):
    t = fire_when_running(rt, lambda pool: FaultEvent(address=pool.base + pool.size + 4096, reasons=("nx",)))
    with pytest.raises(pappus.KernelFault) as info:
        rt.invoke("naps", {}, deadline=30)
    t.join()
    assert info.value.attribution == "agent"
    assert "failing all invocations" in str(info.value)


def test_fault_with_nothing_in_flight_is_an_orphan(rt):
    rt.invoke("mm", {"A": bytes(8 * 16)})
    attributor = rt.engine().executor.attributor
    ScriptedMonitor.started[-1].on_fault(FaultEvent(address=0x1000, reasons=()))
    assert attributor.stats()["orphans"] == 1
    assert rt.invoke("mm", {"A": bytes(8 * 16)})["B"] == TWOS
