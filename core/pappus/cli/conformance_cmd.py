"""``pappus conformance``: run the conformance suite against a backend."""

from __future__ import annotations

import argparse
from typing import Any


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
    p.add_argument("--engine", choices=["sequential", "multiprocess"], help="test one engine kind only")
    p.add_argument("--report", metavar="DIR", help="write DIR/summary.json and DIR/junit.xml")
    p.add_argument("-n", "--jobs", default="auto", help="pytest-xdist workers (default: auto; 0 for none)")
    p.add_argument("--workers", type=int, default=2, help="workers of the multiprocess engine (default: 2)")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: extra pytest arguments")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import pytest

    from ..plugins import get_plugins

    get_plugins().backend(args.backend)  # an unknown backend is a clear error here, not in pytest
    argv = ["-p", "pappus_conformance", "--pappus-backend", args.backend, "-q",
            "--pappus-workers", str(args.workers), "-p", "no:cacheprovider",
            # this process imported pappus already; pytest cannot rewrite asserts in it, and need not
            "-W", "ignore::pytest.PytestAssertRewriteWarning"]
    # Locate the suite without importing the plugin, so pytest can still rewrite its asserts.
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("pappus_conformance")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the pappus_conformance package is not installed")
    argv.append(str(Path(list(spec.submodule_search_locations)[0]) / "suite"))
    if args.engine:
        argv += ["--pappus-engine", args.engine]
    if args.jobs not in ("0", "no"):
        argv += ["-n", str(args.jobs)]
    if args.report:
        argv += ["--pappus-report", args.report, f"--junitxml={args.report}/junit.xml"]
    extra = list(args.pytest_args or [])
    if extra[:1] == ["--"]:
        extra = extra[1:]
    return int(pytest.main(argv + extra))
