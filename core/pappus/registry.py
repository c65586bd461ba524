"""The registry: libraries and functions that survive restarts, in a state directory.

Layout (``$PAPPUS_HOME``, default ``~/.local/share/pappus``)::

    blobs/ab/ab12...          library bytes, content-addressed by sha256, read-only
    tenants/<t>/libraries/<name>.json
    tenants/<t>/functions/<name>.json
    audit.log                 append-only JSON lines: who registered or removed what
    lock                      writers take an exclusive flock on it

Every write is write-to-temp, fsync, rename, fsync-directory, under the lock, so a registration
killed at any point leaves the old state or the new one, never half of one, and two processes
sharing the directory do not lose each other's writes. A function records the sha256 of each
library it was validated against: replacing a library never silently changes a function.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config.parser import library_name_problem
from .errors import FieldError, LibraryError, NotFound, ValidationError

FORMAT_VERSION = 1
_SHA_RE = re.compile(r"[0-9a-f]{64}")


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
        version = self.root / "VERSION"
        if not version.exists():
            with self.locked():
                if not version.exists():
                    self._atomic_write(version, f"{FORMAT_VERSION}\n".encode())

    # --- locking and atomic files ----------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _atomic_write(self, path: Path, data: bytes, mode: int = 0o600) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
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
        _check_name(kind[:-1], name)
        return self.tenants / tenant / kind / f"{name}.json"

    def _read_record(self, path: Path) -> dict[str, Any] | None:
        try:
            return json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise LibraryError(f"registry record {path.name} is unreadable: {exc}") from None

    def put_library(self, tenant: str, name: str, sha256: str, size: int, backend: str, fmt: str,
                    kernels: list[str]) -> LibraryRecord:
        rec = LibraryRecord(name, tenant, sha256, size, backend, fmt, sorted(kernels), time.time())
        path = self._record_path(tenant, "libraries", name)
        with self.locked():
            self._atomic_write(path, json.dumps(asdict(rec), sort_keys=True).encode())
            self.audit(tenant, "register", "library", name, sha256)
        return rec

    def get_library(self, tenant: str, name: str) -> LibraryRecord:
        doc = self._read_record(self._record_path(tenant, "libraries", name))
        if doc is None:
            raise NotFound("library", name)
        return LibraryRecord(**doc)

    def list_libraries(self, tenant: str) -> list[LibraryRecord]:
        return [LibraryRecord(**d) for d in self._list(tenant, "libraries")]

    def put_function(self, tenant: str, name: str, config: dict[str, Any], libraries: dict[str, str],
                     engine: str, source_format: str = "pappus", notes: list[str] | None = None) -> FunctionRecord:
        rec = FunctionRecord(name, tenant, config, dict(libraries), engine, time.time(), source_format,
                             list(notes or []))
        path = self._record_path(tenant, "functions", name)
        body = json.dumps(asdict(rec), sort_keys=True).encode()
        with self.locked():
            self._atomic_write(path, body)
            self.audit(tenant, "register", "function", name, hashlib.sha256(body).hexdigest())
        return rec

    def get_function(self, tenant: str, name: str) -> FunctionRecord:
        doc = self._read_record(self._record_path(tenant, "functions", name))
        if doc is None:
            raise NotFound("function", name)
        return FunctionRecord(**doc)

    def function_stamp(self, tenant: str, name: str) -> tuple[int, int] | None:
        """A cheap change marker of a function record (inode, mtime), or None if absent."""
        try:
            st = os.stat(self._record_path(tenant, "functions", name))
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns)

    def list_functions(self, tenant: str) -> list[FunctionRecord]:
        return [FunctionRecord(**d) for d in self._list(tenant, "functions")]

    def remove(self, tenant: str, kind: str, name: str) -> None:
        path = self._record_path(tenant, kind, name)
        with self.locked():
            try:
                path.unlink()
            except FileNotFoundError:
                raise NotFound(kind[:-1], name) from None
            _fsync_dir(path.parent)
            self.audit(tenant, "remove", kind[:-1], name, None)

    def _list(self, tenant: str, kind: str) -> list[dict[str, Any]]:
        _check_name("tenant", tenant)
        folder = self.tenants / tenant / kind
        out = []
        if folder.is_dir():
            for path in sorted(folder.glob("*.json")):
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
