"""The buffer pool: one device reservation, O(1) aligned bump allocation, zeroed on release.

Thesis section 4.2.1, hardened. An engine (or each multiprocess worker) reserves its share of
device memory once. An invocation's buffers are bumped out of it back to back; releasing the
invocation zeroes everything from the pool's start to the highest byte handed out since the
last release, in one memset, and this happens in a ``finally`` on every path.
"""

from __future__ import annotations

from typing import Protocol

from .errors import DeviceError, OutOfMemory

DEFAULT_ALIGNMENT = 256


class _Zeroing(Protocol):
    def memset(self, address: int, value: int, nbytes: int) -> None: ...


class BufferPool:
    """Bump allocator over ``[base, base + size)`` of device memory.

    ``scrub_before_use`` is for devices on which a kernel can write anywhere in the pool (GPUs):
    the range about to be handed out is zeroed before use as well, so an out-of-bounds write that
    landed past the previous invocation's buffers cannot reach the next one.
    """

    __slots__ = ("device", "base", "size", "alignment", "top", "high_water", "scrub_before_use",
                 "clean_until", "allocations", "releases", "zeroed_bytes")

    def __init__(
        self,
        device: _Zeroing,
        base: int,
        size: int,
        *,
        alignment: int = DEFAULT_ALIGNMENT,
        scrub_before_use: bool = False,
    ) -> None:
        if alignment <= 0 or alignment & (alignment - 1):
            raise ValueError(f"alignment must be a power of two, not {alignment}")
        if size < 0:
            raise ValueError("pool size must not be negative")
        self.device = device
        self.base = base
        self.size = size
        self.alignment = alignment
        self.top = 0  # next free offset
        self.high_water = 0  # highest offset handed out since the last release
        self.scrub_before_use = scrub_before_use
        # With scrubbing, [0, clean_until) is known to be zero; beyond it a stray write may linger.
        self.clean_until = 0
        self.allocations = 0
        self.releases = 0
        self.zeroed_bytes = 0

    @property
    def available(self) -> int:
        return self.size - self.top

    def allocate(self, nbytes: int, name: str = "buffer") -> int:
        """Hand out ``nbytes`` (aligned); return the offset from the pool base."""
        if nbytes < 0:
            raise ValueError("cannot allocate a negative size")
        mask = self.alignment - 1
        offset = (self.top + mask) & ~mask
        end = offset + nbytes
        if end > self.size:
            raise OutOfMemory(buffer=name, requested=nbytes, available=max(0, self.size - offset),
                              pool_size=self.size)
        if self.scrub_before_use and end > self.clean_until:
            self.device.memset(self.base + self.clean_until, 0, end - self.clean_until)
            self.zeroed_bytes += end - self.clean_until
            self.clean_until = end
        self.top = end
        if end > self.high_water:
            self.high_water = end
        self.allocations += 1
        return offset

    def span(self, offset: int, nbytes: int, name: str = "buffer") -> int:
        """The device address of ``[offset, offset + nbytes)``, refused (DeviceError) unless that
        range lies inside what is handed out now: every copy into or out of the pool goes through
        here, so none can reach past the allocation, nor past the range ``release`` zeroes."""
        if offset < 0 or nbytes < 0 or offset + nbytes > self.top:
            raise DeviceError(f"a copy of {nbytes} bytes at offset {offset} for {name!r} is outside the "
                              f"{self.top} bytes allocated in the pool")
        return self.base + offset

    def layout(self, sizes: list[tuple[str, int]]) -> list[int]:
        """Allocate several buffers at once; on OutOfMemory nothing stays allocated."""
        start_top = self.top
        try:
            return [self.allocate(n, name) for name, n in sizes]
        except OutOfMemory:
            self.top = start_top
            raise

    def release(self) -> None:
        """Zero ``[0, high_water)`` in one memset and start again from the pool's base."""
        used = self.high_water
        self.top = 0
        self.high_water = 0
        self.releases += 1
        self.clean_until = used
        if used:
            self.device.memset(self.base, 0, used)
            self.zeroed_bytes += used
        clear = getattr(self.device, "clear_private_state", None)
        if clear is not None:  # what kernels keep outside the pool (GPU shared and local memory)
            clear()
