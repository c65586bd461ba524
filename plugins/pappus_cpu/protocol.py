"""Messages and shared-memory layouts between CpuDevice and the device template.

Keep in step with ``csrc/pappus_cpu_device.c`` (``tests/cpu/test_build.py`` checks the
numbers that both sides spell out).
"""

from __future__ import annotations

import struct

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

#: The command region: the header, then the program.
#: struct cmd_header: go, magic, prog_off, prog_len, extent, nkeep, reserved, keep[KEEP_MAX]
CMD_MAGIC = 0x444D4350
KEEP_MAX = 48
KEEP_ALL = 0xFFFFFFFF
CMD_HEADER = struct.Struct(f"<IIQQQII{KEEP_MAX}I")
HEADER_BYTES = 256  # the program starts this far after the header
assert CMD_HEADER.size <= HEADER_BYTES

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
