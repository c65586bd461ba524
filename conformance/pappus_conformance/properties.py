"""The isolation properties the suite proves (docs/conformance-ci.md): each a module of the suite,
and the capability it needs."""

from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Property:
    capability: str | None
    summary: str


PROPERTIES = {
    "zeroing": Property("zeroing", "nothing an invocation wrote is readable by any later one, whatever "
                                   "happened to the writer"),
    "malloc_heap": Property("malloc_heap_limit", "device malloc gets no memory by default and exactly the "
                                                 "configured heap otherwise; the engine survives every case"),
    "fault_containment": Property("fault_containment", "a faulting invocation fails alone, with the cause; "
                                                       "others complete; the engine serves again promptly"),
    "bounded_execution": Property("watchdog", "a kernel that never ends is stopped at its deadline"),
    "no_host_escape": Property("sandbox", "kernel code cannot make system calls or touch host memory"),
    "signatures": Property("signatures", "a launch that does not fit the kernel's real parameters is refused "
                                         "at registration, every mismatch at its field, and never runs; "
                                         "one that fits gets every argument bit-exact"),
}


def property_of(item: pytest.Item) -> str:
    stem = item.path.stem if hasattr(item, "path") else str(item.fspath).rsplit("/", 1)[-1][:-3]
    return stem.removeprefix("test_")
