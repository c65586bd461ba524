"""Reading ``/proc/<pid>/stat`` of every process, for process-tree checks and CPU accounting."""

from __future__ import annotations

import os
from collections.abc import Iterator


def iter_process_stats() -> Iterator[tuple[int, list[bytes]]]:
    """``(pid, fields)`` of each process that can be read now; ``fields`` are the stat fields
    after the command name (``fields[0]`` state, ``[1]`` ppid, ``[2]`` process group,
    ``[11:15]`` utime, stime, cutime, cstime). Processes that end mid-scan are skipped."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        yield int(entry), fields
