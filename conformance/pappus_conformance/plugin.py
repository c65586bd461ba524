"""pytest plugin entry (``pytest11``): inert unless a backend is named.

An autoloaded plugin loads in every pytest session of every user, so this module only adds its
options until ``--pappus-backend`` (or ``PAPPUS_BACKEND``) names a backend. Then it collects the
suite shipped in this package (unless test paths were given), gates each test on the capability
it needs, turns the backend's registered known gaps into strict expected failures, and with
``--pappus-report DIR`` writes ``DIR/summary.json`` (and JUnit XML via ``pappus conformance``).

Where plugin autoloading is disabled (``PYTEST_DISABLE_PLUGIN_AUTOLOAD``), add
``-p pappus_conformance``. Fixtures live in ``fixtures.py``, with the plugin, not in a conftest of
the host project, so the suite works from any directory and against any backend.
"""

from __future__ import annotations

import fnmatch
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import pytest

from .properties import PROPERTIES, property_of

SUITE_DIR = Path(__file__).resolve().parent / "suite"
_STATE_KEY = pytest.StashKey["_Reporter"]()
#: Set when only PAPPUS_BACKEND (no option) made this session run the suite in place of the tests
#: pytest would otherwise have collected: the header says so.
_ENV_REPLACED = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pappus", "pappus conformance suite")
    group.addoption("--pappus-backend", default=os.environ.get("PAPPUS_BACKEND"),
                    help="run the pappus conformance suite against this backend (env: PAPPUS_BACKEND)")
    group.addoption("--pappus-engine", default=os.environ.get("PAPPUS_ENGINE"),
                    help="engine kind to test: sequential or multiprocess (default: every kind the backend has)")
    group.addoption("--pappus-report", default=None, metavar="DIR",
                    help="write DIR/summary.json: property, test, outcome and reason of every test")
    group.addoption("--pappus-workers", type=int, default=2,
                    help="workers of the multiprocess engine under test (default: 2)")


def _active(config: pytest.Config) -> bool:
    return bool(config.getoption("--pappus-backend", default=None))


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if not _active(config):
        return
    _check_options(config)
    config.addinivalue_line("markers", "requires(*capabilities): capabilities a conformance test needs "
                                       "besides its property's own")
    # Run the shipped suite unless the user pointed pytest at specific tests.
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        config.args = [str(SUITE_DIR)]
        given = any(a.startswith("--pappus-backend") for a in config.invocation_params.args)
        config.stash[_ENV_REPLACED] = not given
    reporter = _Reporter(config)
    config.stash[_STATE_KEY] = reporter
    config.pluginmanager.register(reporter, "pappus-conformance-reporter")


def _check_options(config: pytest.Config) -> None:
    """An unknown backend or engine is a usage error up front, not an INTERNALERROR or 30 errors."""
    from pappus.errors import PappusError
    from pappus.plugins import get_plugins

    name = config.getoption("--pappus-backend")
    try:
        backend = get_plugins().backend(name)
    except PappusError as exc:
        raise pytest.UsageError(f"--pappus-backend: {exc}") from None
    engine = config.getoption("--pappus-engine")
    if engine:
        try:
            config.option.pappus_engine = backend.engine_kind(engine)  # the full engine name is accepted too
        except ValueError as exc:
            raise pytest.UsageError(f"--pappus-engine: {exc}") from None


def _show_header_when_quiet(config: pytest.Config) -> None:
    """pytest skips report headers under -q; this one must reach the CI log anyway."""
    if config.getoption("verbose") >= 0 or hasattr(config, "workerinput"):
        return
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    for line in (pytest_report_header(config) or []) if terminal is not None else []:
        terminal.write_line(line)


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    if _active(session.config):
        _show_header_when_quiet(session.config)


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    if not _active(config):
        return None
    from pappus.plugins import get_plugins

    name = config.getoption("--pappus-backend")
    lines = [f"pappus conformance: backend={name!r} engine={config.getoption('--pappus-engine') or 'all'}"]
    if config.stash.get(_ENV_REPLACED, False):
        lines.append("  PAPPUS_BACKEND is set, so this session runs the conformance suite instead of the tests "
                     "here; unset it, or name test paths, to run those")
    try:
        backend = get_plugins().backend(name)
        avail = get_plugins().availability(backend)
        lines.append(f"  plugin={backend.plugin} available={avail.available} ({avail.reason})")
        lines.append(f"  claims: {', '.join(sorted(c.value for c in backend.capabilities)) or 'nothing'}")
        if backend.known_gaps:
            lines.append(f"  known gaps: {len(backend.known_gaps)}")
    except Exception as exc:  # the header must never hide the real error, which the tests show
        lines.append(f"  backend not loadable: {exc}")
    from pappus.engine import lockdown

    outlook = lockdown.outlook()
    lines.append(f"  workers: seccomp deny-list {outlook['seccomp']}; Landlock scope {outlook['scope']}")
    for var in ("PAPPUS_BACKEND", "PAPPUS_ENGINE", "PAPPUS_PLUGINS", "PAPPUS_PLUGIN_MODULES", "PAPPUS_HOME",
                "PAPPUS_WORKER_LOCKDOWN", "PAPPUS_ALLOW_HOST_MEMORY_ACCESS"):
        if os.environ.get(var):
            lines.append(f"  {var}={os.environ[var]}")
    return lines


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _active(config):
        return
    from pappus.plugins import get_plugins

    backend = get_plugins().backend(config.getoption("--pappus-backend"))
    claimed = {c.value for c in backend.capabilities}
    gaps = dict(backend.known_gaps)
    used: set[str] = set()
    for item in items:
        if not _in_suite(item):
            continue
        prop = property_of(item)
        capability = PROPERTIES[prop].capability if prop in PROPERTIES else None
        needed = {capability} if capability else set()
        for marker in item.iter_markers("requires"):
            needed.update(marker.args)
        missing = sorted(needed - claimed)
        if missing:
            item.add_marker(pytest.mark.skip(reason=f"not claimed: {', '.join(missing)}"))
            continue
        for pattern, reason in gaps.items():
            if _matches(item, prop, pattern):
                used.add(pattern)
                item.add_marker(pytest.mark.xfail(reason=f"known gap: {reason}", strict=True))
    if not claimed:
        config.issue_config_time_warning(pytest.PytestWarning(
            f"backend {backend.name!r} claims no capability: every property is reported as not claimed"),
            stacklevel=2)
    stale = sorted(set(gaps) - used)
    if stale:
        config.issue_config_time_warning(
            pytest.PytestWarning(f"known gaps of backend {backend.name!r} match no test: {', '.join(stale)}"),
            stacklevel=2)


def _in_suite(item: pytest.Item) -> bool:
    return SUITE_DIR in Path(str(item.fspath)).parents


def _matches(item: pytest.Item, prop: str, pattern: str) -> bool:
    name = item.name.split("[")[0]
    return any(fnmatch.fnmatchcase(candidate, pattern)
               for candidate in (item.name, name, f"{prop}::{item.name}", f"{prop}::{name}"))


class _Reporter:
    """Collects one line per test for the JSON summary (in the xdist controller too)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.results: list[dict[str, Any]] = []
        self.started = time.time()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call" and not (report.when == "setup" and (report.skipped or report.failed)):
            return
        outcome, reason = _outcome(report)
        self.results.append({
            "property": _property_from_nodeid(report.nodeid), "test": report.nodeid.split("::", 1)[-1],
            "outcome": outcome, "reason": reason, "seconds": round(getattr(report, "duration", 0.0), 4),
        })


def _outcome(report: pytest.TestReport) -> tuple[str, str]:
    if hasattr(report, "wasxfail"):
        if report.skipped:
            return "xfailed", str(report.wasxfail)
        return "xpassed-stale", f"known gap now passes: remove it ({report.wasxfail})"
    if report.skipped:
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reason = reason.removeprefix("Skipped: ")
        if reason.startswith("not claimed:"):
            return "not_claimed", reason
        return "skipped", reason
    if report.failed and str(report.longrepr).startswith("[XPASS(strict)]"):
        return "xpassed-stale", f"a registered known gap now passes: remove it ({report.longrepr})"
    if report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        message = getattr(crash, "message", None) or str(report.longrepr).strip().splitlines()[-1]
        return "failed" if report.when == "call" else "error", message[:500]
    return "passed", ""


def _property_from_nodeid(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    return module.removeprefix("test_").removesuffix(".py")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if not _active(config) or hasattr(config, "workerinput"):
        return  # xdist workers report to the controller, which writes the summary
    out = config.getoption("--pappus-report")
    reporter = config.stash.get(_STATE_KEY, None)
    if not out or reporter is None:
        return
    results = sorted(reporter.results, key=lambda r: (r["property"], r["test"]))
    properties: dict[str, dict[str, int]] = {}
    for r in results:
        counts = properties.setdefault(r["property"], {})
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    summary = {
        "backend": config.getoption("--pappus-backend"),
        "verdicts": verdicts(properties, _claimed(config)),
        "engine": config.getoption("--pappus-engine") or "all",
        "exit_status": int(exitstatus),
        "python": platform.python_version(),
        "seconds": round(time.time() - reporter.started, 2),
        "properties": properties,
        "tests": results,
    }
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    (path / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


FAILING = ("failed", "error", "xpassed-stale")


def verdicts(properties: dict[str, dict[str, int]], claimed: set[str] | None) -> dict[str, str]:
    """One word per property of the suite, from its outcome counts and the backend's claims.

    ``failed``: a test failed or errored, or a known gap passes. ``not_claimed``: the backend does
    not claim the property's capability. ``proven``: at least one test passed and every other test
    passed too or was not claimed (it needs a second capability the backend does not claim).
    ``partial``: tests passed, others are known gaps (xfailed) or were skipped. ``not_tested``:
    claimed, but nothing passed (the backend is unavailable here, or every test was deselected).
    """
    result: dict[str, str] = {}
    for prop in sorted(set(PROPERTIES) | set(properties)):
        counts = properties.get(prop, {})
        capability = PROPERTIES[prop].capability if prop in PROPERTIES else None
        if any(counts.get(o) for o in FAILING):
            result[prop] = "failed"
        elif claimed is not None and capability is not None and capability not in claimed:
            result[prop] = "not_claimed"
        elif not counts.get("passed"):
            result[prop] = "not_claimed" if counts and set(counts) == {"not_claimed"} else "not_tested"
        elif set(counts) <= {"passed", "not_claimed"}:
            result[prop] = "proven"
        else:
            result[prop] = "partial"
    return result


def _claimed(config: pytest.Config) -> set[str] | None:
    from pappus.plugins import get_plugins

    try:
        return {c.value for c in get_plugins().backend(config.getoption("--pappus-backend")).capabilities}
    except Exception:
        return None
