"""Shared fixtures: a private state directory per test, never the user's."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _private_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAPPUS_HOME", str(tmp_path_factory.mktemp("pappus-home")))


def open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


def child_pids() -> set[int]:
    me = os.getpid()
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            out.add(int(entry))
    return out
