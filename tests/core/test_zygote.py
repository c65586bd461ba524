"""The zygote (engine/zygote.py): what its preloads leave to every worker it forks."""

from __future__ import annotations

import json
import os

from pappus.engine.zygote import Zygote


def _spawn_report(zygote: Zygote) -> dict:
    r, w = os.pipe()
    try:
        pid = zygote.spawn("tests.core.zygote_probe:report", [w], ())
    finally:
        os.close(w)
    with os.fdopen(r) as fh:
        got = json.load(fh)
    assert zygote.wait_exit(pid, 10) == 0
    return got


def test_a_preload_function_runs_once_in_the_zygote_and_every_child_inherits_it():
    zygote = Zygote(["tests.core.zygote_probe", "tests.core.zygote_probe:warm", "pappus.engine.lockdown:prepare"])
    try:
        first, second = _spawn_report(zygote), _spawn_report(zygote)
    finally:
        zygote.close()
    assert first["warmed_by"] == second["warmed_by"] == zygote.pid  # not each child's own pid
    assert first["pid"] != second["pid"] and zygote.pid not in (first["pid"], second["pid"])
    assert first["seccomp_loaded"] and second["seccomp_loaded"]  # workers lock down without reparsing


def test_without_the_preload_a_child_starts_cold():
    zygote = Zygote(["tests.core.zygote_probe"])
    try:
        got = _spawn_report(zygote)
    finally:
        zygote.close()
    assert got["warmed_by"] is None and not got["seccomp_loaded"]


def test_a_preload_that_fails_does_not_stop_the_zygote():
    zygote = Zygote(["no.such.module", "tests.core.zygote_probe:no_such_function", "tests.core.zygote_probe:warm"])
    try:
        assert _spawn_report(zygote)["warmed_by"] == zygote.pid
    finally:
        zygote.close()


def test_what_the_zygote_loaded_is_frozen_so_a_childs_collection_copies_none_of_it():
    zygote = Zygote(["numpy", "tests.core.zygote_probe"])
    try:
        got = _spawn_report(zygote)
    finally:
        zygote.close()
    assert got["frozen"] > 10_000  # numpy's objects and the rest of the zygote's heap
    # Unfrozen, the collection writes to every object's header and so copies the pages they sit
    # on: about 8 MB with numpy loaded. Frozen, only what the child itself made is touched.
    assert got["collection_copied_kb"] < 2048, got
