"""The registry: libraries and functions that survive restarts, in a state directory.

Layout (``$PAPPUS_HOME``, default ``~/.local/share/pappus``)::

    blobs/ab/ab12...          library bytes, content-addressed by sha256, read-only
    tenants/<t>/libraries/<name>.json
    tenants/<t>/functions/<name>.json
    audit.log                 append-only JSON lines: who registered or removed what
    lock                      writers take an exclusive flock on it

Every write is write-to-temp, fsync, rename, fsync-directory, under the lock, so a registration
killed at any point leaves the old state or the new one, never half of one, and two processes
sharing the directory do not lose each other's writes. A temporary file left by a writer that
was killed is never read as a record (records are the non-hidden ``*.json`` files) and is swept
when a registry is next opened. A function records the sha256 of each library it was validated
against: replacing a library never silently changes a function.

Namespaces: every record lives under its tenant's folder, so a name resolves only in the
caller's namespace. Blobs are shared by content, and storing one does the same work whether or
not it existed, so sharing reveals nothing (see ``put_blob``). Blobs are not deleted when the
last record naming them goes (another tenant's record may name them; deciding that would
reveal it); ``pappus gc`` style collection is an offline, operator-side job.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._files import file_lock
from .config.parser import library_name_problem
from .errors import FieldError, LibraryError, NotFound, QuotaExceeded, ValidationError

FORMAT_VERSION = 1
_SHA_RE = re.compile(r"[0-9a-f]{64}")
_TMP_PREFIX = ".tmp-"
_SINGULAR = {"libraries": "library", "functions": "function"}
#: blob temporaries are written outside the lock: only ones older than this are swept
_STALE_BLOB_TMP_S = 3600.0


def default_state_dir() -> Path:
    env = os.environ.get("PAPPUS_HOME")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "pappus"


@dataclass(frozen=True)
class LibraryRecord:
    name: str
    tenant: str
    sha256: str
    size: int
    backend: str
    format: str
    kernels: list[str]
    registered_at: float


@dataclass(frozen=True)
class FunctionRecord:
    name: str
    tenant: str
    config: dict[str, Any]
    libraries: dict[str, str]  # library name -> sha256 validated against
    engine: str
    registered_at: float
    source_format: str = "pappus"
    notes: list[str] = field(default_factory=list)


def _check_name(kind: str, name: str) -> None:
    problem = library_name_problem(name)
    if problem:
        raise ValidationError(FieldError(kind, f"{name[:80]!r} {problem}"), what=kind)


class Registry:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_state_dir()
        self.blobs = self.root / "blobs"
        self.tenants = self.root / "tenants"
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.blobs.mkdir(exist_ok=True)
        self.tenants.mkdir(exist_ok=True)
        self._lock_path = self.root / "lock"
        self._stamp_paths: dict[tuple[str, str], str] = {}
        version = self.root / "VERSION"
        if not version.exists():
            with self.locked():
                if not version.exists():
                    self._atomic_write(version, f"{FORMAT_VERSION}\n".encode())
        self._sweep()

    def _sweep(self) -> None:
        """Remove temporaries of writers that were killed mid-write. Record temporaries only
        exist while their writer holds the lock, so under the lock every one is stale; blob
        temporaries are written without the lock, so only old ones are removed."""
        try:
            with self.locked():
                for path in self.tenants.glob(f"*/*/{_TMP_PREFIX}*"):
                    with contextlib.suppress(OSError):
                        path.unlink()
                for path in self.root.glob(f"{_TMP_PREFIX}*"):
                    with contextlib.suppress(OSError):
                        path.unlink()
            cutoff = time.time() - _STALE_BLOB_TMP_S
            for path in self.blobs.glob(f"*/{_TMP_PREFIX}*"):
                with contextlib.suppress(OSError):
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
        except OSError:  # a read-only state directory can still be read
            pass

    # --- locking and atomic files ----------------------------------------------------------

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """The registry's lock, shared by every process using this state directory."""
        return file_lock(self._lock_path)

    def _atomic_write(self, path: Path, data: bytes, mode: int = 0o600) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TMP_PREFIX, suffix=path.suffix)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(path.parent)

    # --- blobs -----------------------------------------------------------------------------

    def blob_path(self, sha256: str) -> Path:
        if not _SHA_RE.fullmatch(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.blobs / sha256[:2] / sha256

    def put_blob(self, data: bytes) -> tuple[str, Path]:
        """Store bytes by content. The same work is done whether or not the blob existed, so
        neither the answer nor its timing tells a caller that someone stored it before."""
        sha = hashlib.sha256(data).hexdigest()
        path = self.blob_path(sha)
        self._atomic_write(path, data, mode=0o444)
        return sha, path

    def read_blob(self, sha256: str) -> bytes:
        path = self.blob_path(sha256)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise LibraryError(f"stored library {sha256[:12]} cannot be read: {exc.strerror}") from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise LibraryError(f"stored library {sha256[:12]} does not match its sha256 (modified on disk?)")
        return data

    # --- records ---------------------------------------------------------------------------

    def _record_path(self, tenant: str, kind: str, name: str) -> Path:
        _check_name("tenant", tenant)
        _check_name(_SINGULAR[kind], name)
        return self.tenants / tenant / kind / f"{name}.json"

    def _read_record(self, path: Path) -> dict[str, Any] | None:
        try:
            return json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise LibraryError(f"registry record {path.name} is unreadable: {exc}") from None

    def put_library(self, tenant: str, name: str, sha256: str, size: int, backend: str, fmt: str,
                    kernels: list[str], *, max_count: int | None = None) -> LibraryRecord:
        """Store a library record. ``max_count``: the tenant's library quota, checked under the
        lock (replacing an existing name does not count)."""
        rec = LibraryRecord(name, tenant, sha256, size, backend, fmt, sorted(kernels), time.time())
        path = self._record_path(tenant, "libraries", name)
        with self.locked():
            self._check_count(tenant, "libraries", path, max_count)
            self._atomic_write(path, json.dumps(asdict(rec), sort_keys=True).encode())
            self.audit(tenant, "register", "library", name, sha256)
        return rec

    def _check_count(self, tenant: str, kind: str, path: Path, max_count: int | None) -> None:
        if max_count is not None and not path.exists() and self.count(tenant, kind) >= max_count:
            raise QuotaExceeded(kind, max_count, tenant, retry_after=60.0)

    def count(self, tenant: str, kind: str) -> int:
        """How many libraries / functions ``tenant`` has (``kind``: "libraries" or "functions")."""
        _check_name("tenant", tenant)
        try:
            with os.scandir(self.tenants / tenant / kind) as it:
                return sum(1 for e in it if e.name.endswith(".json") and not e.name.startswith("."))
        except FileNotFoundError:
            return 0

    def exists(self, tenant: str, kind: str, name: str) -> bool:
        return self._record_path(tenant, kind, name).exists()

    def get_library(self, tenant: str, name: str) -> LibraryRecord:
        doc = self._read_record(self._record_path(tenant, "libraries", name))
        if doc is None:
            raise NotFound("library", name)
        return LibraryRecord(**doc)

    def list_libraries(self, tenant: str) -> list[LibraryRecord]:
        return [LibraryRecord(**d) for d in self._list(tenant, "libraries")]

    def put_function(self, tenant: str, name: str, config: dict[str, Any], libraries: dict[str, str],
                     engine: str, source_format: str = "pappus", notes: list[str] | None = None, *,
                     max_count: int | None = None) -> FunctionRecord:
        rec = FunctionRecord(name, tenant, config, dict(libraries), engine, time.time(), source_format,
                             list(notes or []))
        path = self._record_path(tenant, "functions", name)
        body = json.dumps(asdict(rec), sort_keys=True).encode()
        with self.locked():
            self._check_count(tenant, "functions", path, max_count)
            self._atomic_write(path, body)
            self.audit(tenant, "register", "function", name, hashlib.sha256(body).hexdigest())
        return rec

    def get_function(self, tenant: str, name: str) -> FunctionRecord:
        doc = self._read_record(self._record_path(tenant, "functions", name))
        if doc is None:
            raise NotFound("function", name)
        return FunctionRecord(**doc)

    def function_stamp(self, tenant: str, name: str) -> tuple[int, int] | None:
        """A cheap change marker of a function record (inode, mtime), or None if absent.

        Called on every invocation, so the record's path is kept as a string per name (names
        checked once): one ``stat`` and no path arithmetic on the hot path."""
        key = (tenant, name)
        path = self._stamp_paths.get(key)
        if path is None:
            path = str(self._record_path(tenant, "functions", name))
            if len(self._stamp_paths) >= 4096:
                self._stamp_paths.clear()
            self._stamp_paths[key] = path
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns)

    def list_functions(self, tenant: str) -> list[FunctionRecord]:
        return [FunctionRecord(**d) for d in self._list(tenant, "functions")]

    def remove(self, tenant: str, kind: str, name: str) -> None:
        """Remove a record (``kind``: "libraries" or "functions"); audited with its hash."""
        if kind not in ("libraries", "functions"):
            raise ValueError(f"unknown kind {kind!r}")
        path = self._record_path(tenant, kind, name)
        with self.locked():
            self._remove_locked(tenant, kind, name, path)

    def _remove_locked(self, tenant: str, kind: str, name: str, path: Path) -> None:
        try:
            body = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(_SINGULAR[kind], name) from None
        sha = None
        if kind == "libraries":
            with contextlib.suppress(ValueError, AttributeError):
                sha = json.loads(body).get("sha256")
        else:
            sha = hashlib.sha256(body).hexdigest()
        path.unlink()
        _fsync_dir(path.parent)
        self.audit(tenant, "remove", _SINGULAR[kind], name, sha)

    def purge_tenant_locked(self, tenant: str) -> list[str]:
        """Remove every record of ``tenant`` (caller holds the lock); returns ``kind/name``s."""
        _check_name("tenant", tenant)
        removed = []
        for kind in ("functions", "libraries"):
            folder = self.tenants / tenant / kind
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                if path.name.startswith(".") or not path.name.endswith(".json"):
                    continue
                name = path.name[:-5]
                with contextlib.suppress(NotFound):
                    self._remove_locked(tenant, kind, name, path)
                    removed.append(f"{_SINGULAR[kind]}/{name}")
        return removed

    def _list(self, tenant: str, kind: str) -> list[dict[str, Any]]:
        _check_name("tenant", tenant)
        folder = self.tenants / tenant / kind
        out = []
        if folder.is_dir():
            # Hidden files are temporaries of writers (possibly killed mid-write), never records.
            for path in sorted(p for p in folder.glob("*.json") if not p.name.startswith(".")):
                doc = self._read_record(path)
                if doc is not None:
                    out.append(doc)
        return out

    # --- audit -----------------------------------------------------------------------------

    def audit(self, tenant: str, action: str, kind: str, name: str, sha256: str | None) -> None:
        """Append one line to the audit log (called with the lock held)."""
        line = json.dumps({"time": time.time(), "tenant": tenant, "action": action, "kind": kind,
                           "name": name, "sha256": sha256}, sort_keys=True) + "\n"
        fd = os.open(self.root / "audit.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
