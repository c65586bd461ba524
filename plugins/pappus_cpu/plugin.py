"""Registers the ``cpu`` backend. Importing this module compiles and spawns nothing."""

from __future__ import annotations

import os
import platform
import shutil
from typing import Any

from pappus import seccomp
from pappus.hookspecs import hookimpl
from pappus.interfaces import Availability, Backend, DeviceSpec, capabilities

from .driver import CpuDriver


def check() -> Availability:
    """Can the CPU backend run here? Cheap: looks for a compiler and kernel support, builds nothing."""
    if platform.system() != "Linux":
        return Availability(False, f"needs Linux (seccomp, memfd, fork); this is {platform.system()}")
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64", "aarch64", "arm64"):
        return Availability(False, f"needs an x86-64 or aarch64 host; this is {machine}")
    from .native import find_cc

    if find_cc() is None:
        return Availability(False, "no C compiler found to build the device template (install gcc or set PAPPUS_CC)")
    try:
        avail = seccomp.kernel_actions()
    except seccomp.SeccompUnavailable as exc:
        return Availability(False, str(exc))
    missing = [a for a in ("trap", "allow") if a not in avail]
    if missing:
        return Availability(False, f"the kernel's seccomp lacks the actions {', '.join(missing)}")
    if not hasattr(os, "memfd_create"):
        return Availability(False, "os.memfd_create is unavailable")
    notes = []
    from .build import find_cxx

    if find_cxx() is None:
        notes.append("no C++ compiler: registered libraries run, `pappus build --targets cpu` does not")
    if shutil.which("hipcc") is None:
        notes.append("no hipcc: gfx* build targets unavailable")
    text = "kernels run in a forked child per invocation under a seccomp allow-list"
    return Availability(True, "; ".join([text, *notes]))


def _build(source: Any, out_dir: Any, targets: list[str]) -> list[Any]:
    from .build import build_library

    return build_library(source, out_dir, targets)


CPU_BACKEND = Backend(
    name="cpu",
    description="HIP kernels compiled for the host CPU; every invocation runs in a fresh forked child "
                "process under seccomp (and Landlock where available)",
    driver=CpuDriver(),
    device=lambda **options: DeviceSpec("pappus_cpu.device:create_device", options),
    check=check,
    capabilities=capabilities("zeroing", "malloc_heap_limit", "fault_containment", "watchdog", "sandbox",
                              "signatures"),
    library_suffixes=(".so",),
    build_targets=("cpu",),  # gfx* targets are the HIP backend's (pappus build routes them there)
    build=_build,
    native_target=lambda: "cpu",
    worker_keeps=frozenset({"execve"}),  # reset() starts a new device template
)


@hookimpl
def pappus_register_backends(registry: Any) -> None:
    registry.add(CPU_BACKEND)
