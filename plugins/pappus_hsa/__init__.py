"""pappus_hsa: GPU memory-fault monitor on the HSA runtime (``libhsa-runtime64``), via cffi.

- :class:`pappus_hsa.monitor.HsaFaultMonitor` -- the :class:`pappus.interfaces.FaultMonitor`.
- :class:`pappus_hsa.attribution.FaultAttributor` -- fails the invocation a fault belongs to
  (generic; needs no HSA).
- :mod:`pappus_hsa.binding` -- the cffi (ABI mode) declarations, library lookup, reason decoding.
- :mod:`pappus_hsa.events` -- the C-callable handler, its bounded channel and dispatcher thread.

Importing the package is cheap: cffi and the runtime library load on first use.
"""

from __future__ import annotations

from .attribution import Attribution, FaultAttributor
from .monitor import HsaFaultMonitor

__all__ = ["HsaFaultMonitor", "FaultAttributor", "Attribution"]
