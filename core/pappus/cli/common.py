"""Helpers shared by CLI commands: NAME=PATH pairs, input files, runtime options."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import FieldError, ValidationError


def pairs(values: list[str] | None, what: str) -> dict[str, str]:
    """``["A=a.bin", "B=b.npy"]`` -> ``{"A": "a.bin", ...}`` with a clear error for bad items."""
    out: dict[str, str] = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ValidationError(FieldError(what, f"{item!r} is not NAME=PATH"), what="arguments")
        if name in out:
            raise ValidationError(FieldError(what, f"{name!r} is given twice"), what="arguments")
        out[name] = value
    return out


MAX_INPUT_FILE_BYTES = 1 << 32  # 4 GiB: larger than any pool an input could go into


def read_input(path: str) -> bytes:
    """Raw bytes of a file; ``.npy`` files give the array's raw data (C order)."""
    p = Path(path)
    data = _read_capped(p, MAX_INPUT_FILE_BYTES, "input")
    if p.suffix == ".npy":
        import io

        import numpy as np

        return np.ascontiguousarray(np.load(io.BytesIO(data), allow_pickle=False)).tobytes()
    return data


def read_library_file(path: str) -> bytes:
    """A library file named on the command line: a regular file, at most the runtime's library limit."""
    from ..runtime import MAX_LIBRARY_BYTES

    return _read_capped(Path(path), MAX_LIBRARY_BYTES, "library")


def _read_capped(path: Path, limit: int, what: str) -> bytes:
    """Regular files only (never a device or FIFO that would not end), never more than ``limit``."""
    from .._files import read_regular_file

    data = read_regular_file(path, limit)
    if len(data) > limit:
        raise OSError(0, f"the {what} file is larger than {limit} bytes", str(path))
    return data


def add_runtime_options(parser: argparse.ArgumentParser, engine_default: str | None = "cpu-sequential") -> None:
    parser.add_argument("--engine", default=engine_default, metavar="ENGINE",
                        help="engine to use, <backend>-<kind> (default: %(default)s); see 'pappus plugins'")
    parser.add_argument("--state-dir", metavar="DIR",
                        help="registry directory (default: $PAPPUS_HOME or ~/.local/share/pappus)")
    parser.add_argument("--workers", type=int, default=2, metavar="N",
                        help="worker processes of a multiprocess engine (default: %(default)s)")
    parser.add_argument("--heap-limit", type=int, default=0, metavar="BYTES",
                        help="device malloc heap per invocation (default: 0, malloc returns NULL)")
    parser.add_argument("--tenant", default="default", help="tenant namespace (default: %(default)s)")


def runtime_from(args: argparse.Namespace, **extra: Any) -> Any:
    from ..runtime import Runtime

    return Runtime(engine=args.engine, state_dir=args.state_dir, workers=args.workers,
                   heap_limit=args.heap_limit, **extra)
