"""The device template binary: compiled from the shipped C source on first use, then cached.

The cache key covers the C source, the ABI header and the compiler, so an upgrade rebuilds.
Concurrent builds (several workers starting at once) serialise on a file lock; the binary
appears atomically.

Cache directory, first that is set: ``$PAPPUS_CPU_CACHE``, ``$PAPPUS_HOME/cache``,
``$XDG_CACHE_HOME/pappus``, ``~/.cache/pappus``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from pappus.errors import DeviceError

PACKAGE_DIR = Path(__file__).resolve().parent
SOURCE = PACKAGE_DIR / "csrc" / "pappus_cpu_device.c"
INCLUDE_DIR = PACKAGE_DIR / "include"
ABI_HEADER = INCLUDE_DIR / "pappus_cpu_abi.h"
BINARY_NAME = "pappus-cpu-device"
CFLAGS = ("-O2", "-std=gnu11", "-Wall")

_lock = threading.Lock()
_known: dict[str, Path] = {}


def find_cc() -> str | None:
    """The C compiler for the template: $PAPPUS_CC, else cc, gcc, clang."""
    explicit = os.environ.get("PAPPUS_CC")
    if explicit:
        return shutil.which(explicit)
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    return None


def cache_root() -> Path:
    for var, sub in (("PAPPUS_CPU_CACHE", ""), ("PAPPUS_HOME", "cache")):
        value = os.environ.get(var)
        if value:
            return Path(value) / sub if sub else Path(value)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "pappus"


def device_binary(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Path of the compiled template, building it if needed. Raises DeviceError if it cannot."""
    cc = find_cc()
    if cc is None:
        raise DeviceError("no C compiler found to build the CPU device (install gcc, or set PAPPUS_CC)",
                          api="build")
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), ABI_HEADER.read_bytes(), os.path.realpath(cc).encode(),
                 " ".join(CFLAGS).encode()):
        digest.update(part)
        digest.update(b"\0")
    key = digest.hexdigest()[:16]
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    directory = root / f"cpu-{key}"
    binary = directory / BINARY_NAME
    with _lock:
        known = _known.get(str(binary))
        if known is not None and known.exists():
            return known
        if not _usable(binary):
            _build(cc, directory, binary)
        _known[str(binary)] = binary
    return binary


def _usable(binary: Path) -> bool:
    return binary.is_file() and os.access(binary, os.X_OK)


def _build(cc: str, directory: Path, binary: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if _usable(binary):  # another process built it while we waited
                return
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".build-")
            os.close(fd)
            try:
                proc = subprocess.run([cc, *CFLAGS, "-I", str(INCLUDE_DIR), "-o", tmp, str(SOURCE)],
                                      capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
                if proc.returncode != 0:
                    raise DeviceError(f"building the CPU device template failed:\n{proc.stderr.strip()}",
                                      api="build")
                os.chmod(tmp, 0o755)
                os.replace(tmp, binary)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    except OSError as exc:
        raise DeviceError(f"cannot build the CPU device template in {directory}: {exc.strerror or exc}",
                          api="build") from None
    except subprocess.TimeoutExpired:
        raise DeviceError("building the CPU device template timed out", api="build") from None
