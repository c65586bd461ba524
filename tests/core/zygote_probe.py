"""Targets for tests/core/test_zygote.py, imported by the zygote (preloads) and its children."""

from __future__ import annotations

import json
import os

WARMED_BY: int | None = None


def warm() -> None:
    """A ``module:function`` preload: runs once, in the zygote."""
    global WARMED_BY
    WARMED_BY = os.getpid()


def report(fd: int) -> None:
    """A child: says who warmed what it inherited, and whether libseccomp came loaded."""
    from pappus import seccomp

    with os.fdopen(fd, "w") as out:
        json.dump({"pid": os.getpid(), "warmed_by": WARMED_BY, "seccomp_loaded": seccomp._loaded is not None}, out)
