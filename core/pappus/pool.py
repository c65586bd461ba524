"""The buffer pool: one device reservation, O(1) aligned bump allocation, zeroed on release.

Thesis section 4.2.1, hardened. An engine (or each multiprocess worker) reserves its share of
device memory once. An invocation's buffers are bumped out of it back to back; releasing the
invocation zeroes its window (from where its buffers start to the highest byte handed out since
the last release) in one memset, and this happens in a ``finally`` on every path.
With ``alternate`` set, the windows of consecutive invocations alternate between the pool's
start and the first ``alternate``-aligned offset past the previous window, so the next
invocation's buffers never share a page with the last one's. A device whose runs may still be
ending when they have reported done (the CPU backend's sandbox process exiting) then lets the
next invocation start at once, instead of waiting for the last one to be gone.
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

    ``alternate`` (bytes, a power of two, 0 for off; see the module docstring) is for devices that
    fence each run to its window (:attr:`pappus.interfaces.DeviceAPI.alternate_windows`).
    """

    __slots__ = ("device", "base", "size", "alignment", "low", "top", "high_water", "scrub_before_use",
                 "clean_until", "alternate", "allocations", "releases", "zeroed_bytes")

    def __init__(
        self,
        device: _Zeroing,
        base: int,
        size: int,
        *,
        alignment: int = DEFAULT_ALIGNMENT,
        scrub_before_use: bool = False,
        alternate: int = 0,
    ) -> None:
        if alignment <= 0 or alignment & (alignment - 1):
            raise ValueError(f"alignment must be a power of two, not {alignment}")
        if alternate < 0 or alternate & (alternate - 1):
            raise ValueError(f"alternate must be 0 or a power of two, not {alternate}")
        if alternate and scrub_before_use:
            raise ValueError("alternate windows are for devices that fence runs; scrubbing is for those that cannot")
        if size < 0:
            raise ValueError("pool size must not be negative")
        self.device = device
        self.base = base
        self.size = size
        self.alignment = alignment
        self.alternate = alternate
        self.low = 0  # where the current invocation's window starts
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
        if offset < self.low or nbytes < 0 or offset + nbytes > self.top:
            raise DeviceError(f"a copy of {nbytes} bytes at offset {offset} for {name!r} is outside the "
                              f"bytes {self.low}..{self.top} allocated in the pool")
        return self.base + offset

    def layout(self, sizes: list[tuple[str, int]]) -> list[int]:
        """Allocate several buffers at once; on OutOfMemory nothing stays allocated. A fresh
        alternate window that cannot hold them all moves back to the pool's start."""
        start_top, start_high = self.top, self.high_water
        try:
            return [self.allocate(n, name) for name, n in sizes]
        except OutOfMemory:
            self.top, self.high_water = start_top, start_high
            if not (self.low and start_top == self.low):
                raise
        low = self.low
        self.low = self.top = self.high_water = 0
        try:
            return [self.allocate(n, name) for name, n in sizes]
        except OutOfMemory:
            self.low = self.top = self.high_water = low
            raise

    def release(self) -> None:
        """Zero the window ``[low, high_water)`` in one memset; the next invocation starts at
        the pool's base, or with ``alternate`` past this window when this one started there."""
        low, used = self.low, self.high_water
        self.releases += 1
        if used > low:
            self.device.memset(self.base + low, 0, used - low)
            self.zeroed_bytes += used - low
        self.clean_until = used
        nxt = 0
        if self.alternate and used > low and low == 0:
            nxt = (used + self.alternate - 1) & ~(self.alternate - 1)
            if nxt >= self.size:
                nxt = 0
        elif used == low:  # nothing was handed out: stay where this window was
            nxt = low
        self.low = self.top = self.high_water = nxt
        clear = getattr(self.device, "clear_private_state", None)
        if clear is not None:  # what kernels keep outside the pool (GPU shared and local memory)
            clear()
