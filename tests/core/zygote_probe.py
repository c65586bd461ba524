"""Targets for tests/core/test_zygote.py, imported by the zygote (preloads) and its children."""

from __future__ import annotations

import gc
import json
import os

WARMED_BY: int | None = None


def warm() -> None:
    """A ``module:function`` preload: runs once, in the zygote."""
    global WARMED_BY
    WARMED_BY = os.getpid()


def _private_dirty_kb() -> int:
    with open("/proc/self/smaps_rollup") as fh:
        return sum(int(line.split()[1]) for line in fh if line.startswith("Private_Dirty:"))


def report(fd: int) -> None:
    """A child: says who warmed what it inherited, whether libseccomp came loaded, and what a
    full collection here copies of the zygote's memory."""
    from pappus import seccomp

    before = _private_dirty_kb()
    gc.collect()
    copied = _private_dirty_kb() - before
    with os.fdopen(fd, "w") as out:
        json.dump({"pid": os.getpid(), "warmed_by": WARMED_BY, "seccomp_loaded": seccomp._loaded is not None,
                   "frozen": gc.get_freeze_count(), "collection_copied_kb": copied}, out)
