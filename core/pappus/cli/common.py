"""Helpers shared by CLI commands: NAME=PATH pairs, input files, state directories, runtime options."""

from __future__ import annotations

import argparse
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import FieldError, PappusError, ValidationError


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


def whole_number(minimum: int = 0) -> Callable[[str], int]:
    """An argparse ``type``: a whole number of at least ``minimum`` (argparse's message then
    names the option: ``argument --repeat: must be at least 1, not 0``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return parse


MAX_INPUT_FILE_BYTES = 1 << 32  # 4 GiB: larger than any pool an input could go into


def read_input(path: str) -> bytes:
    """Raw bytes of a file; ``.npy`` files give the array's raw data (C order)."""
    p = Path(path)
    data = _read_capped(p, MAX_INPUT_FILE_BYTES)
    if p.suffix == ".npy":
        import io

        import numpy as np

        try:
            return np.ascontiguousarray(np.load(io.BytesIO(data), allow_pickle=False)).tobytes()
        except ValueError as exc:
            raise OSError(0, f"is not a readable .npy file ({exc})", path) from None
    return data


def read_library_file(path: str) -> bytes:
    """A library file named on the command line: a regular file, at most the runtime's library limit."""
    from ..runtime import MAX_LIBRARY_BYTES

    return _read_capped(Path(path), MAX_LIBRARY_BYTES)


def _read_capped(path: Path, limit: int) -> bytes:
    """Regular files only (never a device or FIFO that would not end), never more than ``limit``."""
    from .._files import read_regular_file

    data = read_regular_file(path, limit)
    if len(data) > limit:
        raise OSError(0, f"is larger than {limit} bytes", str(path))
    return data


def file_problem(path: str, exc: OSError) -> str:
    """``'build' is a directory, not a regular file`` / ``cannot read 'x': No such file or directory``."""
    if exc.errno == 0 and exc.strerror:  # ours (NotARegularFile, too large): strerror says what the file is
        return f"{path!r} {exc.strerror}"
    return f"cannot read {path!r}: {exc.strerror or exc}"


def gave(option: str, names: Any) -> str:
    """``--library gave 'a', 'b'`` (``none`` when it gave nothing): for a message about a name
    that ``option`` did not give."""
    return f"{option} gave {', '.join(repr(n) for n in names) or 'none'}"


def output_dir(path: str, option: str = "-o") -> Path:
    """The output directory ``path``, created now (parents too) and checked writable: a wrong
    ``-o`` is named before any work, not after it."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValidationError(FieldError(option, f"{path!r} is a file, not a directory"), what="arguments")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValidationError(FieldError(option, f"cannot create {path!r}: {exc.strerror or exc}"),
                              what="arguments") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValidationError(FieldError(option, f"{path!r} is not writable"), what="arguments")
    return out


def read_named_files(values: list[str] | None, option: str,
                     reader: Callable[[str], bytes]) -> dict[str, bytes]:
    """``--input A=a.npy`` style options read with ``reader``; every unreadable file is named with its option:
    ``--input A: 'build' is a directory, not a regular file``."""
    out: dict[str, bytes] = {}
    errors = []
    for name, path in pairs(values, option).items():
        try:
            out[name] = reader(path)
        except OSError as exc:
            errors.append(FieldError(f"{option} {name}", file_problem(path, exc)))
    if errors:
        raise ValidationError(errors, what="arguments")
    return out


def backend_reading(plugins: Any, data: bytes) -> tuple[Any, list[str]]:
    """The first installed backend whose driver reads this library statically (no device needed),
    or None, with each refusal as ``"name: why"``."""
    from ..errors import LibraryError

    reasons: list[str] = []
    for backend in plugins.backends:
        try:
            backend.driver.inspect_library(data)
            return backend, reasons
        except LibraryError as exc:
            reasons.append(f"{backend.name}: {exc.errors[0].message}")
        except Exception as exc:  # a broken driver must not hide the others
            reasons.append(f"{backend.name}: {exc}")
    return None, reasons


# --- state directories ---------------------------------------------------------------------


def state_dir_source(given: str | None, flag: str = "--state-dir") -> tuple[Path, str]:
    """The state directory a command uses and where that came from (for messages)."""
    from ..registry import default_state_dir

    if given is not None:
        return Path(given).expanduser(), flag
    if os.environ.get("PAPPUS_HOME"):
        return default_state_dir(), "$PAPPUS_HOME"
    return default_state_dir(), "the default state directory"


def check_state_dir(given: str | None, flag: str = "--state-dir") -> bool:
    """Whether the state directory exists. A path that names something other than a directory is
    refused here, with where it came from, instead of as ``[Errno 17] File exists`` later."""
    path, source = state_dir_source(given, flag)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        raise PappusError(f"{source}: {str(path)!r} is not a directory (a part of the path is a file)") from None
    if not stat.S_ISDIR(mode):
        raise PappusError(f"{source}: {str(path)!r} is not a directory")
    return True


def note_missing_state_dir(given: str | None) -> None:
    """What read-only commands say (on stderr) when there is no state directory to read."""
    import sys

    path, _ = state_dir_source(given)
    print(f"pappus: note: state directory {str(path)!r} does not exist (nothing is registered there yet)",
          file=sys.stderr)


def add_runtime_options(parser: argparse.ArgumentParser, engine_default: str | None = "cpu-sequential",
                        state_dir_help: str = "registry directory (default: $PAPPUS_HOME or "
                                              "~/.local/share/pappus)") -> None:
    parser.add_argument("--engine", default=engine_default, metavar="ENGINE",
                        help="engine to use, <backend>-<kind> (default: %(default)s); see 'pappus plugins'")
    parser.add_argument("--state-dir", metavar="DIR", help=state_dir_help)
    parser.add_argument("--workers", type=whole_number(1), default=2, metavar="N",
                        help="worker processes of a multiprocess engine (default: %(default)s)")
    parser.add_argument("--heap-limit", type=whole_number(0), default=0, metavar="BYTES",
                        help="device malloc heap per invocation (default: 0, malloc returns NULL)")
    parser.add_argument("--tenant", default="default", help="tenant namespace (default: %(default)s)")


def runtime_from(args: argparse.Namespace, **extra: Any) -> Any:
    from ..runtime import Runtime

    check_state_dir(args.state_dir)
    return Runtime(engine=args.engine, state_dir=args.state_dir, workers=args.workers,
                   heap_limit=args.heap_limit, **extra)
