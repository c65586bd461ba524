"""``pappus register`` / ``pappus list``: manage the registry from the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import FieldError, ValidationError
from .common import add_runtime_options, check_state_dir, note_missing_state_dir, runtime_from


def add_parser(sub: Any, formatter: Any) -> None:
    p = sub.add_parser("register", formatter_class=formatter, help="register a library or a function",
                       description="Store a library or a function in the registry (validated first).",
                       epilog="examples:\n  pappus register library matmul build/matmul.so\n"
                              "  pappus register function matmul examples/matmul/matmul.json\n"
                              "  pappus register function matmul test_gpu_matmul_para.json --format dandelion \\\n"
                              "      --modules-dir machine_interface/tests/libs --engine hip-sequential\n"
                              "  pappus register function inference test_gpu_inference.json --format dandelion \\\n"
                              "      --modules-dir machine_interface/tests/libs --input-size cfg=48")
    p.add_argument("kind", choices=["library", "function"], help="what to register")
    p.add_argument("name", help="the name to store it under: function configs name a library by it "
                                "('library'), invocations call a function by it")
    p.add_argument("path", help="a library: the built code object (.so, .hsaco, .cubin); a function: its "
                                "config (JSON, pappus or Dandelion)")
    p.add_argument("--format", choices=["pappus", "dandelion"], help="config format (functions; default: detect)")
    p.add_argument("--modules-dir", metavar="DIR",
                   help="Dandelion configs: directory their module paths are resolved in (default: the config's)")
    p.add_argument("--input-size", action="append", metavar="NAME=BYTES",
                   help="Dandelion configs: declare an input's exact size in bytes, as `pappus import` does; "
                        "repeat for several")
    add_runtime_options(p)
    p.set_defaults(func=run_register)
    q = sub.add_parser("list", formatter_class=formatter, help="list registered libraries and functions",
                       description="List the libraries and functions of a tenant.")
    q.add_argument("--json", action="store_true")
    add_runtime_options(q)
    q.set_defaults(func=run_list)


def run_register(args: argparse.Namespace) -> int:
    # as `pappus import` reads them
    from .import_cmd import check_modules_dir, in_cli_terms, input_sizes

    modules_dir = getattr(args, "modules_dir", None)
    if args.kind == "library":
        given = [flag for flag, value in (("--modules-dir", modules_dir), ("--input-size", args.input_size)) if value]
        if given:
            raise ValidationError([FieldError(flag, "applies to functions (Dandelion configs), not libraries")
                                   for flag in given], what="arguments")
    else:
        check_modules_dir(modules_dir)
    sizes = input_sizes(args.input_size)
    with runtime_from(args) as rt:
        if args.kind == "library":
            rec = rt.register_library(args.name, Path(args.path), tenant=args.tenant)
            print(f"library {rec.name}: {rec.size} bytes, sha256 {rec.sha256[:16]}, kernels: {', '.join(rec.kernels)}")
        else:
            try:
                frec = rt.register_function(args.name, Path(args.path), tenant=args.tenant, format=args.format,
                                            modules_dir=modules_dir, input_sizes=sizes or None)
            except ValidationError as exc:  # the importer's advice, in this command's options
                raise in_cli_terms(exc) from None
            libs = ", ".join(f"{k}@{v[:12]}" for k, v in frec.libraries.items())
            print(f"function {frec.name}: engine {frec.engine}, libraries {libs}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from ..registry import FunctionRecord, LibraryRecord, Registry

    libs: list[LibraryRecord] = []
    funcs: list[FunctionRecord] = []
    if check_state_dir(args.state_dir):  # a reader: never creates the state directory
        reg = Registry(args.state_dir)
        libs = reg.list_libraries(args.tenant)
        funcs = reg.list_functions(args.tenant)
    else:
        note_missing_state_dir(args.state_dir)
    if args.json:
        print(json.dumps({"libraries": [vars(r) for r in libs], "functions": [
            {"name": f.name, "engine": f.engine, "libraries": f.libraries} for f in funcs]}, indent=2))
        return 0
    for r in libs:
        print(f"library  {r.name:24} {r.size:>10} B  {r.sha256[:16]}  {r.backend}")
    for f in funcs:
        print(f"function {f.name:24} {f.engine:18} " + ", ".join(f.libraries))
    return 0
