"""Library handling under attack: names that are paths, library files that are symlinks, blobs
replaced on disk after registration, truncated and malformed shared objects, constructors, and
libraries crafted against the loader and the device template (SONAME, many modules).

Tenant code must never run in the supervisor (no tenant library is ever mapped there), a
refused library leaves the registry unchanged, and a library's bytes are the ones its hash
names, whatever happens on disk. Findings at the end of the module fail today."""

from __future__ import annotations

import hashlib
import os
import random
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pappus.errors import KernelFault, LibraryError, PappusError, ValidationError

from .conftest import (
    ENGINES,
    KERNELS,
    Builder,
    Built,
    Server,
    count,
    descendants,
    function,
    make_runtime,
    out_function,
    scaled,
)

VICTIM = out_function("victim", library="v", out_bytes=8)
FILL = function("fill_u8", [{"Ptr": "B"}, {"Sizeof": "B"}, {"Constant": {"type": "u8", "value": 0x3C}}],
                buffers={"B": 64}, outputs=["B"])


def registry_files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "lock"}


@pytest.fixture
def rt(tmp_path: Path) -> Any:
    runtime = make_runtime("cpu-sequential", tmp_path / "state")
    yield runtime
    runtime.close(drain=False, timeout=10)


# --- names and paths -------------------------------------------------------------------------------

BAD_NAMES = ["../x", "../../etc/passwd", "/etc/passwd", "a/b", "..", ".", "", "a\x00b", "A", "x" * 65, "ünï", "a\\b",
             " x", "-x", "%2e%2e", "k/../../x"]


def test_library_names_that_are_paths_are_refused(rt: Any, tmp_path: Path, attacks_lib: Built) -> None:
    root = Path(rt.registry.root)
    before = registry_files(root)
    for name in BAD_NAMES:
        with pytest.raises(ValidationError) as info:
            rt.register_library(name, attacks_lib.data, tenant="mallory")
        assert info.value.errors[0].path == "name"
        with pytest.raises(ValidationError):
            rt.register_library("ok", attacks_lib.data, tenant=name)  # a tenant name is a path component too
        count("attack: library names and paths", 2)
    assert registry_files(root) == before
    assert not (tmp_path / "x").exists() and not (tmp_path / "state" / "x").exists()


def test_http_library_names_that_are_paths_are_refused(server: Server, attacks_lib: Built) -> None:
    import urllib.parse

    with server.client("mallory") as c:
        before = c.get("/v1/libraries").json()
        for name in BAD_NAMES:
            r = c.put("/v1/libraries/" + urllib.parse.quote(name, safe=""), content=attacks_lib.data)
            assert r.status_code in (307, 404, 405, 422), (name, r.status_code, r.text[:200])
            count("attack: library names and paths")
        assert c.get("/v1/libraries").json() == before
    stray = [p for p in server.state.rglob("*") if p.is_file() and "tenants" not in p.parts and "blobs" not in p.parts
             and p.name not in ("lock", "VERSION", "audit.log", "tenants.json", "tenants.key")]
    assert not stray, stray


def test_a_library_path_that_is_a_symlink_to_a_host_file_is_refused(rt: Any, tmp_path: Path) -> None:
    root = Path(rt.registry.root)
    before = registry_files(root)
    for target in ("/etc/passwd", "/etc/hostname", "/proc/self/environ", "/"):
        link = tmp_path / f"lib-{abs(hash(target))}.so"
        link.symlink_to(target)
        with pytest.raises(LibraryError) as info:
            rt.register_library("evil", link, tenant="mallory")
        text = str(info.value)
        assert "root:" not in text and "PATH=" not in text, "the error must not echo the file"
        count("attack: symlinked library paths")
    assert registry_files(root) == before


def test_a_symlink_to_another_tenants_blob_copies_bytes_and_reaches_nothing_else(rt: Any, tmp_path: Path,
                                                                                victim_lib: Built) -> None:
    rt.register_library("v", victim_lib.data, tenant="alice")
    rt.register_function("victim", VICTIM, tenant="alice")
    blob = rt.registry.blob_path(victim_lib.sha256)
    link = tmp_path / "stolen.so"
    link.symlink_to(blob)
    rec = rt.register_library("v", link, tenant="mallory")  # the caller could read the file anyway
    assert rec.sha256 == victim_lib.sha256 and rec.tenant == "mallory"
    # A copy by content in mallory's own namespace: alice's function stays hers.
    with pytest.raises(PappusError):
        rt.invoke("victim", {}, tenant="mallory")
    assert [f.name for f in rt.list_functions(tenant="mallory")] == []
    assert rt.invoke("victim", {}, tenant="alice")["out"] == b"PAPPUS-V"
    # Retargeting the symlink later changes nothing registered.
    link.unlink()
    link.symlink_to("/etc/passwd")
    assert rt.registry.get_library("mallory", "v").sha256 == victim_lib.sha256
    count("attack: symlinked library paths")


# --- the blob on disk ----------------------------------------------------------------------------------


def _tamper(blob: Path, data: bytes | None = None, symlink: str | None = None) -> None:
    os.chmod(blob, 0o644)
    if symlink is not None:
        blob.unlink()
        blob.symlink_to(symlink)
    else:
        blob.write_bytes(data or b"")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("how", ["other library", "truncated", "symlink to /etc/passwd", "symlink to another blob"])
def test_a_library_replaced_on_disk_never_runs(tmp_path: Path, engine: str, how: str, victim_lib: Built,
                                               spy_lib: Built, attacks_lib: Built) -> None:
    """After registration the blob is swapped under the registry (another valid library, a
    truncated file, a symlink). A warm module keeps running the verified bytes; a cold load
    (a new runtime, a respawned worker) is refused with LibraryError. The replacement never
    runs."""
    state = tmp_path / "state"
    rt = make_runtime(engine, state, workers=1)
    try:
        rt.register_library("v", victim_lib.data, tenant="alice")
        rt.register_function("victim", VICTIM, tenant="alice")
        rt.register_library("other", attacks_lib.data, tenant="bob")
        assert rt.invoke("victim", {}, tenant="alice")["out"] == b"PAPPUS-V"  # now warm
        blob = rt.registry.blob_path(victim_lib.sha256)
        if how == "other library":
            _tamper(blob, spy_lib.data)
        elif how == "truncated":
            _tamper(blob, victim_lib.data[: len(victim_lib.data) // 2])
        elif how == "symlink to /etc/passwd":
            _tamper(blob, symlink="/etc/passwd")
        else:
            _tamper(blob, symlink=str(rt.registry.blob_path(attacks_lib.sha256)))
        assert rt.invoke("victim", {}, tenant="alice")["out"] == b"PAPPUS-V", "the warm module is the verified one"
    finally:
        rt.close(drain=False, timeout=10)
    cold = make_runtime(engine, state, workers=1)
    try:
        with pytest.raises(LibraryError, match="sha256|does not match"):
            cold.invoke("victim", {}, tenant="alice")
        count("attack: libraries replaced on disk")
    finally:
        cold.close(drain=False, timeout=10)


# --- malformed libraries -----------------------------------------------------------------------------


def test_truncated_and_malformed_libraries_are_refused_cleanly(rt: Any, attacks_lib: Built, server: Server) -> None:
    data = attacks_lib.data
    root = Path(rt.registry.root)
    before = registry_files(root)
    cuts = [0, 1, 4, 16, 63, 64, 65, 200, 1000, len(data) // 4, len(data) // 2, len(data) - 100, len(data) - 1]
    variants = [data[:c] for c in cuts] + [b"\x7fELF" + b"\xff" * 60, b"\x7fELF\x02\x01\x01" + b"\0" * 57,
                                           b"MZ" + data[2:], data[:16] + b"\xff" * 48 + data[64:]]
    with server.client("mallory") as c:
        http_before = c.get("/v1/libraries").json()
        for blob in variants:
            with pytest.raises(ValidationError):  # LibraryError, or "library is empty"
                rt.register_library("bad", blob, tenant="mallory")
            if blob:
                r = c.put("/v1/libraries/bad", content=blob)
                assert r.status_code == 422 and r.json()["errors"][0]["path"], r.text[:200]
            count("attack: malformed libraries", 2)
        assert c.get("/v1/libraries").json() == http_before
    assert registry_files(root) == before


def test_randomly_corrupted_libraries_are_refused_or_stay_sandboxed(rt: Any, attacks_lib: Built) -> None:
    """Byte flips anywhere in a real library: refused with LibraryError, or (when the flip hit
    bytes the loader does not read) registered and run in the sandbox like any library."""
    rng = random.Random(20261124)
    rt.register_library("k", attacks_lib.data, tenant="bob")
    rt.register_function("fill", FILL, tenant="bob")
    accepted = 0
    for _ in range(scaled(60, 1000)):
        data = bytearray(attacks_lib.data)
        hot = min(len(data), 8192)
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(hot) if rng.random() < 0.8 else rng.randrange(len(data))
            data[pos] = rng.randrange(256)
        count("attack: corrupted libraries")
        try:
            rt.register_library("c", bytes(data), tenant="mallory")
        except LibraryError:
            continue
        accepted += 1
        try:
            rt.register_function("cf", FILL, tenant="mallory")
            rt.invoke("cf", {}, tenant="mallory", deadline=2)
        except PappusError:
            pass
        assert rt.invoke("fill", {}, tenant="bob")["B"] == b"\x3c" * 64
    count("attack: corrupted libraries accepted (then sandboxed)", accepted)


# --- constructors: never run, never mapped in the supervisor ------------------------------------------


def _maps(pid: int | str = "self") -> str:
    """The process's mappings; none for one that ended since it was listed (a sandbox child)."""
    try:
        with open(f"/proc/{pid}/maps") as fh:
            return fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _tenant_mappings(maps: str, *needles: str) -> list[str]:
    return [line for line in maps.splitlines() if "pappus-lib" in line or any(n and n in line for n in needles)]


def test_a_library_with_a_constructor_is_refused_and_never_runs(rt: Any, ctor_lib: Built, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                server: Server) -> None:
    marker = tmp_path / "ctor-ran"
    default_marker = Path("/tmp/pappus-ctor-ran")
    default_marker.unlink(missing_ok=True)
    monkeypatch.setenv("PAPPUS_CTOR_MARKER", str(marker))
    root = Path(rt.registry.root)
    before = registry_files(root)
    with pytest.raises(LibraryError, match="constructor"):
        rt.register_library("ctor", ctor_lib.data, tenant="mallory")
    # Without section headers (the loader never reads them): the dynamic table still says so.
    stripped = bytearray(ctor_lib.data)
    struct.pack_into("<Q", stripped, 0x28, 0)  # e_shoff
    struct.pack_into("<HH", stripped, 0x3C, 0, 0)  # e_shnum, e_shstrndx
    with pytest.raises(LibraryError, match="constructor"):
        rt.register_library("ctor", bytes(stripped), tenant="mallory")
    with server.client("mallory") as c:
        r = c.put("/v1/libraries/ctor", content=ctor_lib.data)
        assert r.status_code == 422 and "constructor" in r.text
    count("attack: constructor libraries", 3)
    assert registry_files(root) == before
    assert not marker.exists() and not default_marker.exists(), "the constructor ran"
    assert ctor_lib.sha256 not in {p.name for p in (root / "blobs").rglob("*")}
    for pid in ("self", server.pid):
        assert not _tenant_mappings(_maps(pid), str(ctor_lib.path), "ctor.so"), f"mapped in {pid}"


@pytest.mark.parametrize("engine", ENGINES)
def test_no_tenant_library_is_mapped_in_the_supervisor_or_its_workers(tmp_path: Path, engine: str,
                                                                        attacks_lib: Built, victim_lib: Built) -> None:
    """After tenants' kernels ran, their libraries are mapped in the device templates (and
    their per-invocation children) only: not in this process, not in a multiprocess worker."""
    rt = make_runtime(engine, tmp_path / "state", workers=2)
    try:
        for tenant in ("alice", "bob"):
            rt.register_library("k", attacks_lib.data, tenant=tenant)
            rt.register_library("v", victim_lib.data, tenant=tenant)
            rt.register_function("fill", FILL, tenant=tenant)
            rt.register_function("victim", VICTIM, tenant=tenant)
        for _ in range(4):
            for tenant in ("alice", "bob"):
                assert rt.invoke("fill", {}, tenant=tenant)["B"] == b"\x3c" * 64
                assert rt.invoke("victim", {}, tenant=tenant)["out"] == b"PAPPUS-V"
        blobs = str(Path(rt.registry.root) / "blobs")
        trusted = [os.getpid()]
        templates = []
        for pid in descendants():
            try:
                exe = os.readlink(f"/proc/{pid}/exe")
            except OSError:
                continue
            (templates if exe.endswith("pappus-cpu-device") else trusted).append(pid)
        assert templates, "the device templates run as their own processes"
        for pid in trusted:
            found = _tenant_mappings(_maps(pid), blobs, str(attacks_lib.path), str(victim_lib.path))
            assert not found, (pid, found[:3])
        loaded = [p for p in templates if _tenant_mappings(_maps(p))]
        assert loaded, "tenant libraries live in the templates (positive control of the check)"
        count("attack: supervisor mappings checked", len(trusted))
    finally:
        rt.close(drain=False, timeout=10)


# --- findings -------------------------------------------------------------------------------------------


def _soname_library(build: Builder, fd: int) -> bytes:
    placeholder = b"/proc/self/fd/XXXXXXXXXXXX"
    built = build(KERNELS / "victim.hip", extra_flags=("-Wl,-soname," + placeholder.decode(),))
    assert built.data.count(placeholder) == 1, "the SONAME is in the dynamic string table once"
    name = f"/proc/self/fd/{fd}".encode()
    return built.data.replace(placeholder, name + b"\0" * (len(placeholder) - len(name)))


def test_a_library_cannot_make_other_tenants_libraries_unloadable(rt: Any, build: Builder, attacks_lib: Built) -> None:
    """Finding, fixed (the text says what it was): the template dlopens every library as ``/proc/self/fd/N``. glibc also matches a
    requested name against the DT_SONAME of every loaded object, and the validator accepts any
    SONAME. Mallory's library with SONAME ``/proc/self/fd/N`` (N: the descriptor the next
    library will get) is returned for the next dlopen of *another tenant's* library; the
    template sees an already-loaded handle and refuses: alice's library cannot be loaded on
    that device, at every retry, for as long as mallory's module stays cached (LRU, 64)."""
    engine = rt.engine()
    pid = engine.executor.device.template_pid
    used = {int(f) for f in os.listdir(f"/proc/{pid}/fd")}
    free = [fd for fd in range(3, 4096) if fd not in used]
    rt.register_library("v", _soname_library(build, free[1]), tenant="mallory")
    rt.register_function("victim", VICTIM, tenant="mallory")
    assert rt.invoke("victim", {}, tenant="mallory")["out"] == b"PAPPUS-V"  # loaded at free[0]
    rt.register_library("k", attacks_lib.data, tenant="alice")
    rt.register_function("fill", FILL, tenant="alice")
    outcomes = []
    for _ in range(3):
        try:
            outcomes.append(rt.invoke("fill", {}, tenant="alice")["B"] == b"\x3c" * 64)
        except PappusError as exc:
            outcomes.append(f"{type(exc).__name__}: {exc}")
    assert outcomes == [True, True, True], outcomes


def _spy_function(n: int) -> dict[str, Any]:
    kernels: list[Any] = [{"name": f"k{i}", "library": f"l{i}"} for i in range(n)]
    flow: list[Any] = [{"ExecKernel": {"name": f"k{i}", "args": [{"Ptr": "out"}], "grid": [1], "block": [1]}}
                       for i in range(n)]
    kernels.append({"name": "spy", "library": "l0"})
    flow.append({"ExecKernel": {"name": "spy", "args": [{"Ptr": "needle"}, {"Sizeof": "needle"}, {"Ptr": "out"}],
                                "grid": [1], "block": [1]}})
    return {"schema": "pappus/function@1", "kernels": kernels,
            "blueprint": {"inputs": ["needle"], "buffers": {"out": 64}, "outputs": ["out"], "control_flow": flow}}


def _spy(rt: Any, spy_lib: Built, modules: int) -> str:
    """Mallory runs a function using ``modules`` libraries that scans every other library."""
    for i in range(modules):
        rt.register_library(f"l{i}", spy_lib.data + b"\0" * (i + 1), tenant="mallory")  # distinct bytes
    rt.register_function(f"spy{modules}", _spy_function(modules), tenant="mallory")
    try:
        out = rt.invoke(f"spy{modules}", {"needle": b"PAPPUS-VICTIM-SECRET"}, tenant="mallory")["out"]
    except KernelFault as exc:
        return f"stopped: {exc}"
    found = int.from_bytes(out[:8], "little")
    return f"found {found}: {out[8:48]!r}" if found else "nothing found"


@pytest.mark.parametrize("modules", [48, 49])
def test_other_tenants_libraries_stay_hidden_however_many_modules_a_function_uses(
        rt: Any, victim_lib: Built, spy_lib: Built, modules: int) -> None:
    """Finding (49), fixed (the text says what it was): before a run the child makes every module the program does not use
    inaccessible, but the command header has room for 48 module ids (KEEP_MAX); a program
    that uses more gets ``nkeep = KEEP_ALL`` and *nothing* is hidden. A function of 49 copies
    of one library then reads any other tenant's library in the template (here: the secret
    in alice's .rodata, found through the loader's own list, without a system call).
    With 48 the same scan faults on the first hidden module (the control)."""
    rt.register_library("v", victim_lib.data, tenant="alice")
    rt.register_function("victim", VICTIM, tenant="alice")
    assert rt.invoke("victim", {}, tenant="alice")["out"] == b"PAPPUS-V"  # alice's library is loaded
    outcome = _spy(rt, spy_lib, modules)
    count("attack: module scans")
    assert "PAPPUS-VICTIM-SECRET" not in outcome, outcome
    assert outcome.startswith(("stopped", "nothing found")), outcome


def test_a_kernel_cannot_count_other_tenants_libraries(rt: Any, victim_lib: Built, spy_lib: Built) -> None:
    """Finding (low), fixed (the text says what it was): hidden modules are made inaccessible, but the loader's list of loaded
    objects lives in the template's heap, which every child can read. A kernel that walks it
    (``dl_iterate_phdr``) learns how many libraries other tenants have loaded on the device,
    and where: an activity side channel that the per-tenant module cache otherwise avoids."""
    rt.register_library("s", spy_lib.data, tenant="mallory")
    rt.register_function("count", out_function("count_modules", library="s", out_bytes=8), tenant="mallory")

    def seen() -> int:
        return int.from_bytes(rt.invoke("count", {}, tenant="mallory")["out"], "little")

    before = seen()
    rt.register_library("v", victim_lib.data, tenant="alice")
    rt.register_function("victim", VICTIM, tenant="alice")
    rt.invoke("victim", {}, tenant="alice")
    after = seen()
    assert after == before, f"mallory sees {before} loaded libraries, then {after} once alice ran"


_READ_DEVICE = textwrap.dedent("""
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    import pappus
    from pappus.errors import PappusError
    rt = pappus.Runtime(engine="host-sequential", state_dir=sys.argv[1])
    try:
        rt.register_library("z", sys.argv[2])
        print("REGISTERED")
    except PappusError as exc:
        print("REFUSED", type(exc).__name__)
    except MemoryError:
        print("MEMORY")
""")


def test_a_library_path_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    """Finding (low, Python API and CLI paths), fixed (the text says what it was): ``register_library`` sizes a path with stat() and
    then reads it whole; a character device reports size 0, so a symlink to ``/dev/zero`` is
    read until memory runs out (here: MemoryError under a 1 GiB limit)."""
    link = tmp_path / "zero.so"
    link.symlink_to("/dev/zero")
    proc = subprocess.run([sys.executable, "-c", _READ_DEVICE, str(tmp_path / "state"), str(link)],
                          capture_output=True, text=True, timeout=120)
    assert "REFUSED" in proc.stdout, (proc.stdout, proc.stderr[-1000:])
