"""``pappus import dandelion`` / ``pappus export dandelion``: move configs between pappus and Dandelion."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import FieldError, ValidationError
from .common import pairs


def add_parser(sub: Any, formatter: Any) -> None:
    imp = sub.add_parser(
        "import", formatter_class=formatter, help="convert an upstream Dandelion GPU config to pappus",
        description="Convert an upstream Dandelion GPU config (thesis-era 'module_path' or later 'modules')\n"
                    "into a pappus/function@1 config with the same meaning. Module paths resolve only\n"
                    "inside --modules-dir (default: the config's directory). Prints the config, the\n"
                    "libraries to register and every adjustment made. See docs/dandelion.md.",
        epilog="examples:\n  pappus import dandelion test_gpu_matmul_para.json --modules-dir libs -o matmul.json\n"
               "  pappus import dandelion inference.json --input-size cfg=48")
    imp.add_argument("format", choices=["dandelion"], help="source format")
    imp.add_argument("config", help="the upstream config (JSON)")
    imp.add_argument("--modules-dir", metavar="DIR", help="directory module paths are resolved in")
    imp.add_argument("--input-size", action="append", metavar="NAME=BYTES",
                     help="declare an input's exact size in bytes; repeat for several")
    imp.add_argument("--generation", choices=["thesis", "modules"], help="force the generation (default: detect)")
    imp.add_argument("-o", "--output", metavar="FILE", help="write the pappus config here (default: stdout)")
    imp.set_defaults(func=run_import)

    exp = sub.add_parser(
        "export", formatter_class=formatter, help="convert a pappus config to an upstream Dandelion config",
        description="Write a pappus function config as an upstream Dandelion GPU config, where the\n"
                    "function fits upstream's model; everything that does not is named.",
        epilog="example:\n  pappus export dandelion matmul.json --module-path matmul=mlops.hsaco -o test_gpu_matmul.json")
    exp.add_argument("format", choices=["dandelion"], help="target format")
    exp.add_argument("config", help="the pappus config (JSON)")
    exp.add_argument("--module-path", action="append", metavar="LIBRARY=PATH",
                     help="module path to write for a library; one per library the function uses")
    exp.add_argument("--generation", choices=["thesis", "modules"], default="modules",
                     help="upstream generation to write (default: %(default)s)")
    exp.add_argument("--allow-lossy", action="store_true",
                     help="drop what upstream cannot express (deadline, engine, declared sizes) instead of refusing")
    exp.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    exp.set_defaults(func=run_export)


def run_import(args: argparse.Namespace) -> int:
    from ..importers.dandelion import import_dandelion

    sizes = {}
    for name, value in pairs(args.input_size, "--input-size").items():
        if not value.isdigit():
            raise ValidationError(FieldError("--input-size", f"{name}={value}: BYTES must be a whole number"),
                                  what="arguments")
        sizes[name] = int(value)
    result = import_dandelion(Path(args.config), modules_dir=args.modules_dir, generation=args.generation,
                              input_sizes=sizes or None)
    text = json.dumps(result.config, indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    err = sys.stderr
    print(f"imported a {result.generation}-generation Dandelion config", file=err)
    for name, path in result.libraries.items():
        print(f"  library {name}: {path}   (pappus register library {name} {path})", file=err)
    for note in result.notes:
        print(f"  note: {note}", file=err)
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ..importers.dandelion import export_dandelion

    doc = export_dandelion(Path(args.config), generation=args.generation,
                           module_paths=pairs(args.module_path, "--module-path"), allow_lossy=args.allow_lossy)
    text = json.dumps(doc, indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0
