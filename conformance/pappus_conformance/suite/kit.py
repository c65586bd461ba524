"""Small builders for the suite's functions: launches, typed constants, the A/B tenant pattern."""

from __future__ import annotations

import struct
from typing import Any

WRITER = "tenant-a"
READER = "tenant-b"
SECRET = 0x5EC2E7A5
PROBE_BYTES = 4 * 1024 * 1024  # what a reader scans: more than any writer in the suite uses


def const(dtype: str, value: int) -> dict[str, Any]:
    return {"Constant": {"type": dtype, "value": value}}


def launch(name: str, args: list[Any], grid: int = 8, block: int = 64, shared: int = 0) -> dict[str, Any]:
    return {"name": name, "args": args, "grid": [grid], "block": [block], "shared_mem_bytes": shared}


def fill(buffer: str, pattern: int = SECRET) -> dict[str, Any]:
    return launch("fill_secret", [{"Ptr": buffer}, {"Sizeof": buffer}, const("u32", pattern)])


def register_writer(h: Any, name: str, sizes: list[int], then: dict[str, Any] | None = None,
                    tenant: str = WRITER) -> str:
    """A function that writes the secret into every byte of buffers of ``sizes`` (outputs too),
    then optionally does ``then`` (a fault, a trap, a hang)."""
    buffers = {f"X{i}": size for i, size in enumerate(sizes)}
    launches = [fill(b) for b in buffers]
    if then is not None:
        launches.append(then)
    return h.function(tenant, name, launches, buffers=buffers, outputs=["X0"])


def register_reader(h: Any, name: str, nbytes: int = PROBE_BYTES, tenant: str = READER) -> str:
    """A function that counts the nonzero bytes of a buffer it never wrote (and of its output)."""
    launches = [launch("count_nonzero", [{"Ptr": "S"}, {"Sizeof": "S"}, {"Ptr": "C"}], grid=64, block=256)]
    return h.function(tenant, name, launches, buffers={"S": nbytes, "C": 8}, outputs=["C"])


def leftovers(h: Any, name: str, tenant: str = READER) -> int:
    (count,) = struct.unpack("<Q", h.invoke(tenant, name)["C"])
    return count


def register_affine(h: Any, name: str, tenant: str) -> str:
    """An honest, checkable function: out[i] = a[i] * 3 + i."""
    launches = [launch("affine", [{"Ptr": "a"}, {"Ptr": "out"}, const("u64", 512), const("i64", 3)])]
    return h.function(tenant, name, launches, inputs=[{"name": "a", "size": 512 * 8}],
                      buffers={"out": 512 * 8}, outputs=["out"])


def affine_inputs(seed: int) -> tuple[dict[str, bytes], bytes]:
    a = [(seed * 7919 + i * 31) % 100003 - 50000 for i in range(512)]
    expected = struct.pack("<512q", *[x * 3 + i for i, x in enumerate(a)])
    return {"a": struct.pack("<512q", *a)}, expected
