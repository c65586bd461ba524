"""One device, its pool, its module cache: runs one invocation at a time.

The sequential engine owns one executor in a thread of the supervisor; every multiprocess
worker owns one in its own process. This is the only place a DeviceAPI is driven, so both
engines share every mechanism: pool sizing, heap limit, module cache, plan cache, recovery.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..config.limits import DEFAULT_LIMITS, Limits
from ..errors import DeviceError, KernelFault, LibraryError, PappusError
from ..interfaces import DeviceAPI, DeviceInfo, LibraryImage
from ..interpreter import run_invocation
from ..plan import Plan
from ..pool import BufferPool
from .faults import FaultAttributor
from .invocation import FunctionSpec, LibraryRef

log = logging.getLogger("pappus.engine")

#: Share of free device memory an engine reserves (the rest stays for the runtime itself).
DEFAULT_MEMORY_FRACTION = 0.9


@dataclass(frozen=True)
class ExecutorConfig:
    pool_bytes: int | None = None  # explicit pool size; default: fraction of free memory / workers
    memory_fraction: float = DEFAULT_MEMORY_FRACTION
    share: int = 1  # number of executors sharing the device (multiprocess workers)
    heap_limit: int = 0
    module_cache_size: int = 64
    plan_cache_size: int = 1024
    limits: Limits = DEFAULT_LIMITS
    #: Fault monitor factories for this backend (from ``pappus_register_fault_monitors``);
    #: started in the process that owns the device, so workers run their own.
    fault_monitors: tuple[Callable[[], Any], ...] = ()


class ModuleCache:
    """Loaded modules keyed by tenant and library sha256 (LRU), and kernel handles per function.

    The thesis reloaded the module on every invocation; here the first invocation of a library
    on an executor is *cold* (load + lookup) and later ones are *hot*. Modules are cached per
    tenant: a warm module must not tell one tenant that another ran the same bytes recently.
    """

    def __init__(self, device: DeviceAPI, capacity: int) -> None:
        self.device = device
        self.capacity = capacity
        self.modules: OrderedDict[tuple[str, str], Any] = OrderedDict()
        # function key -> (kernel name -> handle, the module keys those handles come from)
        self.handles: dict[str, tuple[dict[str, Any], frozenset[tuple[str, str]]]] = {}
        self.hits = 0
        self.misses = 0

    def module(self, ref: LibraryRef, tenant: str = "") -> Any:
        key = (tenant, ref.sha256)
        module = self.modules.get(key)
        if module is not None:
            self.modules.move_to_end(key)
            return module
        data = _read_verified(ref)
        module = self.device.load_module(LibraryImage(ref.sha256, data, ref.path))
        self.modules[key] = module
        return module

    def _evict(self, keep: frozenset[tuple[str, str]]) -> None:
        """Unload least recently used modules beyond capacity, never those in use now."""
        for key in list(self.modules):
            if len(self.modules) <= max(self.capacity, len(keep)):
                break
            if key in keep:
                continue
            old = self.modules.pop(key)
            self.handles = {k: v for k, v in self.handles.items() if key not in v[1]}
            try:
                self.device.unload_module(old)
            except Exception:  # eviction must not fail the invocation that caused it
                log.warning("unloading module %s failed", key[1][:12], exc_info=True)

    def kernel_handles(self, fn: FunctionSpec) -> tuple[Mapping[str, Any], bool]:
        """Handles for every kernel of ``fn``; the flag says whether this was a cold load.

        With capacity 0 nothing is cached: every invocation loads its modules (cold), as the
        thesis's engines did; the previous invocation's modules are unloaded first.
        """
        keys = frozenset((fn.tenant, lib.sha256) for lib in fn.libraries.values())
        cached = self.handles.get(fn.key)
        if cached is not None and self.capacity > 0:
            self.hits += 1
            return cached[0], False
        self.misses += 1
        if self.capacity == 0:
            self._evict(frozenset())
        handles: dict[str, Any] = {}
        for ref in fn.config.kernels:
            lib = fn.libraries[ref.library]
            handles[ref.name] = self.device.get_kernel(self.module(lib, fn.tenant), ref.name)
        self.handles[fn.key] = (handles, keys)
        self._evict(keys)
        return handles, True

    def clear(self) -> None:
        self.modules.clear()
        self.handles.clear()


def _pool(device: DeviceAPI, base: int, size: int) -> BufferPool:
    """The pool over a device's reservation, as the device's guarantees call for."""
    return BufferPool(device, base, size, scrub_before_use=not device.bounds_writes,
                      alternate=getattr(device, "alternate_windows", 0) if device.bounds_writes else 0)


def _read_verified(ref: LibraryRef) -> bytes:
    try:
        with open(ref.path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise LibraryError(f"stored library {ref.name!r} cannot be read: {exc.strerror}") from None
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        raise LibraryError(f"stored library {ref.name!r} does not match the sha256 it was registered "
                           "with (modified on disk?); register it again")
    return data


class _Steps:
    """Seconds between consecutive ``done`` calls, by the name of the step that just ended."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.monotonic()

    def done(self, step: str) -> None:
        now = time.monotonic()
        self.seconds[step] = now - self._last
        self._last = now


class Executor:
    """Drives one DeviceAPI: open, pool, heap limit, module and plan caches, one run at a time."""

    def __init__(self, device_factory: Callable[[], DeviceAPI], config: ExecutorConfig) -> None:
        self.device_factory = device_factory
        self.config = config
        self.device: DeviceAPI | None = None
        self.info: DeviceInfo | None = None
        self.pool: BufferPool | None = None
        self.modules: ModuleCache | None = None
        self.plans: OrderedDict[str, Plan] = OrderedDict()
        self.heap_limit: int | None = None
        self.cold = 0
        self.hot = 0
        self.attributor = FaultAttributor()
        self.monitors: list[Any] = []
        #: Seconds each step of the last ``start`` took (open, heap_limit, reserve, pool, monitors):
        #: what a respawn spends its time on (``bench_engines.py`` prints it).
        self.start_seconds: dict[str, float] = {}
        self._release_pending = False  # a successful run's pool is zeroed after its outputs left

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> DeviceInfo:
        steps = _Steps()
        device = self.device_factory()
        try:
            info = device.open()
            steps.done("open")
            # The heap limit is set before any tenant module is loaded.
            self.heap_limit = device.set_malloc_heap_limit(self.config.heap_limit)
            steps.done("heap_limit")
            size = self.pool_size(info)
            base = device.reserve(size)
            steps.done("reserve")
        except BaseException:
            try:
                device.close()
            except Exception:
                log.debug("closing a device that failed to start", exc_info=True)
            raise
        self.device, self.info = device, info
        self.pool = _pool(device, base, size)
        self.modules = ModuleCache(device, self.config.module_cache_size)
        steps.done("pool")
        self._start_monitors()
        steps.done("monitors")
        self.start_seconds = steps.seconds
        return info

    def _start_monitors(self) -> None:
        if self.monitors:
            return
        for factory in self.config.fault_monitors:
            try:
                monitor = factory()
                availability = monitor.availability()
                if not availability:
                    log.info("fault monitor %s unavailable: %s", getattr(monitor, "name", factory),
                             availability.reason)
                    continue
                monitor.start(self.attributor.attribute)
                self.monitors.append(monitor)
            except Exception:  # a broken monitor must not stop the device from serving
                log.warning("fault monitor %r failed to start", factory, exc_info=True)

    def pool_size(self, info: DeviceInfo) -> int:
        if self.config.pool_bytes is not None:
            if self.config.pool_bytes > info.free_memory:
                raise DeviceError(f"pool of {self.config.pool_bytes} bytes requested but the device has "
                                  f"only {info.free_memory} free")
            return self.config.pool_bytes
        size = int(info.free_memory * self.config.memory_fraction) // max(1, self.config.share)
        return size & ~0xFFFF  # whole 64 KiB units

    def close(self) -> None:
        self._release_pending = False  # the device and its pool go with it
        for monitor in self.monitors:
            try:
                monitor.stop()
            except Exception:
                log.debug("stopping a fault monitor failed", exc_info=True)
        self.monitors = []
        device, self.device = self.device, None
        if device is not None:
            try:
                device.close()
            except Exception:
                log.warning("closing device failed", exc_info=True)
        if self.modules:
            self.modules.clear()

    # --- work ------------------------------------------------------------------------------

    def plan(self, fn: FunctionSpec) -> Plan:
        plan = self.plans.get(fn.key)
        if plan is None:
            limits = self.info.limits if self.info else None
            plan = fn.plan(limits=self.config.limits, device_limits=limits)
            self.plans[fn.key] = plan
            while len(self.plans) > self.config.plan_cache_size:
                self.plans.popitem(last=False)
        else:
            self.plans.move_to_end(fn.key)
        return plan

    def execute(self, fn: FunctionSpec, inputs: Mapping[str, Any], sink: Any = None,
                resolution: Any = None, invocation_id: str = "") -> dict[str, Any]:
        assert self.device is not None and self.pool is not None and self.modules is not None
        self.release_pending()  # never run on a pool the last invocation left unzeroed
        plan = self.plan(fn)
        handles, cold = self.modules.kernel_handles(fn)
        if cold:
            self.cold += 1
        else:
            self.hot += 1
        if not self.monitors:
            out = run_invocation(self.device, self.pool, plan, inputs, handles, sink=sink, resolution=resolution,
                                 release=False)
        else:
            out = self._execute_monitored(plan, inputs, handles, sink, resolution, invocation_id or fn.key)
        self._release_pending = True
        return out

    def release_pending(self) -> None:
        """Zero what the last successful run used, if not done yet. Engines call this right
        after settling the invocation (the caller does not wait for the memset) and
        :meth:`execute` calls it first, so no invocation ever starts on an unzeroed pool."""
        if self._release_pending:
            assert self.pool is not None
            self.pool.release()  # raises: still pending, so nothing runs on this pool
            self._release_pending = False

    def _execute_monitored(self, plan: Plan, inputs: Mapping[str, Any], handles: Mapping[str, Any], sink: Any,
                           resolution: Any, invocation_id: str) -> dict[str, Any]:
        """Run with fault monitors watching: a fault they attribute to this invocation's pool
        range becomes this invocation's error (with the address and reasons), whatever the
        device runtime itself reported."""
        assert self.device is not None and self.pool is not None
        attributed: list[KernelFault] = []
        device = self.device

        def fail(error: KernelFault) -> None:
            attributed.append(error)
            try:
                device.abort()
            except NotImplementedError:
                pass

        agent = self.info.details.get("fault_agent") if self.info else None
        self.attributor.register(invocation_id, agent, self.pool.base, self.pool.base + self.pool.size, fail)
        try:
            out = run_invocation(device, self.pool, plan, inputs, handles, sink=sink, resolution=resolution,
                                 release=False)
        except PappusError as exc:
            if attributed:
                raise attributed[0] from exc
            raise
        finally:
            self.attributor.unregister(invocation_id)
        if attributed:  # the run itself succeeded (nothing released it): zero before failing it
            try:
                self.pool.release()
            except Exception:
                log.warning("pool release after an attributed fault failed", exc_info=True)
            raise attributed[0]
        return out

    def recover(self) -> bool:
        """After a fault: reset the device in place if it can; False means replace this executor."""
        device = self.device
        if device is None:
            return False
        if device.healthy:
            return True
        try:
            new_base = device.reset()
        except NotImplementedError:
            return False
        except Exception:
            log.warning("device reset failed", exc_info=True)
            return False
        if self.modules:
            self.modules.clear()
        if isinstance(new_base, int) and self.pool is not None and new_base != self.pool.base:
            # The reset re-reserved the pool elsewhere: same size, new base, nothing in use.
            self.pool = _pool(device, new_base, self.pool.size)
        return device.healthy

    @property
    def capacity(self) -> int:
        return self.pool.size if self.pool else 0
