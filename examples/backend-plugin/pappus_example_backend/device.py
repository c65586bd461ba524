"""The DeviceAPI: the CPU backend's device, plus a launch counter of its own."""

from __future__ import annotations

from typing import Any

from pappus.interfaces import DeviceInfo
from pappus_cpu.device import CpuDevice


class ExampleDevice(CpuDevice):
    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.launches = 0

    def open(self) -> DeviceInfo:
        info = super().open()
        return DeviceInfo(name=f"example ({info.name})", total_memory=info.total_memory,
                          free_memory=info.free_memory, limits=info.limits, heap_limit=info.heap_limit,
                          details={**info.details, "backend": "example"})

    def run(self, program: Any) -> None:
        self.launches += sum(1 for _ in program)
        super().run(program)


def create_device(**options: Any) -> ExampleDevice:
    return ExampleDevice(**options)
