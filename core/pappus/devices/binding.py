"""Driving a vendor's Python bindings: checked calls and an availability probe in a subprocess.

hip-python and cuda-bindings share a convention: every call returns ``(status, value...)``, and
initialising the runtime in a process that later forks workers breaks those workers. So a GPU
backend needs the same two things, written here once:

* :func:`checked_call` turns a ``(status, value...)`` answer into the value(s), or raises the
  pappus error the backend maps the status to (also a status the bindings' enum does not know);
  anything else the binding itself raises becomes a :class:`DeviceError` naming the call.
* :class:`IsolatedProbe` asks "is a GPU usable here, and if not, why?" in a short-lived
  interpreter, caches the answer for this process, and turns it into an :class:`Availability`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Generic, TypeVar

from ..errors import DeviceError, KernelFault
from ..interfaces import Availability

#: What a backend maps a non-success status to (None for success).
ErrorFor = Callable[..., "DeviceError | KernelFault | None"]


def checked_call(binding: Any, api: str, args: tuple[Any, ...], facts: dict[str, Any], error_for: ErrorFor,
                 package: str) -> Any:
    """Call ``binding.<api>(*args)``; return None, its one value, or the tuple of its values.

    ``error_for(api, status, **facts)`` gives the error for a non-success status (raised here);
    ``package`` names the bindings in the messages for a missing or failing call.
    """
    fn = getattr(binding, api, None)
    if fn is None:
        raise DeviceError(f"{api} is not in this {package}", api=api, status="missing_binding")
    try:
        result = fn(*args)
    except (KernelFault, DeviceError):
        raise
    except Exception as exc:
        code = unknown_status(exc)
        problem = error_for(api, code, unknown_status=True, **facts) if code is not None else None
        if problem is not None:
            raise problem from None
        raise DeviceError(f"{api} failed in the binding: {type(exc).__name__}: {exc}", api=api,
                          status="binding_error") from None
    if isinstance(result, tuple):
        status, values = result[0], result[1:]
    else:
        status, values = result, ()
    problem = error_for(api, status, **facts)
    if problem is not None:
        raise problem
    if not values:
        return None
    return values[0] if len(values) == 1 else values


_UNKNOWN_STATUS = re.compile(r"(-?\d+) is not a valid \w+")


def unknown_status(exc: BaseException) -> int | None:
    """The status a runtime returned that its bindings' enum lacks, from the ``ValueError`` the
    bindings raise converting it (``"716 is not a valid hipError_t"``): a runtime newer than the
    bindings can answer so. None for any other exception.

    The call did happen, so what it answered must not be lost: :func:`checked_call` maps the
    number (``unknown_status=True`` among the facts), and a device treats an unknown answer as
    the worst it could mean (its state unknown until reset)."""
    if type(exc) is not ValueError:
        return None
    match = _UNKNOWN_STATUS.fullmatch(str(exc))
    return int(match.group(1)) if match else None


def status_name(status: Any, names: Callable[[int], str] | None, fallback: str) -> tuple[str, int]:
    """(name, value) of a status enum member, from the enum alone (never a runtime call);
    ``names`` looks a bare value up in the enum, ``fallback`` formats an unknown one
    (``"CUresult({})"``)."""
    try:
        value = int(status)
    except Exception:
        value = -1
    name = getattr(status, "name", None)
    if not isinstance(name, str):
        try:
            name = names(value) if names is not None else None
        except Exception:
            name = None
        if not isinstance(name, str):
            name = fallback.format(value)
    return name, value


def env_index(name: str) -> int:
    """A device index from the environment variable ``name`` (0 when unset or not a number)."""
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() else 0


def env_flag(name: str) -> bool:
    """Whether the environment variable ``name`` is set to 1, true or yes."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


R = TypeVar("R")


class IsolatedProbe(Generic[R]):
    """A backend's availability probe, run in a fresh interpreter and cached per process.

    ``probe`` answers in this process and never raises; ``result`` is the dataclass it returns
    (with ``installed``, ``available`` and ``reason`` fields). The subprocess runs
    ``import <module>; <module>._main()`` with ``search_path`` on ``sys.path``, so ``module``
    defines ``_main = <this probe>.main``. ``inline_env=inline`` in the environment runs the probe
    in this process instead. ``installed`` answers cheaply whether the bindings are there at all;
    ``not_installed`` is the reason when they are not.
    """

    def __init__(self, *, label: str, module: str, search_path: str, result: Callable[..., R], probe: Callable[[], R],
                 inline_env: str, installed: Callable[[], bool], not_installed: str) -> None:
        self.label = label
        self.module = module
        self.search_path = search_path
        self.result = result
        self.probe = probe
        self.inline_env = inline_env
        self.installed = installed
        self.not_installed = not_installed
        self._cache: R | None = None
        self._lock = threading.Lock()

    def isolated(self, timeout: float = 60.0) -> R:
        """The probe's answer from a fresh interpreter (or from this process, if so configured)."""
        if os.environ.get(self.inline_env, "").lower() == "inline":
            return self.probe()
        # The child imports the backend from where this process did (appended: lowest priority).
        code = f"import sys; sys.path.append({self.search_path!r}); import {self.module} as m; m._main()"
        try:
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=timeout, check=False,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return self.result(installed=True, reason=f"the {self.label} probe did not answer within {timeout:g} s")
        except OSError as exc:
            return self.result(installed=True, reason=f"the {self.label} probe could not start: {exc}")
        lines = proc.stdout.decode("utf-8", "replace").strip().splitlines()
        try:
            return self.result(**json.loads(lines[-1]))
        except Exception:
            tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
            return self.result(installed=True, reason=f"the {self.label} probe failed: {tail[0][:200]}")

    def cached(self, refresh: bool = False) -> R:
        """The isolated answer, asked once per process (again with ``refresh``)."""
        with self._lock:
            if self._cache is None or refresh:
                self._cache = self.isolated()
            return self._cache

    def availability(self, refresh: bool = False) -> Availability:
        """Whether the backend can run here, and exactly why not. Never raises, never prints."""
        try:
            if not self.installed():
                return Availability(False, self.not_installed)
            result: Any = self.cached(refresh)
            return Availability(bool(result.available), str(result.reason))
        except Exception as exc:  # pragma: no cover - belt and braces
            return Availability(False, f"{self.label} availability check failed: {type(exc).__name__}: {exc}")

    def main(self) -> None:
        """Entry of the probe subprocess: the in-process answer as one JSON line on stdout."""
        sys.stdout.write(json.dumps(asdict(self.probe())) + "\n")  # type: ignore[call-overload]
