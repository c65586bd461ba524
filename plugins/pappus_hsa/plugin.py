"""The ``hsa`` plugin: registers the HSA GPU memory-fault monitor for the HIP backend.

Importing this module opens no library and touches no device: the monitor loads
``libhsa-runtime64`` only when asked for its availability or started.
"""

from __future__ import annotations

import pappus

from .monitor import HsaFaultMonitor


@pappus.hookimpl
def pappus_register_fault_monitors(registry) -> None:  # type: ignore[no-untyped-def]
    registry.add("hsa", HsaFaultMonitor, backends=("hip",))
