"""Executor recovery: a reset that moves the pool gives the executor a pool on the new base."""

from __future__ import annotations

from pappus.devices.host import HostDevice
from pappus.engine.executor import Executor, ExecutorConfig


class MovingDevice(HostDevice):
    """Needs a reset after every abort, and its reset re-reserves memory at another address."""

    def reset(self):
        super().reset()
        self.base += 1 << 20
        self.memory[:] = 0
        return self.base


def test_recover_rebuilds_pool_on_moved_base():
    ex = Executor(lambda: MovingDevice(memory_bytes=1 << 20), ExecutorConfig(pool_bytes=1 << 16))
    ex.start()
    old = ex.pool
    assert ex.recover() is True and ex.pool is old  # healthy: nothing to do
    ex.device.abort()
    assert not ex.device.healthy
    assert ex.recover() is True
    assert ex.pool is not old and ex.pool.base == old.base + (1 << 20) and ex.pool.size == old.size
    ex.close()


def _spec(tenant="default", name="mm"):
    import hashlib

    from pappus.config import parse_function
    from pappus.engine.invocation import FunctionSpec, LibraryRef

    from .helpers import HOST_LIB, matmul_config

    return FunctionSpec(key=f"{tenant}/{name}", name=name, tenant=tenant, config=parse_function(matmul_config()),
                        signatures={}, libraries={"m": LibraryRef("m", hashlib.sha256(HOST_LIB).hexdigest(), "")},
                        deadline=5.0), HOST_LIB


class CountingLoads(HostDevice):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.unloads = 0

    def unload_module(self, module):
        self.unloads += 1


def test_module_cache_hot_cold_per_tenant(tmp_path, monkeypatch):
    import pappus.engine.executor as executor_mod

    spec_a, lib = _spec("tenant-a")
    spec_b, _ = _spec("tenant-b")
    monkeypatch.setattr(executor_mod, "_read_verified", lambda ref: lib)
    cache = executor_mod.ModuleCache(CountingLoads(), capacity=4)
    assert cache.kernel_handles(spec_a)[1] is True      # cold
    assert cache.kernel_handles(spec_a)[1] is False     # hot
    assert cache.kernel_handles(spec_b)[1] is True      # another tenant: cold again, no shared warmth
    assert cache.device.loads == 2


def test_module_cache_capacity_zero_is_always_cold(monkeypatch):
    import pappus.engine.executor as executor_mod

    spec, lib = _spec()
    monkeypatch.setattr(executor_mod, "_read_verified", lambda ref: lib)
    dev = CountingLoads()
    cache = executor_mod.ModuleCache(dev, capacity=0)
    for _ in range(3):
        handles, cold = cache.kernel_handles(spec)
        assert cold and set(handles) == {"matmul_at_i64", "add_i64"}
    assert dev.loads == 3 and dev.unloads == 2  # the module in use is never unloaded under it
