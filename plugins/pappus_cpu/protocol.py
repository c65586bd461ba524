"""Messages and shared-memory layouts between CpuDevice and the device template.

Keep in step with ``csrc/pappus_cpu_device.c`` (``tests/cpu/test_build.py`` checks the
numbers that both sides spell out).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

OP_HELLO = 1
OP_POOL = 2
OP_CMD = 3
OP_HEAP = 4
OP_LOAD = 5
OP_SYM = 6
OP_UNLOAD = 7
OP_ABORT = 8
OP_QUIT = 9
OP_DONE = 10
OP_PING = 11

#: struct msg { u32 op; i32 err; u64 a, b, c, d; } + payload
MSG = struct.Struct("<IiQQQQ")
MSG_MAX = 4096

#: Module slots in the template (module ids are 0 .. MAX_MODULES - 1).
MAX_MODULES = 1024

#: The command regions (one per parity of the invocation number): the header, then the program.
#: struct cmd_header: go, magic, prog_off, prog_len, extent, start, nkeep, reserved, keep[KEEP_WORDS]
#: ``[start, extent)`` is the invocation's window of the pool (offsets from its base).
#: ``keep`` is a bitmap with one bit per module slot: the modules the program uses. The child
#: hides every other module (``nkeep`` is the number of bits set, a consistency check).
CMD_MAGIC = 0x444D4350
#: ``extent`` of a run whose extent is unknown: the child may touch the whole pool. Any other
#: value, 0 included, is the number of pool bytes (from its base) it may touch.
EXTENT_UNKNOWN = 2**64 - 1
KEEP_WORDS = MAX_MODULES // 32
HEADER_BYTES = 256  # the program starts this far after the header


class CmdHeader:
    """``struct cmd_header``, published so that a reader who sees a new ``go`` sees the rest.

    ``pack_into(buf, offset, go, magic, prog_off, prog_len, extent, start, nkeep, reserved, *keep)``
    first sets ``go`` to 0 ("being written"; never a sequence number, see :func:`next_seq`),
    then writes every other field, then ``go``: each ``go`` store is one aligned 4-byte store
    (native ``I``: a single ``memcpy`` of 4 bytes, never byte by byte). x86-64 makes stores
    visible in program order, so a reader that loads ``go`` (acquire) and then the rest never
    pairs a new ``go`` with an old or half-written header, unless the next publication starts
    between its loads (a reader that can be preempted there must load ``go`` again). The child
    does not rely on any of that: it trusts ``go`` only after reading its wake-up byte, which
    is written after the header, and the pipe orders the two on every architecture; and the
    supervisor writes the next header of a region only after the child that read the last one
    has exited.
    """

    def __init__(self) -> None:
        self._body = struct.Struct(f"<IQQQQII{KEEP_WORDS}I")  # magic .. keep
        self._go = struct.Struct("I")
        self.size = self._go.size + self._body.size

    def pack_into(self, buffer: Any, offset: int, go: int, *fields: int) -> None:
        self._go.pack_into(buffer, offset, 0)
        self._body.pack_into(buffer, offset + self._go.size, *fields)
        self._go.pack_into(buffer, offset, go)

    def unpack_from(self, buffer: Any, offset: int = 0) -> tuple[int, ...]:
        return self._go.unpack_from(buffer, offset) + self._body.unpack_from(buffer, offset + self._go.size)


#: Invocation sequence numbers run 1, 2, ..., SEQ_CYCLE, 1, ...: never 0 (a header being
#: written), and an even cycle, so that parities keep alternating across the wrap.
SEQ_CYCLE = 0xFFFFFFFE


def next_seq(seq: int) -> int:
    """The sequence number after ``seq`` (0: none yet). The template counts the same way."""
    return seq % SEQ_CYCLE + 1


CMD_HEADER = CmdHeader()
assert CMD_HEADER.size <= HEADER_BYTES


def keep_bitmap(modules: Iterable[int]) -> tuple[int, ...]:
    """``nkeep, reserved, *keep`` of the command header for the module ids ``modules``."""
    words = [0] * KEEP_WORDS
    count = 0
    for m in set(modules):
        if not 0 <= m < MAX_MODULES:
            raise ValueError(f"module id {m} is outside 0..{MAX_MODULES - 1}")
        words[m >> 5] |= 1 << (m & 31)
        count += 1
    return (count, 0, *words)


NODE_LAUNCH = 1
NODE_LOOP = 2
#: struct node_launch: tag, size, entry, grid[3], block[3], shared, launch_id, nargs
LAUNCH = struct.Struct("<IIQ6IQII")
#: struct node_loop: tag, size, times, body_len
LOOP = struct.Struct("<IIQQ")

#: struct child_status: state, sig, code, syscall_nr, arch, launch_id, trap, seq, addr, pc
STATUS = struct.Struct("<IiiiIIIIQQ")
ST_IDLE, ST_RUNNING, ST_DONE, ST_FAULT, ST_BAD_COMMAND = range(5)
EXIT_FAULT = 3
EXIT_BAD_COMMAND = 4

MAX_ARGS = 256
SHARED_MAX = 64 * 1024
