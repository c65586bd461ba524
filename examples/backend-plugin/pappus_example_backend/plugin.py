"""Registers the ``example`` backend with pappus."""

from __future__ import annotations

from typing import Any

import pappus
from pappus.interfaces import Availability, Backend, DeviceSpec, capabilities


def _check() -> Availability:
    from pappus_cpu.plugin import check  # the device it builds on must be able to run here

    return check()


def _build(source: Any, out_dir: Any, targets: list[str]) -> list[Any]:
    from pappus_cpu.build import build_library

    return build_library(source, out_dir, targets)


def _driver() -> Any:
    from pappus_cpu.driver import CpuDriver  # libraries are the CPU backend's shared objects

    return CpuDriver()


EXAMPLE = Backend(
    name="example",
    description="example out-of-tree backend: the CPU backend's device with a launch counter",
    driver=_driver(),
    device=lambda **options: DeviceSpec("pappus_example_backend.device:create_device", options),
    check=_check,
    # Claim only what the conformance suite has been run against; the rest shows as not claimed.
    capabilities=capabilities("zeroing", "fault_containment", "watchdog", "signatures"),
    library_suffixes=(".so",),
    build=_build,
    native_target=lambda: "cpu",
    # As the CPU backend's: its device's reset() starts a new template process (execve), which a
    # locked-down multiprocess worker may otherwise not do (docs/security.md).
    worker_keeps=frozenset({"execve"}),
)


@pappus.hookimpl
def pappus_register_backends(registry: Any) -> None:
    registry.add(EXAMPLE)
