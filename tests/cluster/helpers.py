"""Shared by the cluster tests: waiting for conditions, and what a run of invocations gave."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


def wait_for(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    end = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.002)


def outcomes(futures: list[Future[Any]], timeout: float = 120.0) -> list[BaseException | None]:
    """Each future's exception (None for success), waiting for all of them."""
    out = []
    for fut in futures:
        try:
            fut.result(timeout)
            out.append(None)
        except Exception as exc:  # the test inspects the types
            out.append(exc)
    return out
