"""Every hook pappus calls, documented where it is declared.

Plugins implement these with ``@pappus.hookimpl`` in a module named by an entry point in the
``pappus`` group (built-in plugins register the same way). An implementation may accept any
subset of a hook's arguments, so hooks can grow new arguments without breaking plugins.

Hooks are for discovery, registration and observation. None is called per invocation: per
invocation work never goes through pluggy (a hook call costs microseconds); finished
invocations reach observers in batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .plugins import BackendRegistry, FaultMonitorRegistry

hookspec = pluggy.HookspecMarker("pappus")
hookimpl = pluggy.HookimplMarker("pappus")

# -------------------------------------------------------------------------------------------
# Registration hooks: called once, when plugins are first loaded.
# -------------------------------------------------------------------------------------------


@hookspec
def pappus_register_backends(registry: BackendRegistry) -> None:
    """Register backend bundles.

    :param registry: call ``registry.add(backend)`` with a :class:`pappus.interfaces.Backend`
        for each backend the plugin provides. Names are unique across all plugins: a second
        backend with a taken name is refused and reported against the plugin that tried.

    Called once per process, the first time plugins are loaded. Registering must be cheap and
    must not touch a device: availability is asked later through ``Backend.check``.
    """


@hookspec
def pappus_register_fault_monitors(registry: FaultMonitorRegistry) -> None:
    """Register fault monitors.

    :param registry: call ``registry.add(name, factory, backends=(...))``; ``factory()`` returns
        a :class:`pappus.interfaces.FaultMonitor`; ``backends`` names the backends whose engines
        use it when it is available.

    Called once per process, right after ``pappus_register_backends``.
    """


# -------------------------------------------------------------------------------------------
# Observation hooks: for metrics and logging only. Their results are ignored, and an exception
# raised by one is logged and does not affect the operation that triggered it.
# -------------------------------------------------------------------------------------------


@hookspec
def pappus_library_registered(name: str, tenant: str, sha256: str, size: int, backend: str) -> None:
    """A library was stored and validated.

    :param name: the library's name in ``tenant``'s namespace.
    :param sha256: content hash of the stored bytes.
    :param backend: the backend whose driver validated it.
    """


@hookspec
def pappus_function_registered(name: str, tenant: str, libraries: dict[str, str]) -> None:
    """A function config was validated against its libraries and stored.

    :param libraries: library name -> sha256 the function was validated against.
    """


@hookspec
def pappus_engine_started(engine: str, workers: int, pool_bytes: int) -> None:
    """An engine finished starting.

    :param engine: the engine name, e.g. ``cpu-multiprocess``.
    :param workers: number of executors (1 for a sequential engine).
    :param pool_bytes: pool bytes per executor.
    """


@hookspec
def pappus_engine_stopped(engine: str, reason: str) -> None:
    """An engine shut down (``reason``: ``"closed"``, ``"unhealthy"``, ...)."""


@hookspec
def pappus_worker_respawned(engine: str, worker: int, cause: str, seconds: float) -> None:
    """A multiprocess worker was replaced after it died, hung or faulted.

    :param cause: what ended the old worker: the signal that killed it (``"SIGKILL"``,
        ``"SIGSEGV"``), ``"exit code N"``, ``"deadline"`` (it did not stop after its deadline),
        ``"protocol error"``, ``"device could not recover: STATUS"``, ``"worker died while
        idle"``, or ``"previous worker ended"`` (found dead before its next invocation).
    :param seconds: time until the new worker was ready to serve.
    """


@hookspec
def pappus_invocations_finished(engine: str, records: Sequence[Any]) -> None:
    """A batch of finished invocations (never one call per invocation).

    :param records: :class:`pappus.engine.InvocationRecord` items: function, tenant, outcome
        (``"ok"`` or an error code), queue and run seconds, and whether it was cold.

    Called from a background thread at most about once a second while invocations finish.
    """
