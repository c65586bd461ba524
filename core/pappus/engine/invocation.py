"""Invocations, the functions they run, and futures that settle exactly once."""

from __future__ import annotations

import itertools
import math
import numbers
import os
import time
from collections.abc import Mapping
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

from ..config.model import FunctionConfig
from ..errors import FieldError, InvalidInput, PappusError
from ..kernels import KernelParam
from ..plan import Plan

_ids = itertools.count(1)

#: The longest single wait any engine thread makes (seconds). Waits for later deadlines loop, so
#: no deadline value, however large, can overflow a timeout and kill the thread that enforces it.
MAX_WAIT = 3600.0
#: How long past its deadline an invocation may wait for the device's abort to end the run, so
#: that its DeadlineExceeded names the kernel that was stopped; a device that takes longer is not
#: waited for (the caller learns then, without the kernel).
SETTLE_GRACE = 0.05


def wait_for(deadline_at: float, now: float) -> float:
    """A timeout to wait until ``deadline_at``: never negative, never past ``MAX_WAIT``, never NaN."""
    remaining = deadline_at - now
    if not remaining > 0:  # NaN too
        return 0.0
    return min(remaining, MAX_WAIT)


def deadline_problem(value: Any, maximum: float) -> str | None:
    """Why ``value`` cannot be a per-invocation deadline (seconds), or None: it must be a real
    number (not a bool), finite, greater than 0 and at most ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"must be a number of seconds, not {type(value).__name__}"
    try:
        seconds = float(value)
    except (OverflowError, ValueError, TypeError):
        return f"exceeds the limit of {maximum:g} s"
    if math.isnan(seconds) or seconds <= 0:
        return "must be a positive number of seconds"
    if math.isinf(seconds) or seconds > maximum:
        return f"{seconds:g} s exceeds the limit of {maximum:g} s"
    return None


def check_deadline(value: Any, maximum: float) -> float:
    """``value`` as a deadline in seconds; InvalidInput on ``deadline`` if it is not one."""
    problem = deadline_problem(value, maximum)
    if problem is not None:
        raise InvalidInput(FieldError("deadline", problem))
    return float(value)


def input_view(value: Any) -> bytes | memoryview:
    """One invocation input as a flat byte view, or TypeError saying why it cannot be one.

    Accepted: ``bytes`` (kept as is), and any object with the buffer protocol (``bytearray``,
    ``memoryview``, ``array.array``, numpy arrays and scalars, ...), taken as its raw bytes in
    C order: its size is its ``nbytes``, never its ``len()``. C-contiguous buffers are viewed
    in place (no copy, so they must not change until the invocation settles); others are
    copied. ``str`` and objects without a buffer (int, None, list, ...) are refused.
    """
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        raise TypeError("must be bytes-like, not str (encode it first)")
    try:
        view = memoryview(value)
    except (TypeError, ValueError, BufferError) as exc:
        raise TypeError(f"must be bytes-like (bytes, bytearray, memoryview, a numpy array), "
                        f"not {type(value).__name__}") from exc
    if not view.c_contiguous:
        return memoryview(view.tobytes())
    if view.format == "B" and view.ndim == 1:
        return view
    return view.cast("B")


def input_views(inputs: Any) -> dict[str, bytes | memoryview]:
    """Every input of an invocation through :func:`input_view`; InvalidInput naming each one
    that is not bytes-like (and ``inputs`` itself if it is not a mapping)."""
    if not isinstance(inputs, Mapping):
        raise InvalidInput(FieldError("inputs", f"must be a mapping of input name -> bytes, "
                                      f"not {type(inputs).__name__}"))
    views: dict[str, bytes | memoryview] = {}
    errors: list[FieldError] = []
    for name, value in inputs.items():
        try:
            views[name] = input_view(value)
        except TypeError as exc:
            errors.append(FieldError(f"inputs.{str(name)[:80]}", str(exc)))
    if errors:
        raise InvalidInput(errors)
    return views


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
    #: kernel name -> static shared memory bytes its code object declares (Plan.static_shared)
    static_shared: Mapping[str, int] = field(default_factory=dict)

    def library_of(self, kernel: str) -> LibraryRef:
        ref = self.config.kernel(kernel)
        assert ref is not None, kernel
        return self.libraries[ref.library]

    def plan(self, **options: Any) -> Plan:
        """A new :class:`Plan` of this function (``options``: its limits and alignment)."""
        return Plan(self.config, self.signatures, static_shared=self.static_shared, **options)


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
    cold: bool = False  # the device it ran on loaded a module for it (set by the engine)

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
    cold: bool = False  # a module was loaded for it (the first use of a library on that device)


#: Outcomes that are faults: each costs the device a recovery (engine metrics, ``fault_rate``).
FAULT_OUTCOMES = frozenset({"kernel_fault", "sandbox_violation", "worker_lost", "deadline_exceeded"})


def outcome_of(error: BaseException | None) -> str:
    if error is None:
        return "ok"
    if isinstance(error, PappusError):
        return error.code
    return "internal_error"
