"""The cpu backend as the plugin system sees it."""

from __future__ import annotations

import subprocess
import sys

from pappus.interfaces import Capability
from pappus.plugins import Plugins


def test_the_cpu_backend_is_registered_with_its_claims() -> None:
    plugins = Plugins().load()
    backend = plugins.backend("cpu")
    assert backend.capabilities == {Capability.ZEROING, Capability.MALLOC_HEAP_LIMIT, Capability.FAULT_CONTAINMENT,
                                    Capability.WATCHDOG, Capability.SANDBOX, Capability.SIGNATURES}
    assert backend.build_targets == ("cpu",) and backend.native_target() == "cpu"
    assert backend.build is not None
    assert backend.engine_names() == ["cpu-sequential", "cpu-multiprocess"]
    avail = plugins.availability(backend)
    assert avail.available, avail.reason


def test_importing_the_plugin_compiles_and_spawns_nothing() -> None:
    code = ("import sys, pappus_cpu.plugin, pappus_cpu.driver\n"
            "heavy = [m for m in ('pappus_cpu.device', 'pappus_cpu.native', 'numpy', 'elftools') if m in sys.modules]\n"
            "print(','.join(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
