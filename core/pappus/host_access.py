"""Devices whose kernels can reach the host memory of the process that drives them.

With HMM (NVIDIA's open kernel modules on Linux >= 6.1) or ATS (Grace Hopper), and on AMD GPUs
with XNACK on, a kernel may load and store any pageable host address of its process: for a
pappus worker, that is its Python heap, its arena, and the driver's copies of other tenants'
modules. Tenant code could then read or change what belongs to later tenants on that worker,
beyond everything the pool, zeroing and scrubbing protect, and a GPU worker is not sandboxed.
(The supervisor reads a worker's replies as untrusted, ``engine/replies.py``, so they at least
cannot run code in it.)

GPU backends ask the device when they open it (``CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS``,
``hipDeviceAttributePageableMemoryAccess``) and refuse such a device unless the operator has
accepted this: the device option ``allow_host_memory_access=True``, or
``PAPPUS_ALLOW_HOST_MEMORY_ACCESS=1`` in the environment (for the CLI). Either way the answer is
reported in the device's details (``pageable_memory_access``). The allowance covers the
tenants of one worker process, never the serving process: a sequential engine that drives its
device from a thread of the server refuses such a device whatever the option
(:func:`refuse_in_serving_process`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .errors import DeviceError

ALLOW_ENV = "PAPPUS_ALLOW_HOST_MEMORY_ACCESS"
#: The device details key in which a device reports whether its kernels can reach host memory.
DETAIL = "pageable_memory_access"
_TRUE = ("1", "true", "yes", "on")


def host_access_allowed(option: bool | str | None) -> bool:
    """The device option if it was given (a bool, or its text from a config), else the environment."""
    if option is None:
        option = os.environ.get(ALLOW_ENV, "")
    if isinstance(option, str):
        return option.strip().lower() in _TRUE
    return bool(option)


def _reaches(device: str) -> str:
    return f"kernels on {device} can read and write pageable host memory of the process that drives it"


def refuse_reachable_host_memory(*, device: str, reachable: bool, allowed: bool, attribute: str,
                                 remedy: str) -> None:
    """DeviceError (status ``host_memory_reachable``) if kernels on ``device`` can reach pageable
    host memory and nobody accepted that."""
    if reachable and not allowed:
        raise DeviceError(
            f"{_reaches(device)} ({attribute} is 1), so tenant code could reach past the device into what "
            f"that process holds for other tenants. {remedy}. To run anyway, knowing that tenants are then not "
            f"isolated from each other, set the device option allow_host_memory_access=True or {ALLOW_ENV}=1",
            api="open", status="host_memory_reachable", attribute=attribute)


def refuse_in_serving_process(details: Mapping[str, Any], *, device: str, engine: str) -> None:
    """DeviceError (status ``host_memory_reachable``) if a device that an engine drives from the
    serving process itself reports that its kernels can reach host memory. The operator's
    allowance covers tenants that share a worker process; here the reach would be the server's
    own memory (every tenant's inputs, tokens and engines), which no option allows."""
    if details.get(DETAIL):
        raise DeviceError(
            f"{_reaches(device)}, and {engine} drives it from the serving process itself: tenant code could "
            f"reach every tenant and the server. allow_host_memory_access covers the tenants of one worker "
            f"process, not this; use the multiprocess engine, whose workers are separate processes",
            api="open", status="host_memory_reachable", engine=engine)
