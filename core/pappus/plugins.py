"""Plugin loading and the registries plugins fill.

Plugins come from the ``pappus`` entry-point group; built-in ones register through it too.
Each entry point is imported and each registration hook called on its own, so a plugin that
fails to import, raises, or registers something invalid is reported with its name and reason
and does not take the others down. What the hooks registered is cached: lookups never call
hooks again. ``PAPPUS_PLUGINS=cpu,hip`` limits which entry points load;
``PAPPUS_PLUGIN_MODULES=pkg.mod,other.mod`` adds plugin modules that are not installed as
distributions (a backend under development, a test double).
"""

from __future__ import annotations

import os
import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .errors import BackendNotInstalled, PluginError
from .interfaces import Availability, Backend, FaultMonitor

ENTRY_POINT_GROUP = "pappus"


@dataclass
class PluginRecord:
    """What one plugin is and what it registered (or why it failed)."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    ok: bool = True
    error: str | None = None
    backends: list[str] = field(default_factory=list)
    fault_monitors: list[str] = field(default_factory=list)


class BackendRegistry:
    """Backends by name. Refuses duplicate names and records which plugin registered each."""

    def __init__(self) -> None:
        self._backends: dict[str, Backend] = {}
        self._owner: dict[str, str] = {}
        self.current_plugin = "<direct>"
        self.problems: list[tuple[str, str]] = []

    def add(self, backend: Backend) -> None:
        if not isinstance(backend, Backend):
            raise PluginError(self.current_plugin, f"registered {type(backend).__name__}, not a Backend")
        if not backend.name or not backend.name.replace("_", "").isalnum() or backend.name != backend.name.lower():
            raise PluginError(self.current_plugin, f"backend name {backend.name!r} must be lower-case alphanumeric")
        if backend.name in self._backends:
            raise PluginError(self.current_plugin, f"backend {backend.name!r} is already registered by "
                              f"plugin {self._owner[backend.name]!r}")
        for kind in backend.engine_kinds:
            if kind not in ("sequential", "multiprocess"):
                raise PluginError(self.current_plugin, f"backend {backend.name!r}: unknown engine kind {kind!r}")
        from dataclasses import replace

        self._backends[backend.name] = replace(backend, plugin=self.current_plugin)
        self._owner[backend.name] = self.current_plugin

    def get(self, name: str) -> Backend:
        try:
            return self._backends[name]
        except KeyError:
            raise BackendNotInstalled(name, self.not_installed(name)) from None

    def not_installed(self, name: str, give: str = "{}") -> str:
        """Why ``name`` is no backend here: what is installed, and for an engine's name
        (``cpu-sequential``), its backend, spelt with ``give`` as the caller takes it
        (``"--backend {}"``, ``"backend={}"``)."""
        shown = name[:40]
        message = f"{shown!r} is not an installed backend (installed: {', '.join(self.names()) or 'none'})"
        base, sep, _ = name.rpartition("-")
        if sep and base in self._backends:
            message += f"; {shown!r} is an engine, give its backend: {give.format(base)}"
        return message

    def owner(self, name: str) -> str:
        return self._owner[name]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._backends.values())

    def __contains__(self, name: object) -> bool:
        return name in self._backends

    def names(self) -> list[str]:
        return sorted(self._backends)


@dataclass(frozen=True)
class FaultMonitorEntry:
    name: str
    factory: Callable[[], FaultMonitor]
    backends: tuple[str, ...]
    plugin: str


class FaultMonitorRegistry:
    def __init__(self) -> None:
        self._entries: dict[str, FaultMonitorEntry] = {}
        self.current_plugin = "<direct>"

    def add(self, name: str, factory: Callable[[], FaultMonitor], backends: Iterable[str] = ()) -> None:
        if name in self._entries:
            raise PluginError(self.current_plugin, f"fault monitor {name!r} is already registered by "
                              f"plugin {self._entries[name].plugin!r}")
        if not callable(factory):
            raise PluginError(self.current_plugin, f"fault monitor {name!r}: factory is not callable")
        self._entries[name] = FaultMonitorEntry(name, factory, tuple(backends), self.current_plugin)

    def for_backend(self, backend: str) -> list[FaultMonitorEntry]:
        return [e for e in self._entries.values() if backend in e.backends]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._entries.values())


class Plugins:
    """The loaded plugins: a pluggy manager plus the cached registries."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("pappus")
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self.backends = BackendRegistry()
        self.fault_monitors = FaultMonitorRegistry()
        self._loaded = False
        self._lock = threading.Lock()

    # --- loading ---------------------------------------------------------------------------

    def load(self, entry_points: Iterable[metadata.EntryPoint] | None = None) -> Plugins:
        with self._lock:
            if self._loaded:
                return self
            eps = list(entry_points) if entry_points is not None else _entry_points()
            allowed = _allowed_plugins()
            for ep in eps:
                if allowed is not None and ep.name not in allowed:
                    continue
                self._load_entry_point(ep)
            for module in _extra_modules():
                self._load_entry_point(metadata.EntryPoint(name=module, value=module, group=ENTRY_POINT_GROUP),
                                       extra=True)
            self._register_all()
            self._loaded = True
        return self

    def register_module(self, module: ModuleType | object, name: str) -> None:
        """Register a plugin object directly (tests, embedding applications)."""
        record = PluginRecord(name=name, module=getattr(module, "__name__", type(module).__name__))
        self.records[name] = record
        try:
            self.pm.register(module, name=name)
        except Exception as exc:  # pluggy validates hookimpl signatures here
            record.ok, record.error = False, _reason(exc)
            return
        if self._loaded:
            self._call_registration(name)

    def _load_entry_point(self, ep: metadata.EntryPoint, extra: bool = False) -> None:
        """``extra``: a PAPPUS_PLUGIN_MODULES module; one already loaded (through its entry
        point) is not loaded again."""
        dist = getattr(ep, "dist", None)
        record = PluginRecord(
            name=ep.name,
            module=ep.value,
            distribution=getattr(dist, "name", None) if dist else None,
            version=getattr(dist, "version", None) if dist else None,
        )
        self.records[ep.name] = record
        if self.pm.has_plugin(ep.name):
            record.ok, record.error = False, "another plugin with this name is already loaded"
            return
        try:
            module = ep.load()
            if extra and self.pm.is_registered(module):
                del self.records[ep.name]  # its entry point's record already says what it registered
                return
            self.pm.register(module, name=ep.name)
        except Exception as exc:  # a broken plugin must not take the others down
            record.ok, record.error = False, _reason(exc)

    def _register_all(self) -> None:
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = getattr(exc, "plugin_name", None) or "?"
            if name in self.records:
                self.records[name].ok, self.records[name].error = False, _reason(exc)
        for name in list(self.records):
            self._call_registration(name)

    def _call_registration(self, plugin_name: str) -> None:
        record = self.records[plugin_name]
        if not record.ok:
            return
        plugin = self.pm.get_plugin(plugin_name)
        for hook_name, registry, bucket in (
            ("pappus_register_backends", self.backends, record.backends),
            ("pappus_register_fault_monitors", self.fault_monitors, record.fault_monitors),
        ):
            hook = getattr(self.pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                before = set(_names(registry))
                registry.current_plugin = plugin_name
                try:
                    impl.function(**{arg: registry for arg in impl.argnames})
                except Exception as exc:
                    record.ok, record.error = False, _reason(exc)
                finally:
                    registry.current_plugin = "<direct>"
                bucket.extend(sorted(set(_names(registry)) - before))

    # --- queries ---------------------------------------------------------------------------

    def backend(self, name: str) -> Backend:
        self.load()
        return self.backends.get(name)

    def resolve_engine(self, engine: str) -> tuple[Backend, str]:
        """``"cpu-sequential"`` -> (cpu backend, "sequential")."""
        self.load()
        name, sep, kind = engine.rpartition("-")
        if not sep:
            if engine in self.backends:
                raise BackendNotInstalled(engine, "engine names look like '<backend>-<kind>' (backend "
                                     f"{engine!r} has: {', '.join(self.backends.get(engine).engine_names())})",
                                     f"engine {engine!r}")
            engines = [e for b in sorted(self.backends, key=lambda b: b.name) for e in b.engine_names()]
            raise BackendNotInstalled(engine, f"{engine!r} is not an installed backend, and engine names look like '<backend>-<kind>' "
                                 f"(installed engines: {', '.join(engines) or 'none'})", f"engine {engine!r}")
        try:
            backend = self.backends.get(name)
        except BackendNotInstalled as exc:  # the registry's words, about this engine
            raise BackendNotInstalled(name, exc.fields["reason"], f"engine {engine!r}") from None
        if kind not in backend.engine_kinds:
            raise BackendNotInstalled(engine, f"backend {name!r} has no {kind!r} engine "
                                 f"(it has: {', '.join(backend.engine_names())})", f"engine {engine!r}")
        return backend, kind

    def availability(self, backend: Backend) -> Availability:
        try:
            result = backend.check()
        except Exception as exc:  # an availability probe must never crash the caller
            return Availability(False, f"availability check failed: {_reason(exc)}")
        if not isinstance(result, Availability):
            return Availability(False, f"availability check returned {type(result).__name__}")
        return result

    def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call an observation hook; an observer's exception is logged, never propagated."""
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            try:
                impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})
            except Exception:  # observers must not break the observed operation
                import logging

                logging.getLogger("pappus.plugins").warning(
                    "observer %s.%s failed:\n%s", impl.plugin_name, hook_name, traceback.format_exc())

    def report(self) -> dict[str, Any]:
        """What ``pappus plugins --json`` prints."""
        self.load()
        backends = []
        for backend in sorted(self.backends, key=lambda b: b.name):
            avail = self.availability(backend)
            backends.append({
                "name": backend.name,
                "plugin": backend.plugin,
                "description": backend.description,
                "available": avail.available,
                "reason": avail.reason,
                "engines": [{"name": e, "available": avail.available, "reason": avail.reason}
                            for e in backend.engine_names()],
                "capabilities": sorted(c.value for c in backend.capabilities),
            })
        monitors = []
        for entry in self.fault_monitors:
            try:
                avail = entry.factory().availability()
            except Exception as exc:
                avail = Availability(False, f"could not be created: {_reason(exc)}")
            monitors.append({"name": entry.name, "plugin": entry.plugin, "backends": list(entry.backends),
                             "available": avail.available, "reason": avail.reason})
        plugins = [{
            "name": r.name, "module": r.module, "distribution": r.distribution, "version": r.version,
            "ok": r.ok, "error": r.error, "backends": r.backends, "fault_monitors": r.fault_monitors,
        } for r in self.records.values()]
        from .engine import lockdown

        return {"plugins": plugins, "backends": backends, "fault_monitors": monitors,
                "worker_lockdown": lockdown.outlook()}


def _names(registry: BackendRegistry | FaultMonitorRegistry) -> list[str]:
    return [item.name for item in registry]


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _entry_points() -> list[metadata.EntryPoint]:
    return list(metadata.entry_points(group=ENTRY_POINT_GROUP))


def _allowed_plugins() -> set[str] | None:
    value = os.environ.get("PAPPUS_PLUGINS")
    if not value:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def _extra_modules() -> list[str]:
    value = os.environ.get("PAPPUS_PLUGIN_MODULES", "")
    return list(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))  # each once


_plugins: Plugins | None = None
_plugins_lock = threading.Lock()


def get_plugins() -> Plugins:
    """The process-wide plugins, loaded on first use (importing pappus stays cheap)."""
    global _plugins
    with _plugins_lock:
        if _plugins is None:
            _plugins = Plugins()
    return _plugins.load()


def reset_plugins() -> None:
    """Forget loaded plugins (tests)."""
    global _plugins
    with _plugins_lock:
        _plugins = None
