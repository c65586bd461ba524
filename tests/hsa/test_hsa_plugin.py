"""The ``hsa`` plugin registers its fault monitor for the HIP backend through the real hook."""

from __future__ import annotations

from importlib import metadata

import pytest

from pappus.plugins import Plugins
from pappus_hsa import plugin
from pappus_hsa.monitor import HsaFaultMonitor


def test_registers_the_monitor_for_hip():
    plugins = Plugins()
    plugins.register_module(plugin, "hsa")
    plugins.load(entry_points=[])
    entries = plugins.fault_monitors.for_backend("hip")
    assert [(e.name, e.factory, e.backends, e.plugin) for e in entries] == [
        ("hsa", HsaFaultMonitor, ("hip",), "hsa")]
    assert plugins.records["hsa"].ok and plugins.records["hsa"].fault_monitors == ["hsa"]
    assert plugins.fault_monitors.for_backend("cpu") == []
    report = plugins.report()["fault_monitors"]
    assert report[0]["name"] == "hsa" and report[0]["backends"] == ["hip"]
    assert isinstance(report[0]["available"], bool) and report[0]["reason"]


def test_entry_point_loads_the_plugin():
    eps = [ep for ep in metadata.entry_points(group="pappus") if ep.name == "hsa"]
    if not eps:
        pytest.skip("pappus is not installed with its entry points")
    assert eps[0].value == "pappus_hsa.plugin"
    plugins = Plugins().load(entry_points=eps)
    assert plugins.records["hsa"].ok, plugins.records["hsa"].error
    assert [e.name for e in plugins.fault_monitors.for_backend("hip")] == ["hsa"]
