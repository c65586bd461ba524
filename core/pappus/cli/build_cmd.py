"""``pappus build``: compile HIP source into libraries for the chosen targets."""

from __future__ import annotations

import argparse
import fnmatch
from pathlib import Path
from typing import Any

from ..errors import FieldError, ValidationError
from .common import output_dir


def add_parser(sub: Any, formatter: Any) -> None:
    p = sub.add_parser(
        "build", formatter_class=formatter, help="compile HIP source into libraries (cpu, gfx*, sm_*)",
        description="Compile one HIP source file for each target. 'cpu' builds a shared library for the\n"
                    "CPU backend (runs anywhere); 'gfx90a' etc. build AMD code objects with hipcc where\n"
                    "it is installed; 'sm_90' etc. build CUDA code where the NVIDIA backend can.",
        epilog="example:\n  pappus build examples/matmul/matmul.hip -o build --targets cpu,gfx90a")
    p.add_argument("source", help="HIP source file (.hip)")
    p.add_argument("-o", "--output", default=".", metavar="DIR", help="output directory (default: .)")
    p.add_argument("--targets", default="cpu", metavar="LIST",
                   help="comma-separated targets (default: %(default)s)")
    p.set_defaults(func=run)


def route(targets: list[str], backends: list[Any]) -> dict[str, tuple[Any, list[str]]]:
    """Group targets by the backend that builds them: an exact pattern beats a wildcard."""
    plan: dict[str, tuple[Any, list[str]]] = {}
    unknown = []
    for target in targets:
        exact = [b for b in backends if b.build and target in b.build_targets]
        wild = [b for b in backends if b.build and any(fnmatch.fnmatch(target, pat) for pat in b.build_targets)]
        chosen = (exact or wild or [None])[0]
        if chosen is None:
            unknown.append(target)
            continue
        plan.setdefault(chosen.name, (chosen, []))[1].append(target)
    if unknown:
        known = sorted({pat for b in backends if b.build for pat in b.build_targets})
        raise ValidationError(FieldError("--targets", f"no installed backend builds {', '.join(unknown)} "
                                         f"(known targets: {', '.join(known) or 'none'})"), what="arguments")
    return plan


def run(args: argparse.Namespace) -> int:
    from ..plugins import get_plugins

    source = Path(args.source)
    if not source.is_file():
        raise ValidationError(FieldError("source", f"{args.source} is not a file"), what="arguments")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not targets:
        raise ValidationError(FieldError("--targets", "name at least one target"), what="arguments")
    out = output_dir(args.output)
    for _name, (backend, its_targets) in route(targets, list(get_plugins().backends)).items():
        try:
            built_paths = backend.build(source, out, its_targets)
        except ValidationError as exc:  # a compiler's "no such GPU" is about --targets
            raise exc.reworded(paths=[("targets", "--targets")]) from None
        for path in built_paths:
            built = Path(path)  # shown under -o as the user gave it, whichever backend built it
            print(out / built.name if built.resolve().parent == out.resolve() else built)
    return 0
