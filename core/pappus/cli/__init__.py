"""The ``pappus`` command line. Every command has ``--help``; errors are one clear line.

Commands live in small modules next to this one; each defines ``add_parser(sub, formatter)``,
which adds its subparser and sets ``func`` to the function that runs it. The parser built here is also what generates the CLI reference
in the docs, so help texts are written for readers.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .._version import __version__
from ..errors import PappusError, ValidationError

COMMAND_MODULES = [
    "pappus.cli.plugins_cmd",
    "pappus.cli.validate_cmd",
    "pappus.cli.build_cmd",
    "pappus.cli.run_cmd",
    "pappus.cli.functions_cmd",
    "pappus.cli.import_cmd",
    "pappus.cli.serve_cmd",
    "pappus.cli.bench_cmd",
    "pappus.cli.demo_cmd",
    "pappus.cli.conformance_cmd",
    "pappus.cli.tenant_cmd",
    "pappus.cli.new_backend_cmd",
]


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pappus",
        formatter_class=_Formatter,
        description="Run untrusted GPU functions serverlessly: many tenants, one accelerator.",
        epilog="Start with:  pappus plugins   (what can run here)\n"
               "             pappus demo      (the thesis workloads on the CPU backend)\n"
               "Every command has --help.",
    )
    parser.add_argument("--version", action="version", version=f"pappus {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # that command is not part of this build
            raise
        module.add_parser(sub, _Formatter)
    for command in sub.choices.values():  # --debug is accepted after the command name too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show tracebacks instead of one-line errors")
    return parser


def _command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub)command ``args`` chose: ``pappus tenant add``'s, not ``pappus``'s."""
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        chosen = getattr(args, subs[0].dest, None) if subs else None
        if chosen is None or chosen not in subs[0].choices:
            return parser
        parser = subs[0].choices[chosen]


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parse_args``, but an unknown option is reported by its command's parser (its usage,
    not ``pappus``'s), with the option it was probably meant to be."""
    from ..config.parser import did_you_mean

    args, extras = parser.parse_known_args(argv)
    if extras:
        command = _command_parser(parser, args)
        options = [o for a in command._actions for o in a.option_strings if o.startswith("--")]
        hints = []
        for extra in extras:
            close = did_you_mean(extra.split("=", 1)[0], options) if extra.startswith("--") else None
            if close:
                hints.append(f"{extra.split('=', 1)[0]}: did you mean {close}?")
        command.error(f"unrecognized arguments: {' '.join(extras)}" + (f" ({'; '.join(hints)})" if hints else ""))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = args.func(args)
        return int(code or 0)
    except BrokenPipeError:  # output piped into head & co.
        return 0
    except KeyboardInterrupt:
        print("pappus: interrupted", file=sys.stderr)
        return 130
    except PappusError as exc:
        if getattr(args, "debug", False):
            raise
        if isinstance(exc, ValidationError) and len(exc.errors) > 1:
            what = exc.fields.get("what", "config")
            verb = "are" if what.endswith(("arguments", "settings")) else "is"
            print(f"pappus: {what} {verb} invalid ({len(exc.errors)} problems):",
                  file=sys.stderr)
            for err in exc.errors:
                print(f"  {err}", file=sys.stderr)
        else:
            print(f"pappus: error: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        if getattr(args, "debug", False):
            raise
        print(f"pappus: error: {exc}", file=sys.stderr)
        return 1


def run() -> None:
    sys.exit(main())
