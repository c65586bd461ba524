"""``pappus import dandelion`` / ``pappus export dandelion``: move configs between pappus and Dandelion."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from ..errors import FieldError, ValidationError
from .common import backend_reading, pairs

# The commands below run from the root of a Dandelion checkout (dev/gpu), as docs/dandelion.md shows.
_HIP = "machine_interface/tests/data/hip"
_LIBS = "machine_interface/tests/libs"


def add_parser(sub: Any, formatter: Any) -> None:
    imp = sub.add_parser(
        "import", formatter_class=formatter, help="convert an upstream Dandelion GPU config to pappus",
        description="Convert an upstream Dandelion GPU config (thesis-era 'module_path' or later 'modules')\n"
                    "into a pappus/function@1 config with the same meaning. Module paths resolve only\n"
                    "inside --modules-dir (default: the config's directory). Prints the config, the\n"
                    "libraries to register and every adjustment made. See docs/dandelion.md.",
        epilog="examples (from the root of a Dandelion checkout, branch dev/gpu):\n"
               f"  pappus import dandelion {_HIP}/test_gpu_matmul_para.json --modules-dir {_LIBS} -o matmul.json\n"
               f"  pappus import dandelion {_HIP}/test_gpu_inference.json --modules-dir {_LIBS} --input-size cfg=48")
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
                    "function fits upstream's model; everything that does not is named. Give each\n"
                    "library of the function its module path with --module-path LIBRARY=PATH.",
        epilog="example (matmul.json made by the first 'pappus import --help' example; its library\n"
               "is 'mlops.hsaco', the upstream module's name):\n"
               "  pappus export dandelion matmul.json --module-path mlops.hsaco=mlops.hsaco -o matmul_para.json")
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


def input_sizes(values: list[str] | None) -> dict[str, int]:
    """``--input-size NAME=BYTES`` options as a dict (every malformed one reported at once)."""
    from ..importers.dandelion import parse_input_sizes

    sizes, errors = parse_input_sizes(values or [], "--input-size")
    if errors:
        raise ValidationError(errors, what="arguments")
    return sizes


def check_modules_dir(value: str | None) -> str | None:
    from ..importers.dandelion import modules_dir_problem

    problem = modules_dir_problem(value)
    if problem:
        raise ValidationError(FieldError("--modules-dir", f"{value!r} {problem}"), what="arguments")
    return value


# What the Python API calls a keyword argument, the command line calls an option.
_CLI_PATHS = (("module_paths.", "--module-path "), ("input_sizes.", "--input-size "), ("input_sizes", "--input-size"),
              ("modules_dir", "--modules-dir"))
_CLI_WORDS = (("pass allow_lossy=True", "pass --allow-lossy"), ("(declared in input_sizes)", "(declared with --input-size)"),
              ("export generation='modules'", "export with --generation modules"),
              ("(modules_dir / --modules-dir)", "(--modules-dir)"),
              ("with import_dandelion)", "with pappus import dandelion)"))


def in_cli_terms(exc: ValidationError, extra: list[FieldError] | None = None) -> ValidationError:
    """``exc`` with its paths and advice in command-line terms (``--module-path X``, ``--allow-lossy``)."""
    reworded = exc.reworded(_CLI_PATHS, _CLI_WORDS, extra or ())
    errors = []
    for e in reworded.errors:
        message = e.message
        if e.path.startswith("--module-path ") and message.startswith("no module path given"):
            message += f"; give --module-path {e.path[len('--module-path '):]}=PATH"
        errors.append(FieldError(e.path, message))
    return ValidationError(errors, what=reworded.fields["what"])


def _write(text: str, output: str | None) -> None:
    if not output:
        sys.stdout.write(text)
        return
    try:
        Path(output).write_text(text)
    except OSError as exc:
        raise ValidationError(FieldError("-o", f"cannot write {output!r}: {exc.strerror or exc}"),
                              what="arguments") from None


def _engine_of(path: Path) -> str | None:
    """The sequential engine of the installed backend whose driver reads this library (as
    ``pappus validate`` picks one); None if none does, or the file cannot be read."""
    from ..plugins import get_plugins

    try:
        data = path.read_bytes()
    except OSError:
        return None
    backend, _ = backend_reading(get_plugins(), data)
    return f"{backend.name}-sequential" if backend is not None and "sequential" in backend.engine_kinds else None


def run_import(args: argparse.Namespace) -> int:
    from ..importers.dandelion import import_dandelion

    sizes = input_sizes(args.input_size)
    modules_dir = check_modules_dir(args.modules_dir)
    try:
        result = import_dandelion(Path(args.config), modules_dir=modules_dir, generation=args.generation,
                                  input_sizes=sizes or None)
    except ValidationError as exc:
        raise in_cli_terms(exc) from None
    _write(json.dumps(result.config, indent=2) + "\n", args.output)
    err = sys.stderr
    print(f"imported a {result.generation}-generation Dandelion config", file=err)
    engines = {_engine_of(path) for path in result.libraries.values()}
    engine = engines.pop() if len(engines) == 1 else None
    flag = f" --engine {engine}" if engine else ""
    for name, path in result.libraries.items():
        print(f"  library {name}: {path}   (pappus register library {shlex.quote(name)} "
              f"{shlex.quote(str(path))}{flag})", file=err)
    if result.libraries and not sizes:  # register function declares the default sizes only
        again = ["pappus register function NAME", shlex.quote(args.config), "--format dandelion"]
        if modules_dir is not None:
            again.append(f"--modules-dir {shlex.quote(modules_dir)}")
        print(f"  or in one step (registers the libraries, fits arguments to the kernels' parameters): "
              f"{' '.join(again)}{flag}", file=err)
    for note in result.notes:
        print(f"  note: {note}", file=err)
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ..config.parser import parse_function
    from ..importers.dandelion import export_dandelion

    module_paths = pairs(args.module_path, "--module-path")
    extra: list[FieldError] = []
    if module_paths:
        try:
            libraries = parse_function(Path(args.config)).libraries
        except ValidationError:
            libraries = None  # export_dandelion reports why
        if libraries is not None:
            has = ", ".join(repr(lib) for lib in libraries)
            extra = [FieldError(f"--module-path {lib}", f"the function has no library {lib!r} (its libraries: {has})")
                     for lib in module_paths if lib not in libraries]
    try:
        doc = export_dandelion(Path(args.config), generation=args.generation, module_paths=module_paths,
                               allow_lossy=args.allow_lossy)
    except ValidationError as exc:
        raise in_cli_terms(exc, extra) from None
    if extra:
        raise in_cli_terms(ValidationError(extra, what="arguments"))
    _write(json.dumps(doc, indent=2) + "\n", args.output)
    return 0
