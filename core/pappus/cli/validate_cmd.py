"""``pappus validate``: check a function config, and optionally its libraries, without running it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import FieldError, LibraryError, ValidationError
from .common import backend_reading, file_problem, gave, pairs, read_library_file, whole_number


def add_parser(sub: Any, formatter: Any) -> None:
    p = sub.add_parser(
        "validate", formatter_class=formatter, help="validate a function config (and its libraries)",
        description="Validate a function config. Every problem is printed as path.to.field: message.\n"
                    "With --library, kernels and argument sizes are also checked against the\n"
                    "real signatures in the libraries (read statically; nothing is loaded).",
        epilog="example:\n  pappus validate examples/matmul/matmul.json --library matmul=build/matmul.so")
    p.add_argument("config", help="function config (JSON)")
    p.add_argument("--library", action="append", metavar="NAME=PATH",
                   help="a library the config names; repeat for several")
    p.add_argument("--backend", default=None,
                   help="backend whose format the libraries are in (default: guessed from the file)")
    p.add_argument("--heap-limit", type=whole_number(0), default=0, metavar="BYTES",
                   help="device malloc heap the function would run with (default: 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import check_function_against_libraries, load_config_document, parse_function
    from ..plugins import get_plugins

    doc = load_config_document(Path(args.config))
    plugins = get_plugins()
    libs = pairs(args.library, "--library")
    backend = None
    if args.backend:
        backend = plugins.backend(args.backend)
    elif libs:
        backend = guess_backend(plugins, *next(iter(libs.items())))
    device = backend.driver.device_limits() if backend else None
    config = parse_function(doc, device=device)
    if libs:
        assert backend is not None
        infos = {}
        errors = []
        for name, path in libs.items():
            try:
                infos[name] = backend.driver.inspect_library(read_library_file(path))
            except LibraryError as exc:
                errors.append(FieldError(f"--library {name}", exc.errors[0].message))
            except OSError as exc:
                errors.append(FieldError(f"--library {name}", file_problem(path, exc)))
        missing = [lib for lib in config.libraries if lib not in libs]
        errors += [FieldError("library", f"library {lib!r} is named by the config but not given with --library "
                                         f"({gave('--library', libs)})") for lib in missing]
        if not errors:
            errors = check_function_against_libraries(config, infos, heap_limit=args.heap_limit, device=device)
        if errors:
            raise ValidationError(errors)
    kernels = len(config.kernels)
    checked = ""
    if libs and backend is not None:
        checked = f", checked against {len(libs)} librar{'y' if len(libs) == 1 else 'ies'} ({backend.name})"
    print(f"{args.config}: valid ({kernels} kernel{'s' if kernels != 1 else ''}{checked})")
    return 0


def guess_backend(plugins: Any, name: str, path: str) -> Any:
    """The first backend whose driver accepts the file of ``--library NAME=PATH``."""
    try:
        data = read_library_file(path)
    except OSError as exc:
        raise LibraryError(file_problem(path, exc), f"--library {name}") from None
    backend, reasons = backend_reading(plugins, data)
    if backend is not None:
        return backend
    raise LibraryError(f"no backend accepts {path!r} (" + "; ".join(reasons) + ")", f"--library {name}")
