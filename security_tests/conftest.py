"""Shared machinery of the security tests: profiles, real kernel builds, real servers, leak probes.

Profiles (``PAPPUS_SECURITY_PROFILE``):

* ``fast`` (default; ``make test``): every attack once, fuzzing with a few hundred derandomized
  cases, fault storms of 4 tenants x 100 invocations. Part of the fast suite (~1-2 min, ``-n 2``).
* ``long`` (``make security-long``): 10,000+ fuzzed configs, storms of 4 x 1,000 on every engine,
  and the tests marked ``long``.

Everything runs for real: kernels are built from ``security_tests/kernels/*.hip`` by
``pappus_cpu.build`` (once per session, shared between xdist workers), engines are real
``pappus.Runtime`` objects with sandboxed CPU devices, and HTTP goes to a real ``pappus serve``.

The session prints what it tried (``pappus security:`` lines in the terminal summary) and, with
``PAPPUS_SECURITY_REPORT=FILE``, writes the same figures as JSON (``docs/security.md`` quotes them).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from pappus._procfs import iter_process_stats

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
KERNELS = HERE / "kernels"

try:  # an editable install made before plugins/pappus_cpu existed does not map it yet
    import pappus_cpu  # noqa: F401
except ImportError:  # pragma: no cover - depends on how the venv was installed
    sys.path.insert(0, str(REPO / "plugins"))

from pappus_cpu.testing import BuiltLibrary, KernelBuilder, device_cache, need_compilers, one_launch  # noqa: E402

# --- profiles ------------------------------------------------------------------------------------

PROFILE = os.environ.get("PAPPUS_SECURITY_PROFILE", "fast").strip().lower() or "fast"
if PROFILE not in ("fast", "long"):
    raise pytest.UsageError(f"PAPPUS_SECURITY_PROFILE must be 'fast' or 'long', not {PROFILE!r}")
LONG = PROFILE == "long"


def scaled(fast: int, long: int) -> int:
    """A size for the current profile."""
    return long if LONG else fast


_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
           HealthCheck.function_scoped_fixture, HealthCheck.large_base_example]
# CI: the same cases every run (a failure reproduces), no per-example deadline (a cold engine
# start is slow), no example database written into the checkout.
settings.register_profile("pappus-security-fast", derandomize=True, deadline=None, database=None,
                          suppress_health_check=_HEALTH, print_blob=True)
# Long: fresh random cases every run (a reported failure prints its reproduction blob).
settings.register_profile("pappus-security-long", derandomize=False, deadline=None, database=None,
                          suppress_health_check=_HEALTH, print_blob=True)


def fuzz_settings(fast: int, long: int) -> settings:
    """Hypothesis settings of this profile with ``max_examples`` scaled (apply as a decorator)."""
    return settings(settings.get_profile(f"pappus-security-{PROFILE}"), max_examples=scaled(fast, long))


# --- counters (cases tried), aggregated over xdist workers ---------------------------------------

COUNTS: Counter[str] = Counter()
_counts_lock = threading.Lock()
_WORKER_KEY = "pappus_security_counts"


def count(kind: str, n: int = 1) -> None:
    """Record ``n`` cases of ``kind`` tried (shown in the terminal summary)."""
    with _counts_lock:
        COUNTS[kind] += n


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "long: part of the long security profile only "
                                       "(PAPPUS_SECURITY_PROFILE=long, `make security-long`)")
    config._pappus_security_counts = Counter()  # type: ignore[attr-defined]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if LONG:
        return
    skip = pytest.mark.skip(reason="long security profile only (PAPPUS_SECURITY_PROFILE=long)")
    for item in items:
        if "long" in item.keywords and str(item.fspath).startswith(str(HERE)):
            item.add_marker(skip)


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: hand the counts to the controller
        workeroutput[_WORKER_KEY] = dict(COUNTS)
    else:
        session.config._pappus_security_counts.update(COUNTS)  # type: ignore[attr-defined]


def pytest_testnodedown(node: Any, error: Any) -> None:
    counts = getattr(node, "workeroutput", {}).get(_WORKER_KEY)
    if counts:
        node.config._pappus_security_counts.update(counts)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    counts: Counter[str] = getattr(config, "_pappus_security_counts", Counter())
    if not counts:
        return
    stats = terminalreporter.stats
    failed = [r for r in stats.get("failed", []) if "security_tests" in str(getattr(r, "nodeid", ""))]
    terminalreporter.write_sep("-", f"pappus security ({PROFILE} profile)")
    for kind in sorted(counts):
        terminalreporter.write_line(f"pappus security: {kind}: {counts[kind]}")
    fuzz = sum(v for k, v in counts.items() if k.startswith("fuzz case:"))
    terminalreporter.write_line(f"pappus security: fuzzed configs in all: {fuzz}; failed security tests: "
                                f"{len(failed)}")
    report = os.environ.get("PAPPUS_SECURITY_REPORT")
    if report:
        Path(report).parent.mkdir(parents=True, exist_ok=True)
        Path(report).write_text(json.dumps({
            "profile": PROFILE, "counts": dict(sorted(counts.items())), "fuzzed_configs": fuzz,
            "failed": sorted(str(r.nodeid) for r in failed), "exitstatus": int(exitstatus),
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        }, indent=2) + "\n")


# --- private state, shared caches ----------------------------------------------------------------


def _shared_root(factory: pytest.TempPathFactory) -> Path:
    """A directory every xdist worker of this run sees (the base of the workers' own)."""
    base = factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    path = root / "pappus-security-shared"
    path.mkdir(exist_ok=True)
    return path




@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _shared_root(tmp_path_factory)


@pytest.fixture(scope="session", autouse=True)
def _cpu_cache(shared_dir: Path) -> Iterator[None]:
    """One device template build for the whole run (the per-test PAPPUS_HOME would rebuild it)."""
    with device_cache(shared_dir / "cpu-cache"):
        yield


@pytest.fixture(autouse=True)
def _private_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never the user's registry."""
    monkeypatch.setenv("PAPPUS_HOME", str(tmp_path_factory.mktemp("pappus-home")))


# --- kernel builds ---------------------------------------------------------------------------------


# Shared with tests/cpu (pappus_cpu.testing); a root shared by the xdist workers, so each
# library is built once per run.
Built = BuiltLibrary
Builder = KernelBuilder
function = one_launch


@pytest.fixture(scope="session")
def build(shared_dir: Path) -> Builder:
    need_compilers("the security tests")
    root = shared_dir / "builds"
    root.mkdir(exist_ok=True)
    return Builder(root)


@pytest.fixture(scope="session")
def attacks_lib(build: Builder) -> Built:
    return build(KERNELS / "attacks.hip")


@pytest.fixture(scope="session")
def victim_lib(build: Builder) -> Built:
    return build(KERNELS / "victim.hip")


@pytest.fixture(scope="session")
def spy_lib(build: Builder) -> Built:
    return build(KERNELS / "spy.hip")


@pytest.fixture(scope="session")
def ctor_lib(build: Builder) -> Built:
    """The constructor library, built past the builder's own check (which refuses it too)."""
    return build(KERNELS / "ctor.hip", validate=False)


# --- runtimes ----------------------------------------------------------------------------------------

ENGINES = ("cpu-sequential", "cpu-multiprocess")
POOL_BYTES = 16 * 1024 * 1024


def out_function(kernel: str, extra_args: list[Any] | None = None, *, out_bytes: int = 64,
                 library: str = "k", **kw: Any) -> dict[str, Any]:
    """``kernel(extra_args..., out)`` with one output buffer ``out``."""
    return function(kernel, [*(extra_args or []), {"Ptr": "out"}], buffers={"out": out_bytes}, outputs=["out"],
                    library=library, **kw)


def const(dtype: str, value: int | float) -> dict[str, Any]:
    return {"Constant": {"type": dtype, "value": value}}


def make_runtime(engine: str, state: Path, *, pool_bytes: int = POOL_BYTES, workers: int = 2,
                 **kw: Any) -> Any:
    import pappus

    return pappus.Runtime(engine=engine, state_dir=state, pool_bytes=pool_bytes, workers=workers, **kw)


def template_offsets() -> list[int]:
    """Offsets of the device template's control globals, read from its public binary:
    status_pages, cmd, cmd_size, pool, pool_size, status, page size, done_wr."""
    import mmap

    from elftools.elf.elffile import ELFFile

    from pappus_cpu import native

    binary = native.device_binary()
    with open(binary, "rb") as fh:
        elf = ELFFile(fh)
        symtab = elf.get_section_by_name(".symtab")
        if symtab is None:
            pytest.skip("the device template binary is stripped: its control globals cannot be located by name")
        want = ["status_pages", "cmd", "cmd_size", "pool", "pool_size", "status", "done_wr"]
        found = {s.name: s["st_value"] for s in symtab.iter_symbols() if s.name in want}
    missing = [w for w in want if w not in found]
    if missing:
        pytest.skip(f"the device template has no symbols {missing}: its layout changed")
    return [found[w] for w in want[:6]] + [mmap.PAGESIZE, found["done_wr"]]


# --- leaks: processes, descriptors, shared memory, memory --------------------------------------------


def descendants(pid: int | None = None) -> set[int]:
    """Live (not zombie) processes below ``pid`` (default: this one)."""
    root = pid or os.getpid()
    parents: dict[int, int] = {}
    states: dict[int, str] = {}
    for p, fields in iter_process_stats():
        parents[p] = int(fields[1])
        states[p] = fields[0].decode()
    out: set[int] = set()
    frontier = [root]
    while frontier:
        p = frontier.pop()
        for child, parent in parents.items():
            if parent == p and child not in out:
                out.add(child)
                frontier.append(child)
    return {p for p in out if states.get(p) not in ("Z", "X")}


def wait_no_descendants(before: set[int], timeout: float = 10.0) -> set[int]:
    """Descendants not in ``before`` that are still alive after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        left = descendants() - before
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.05)


def fd_targets() -> dict[int, str]:
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass
    return out


def memfd_mappings() -> list[str]:
    with open("/proc/self/maps") as fh:
        return [line.strip() for line in fh if "memfd:pappus" in line]


def dev_shm() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


def status_kb(field: str, pid: str = "self") -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


@dataclass
class Snapshot:
    """What a runtime must give back when it closes."""

    processes: set[int]
    fds: dict[int, str]
    memfd_maps: list[str]
    shm: set[str]

    @classmethod
    def take(cls) -> Snapshot:
        return cls(descendants(), fd_targets(), memfd_mappings(), dev_shm())

    def leaks(self, timeout: float = 10.0) -> dict[str, Any]:
        """Everything that is here now and was not at the snapshot (empty dict: nothing)."""
        out: dict[str, Any] = {}
        procs = wait_no_descendants(self.processes, timeout)
        if procs:
            out["processes"] = {p: _cmdline(p) for p in procs}
        end = time.monotonic() + timeout
        while True:
            now = fd_targets()
            fds = {fd: t for fd, t in now.items() if self.fds.get(fd) != t}
            fds = {fd: t for fd, t in fds.items() if not t.startswith(("pipe:", "socket:", "anon_inode:"))
                   or "pappus" in t or fd not in self.fds}
            maps = [m for m in memfd_mappings() if m not in self.memfd_maps]
            shm = dev_shm() - self.shm
            if not (fds or maps or shm) or time.monotonic() > end:
                break
            time.sleep(0.05)
        # Descriptors the test framework itself opened meanwhile (xdist's channel, pytest's
        # capture files) are not the runtime's: only count memfds, pipes/sockets gone missing
        # from the runtime, and anything named pappus.
        suspicious = {fd: t for fd, t in fds.items() if "memfd:" in t or "pappus" in t}
        if suspicious:
            out["fds"] = suspicious
        if len(fds) > 8:
            out["fd_growth"] = fds
        if maps:
            out["memfd_mappings"] = maps
        if shm:
            out["dev_shm"] = sorted(shm)
        return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


# --- a real `pappus serve` -------------------------------------------------------------------------


@dataclass
class Server:
    url: str
    state: Path
    tokens: dict[str, str]
    pid: int

    def client(self, tenant: str | None = None, **kw: Any) -> Any:
        import httpx

        headers = {"Authorization": f"Bearer {self.tokens[tenant]}"} if tenant else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=kw.pop("timeout", 60), **kw)


SERVER_POOL_BYTES = 2 * 1024 * 1024
SERVER_MAX_BODY = 4 * 1024 * 1024


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, attacks_lib: Built, _cpu_cache: None) -> Iterator[Server]:
    """``pappus serve`` (cpu-sequential) in a subprocess on a free port, once per session (per
    xdist worker), with tenants alice, bob and mallory; each has library ``k`` (attacks.hip)."""
    from tests.serve.helpers import add_tenants, process_server

    state = tmp_path_factory.mktemp("serve-state")
    tokens = add_tenants(state, "alice", "bob", "mallory", request_rate=None, request_burst=None)
    with process_server(state, "--engine", "cpu-sequential", "--pool-bytes", str(SERVER_POOL_BYTES),
                        "--max-body-bytes", str(SERVER_MAX_BODY), "--deadline", "20",
                        "--quota", "request_rate=none", timeout=120) as proc:
        srv = Server(proc.url, state, tokens, proc.proc.pid)
        for tenant in tokens:
            with srv.client(tenant) as c:
                r = c.put("/v1/libraries/k", content=attacks_lib.data)
                assert r.status_code in (200, 201), r.text
        yield srv
