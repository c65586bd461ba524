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
