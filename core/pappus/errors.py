"""Typed errors: every failure a caller can see, each carrying the facts needed to act on it.

Errors cross process boundaries (multiprocess workers) and the HTTP API, so each one can be
turned into a plain dict (:meth:`PappusError.to_dict`) and back (:func:`error_from_dict`)
without pickling arbitrary objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class FieldError:
    """One problem in a config or request, located by a dotted path (``blueprint.buffers.B``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class PappusError(Exception):
    """Base of every pappus error.

    ``code`` is a stable identifier (used in HTTP bodies and the CLI); ``http_status`` is the
    status the HTTP API answers with; ``fields`` holds the keyword facts of the error.
    """

    code: ClassVar[str] = "error"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields

    def __getattr__(self, name: str) -> Any:
        # Facts are reachable as attributes: err.kernel, err.address, ...
        fields = self.__dict__.get("fields", {})
        if name in fields:
            return fields[name]
        raise AttributeError(name)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (error_from_dict, (self.to_dict(),))

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **_jsonable(self.fields)}


def _jsonable(fields: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, (list, tuple)):
            out[key] = [v.__dict__ if isinstance(v, FieldError) else v for v in value]
        else:
            out[key] = value
    return out


class ValidationError(PappusError):
    """A config, library or request is invalid. ``errors`` lists every problem at once."""

    code = "validation_error"
    http_status = 422

    def __init__(self, errors: list[FieldError] | FieldError, what: str = "config") -> None:
        errs = [errors] if isinstance(errors, FieldError) else list(errors)
        if not errs:
            raise ValueError("ValidationError needs at least one FieldError")
        head = f"invalid {what}: " if len(errs) > 1 else ""
        message = head + "; ".join(str(e) for e in errs)
        super().__init__(message, errors=errs, what=what)
        self.errors: list[FieldError] = errs

    def reworded(self, paths: Sequence[tuple[str, str]] = (), words: Sequence[tuple[str, str]] = (),
                 extra: Sequence[FieldError] = ()) -> ValidationError:
        """These errors (and ``extra``) in another interface's terms: each path that starts with
        an ``(api, ours)`` prefix of ``paths`` starts with ``ours`` instead, and each ``(api,
        ours)`` of ``words`` is replaced in the messages (the Python API's ``input_sizes.cfg`` is
        the command line's ``--input-size cfg`` and HTTP's ``input_size.cfg``)."""
        errors = []
        for e in [*self.errors, *extra]:
            path, message = e.path, e.message
            for api, ours in paths:
                if path.startswith(api):
                    path = ours + path[len(api):]
            for api, ours in words:
                message = message.replace(api, ours)
            errors.append(FieldError(path, message))
        return ValidationError(errors, what=self.fields.get("what", "config"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": self.code,
            "message": self.message,
            "what": self.fields["what"],
            "errors": [{"path": e.path, "message": e.message} for e in self.errors],
        }


class LibraryError(ValidationError):
    """A library (code object / shared library) was rejected at registration."""

    code = "library_error"

    def __init__(self, reason: str, path: str = "library") -> None:
        super().__init__([FieldError(path, reason)], what="library")


class BuildError(ValidationError):
    """A compiler is missing or rejected the source. ``output`` keeps the full diagnostics."""

    code = "build_error"

    def __init__(self, message: str, path: str = "source", output: str | None = None) -> None:
        super().__init__([FieldError(path, message)], what="source")
        self.output = output or ""


class InvalidInput(ValidationError):
    """Invocation inputs do not fit the function (missing, extra, wrong size, bad FromInput)."""

    code = "invalid_input"

    def __init__(self, errors: list[FieldError] | FieldError) -> None:
        super().__init__(errors, what="input")


class NotFound(PappusError):
    code = "not_found"
    http_status = 404

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"no {kind} named {name!r}", kind=kind, name=name)


class OutOfMemory(PappusError):
    """The function asks for more pool memory than the engine (or worker) holds."""

    code = "out_of_memory"
    http_status = 413

    def __init__(self, buffer: str, requested: int, available: int, pool_size: int) -> None:
        super().__init__(
            f"buffer {buffer!r} needs {requested} bytes but only {available} of the pool's "
            f"{pool_size} bytes are left",
            buffer=buffer,
            requested=requested,
            available=available,
            pool_size=pool_size,
        )


class KernelFault(PappusError):
    """A kernel faulted (bad address, trap, illegal instruction). Only its invocation fails."""

    code = "kernel_fault"
    http_status = 500

    def __init__(
        self,
        message: str,
        *,
        kernel: str | None = None,
        invocation: str | None = None,
        address: int | None = None,
        reasons: list[str] | None = None,
        signal: str | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(
            message,
            kernel=kernel,
            invocation=invocation,
            address=address,
            reasons=list(reasons or []),
            signal=signal,
            **extra,
        )


class SandboxViolation(KernelFault):
    """Kernel code tried something the sandbox forbids (a system call, executable memory)."""

    code = "sandbox_violation"

    def __init__(self, message: str, *, syscall: str | None = None, **kw: Any) -> None:
        super().__init__(message, syscall=syscall, **kw)


class DeviceMallocFailed(KernelFault):
    """Device-side malloc was used beyond the configured heap limit in a way that failed."""

    code = "device_malloc_failed"


class DeadlineExceeded(PappusError):
    code = "deadline_exceeded"
    http_status = 504

    def __init__(self, deadline: float, invocation: str | None = None, kernel: str | None = None) -> None:
        super().__init__(
            f"invocation exceeded its deadline of {deadline:g} s",
            deadline=deadline,
            invocation=invocation,
            kernel=kernel,
        )


class WorkerLost(PappusError):
    """The worker running an invocation died or stopped answering."""

    code = "worker_lost"
    http_status = 502

    def __init__(
        self,
        message: str,
        *,
        worker: int | None = None,
        exitcode: int | None = None,
        signal: str | None = None,
        invocation: str | None = None,
    ) -> None:
        super().__init__(message, worker=worker, exitcode=exitcode, signal=signal, invocation=invocation)


class Overloaded(PappusError):
    code = "overloaded"
    http_status = 503

    def __init__(self, message: str, retry_after: float = 1.0, **kw: Any) -> None:
        super().__init__(message, retry_after=retry_after, **kw)


class QuotaExceeded(PappusError):
    code = "quota_exceeded"
    http_status = 429

    def __init__(self, quota: str, limit: float, tenant: str, retry_after: float | None = None) -> None:
        super().__init__(
            f"tenant {tenant!r} exceeded quota {quota!r} (limit {limit:g})",
            quota=quota,
            limit=limit,
            tenant=tenant,
            retry_after=retry_after,
        )


class EngineClosed(PappusError):
    code = "engine_closed"
    http_status = 503


class BackendUnavailable(PappusError):
    code = "backend_unavailable"
    http_status = 503

    def __init__(self, backend: str, reason: str, message: str | None = None) -> None:
        super().__init__(message or f"backend {backend!r} is unavailable: {reason}", backend=backend, reason=reason)


class BackendNotInstalled(BackendUnavailable):
    """No installed plugin provides the backend (or engine) named. Unlike a backend that is
    installed but cannot run here, the message says so and lists what is installed."""

    def __init__(self, backend: str, reason: str, subject: str | None = None) -> None:
        super().__init__(backend, reason, f"{subject}: {reason}" if subject else reason)


class DeviceError(PappusError):
    """The device runtime returned an error that is not a kernel fault (e.g. out of resources)."""

    code = "device_error"

    def __init__(self, message: str, *, api: str | None = None, status: str | None = None, **kw: Any) -> None:
        super().__init__(message, api=api, status=status, **kw)


class PluginError(PappusError):
    code = "plugin_error"

    def __init__(self, plugin: str, reason: str) -> None:
        super().__init__(f"plugin {plugin!r}: {reason}", plugin=plugin, reason=reason)


class Unauthorized(PappusError):
    code = "unauthorized"
    http_status = 401


class Forbidden(PappusError):
    code = "forbidden"
    http_status = 403


def _all_error_types() -> dict[str, type[PappusError]]:
    seen: dict[str, type[PappusError]] = {}
    stack: list[type[PappusError]] = [PappusError]
    while stack:
        cls = stack.pop()
        seen.setdefault(cls.code, cls)
        stack.extend(cls.__subclasses__())
    return seen


def error_from_dict(data: dict[str, Any]) -> PappusError:
    """Rebuild an error from :meth:`PappusError.to_dict` output (process and HTTP boundaries)."""
    data = dict(data)
    code = data.pop("error", "error")
    message = data.pop("message", "")
    cls = _all_error_types().get(code, PappusError)
    if issubclass(cls, ValidationError):
        errors = [FieldError(e["path"], e["message"]) for e in data.get("errors", [])]
        if not errors:
            errors = [FieldError("", message)]
        err: PappusError = ValidationError.__new__(cls)
        ValidationError.__init__(err, errors, what=data.get("what", "config"))  # type: ignore[arg-type]
        return err
    err = PappusError.__new__(cls)
    PappusError.__init__(err, message, **data)
    return err
