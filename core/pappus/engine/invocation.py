"""Invocations, the functions they run, and futures that settle exactly once."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Mapping
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

from ..config.model import FunctionConfig
from ..errors import PappusError
from ..kernels import KernelParam

_ids = itertools.count(1)


def new_invocation_id() -> str:
    return f"inv-{os.getpid():x}-{next(_ids):x}"


@dataclass(frozen=True)
class LibraryRef:
    """A library as an executor loads it: content hash and where the verified bytes live."""

    name: str
    sha256: str
    path: str


@dataclass(frozen=True)
class FunctionSpec:
    """A registered function as engines need it. Picklable: workers receive it once and cache it.

    ``key`` changes whenever the config or any library it was validated against changes.
    """

    key: str
    name: str
    tenant: str
    config: FunctionConfig
    signatures: Mapping[str, tuple[KernelParam, ...]]
    libraries: Mapping[str, LibraryRef]  # library name -> ref
    deadline: float
    engine: str = ""

    def library_of(self, kernel: str) -> LibraryRef:
        ref = self.config.kernel(kernel)
        assert ref is not None, kernel
        return self.libraries[ref.library]


@dataclass
class Invocation:
    function: FunctionSpec
    inputs: Mapping[str, Any]
    deadline: float
    tenant: str = "default"
    id: str = field(default_factory=new_invocation_id)
    future: Future[dict[str, bytes]] = field(default_factory=Future)
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    resolution: Any = None  # plan resolution computed at admission (sizes, bounds checked)

    def settle(self, outputs: dict[str, bytes] | None = None, error: BaseException | None = None) -> bool:
        """Resolve the future once; later calls are ignored and return False."""
        return settle(self.future, outputs, error)


def settle(future: Future[Any], result: Any = None, error: BaseException | None = None) -> bool:
    if future.done():
        return False
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        return False
    return True


@dataclass(frozen=True)
class InvocationRecord:
    """One finished invocation, as observers receive it (in batches)."""

    invocation: str
    function: str
    tenant: str
    engine: str
    outcome: str  # "ok" or an error code
    queued_s: float
    run_s: float


def outcome_of(error: BaseException | None) -> str:
    if error is None:
        return "ok"
    if isinstance(error, PappusError):
        return error.code
    return "internal_error"
