"""Deliberately broken backends: each violates one isolation property, to prove the conformance
suite catches it. Loaded with ``PAPPUS_PLUGIN_MODULES=tests.conformance.broken_backends``.

Each is the CPU backend with one thing broken, so everything else about it is real.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pappus.errors import KernelFault
from pappus.hookspecs import hookimpl
from pappus.interfaces import DeviceSpec
from pappus_cpu.device import CpuDevice
from pappus_cpu.driver import CpuDriver
from pappus_cpu.plugin import CPU_BACKEND


class NoZeroing(CpuDevice):
    """Never zeroes the pool."""

    def memset(self, address: int, value: int, nbytes: int) -> None:
        pass


class ZeroingOnlyAfterSuccess(CpuDevice):
    """Zeroes after a clean run, skips it on the error path (the bug the thesis's code had)."""

    _failed = False

    def run(self, program: Any) -> None:
        try:
            super().run(program)
        except Exception:
            self._failed = True
            raise

    def memset(self, address: int, value: int, nbytes: int) -> None:
        if self._failed:
            self._failed = False
            return
        super().memset(address, value, nbytes)


class IgnoresHeapLimit(CpuDevice):
    """Gives every invocation a 1 MiB device heap whatever the limit says."""

    def set_malloc_heap_limit(self, nbytes: int) -> int:
        super().set_malloc_heap_limit(1 << 20)
        return nbytes  # and reports the requested limit, as if it held


class BlindToHeapUse(CpuDriver):
    """Does not tell registration which kernels call malloc."""

    def inspect_library(self, data: bytes) -> Any:
        info = super().inspect_library(data)
        return replace(info, kernels={k: replace(v, uses_heap=False) for k, v in info.kernels.items()})


class SwallowsFaults(CpuDevice):
    """Reports a faulting run as a success."""

    def run(self, program: Any) -> None:
        try:
            super().run(program)
        except KernelFault:
            pass


def _spec(cls: str) -> Any:
    return lambda **options: DeviceSpec(f"tests.conformance.broken_backends:{cls}", options)


BROKEN = [
    replace(CPU_BACKEND, name="brokennozero", device=_spec("NoZeroing")),
    replace(CPU_BACKEND, name="brokenzeroerror", device=_spec("ZeroingOnlyAfterSuccess")),
    replace(CPU_BACKEND, name="brokenheap", device=_spec("IgnoresHeapLimit"), driver=BlindToHeapUse()),
    replace(CPU_BACKEND, name="brokenfaults", device=_spec("SwallowsFaults")),
    replace(CPU_BACKEND, name="stalegap", known_gaps={"test_after_success": "pretends to fail, but passes"}),
    # Not broken: claims less. Without watchdog, zeroing and fault_containment each have a test
    # that needs a second capability (not_claimed) and must still be proven.
    replace(CPU_BACKEND, name="nowatchdog",
            capabilities=frozenset(c for c in CPU_BACKEND.capabilities if c.value != "watchdog")),
]


@hookimpl
def pappus_register_backends(registry: Any) -> None:
    for backend in BROKEN:
        registry.add(backend)
