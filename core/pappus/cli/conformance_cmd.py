"""``pappus conformance``: run the conformance suite against a backend."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from typing import Any

from .common import whole_number

XDIST_MISSING = "pytest-xdist is not installed: pip install pytest-xdist (or run serially with -n 0)"


def add_parser(sub: Any, formatter: Any) -> None:
    p = sub.add_parser(
        "conformance", formatter_class=formatter, help="run the isolation conformance suite against a backend",
        description="Run the pappus conformance suite (cross-tenant zeroing, malloc-heap limits, fault\n"
                    "containment, bounded execution, no host escape) against a backend's engines.\n"
                    "Unclaimed properties are reported as 'not claimed', known gaps as strict xfails.\n"
                    "Equivalent: pytest -p pappus_conformance --pappus-backend NAME",
        epilog="examples:\n  pappus conformance --backend cpu --report out/conformance\n"
               "  pappus conformance --backend cpu --engine multiprocess -- -x -k zeroing")
    p.add_argument("--backend", required=True, help="backend to test (see 'pappus plugins')")
    p.add_argument("--engine", metavar="KIND",
                   help="test one engine only: sequential or multiprocess (or its full name, e.g. cpu-sequential)")
    p.add_argument("--report", metavar="DIR", help="write DIR/summary.json and DIR/junit.xml")
    p.add_argument("-n", "--jobs", default=None,
                   help="pytest-xdist workers (default: auto when pytest-xdist is installed, else none; 0 for none)")
    p.add_argument("--workers", type=whole_number(1), default=2, help="workers of the multiprocess engine (default: 2)")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: extra pytest arguments")
    p.set_defaults(func=run)


def xdist_args(jobs: str | None) -> list[str]:
    """The pytest arguments for ``-n``; without pytest-xdist, serial unless -n was asked for."""
    if jobs in ("0", "no"):
        return []
    try:
        missing = importlib.util.find_spec("xdist") is None
    except ImportError:
        missing = True
    if missing:
        if jobs is not None:
            raise ValueError(f"-n {jobs}: {XDIST_MISSING}")
        print("pappus conformance: pytest-xdist is not installed, running serially "
              "(pip install pytest-xdist for -n)", file=sys.stderr)
        return []
    # With plugin autoloading off, pytest knows -n only once xdist is loaded explicitly.
    load = ["-p", "xdist.plugin"] if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD") else []
    return [*load, "-n", str(jobs or "auto")]


def run(args: argparse.Namespace) -> int:
    import pytest

    from ..errors import BackendNotInstalled
    from ..plugins import get_plugins

    try:
        backend = get_plugins().backend(args.backend)  # an unknown backend is a clear error here, not in pytest
    except BackendNotInstalled as exc:  # the registry's words (an engine's name gets its backend's)
        raise ValueError(f"--backend: {exc.fields['reason']}") from None
    try:
        kind = backend.engine_kind(args.engine) if args.engine else None
    except ValueError as exc:
        raise ValueError(f"--engine: {exc}") from None
    parallel = xdist_args(args.jobs)
    # -q keeps the progress terse; the plugin still prints its report header (backend, claims,
    # worker confinement, PAPPUS_* switches) under -q.
    argv = ["-p", "pappus_conformance", "--pappus-backend", args.backend, "-q",
            "--pappus-workers", str(args.workers), "-p", "no:cacheprovider",
            # this process imported pappus already; pytest cannot rewrite asserts in it, and need not
            "-W", "ignore::pytest.PytestAssertRewriteWarning"]
    # Locate the suite without importing the plugin, so pytest can still rewrite its asserts.
    from pathlib import Path

    spec = importlib.util.find_spec("pappus_conformance")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the pappus_conformance package is not installed")
    argv.append(str(Path(list(spec.submodule_search_locations)[0]) / "suite"))
    if kind:
        argv += ["--pappus-engine", kind]
    argv += parallel
    if args.report:
        argv += ["--pappus-report", args.report, f"--junitxml={args.report}/junit.xml"]
    extra = list(args.pytest_args or [])
    if extra[:1] == ["--"]:
        extra = extra[1:]
    return int(pytest.main(argv + extra))
