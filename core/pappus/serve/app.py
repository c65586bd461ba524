"""The HTTP API (docs/http.md) as a starlette app over a ``pappus.Runtime``.

    PUT    /v1/libraries/{name}          body: the code object bytes (?backend=hip: for that backend)
    GET    /v1/libraries                 the caller's libraries
    GET    /v1/libraries/{name}
    DELETE /v1/libraries/{name}
    PUT    /v1/functions/{name}          body: config JSON (?format=dandelion to import one, its modules
                                         registered as libraries first; ?input_size=NAME=BYTES,
                                         ?engine=NAME)
    GET    /v1/functions                 the caller's functions
    GET    /v1/functions/{name}
    DELETE /v1/functions/{name}
    POST   /v1/functions/{name}/invoke   {"inputs": {"A": "<base64>"}, "deadline": 2.0}
                                         -> {"outputs": {"B": "<base64>"}}
    GET    /v1/health                    no authentication
    GET    /metrics                      Prometheus; operator tenants only (any caller with --no-auth)

Every error is a ``PappusError`` answered with its ``http_status`` and ``to_dict()`` body
(validation errors list every ``{"path", "message"}``); 429 and 503 carry ``Retry-After``.
A query parameter that a route does not take is a 422 naming it, never ignored.
Names resolve in the caller's namespace only: another tenant's object is answered exactly as
one that does not exist. Registration, parsing, base64 and invocation all run off the event
loop (a thread for the blocking parts; invocations are awaited as the runtime's futures).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..config.limits import DEFAULT_LIMITS
from ..config.parser import did_you_mean, library_name_problem
from ..engine.invocation import deadline_problem
from ..errors import (
    FieldError,
    Forbidden,
    PappusError,
    QuotaExceeded,
    Unauthorized,
    ValidationError,
)
from ..importers.dandelion import MODULES_DIR_ADVICE, parse_input_sizes
from ..registry import FunctionRecord, LibraryRecord
from .auth import Authenticator
from .limits import read_body
from .metrics import ServeMetrics
from .settings import ServeSettings

log = logging.getLogger("pappus.serve")

Handler = Callable[[Request, str], Awaitable[Response]]
_INVOKE_FIELDS = ("inputs", "deadline")
#: The query parameters of the routes that take any; every other route takes none.
LIBRARY_PARAMS = ("backend",)
FUNCTION_PARAMS = ("format", "input_size", "engine")
_FORMATS = ("pappus", "dandelion")


class Api:
    """State shared by the handlers of one app."""

    def __init__(self, runtime: Any, settings: ServeSettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.auth = Authenticator(runtime.tenants, no_auth=settings.no_auth,
                                  failure_rate=settings.auth_failure_rate,
                                  failure_burst=settings.auth_failure_burst)
        self.metrics = ServeMetrics(runtime)
        self.draining = False

    # --- plumbing --------------------------------------------------------------------------

    def endpoint(self, route: str, fn: Handler, *, auth: bool = True,
                 params: tuple[str, ...] = ()) -> Callable[[Request], Awaitable[Response]]:
        """``params``: the query parameters the handler takes; any other is a 422 naming it,
        answered after authentication and before the handler runs."""
        async def handle(request: Request) -> Response:
            tenant = ""
            try:
                if auth:
                    client = request.client.host if request.client else "unknown"
                    tenant = self.auth.tenant_of(request.headers.get("authorization"), client)
                check_query(request, params)
                response = await fn(request, tenant)
            except PappusError as exc:
                response = self.error_response(exc, tenant)
            except Exception:  # never a traceback to the caller
                log.exception("internal error on %s %s", request.method, route)
                response = JSONResponse({"error": "internal_error", "message": "internal error"}, status_code=500)
            self.metrics.requests.labels(route, request.method, str(response.status_code)).inc()
            return response

        return handle

    def error_response(self, exc: PappusError, tenant: str = "") -> Response:
        if isinstance(exc, QuotaExceeded):
            self.metrics.rejections.labels(exc.fields.get("tenant") or tenant or "-", exc.fields.get("quota", "?")).inc()
        elif isinstance(exc, Unauthorized):
            self.metrics.auth_failures.inc()
        body = _json_safe(exc.to_dict())
        headers = {}
        retry = exc.fields.get("retry_after")
        if isinstance(retry, (int, float)) and math.isfinite(retry) and exc.http_status in (429, 503):
            headers["Retry-After"] = str(max(1, math.ceil(retry)))
        elif exc.http_status in (429, 503):
            headers["Retry-After"] = "1"
        if exc.http_status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="pappus"'
        return JSONResponse(body, status_code=exc.http_status, headers=headers)

    async def body(self, request: Request) -> bytes:
        return await read_body(request, self.settings.max_body_bytes)

    # --- health and metrics ----------------------------------------------------------------

    async def health(self, request: Request, tenant: str) -> Response:
        engines = {name: engine.healthy for name, engine in list(self.runtime.dispatcher.engines.items())}
        ok = not self.draining and all(engines.values())
        status = "draining" if self.draining else "ok" if ok else "degraded"
        return JSONResponse({"status": status, "engines": {k: "healthy" if v else "unhealthy"
                                                           for k, v in engines.items()}},
                            status_code=200 if ok else 503)

    async def metrics_endpoint(self, request: Request, tenant: str) -> Response:
        if not self.settings.no_auth and not self.runtime.tenants.is_operator(tenant):
            raise Forbidden("metrics are for operator tenants ('pappus tenant set NAME --operator')")
        data = await run_in_threadpool(self.metrics.render)
        return Response(data, media_type=self.metrics.content_type)

    # --- libraries -------------------------------------------------------------------------

    async def put_library(self, request: Request, tenant: str) -> Response:
        name = _name(request)
        backend = self.backend_param(request)
        data = await self.body(request)
        existed, rec = await run_in_threadpool(self._register_library, tenant, name, data, backend)
        return JSONResponse(_library(rec), status_code=200 if existed else 201)

    def _register_library(self, tenant: str, name: str, data: bytes,
                          backend: str | None = None) -> tuple[bool, LibraryRecord]:
        existed = self.runtime.registry.exists(tenant, "libraries", name)
        return existed, self.runtime.register_library(name, data, tenant=tenant, backend=backend)

    def backend_param(self, request: Request) -> str | None:
        """``?backend=NAME``: an installed backend's name (as ``pappus plugins`` lists them), or
        None for the default engine's backend."""
        backend = _single(request, "backend")
        if backend is None:
            return None
        plugins = getattr(self.runtime, "plugins", None)
        if plugins is None:  # a runtime without its own (pappus.cluster's): the process's
            from ..plugins import get_plugins

            plugins = get_plugins()
        plugins.load()
        names = plugins.backends.names()
        if backend in names:
            return backend
        if not backend:
            message = f"must name a backend (installed: {', '.join(names) or 'none'})"
        else:
            message = plugins.backends.not_installed(backend, "backend={}")
        raise ValidationError(FieldError("backend", message), what="request")

    async def list_libraries(self, request: Request, tenant: str) -> Response:
        recs = await run_in_threadpool(self.runtime.list_libraries, tenant=tenant)
        return JSONResponse({"libraries": [_library(r) for r in recs]})

    async def get_library(self, request: Request, tenant: str) -> Response:
        name = _name(request)
        rec = await run_in_threadpool(self.runtime.registry.get_library, tenant, name)
        return JSONResponse(_library(rec))

    async def delete_library(self, request: Request, tenant: str) -> Response:
        name = _name(request)
        await run_in_threadpool(lambda: self.runtime.remove_library(name, tenant=tenant))
        return Response(status_code=204)

    # --- functions -------------------------------------------------------------------------

    async def put_function(self, request: Request, tenant: str) -> Response:
        name = _name(request)
        fmt, sizes, engine = function_params(request)
        data = await self.body(request)
        existed, rec = await run_in_threadpool(self._register_function, tenant, name, data, fmt, sizes, engine)
        return JSONResponse(_function(rec, full=False), status_code=200 if existed else 201)

    def _register_function(self, tenant: str, name: str, data: bytes, fmt: str,
                           sizes: dict[str, int] | None = None, engine: str | None = None
                           ) -> tuple[bool, FunctionRecord]:
        existed = self.runtime.registry.exists(tenant, "functions", name)
        try:
            return existed, self.runtime.register_function(name, data, tenant=tenant, format=fmt,
                                                           input_sizes=sizes or None, engine=engine)
        except ValidationError as exc:
            if fmt != "dandelion" or type(exc) is not ValidationError:
                raise
            raise _in_http_terms(exc) from None

    async def list_functions(self, request: Request, tenant: str) -> Response:
        recs = await run_in_threadpool(self.runtime.list_functions, tenant=tenant)
        return JSONResponse({"functions": [_function(r, full=False) for r in recs]})

    async def get_function(self, request: Request, tenant: str) -> Response:
        name = _name(request)
        rec = await run_in_threadpool(self.runtime.registry.get_function, tenant, name)
        return JSONResponse(_function(rec, full=True))

    async def delete_function(self, request: Request, tenant: str) -> Response:
        name = _name(request)
        await run_in_threadpool(lambda: self.runtime.remove_function(name, tenant=tenant))
        return Response(status_code=204)

    # --- invocation ------------------------------------------------------------------------

    async def invoke(self, request: Request, tenant: str) -> Response:
        t0 = time.perf_counter()
        outcome = "internal_error"
        try:
            name = _name(request)
            data = await self.body(request)
            future = await run_in_threadpool(self._submit, tenant, name, data)
            outputs = await asyncio.wrap_future(future)
            body = await run_in_threadpool(_encode_outputs, outputs)
            outcome = "ok"
            self.metrics.latency.labels(tenant).observe(time.perf_counter() - t0)
            return Response(body, media_type="application/json")
        except PappusError as exc:
            outcome = exc.code
            raise
        finally:
            self.metrics.invocations.labels(tenant, outcome).inc()

    def _submit(self, tenant: str, name: str, data: bytes) -> Any:
        limits = getattr(self.runtime, "limits", DEFAULT_LIMITS)
        inputs, deadline = parse_invoke_body(data, max_deadline=limits.max_deadline)
        return self.runtime.invoke_async(name, inputs, tenant=tenant, deadline=deadline)


# --- query parameters ----------------------------------------------------------------------


def check_query(request: Request, allowed: tuple[str, ...]) -> None:
    """Refuse every query parameter not in ``allowed``, each by name (all at once)."""
    errors = []
    for key in dict.fromkeys(k for k, _ in request.query_params.multi_items()):
        if key in allowed:
            continue
        close = did_you_mean(key, allowed)
        hint = f", did you mean {close!r}?" if close else ""
        takes = f"this route takes: {', '.join(allowed)}" if allowed else "this route takes none"
        errors.append(FieldError(key[:80], f"unknown query parameter{hint} ({takes})"))
    if errors:
        raise ValidationError(errors, what="request")


def _once(request: Request, name: str, errors: list[FieldError]) -> str | None:
    """The value of a query parameter that may be given once; None when absent, or when given
    more often (the problem then goes into ``errors``)."""
    values = request.query_params.getlist(name)
    if len(values) > 1:
        errors.append(FieldError(name, f"is given {len(values)} times; give it once"))
        return None
    return values[0] if values else None


def _single(request: Request, name: str) -> str | None:
    errors: list[FieldError] = []
    value = _once(request, name, errors)
    if errors:
        raise ValidationError(errors, what="request")
    return value


def function_params(request: Request) -> tuple[str, dict[str, int], str | None]:
    """``?format=pappus|dandelion``, ``?input_size=NAME=BYTES`` (repeatable) and ``?engine=NAME``
    (both Dandelion only) of ``PUT /v1/functions/{name}``; every problem at once, each naming its
    parameter."""
    errors: list[FieldError] = []
    fmt = _once(request, "format", errors)
    if fmt is not None and fmt not in _FORMATS:
        errors.append(FieldError("format", f"unknown config format {fmt[:40]!r} (pappus, dandelion)"))
    engine = _once(request, "engine", errors)
    items = request.query_params.getlist("input_size")
    sizes, bad = parse_input_sizes(items, "input_size")
    errors += bad
    if not any(e.path == "format" for e in errors) and fmt in (None, "pappus"):
        for name, given, says in (("input_size", bool(items), "declares its input sizes itself"),
                                  ("engine", engine is not None, "names its engine itself (its 'engine' field)")):
            if given:
                errors.append(FieldError(name, f"applies to Dandelion configs only (?format=dandelion); a pappus "
                                               f"config {says}"))
    if errors:
        raise ValidationError(errors, what="request")
    return fmt or "pappus", sizes, engine


def _in_http_terms(exc: ValidationError) -> ValidationError:
    """An import's errors as an HTTP caller meets them: ``input_sizes`` is the ``input_size``
    parameter, and there is no modules directory to give."""
    return exc.reworded(paths=[("input_sizes", "input_size")],
                        words=[(MODULES_DIR_ADVICE, ""), ("(declared in input_sizes)", "(declared with ?input_size)")])


# --- request and response bodies -----------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def parse_invoke_body(data: bytes, max_deadline: float = DEFAULT_LIMITS.max_deadline,
                      ) -> tuple[dict[str, bytes], float | None]:
    """``{"inputs": {"A": "<base64>"}, "deadline": 2.0}`` -> (inputs, deadline); every problem
    is reported at once, each naming its field. ``deadline`` must be a positive number of
    seconds, at most ``max_deadline``."""
    try:
        doc = json.loads(data, parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise ValidationError(FieldError("body", f"is not UTF-8 JSON: {exc.reason}"), what="request") from None
    except json.JSONDecodeError as exc:
        raise ValidationError(FieldError("body", f"is not valid JSON: {exc.msg} at line {exc.lineno} column "
                                         f"{exc.colno}"), what="request") from None
    except (ValueError, RecursionError) as exc:
        raise ValidationError(FieldError("body", f"is not valid JSON: {exc}"), what="request") from None
    if not isinstance(doc, dict):
        raise ValidationError(FieldError("body", "must be a JSON object {\"inputs\": {...}}"), what="request")
    errors: list[FieldError] = []
    for key in doc:
        if key not in _INVOKE_FIELDS:
            errors.append(FieldError(str(key)[:80], "unknown field (expected: inputs, deadline)"))
    inputs: dict[str, bytes] = {}
    raw = doc.get("inputs")
    if "inputs" not in doc:
        errors.append(FieldError("inputs", "is required (an object of input name -> base64 string)"))
    elif not isinstance(raw, dict):
        errors.append(FieldError("inputs", "must be an object of input name -> base64 string"))
    else:
        for key, value in raw.items():
            path = f"inputs.{key[:80]}"
            if not isinstance(value, str):
                errors.append(FieldError(path, f"must be a base64 string, not {_typename(value)}"))
                continue
            try:
                inputs[key] = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                errors.append(FieldError(path, f"is not valid base64: {exc}"))
    deadline = doc.get("deadline")
    if deadline is not None:
        if isinstance(deadline, bool) or not isinstance(deadline, (int, float)):
            errors.append(FieldError("deadline", f"must be a number of seconds, not {_typename(deadline)}"))
            deadline = None
        else:
            problem = deadline_problem(deadline, max_deadline)  # also huge ints, and 1e999 (inf)
            if problem is not None:
                errors.append(FieldError("deadline", problem))
                deadline = None
    if errors:
        raise ValidationError(errors, what="request")
    return inputs, (float(deadline) if deadline is not None else None)


def _encode_outputs(outputs: dict[str, bytes]) -> bytes:
    return json.dumps({"outputs": {k: base64.b64encode(v).decode("ascii") for k, v in outputs.items()}}).encode()


def _typename(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _name(request: Request) -> str:
    name = request.path_params["name"]
    problem = library_name_problem(name)
    if problem:
        raise ValidationError(FieldError("name", f"{name[:80]!r} {problem}"), what="request")
    return str(name)


def _library(rec: LibraryRecord) -> dict[str, Any]:
    return {"name": rec.name, "sha256": rec.sha256, "size": rec.size, "backend": rec.backend,
            "format": rec.format, "kernels": list(rec.kernels), "registered_at": rec.registered_at}


def _function(rec: FunctionRecord, full: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": rec.name, "engine": rec.engine, "libraries": dict(rec.libraries),
                           "registered_at": rec.registered_at, "source_format": rec.source_format}
    if full:
        out["config"] = rec.config
        out["notes"] = list(rec.notes)
    return out


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str):  # a lone surrogate (valid in JSON text) cannot be encoded as UTF-8
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_json_safe(str(k)): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


# --- the app -------------------------------------------------------------------------------

_METHODS = ("GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS")


def _method_order(method: str) -> tuple[int, str]:
    return (_METHODS.index(method) if method in _METHODS else len(_METHODS), method)


def _route(api: Api, path: str, *, auth: bool = True, params: dict[str, tuple[str, ...]] | None = None,
           **handlers: Handler) -> Route:
    """One route for ``path`` that answers each method with its handler (HEAD as GET);
    ``params``: by method, the query parameters its handler takes (default: none)."""
    endpoints = {method: api.endpoint(path, fn, auth=auth, params=(params or {}).get(method, ()))
                 for method, fn in handlers.items()}
    if "GET" in endpoints:
        endpoints.setdefault("HEAD", endpoints["GET"])

    async def dispatch(request: Request) -> Response:
        return await endpoints[request.method](request)

    return Route(path, dispatch, methods=sorted(endpoints, key=_method_order), name=path)


def create_app(runtime: Any, settings: ServeSettings | None = None, *, close_runtime: bool = True,
               start_engine: bool = True) -> Starlette:
    """The ASGI app. ``close_runtime``: close the runtime (draining) when the app shuts down;
    ``start_engine``: start the default engine at start-up, so the first request is not slow
    and a backend that cannot start fails the server, not a request."""
    settings = settings or ServeSettings()
    api = Api(runtime, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if start_engine:
            await run_in_threadpool(runtime.engine)
        try:
            yield
        finally:
            api.draining = True
            if close_runtime:
                await run_in_threadpool(lambda: runtime.close(drain=True, timeout=settings.drain_timeout))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(getattr(exc, "headers", None) or {})
        if "Allow" in headers:  # starlette joins a set: put it in a stable order
            headers["Allow"] = ", ".join(sorted(headers["Allow"].split(", "), key=_method_order))
        return JSONResponse({"error": code, "message": str(exc.detail)}, status_code=exc.status_code,
                            headers=headers or None)

    # One route per path, holding every method of the path: a 405's Allow names them all.
    routes = [
        _route(api, "/v1/health", GET=api.health, auth=False),
        _route(api, "/metrics", GET=api.metrics_endpoint),
        _route(api, "/v1/libraries", GET=api.list_libraries),
        _route(api, "/v1/libraries/{name}", GET=api.get_library, PUT=api.put_library, DELETE=api.delete_library,
               params={"PUT": LIBRARY_PARAMS}),
        _route(api, "/v1/functions", GET=api.list_functions),
        _route(api, "/v1/functions/{name}", GET=api.get_function, PUT=api.put_function,
               DELETE=api.delete_function, params={"PUT": FUNCTION_PARAMS}),
        _route(api, "/v1/functions/{name}/invoke", POST=api.invoke),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})
    app.state.api = api
    return app
