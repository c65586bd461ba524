"""``pappus.Runtime``: the public Python API (docs/reference/python.md).

    rt = pappus.Runtime(engine="cpu-sequential")
    rt.register_library("matmul", "matmul.so")
    rt.register_function("matmul", "matmul.json")
    out = rt.invoke("matmul", {"A": a_bytes}, deadline=2.0)
    rt.close()

Libraries are validated statically by the engine's backend (never loaded in this process) and
stored by content hash; functions are validated against the exact libraries they name, and
every problem is reported at registration. Invocations are checked against the function's
bounds before they are queued, then run on an engine; every one settles exactly once.

Tenancy: every name resolves in the caller's namespace (``tenant=``, default ``"default"``).
The tenant's quotas (``pappus.tenants``: defaults and overrides in the state directory) are
checked before any work is done or queued: library size and count and function count at
registration (counts exactly, under the registry lock), pool bytes and concurrent invocations
at admission, queued invocations by the engine's fair queue, which also applies the tenants'
scheduling weights. Past a quota the call raises ``QuotaExceeded`` naming it and its limit.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

from ._files import read_regular_file
from .config.limits import DEFAULT_LIMITS, Limits
from .config.parser import library_name_problem, load_config_document, parse_function
from .config.signatures import check_function_against_libraries
from .dispatcher import Dispatcher
from .engine import EngineOptions, FunctionSpec, Invocation, LibraryRef
from .engine.invocation import FAULT_OUTCOMES, check_deadline, input_views, outcome_of
from .errors import BackendUnavailable, FieldError, LibraryError, NotFound, ValidationError
from .interfaces import Backend
from .kernels import LibraryInfo
from .plugins import Plugins, get_plugins
from .registry import FunctionRecord, LibraryRecord, Registry
from .tenants import RateLimiter, TenantStore, quota_error, retry_after

DEFAULT_ENGINE = "cpu-sequential"
MAX_LIBRARY_BYTES = 256 * 1024 * 1024


def _not_an_engine(engine: str, exc: BackendUnavailable) -> FieldError:
    """An engine a function's registration names that no installed plugin provides."""
    return FieldError("engine", f"{engine[:80]!r} is not an engine here: {exc.fields['reason']}")


class Runtime:
    """Registry + dispatcher + engines in one object. Thread-safe; use one per process."""

    def __init__(
        self,
        engine: str = DEFAULT_ENGINE,
        *,
        state_dir: str | Path | None = None,
        workers: int = 2,
        spare_workers: int = 0,
        queue_size: int = 1024,
        heap_limit: int = 0,
        pool_bytes: int | None = None,
        deadline: float | None = None,
        device_options: Mapping[str, Any] | None = None,
        limits: Limits = DEFAULT_LIMITS,
        plugins: Plugins | None = None,
        engine_options: Mapping[str, EngineOptions] | None = None,
        max_library_bytes: int = MAX_LIBRARY_BYTES,
        tenants: TenantStore | None = None,
    ) -> None:
        self.plugins = plugins or get_plugins()
        self.default_engine = engine
        self.backend, _ = self._backend_for(engine)  # unknown engine names fail here, clearly
        self.registry = Registry(state_dir)
        self.tenants = tenants if tenants is not None else TenantStore(registry=self.registry)
        self.heap_limit = heap_limit
        self.limits = limits
        # the operator's default obeys the same bounds as a caller's deadline (InvalidInput names it)
        self.default_deadline = limits.default_deadline if deadline is None else check_deadline(
            deadline, limits.max_deadline)
        self.max_library_bytes = max_library_bytes
        self._base_options = EngineOptions(workers=workers, spare_workers=spare_workers, queue_size=queue_size,
                                           heap_limit=heap_limit, pool_bytes=pool_bytes,
                                           device_options=dict(device_options or {}))
        self._engine_options = dict(engine_options or {})
        self.dispatcher = Dispatcher(self.plugins, self._options_for)
        # Per tenant: a warm entry must not tell one tenant that another registered the same bytes.
        self._infos: dict[tuple[str, str, str], LibraryInfo] = {}
        self._specs: dict[tuple[str, str], tuple[Any, FunctionSpec]] = {}
        self._lock = threading.Lock()
        # Admitted, unsettled invocations per tenant, and per (engine, tenant) for metrics.
        self._active: dict[str, int] = {}
        self._active_by_engine: dict[tuple[str, str], int] = {}
        self._active_lock = threading.Lock()
        self._faults = RateLimiter()  # per tenant: the fault_rate quota's token buckets
        self.tenants.on_change(self._tenants_changed)

    def _options_for(self, engine: str) -> EngineOptions:
        options = self._engine_options.get(engine) or replace(self._base_options)
        if not options.tenant_weights:
            options.tenant_weights = self.tenants.weights()
        if options.per_tenant_queue is None:
            options.per_tenant_queue = self._queued_quota
        if options.plugins is None:  # engine events reach this runtime's hooks
            options.plugins = self.plugins
        return options

    def _queued_quota(self, tenant: str) -> int | None:
        return self.tenants.quotas(tenant).queued_invocations

    def _tenants_changed(self, store: TenantStore) -> None:
        """New scheduling weights reach engines that are already running."""
        weights = store.weights()
        for name, engine in list(self.dispatcher.engines.items()):
            if not self._engine_options.get(name) or not self._engine_options[name].tenant_weights:
                engine.queue.weights = dict(weights)

    def _backend_for(self, engine: str) -> tuple[Backend, str]:
        name, sep, kind = engine.rpartition("-")
        if kind == "auto" and sep:
            return self.plugins.backend(name), "auto"
        return self.plugins.resolve_engine(engine)

    # --- libraries -------------------------------------------------------------------------

    def register_library(self, name: str, source: str | Path | bytes, *, tenant: str = "default",
                         backend: str | None = None) -> LibraryRecord:
        """Validate and store a library (code object / shared library) under ``name``."""
        problem = library_name_problem(name)
        if problem:
            raise ValidationError(FieldError("name", f"{str(name)[:80]!r} {problem}"), what="library")
        quotas = self.tenants.quotas(tenant)
        self._check_count_quota(tenant, "libraries", name, quotas.libraries)
        data = self._read_library(source, quotas.library_bytes, tenant)
        be = self.plugins.backend(backend) if backend else self.backend
        info = be.driver.inspect_library(data)
        sha, _ = self.registry.put_blob(data)
        self._infos[(tenant, be.name, sha)] = info
        record = self.registry.put_library(tenant, name, sha, len(data), be.name, info.format, list(info.kernels),
                                           max_count=quotas.libraries)
        self.plugins.notify("pappus_library_registered", name=name, tenant=tenant, sha256=sha, size=len(data),
                            backend=be.name)
        return record

    def _check_count_quota(self, tenant: str, kind: str, name: str, limit: int | None) -> None:
        """Early, lock-free check (the exact one is under the registry lock, at the write)."""
        if limit is not None and not self.registry.exists(tenant, kind, name) \
                and self.registry.count(tenant, kind) >= limit:
            raise quota_error(tenant, kind, limit)

    def _read_library(self, source: str | Path | bytes, quota: int | None = None, tenant: str = "default") -> bytes:
        def check(size: int) -> None:
            if size > self.max_library_bytes:
                raise LibraryError(f"library is {size} bytes; the limit is {self.max_library_bytes}")
            if quota is not None and size > quota:
                raise quota_error(tenant, "library_bytes", quota)

        if isinstance(source, (bytes, bytearray, memoryview)):
            check(len(source))
            data = bytes(source)
        else:
            path = Path(source)
            cap = self.max_library_bytes if quota is None else min(self.max_library_bytes, quota)
            try:  # a regular file only, read with a cap (never a device, FIFO or directory)
                data = read_regular_file(path, cap, check)
            except OSError as exc:
                raise LibraryError(f"cannot read {str(path)!r}: {exc.strerror}") from None
        check(len(data))
        if not data:
            raise LibraryError("library is empty")
        return data

    def library_info(self, backend: Backend, record: LibraryRecord) -> LibraryInfo:
        key = (record.tenant, backend.name, record.sha256)
        info = self._infos.get(key)
        if info is None:
            info = backend.driver.inspect_library(self.registry.read_blob(record.sha256))
            self._infos[key] = info
        return info

    # --- functions -------------------------------------------------------------------------

    def register_function(self, name: str, config: str | Path | bytes | Mapping[str, Any], *,
                          tenant: str = "default", format: str | None = None,
                          modules_dir: str | Path | None = None,
                          input_sizes: Mapping[str, int] | None = None,
                          engine: str | None = None) -> FunctionRecord:
        """Validate a function config against its libraries and store it under ``name``.

        ``format="dandelion"`` (or auto-detection) imports an upstream Dandelion config; its
        modules are registered as libraries first, read from ``modules_dir`` (default: the
        config file's directory). A config given as a dict, text or bytes without
        ``modules_dir`` has no files to read: each module then resolves by name to ``tenant``'s
        registered library (docs/dandelion.md, "Modules registered already"), and a module that
        is not registered is a ``ValidationError`` at its entry. ``input_sizes`` (Dandelion
        configs only) declares the byte size callers send for an input, as ``import_dandelion``
        takes it. ``engine`` (Dandelion configs only, which cannot name one) is the engine the
        function runs on, default this runtime's; its backend checks the modules.
        """
        problem = library_name_problem(name)
        if problem:
            raise ValidationError(FieldError("name", f"{str(name)[:80]!r} {problem}"), what="function")
        quotas = self.tenants.quotas(tenant)
        self._check_count_quota(tenant, "functions", name, quotas.functions)
        doc = load_config_document(config, self.limits)
        source_format, notes = "pappus", list[str]()
        if format not in (None, "pappus", "dandelion"):
            raise ValidationError(FieldError("format", f"unknown config format {format!r} (pappus, dandelion)"))
        if format == "dandelion" or (format is None and isinstance(doc, dict) and "schema" not in doc):
            doc, imported = self._import_dandelion(doc, config, modules_dir, tenant, explicit=format == "dandelion",
                                                   input_sizes=input_sizes, engine=engine)
            if imported is not None:
                source_format, notes = "dandelion", imported
                if engine is not None:
                    doc = {**doc, "engine": engine}
        not_dandelion = [FieldError(field, f"applies to Dandelion configs only; a pappus config {says}")
                         for field, given, says in (("input_sizes", bool(input_sizes), "declares its input sizes itself"),
                                                    ("engine", engine is not None,
                                                     "names its engine itself (its 'engine' field)"))
                         if given and source_format != "dandelion"]
        if not_dandelion:
            raise ValidationError(not_dandelion, what="function")
        engine = doc.get("engine") if isinstance(doc, dict) and isinstance(doc.get("engine"), str) else None
        engine_error: FieldError | None = None
        try:
            backend, _ = self._backend_for(engine or self.default_engine)
        except BackendUnavailable as exc:
            if engine is None:
                raise
            # An engine the config names but no plugin provides is a problem of the config.
            engine_error = _not_an_engine(engine, exc)
            backend, _ = self._backend_for(self.default_engine)
        try:
            cfg = parse_function(doc, limits=self.limits, device=backend.driver.device_limits())
        except ValidationError as exc:
            if engine_error is None or any(e.path == "engine" for e in exc.errors):
                raise
            raise ValidationError([engine_error, *exc.errors]) from None
        if engine_error is not None:
            raise ValidationError(engine_error)
        libraries: dict[str, str] = {}
        infos: dict[str, LibraryInfo] = {}
        errors: list[FieldError] = []
        for libname in cfg.libraries:
            try:
                lib_record = self.registry.get_library(tenant, libname)
            except NotFound:
                errors.append(FieldError("library" if libname == cfg.library else "kernels",
                                         f"library {libname!r} is not registered"))
                continue
            try:
                infos[libname] = self.library_info(backend, lib_record)
            except LibraryError as exc:
                errors.append(FieldError("library", f"library {libname!r} cannot run on backend "
                                         f"{backend.name!r}: {exc.errors[0].message}"))
                continue
            libraries[libname] = lib_record.sha256
        if not errors:
            errors = check_function_against_libraries(cfg, infos, heap_limit=self.heap_limit,
                                                      device=backend.driver.device_limits())
        if errors:
            raise ValidationError(errors)
        record = self.registry.put_function(tenant, name, doc, libraries, cfg.engine or self.default_engine,
                                            source_format, notes or [], max_count=quotas.functions)
        with self._lock:
            self._specs.pop((tenant, name), None)
        self.plugins.notify("pappus_function_registered", name=name, tenant=tenant, libraries=libraries)
        return record

    def remove_function(self, name: str, *, tenant: str = "default") -> None:
        """Remove a function from ``tenant``'s namespace (NotFound if it has none of that name)."""
        self.registry.remove(tenant, "functions", name)
        with self._lock:
            self._specs.pop((tenant, name), None)

    def remove_library(self, name: str, *, tenant: str = "default") -> None:
        """Remove a library from ``tenant``'s namespace. Functions registered against it keep
        the exact bytes they were validated with (by hash) and keep working."""
        self.registry.remove(tenant, "libraries", name)

    def list_libraries(self, *, tenant: str = "default") -> list[LibraryRecord]:
        return self.registry.list_libraries(tenant)

    def list_functions(self, *, tenant: str = "default") -> list[FunctionRecord]:
        return self.registry.list_functions(tenant)

    def _import_dandelion(self, doc: Any, source: Any, modules_dir: str | Path | None, tenant: str,
                          explicit: bool, input_sizes: Mapping[str, int] | None = None, engine: str | None = None
                          ) -> tuple[Any, list[str] | None]:
        try:
            from .importers.dandelion import detect_dandelion, import_dandelion
        except ImportError:
            if explicit:
                raise ValidationError(FieldError("format", "the Dandelion importer is not available")) from None
            return doc, None
        if not explicit and detect_dandelion(doc) is None:
            return doc, None
        backend = self.backend
        if engine is not None:  # its backend registers and reads the modules
            try:
                backend, _ = self._backend_for(engine)
            except BackendUnavailable as exc:
                raise ValidationError(_not_an_engine(engine, exc), what="function") from None
        if modules_dir is None and isinstance(source, (str, Path)) and not str(source).lstrip().startswith("{"):
            modules_dir = Path(source).parent
        from .importers.dandelion import narrow_constants

        registry = self.registry

        class Registered:
            """The tenant's library names, looked up one at a time as the importer asks."""

            def __contains__(self, name: object) -> bool:
                return (isinstance(name, str) and library_name_problem(name) is None
                        and registry.exists(tenant, "libraries", name))

        # No modules directory (a config given as a dict, text or bytes; the HTTP API): modules
        # resolve by name to the tenant's registered libraries, and nothing new is registered.
        result = import_dandelion(doc, modules_dir=Path(modules_dir) if modules_dir else None, limits=self.limits,
                                  input_sizes=input_sizes, registered=None if modules_dir else Registered())
        infos = {}
        for libname, path in result.libraries.items():
            record = self.register_library(libname, path, tenant=tenant, backend=backend.name)
            infos[libname] = self.library_info(backend, record)
        for libname in result.registered:
            try:
                infos[libname] = self.library_info(backend, self.registry.get_library(tenant, libname))
            except (NotFound, LibraryError):
                pass  # removed since, or not for this backend: the check against the libraries says so
        # Upstream passes every constant as an i64 and the kernel reads as many bytes as its
        # parameter has; retype constants to the real widths so the signature check holds.
        config, more = narrow_constants(result.config, infos, limits=self.limits)
        return config, list(result.notes) + list(more)

    def function_spec(self, name: str, tenant: str = "default") -> FunctionSpec:
        """The engine-ready form of a registered function (cached; refreshed when the record changes)."""
        stamp = self.registry.function_stamp(tenant, name)
        if stamp is None:
            raise NotFound("function", name)
        cached = self._specs.get((tenant, name))
        if cached is not None and cached[0] == stamp:
            return cached[1]
        record = self.registry.get_function(tenant, name)
        backend, _ = self._backend_for(record.engine)
        cfg = parse_function(record.config, limits=self.limits, device=backend.driver.device_limits())
        refs: dict[str, LibraryRef] = {}
        signatures: dict[str, Any] = {}
        static_shared: dict[str, int] = {}
        for libname, sha in record.libraries.items():
            refs[libname] = LibraryRef(libname, sha, str(self.registry.blob_path(sha)))
        for ref in cfg.kernels:
            lib_record = LibraryRecord(ref.library, tenant, record.libraries[ref.library], 0, backend.name, "", [], 0)
            info = self.library_info(backend, lib_record)
            kernel = info.kernel(ref.name)
            if kernel is not None:
                signatures[ref.name] = kernel.params
                if kernel.static_shared_bytes:
                    static_shared[ref.name] = kernel.static_shared_bytes
        key = hashlib.sha256(json.dumps([record.config, record.libraries, record.engine, tenant],
                                        sort_keys=True).encode()).hexdigest()
        spec = FunctionSpec(key=key, name=name, tenant=tenant, config=cfg, signatures=signatures, libraries=refs,
                            deadline=cfg.deadline or self.default_deadline, engine=record.engine,
                            static_shared=static_shared)
        with self._lock:
            self._specs[(tenant, name)] = (stamp, spec)
        return spec

    # --- invocation ------------------------------------------------------------------------

    def invoke_async(self, name: str, inputs: Mapping[str, Any], *, tenant: str = "default",
                     deadline: float | None = None, engine: str | None = None) -> Future[dict[str, bytes]]:
        """Queue an invocation; the future resolves to the outputs or raises a pappus error.

        What is refused at admission raises here, before any future exists (as an executor's
        ``submit`` does): ``NotFound``, ``InvalidInput``, ``OutOfMemory`` (larger than the
        engine's pool), ``QuotaExceeded``, ``Overloaded`` (queue full), ``EngineClosed``,
        ``BackendUnavailable``. Once a future is returned, it settles exactly once, whatever
        happens, with the outputs or the run's error (``KernelFault``, ``DeadlineExceeded``,
        ``WorkerLost``, ...).

        ``inputs`` maps each input name to its bytes: ``bytes``, or any buffer-protocol object
        (``bytearray``, ``memoryview``, a numpy array, ...) taken as its raw bytes in C order,
        sized by ``nbytes`` (never ``len()``). Contiguous buffers are used in place and must
        not change until the invocation settles; non-contiguous ones are copied. Anything else
        (``str``, ``int``, ``None``, a list, ...) raises ``InvalidInput`` naming the input.
        ``deadline`` (seconds) must be finite, positive and at most ``limits.max_deadline``
        (24 h by default), else ``InvalidInput`` on ``deadline``.
        """
        return self._start(name, inputs, tenant, deadline, engine, waited_for=False)

    def _start(self, name: str, inputs: Mapping[str, Any], tenant: str, deadline: float | None,
               engine: str | None, waited_for: bool) -> Future[dict[str, bytes]]:
        """Admit an invocation and hand it to its engine: queued, or (``waited_for``: the calling
        thread waits for it anyway) run on this thread when the engine is idle (``Engine.call``)."""
        spec = self.function_spec(name, tenant)
        if deadline is not None:
            deadline = check_deadline(deadline, self.limits.max_deadline)
        inputs = input_views(inputs)
        invocation = Invocation(spec, inputs, deadline or spec.deadline, tenant)
        chosen = self.dispatcher.choose(engine or spec.engine, invocation)
        queued = self.tenants.quotas(tenant).queued_invocations
        if queued is not None and chosen.queue.depth(tenant) >= queued:  # early; exact in the queue
            raise quota_error(tenant, "queued_invocations", queued, retry_after=1.0)
        if invocation.resolution is None:  # sizes and bounds: checked before anything is queued
            invocation.resolution = chosen.plan_for(spec).resolve(inputs)
        key = self._admit(tenant, chosen.name, invocation.resolution.top)
        try:
            future = chosen.call(invocation) if waited_for else chosen.submit(invocation)
        except BaseException:
            self._settled(key)
            raise
        future.add_done_callback(lambda f: self._settled(key, f))
        return future

    def _admit(self, tenant: str, engine: str, pool_bytes: int) -> tuple[str, str]:
        """The tenant's admission quotas (pool bytes, concurrent invocations); counts the
        invocation in. The queued-invocations quota is the engine queue's, at ``submit``."""
        quotas = self.tenants.quotas(tenant)
        limit = quotas.pool_bytes_per_invocation
        if limit is not None and pool_bytes > limit:
            raise quota_error(tenant, "pool_bytes_per_invocation", limit)
        if quotas.fault_rate is not None:
            wait = self._faults.peek(tenant)
            if wait > 0:
                raise quota_error(tenant, "fault_rate", quotas.fault_rate,
                                  retry_after=max(1.0, math.ceil(retry_after(wait))))
        key = (engine, tenant)
        limit = quotas.concurrent_invocations
        with self._active_lock:
            active = self._active.get(tenant, 0)
            if limit is not None and active >= limit:
                raise quota_error(tenant, "concurrent_invocations", limit, retry_after=1.0)
            self._active[tenant] = active + 1
            self._active_by_engine[key] = self._active_by_engine.get(key, 0) + 1
        return key

    def _settled(self, key: tuple[str, str], future: Future[Any] | None = None) -> None:
        with self._active_lock:
            self._active[key[1]] -= 1
            self._active_by_engine[key] -= 1
        if future is not None and not future.cancelled():
            error = future.exception()
            if error is not None and outcome_of(error) in FAULT_OUTCOMES:
                quotas = self.tenants.quotas(key[1])
                if quotas.fault_rate is not None:  # a fault takes a token (or finds none left)
                    self._faults.take(key[1], quotas.fault_rate, quotas.fault_burst)

    def active(self, tenant: str | None = None) -> int | dict[tuple[str, str], int]:
        """Admitted, unsettled invocations of ``tenant``; without one, by (engine, tenant)."""
        with self._active_lock:
            if tenant is not None:
                return self._active.get(tenant, 0)
            return dict(self._active_by_engine)

    def invoke(self, name: str, inputs: Mapping[str, Any], *, tenant: str = "default",
               deadline: float | None = None, engine: str | None = None) -> dict[str, bytes]:
        """Run a function and wait: ``{"B": b"..."}``; raises pappus errors. When the engine is
        idle the invocation runs on this thread (``Engine.call``), sparing two thread hand-offs;
        it still returns at the deadline."""
        return self._start(name, inputs, tenant, deadline, engine, waited_for=True).result()

    # --- lifecycle -------------------------------------------------------------------------

    def engine(self, name: str | None = None) -> Any:
        """The engine object (started if needed): for metrics, tests and tools."""
        return self.dispatcher.engine(name or self.default_engine)

    def metrics(self) -> list[dict[str, Any]]:
        return self.dispatcher.metrics()

    def close(self, drain: bool = True, timeout: float | None = 30.0) -> None:
        self.dispatcher.close(drain=drain, timeout=timeout)

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
