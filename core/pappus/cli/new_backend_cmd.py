"""``pappus new-backend``: write the skeleton of an out-of-tree backend plugin."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any, formatter: Any) -> None:
    p = sub.add_parser(
        "new-backend", formatter_class=formatter, help="scaffold an out-of-tree backend plugin package",
        description="Write DIR/pappus-NAME: a pip-installable plugin that registers backend NAME through\n"
                    "the 'pappus' entry-point group. Its DeviceAPI skeleton raises NotImplementedError in\n"
                    "every method, with what the method must guarantee; it claims no capability, so the\n"
                    "conformance suite reports every property as not claimed until you implement and\n"
                    "claim it. Its builder reuses the CPU backend's compiler, so the suite's kernels build.\n"
                    "With --gpu the device subclasses pappus.devices.gpu.GpuDevice (pool, bounded copies,\n"
                    "module bookkeeping across resets come from core) and holds only what a vendor's driver\n"
                    "API does differently.\n"
                    "Guide: 'Writing a backend' in the docs (docs/writing-a-backend.md).",
        epilog="example:\n"
               "  pappus new-backend mygpu -o ~/src        # writes ~/src/pappus-mygpu\n"
               "  pappus new-backend mygpu --gpu -o ~/src  # the same, its device on GpuDevice\n"
               "  pip install -e ~/src/pappus-mygpu && pappus plugins\n"
               "  pappus conformance --backend mygpu -n 0 --report out/mygpu")
    p.add_argument("name", metavar="NAME",
                   help="backend name: lower-case letters, digits and '_' (engines NAME-sequential, NAME-multiprocess)")
    p.add_argument("-o", "--output", default=".", metavar="DIR",
                   help="directory to create pappus-NAME in (default: .)")
    p.add_argument("--gpu", action="store_true",
                   help="a GPU behind a vendor driver API: the device subclasses pappus.devices.gpu.GpuDevice")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..scaffold import Names, new_backend

    written = new_backend(args.name, args.output, gpu=args.gpu)
    names = Names.of(args.name)
    root = Path(args.output) / names.dist
    for path in written:
        print(path)
    print(f"\nbackend {args.name!r}: {len(written)} files in {root}. Next:\n"
          f"  pip install -e '{root}[test]'\n"
          f"  pappus plugins                                  # lists {args.name}-sequential, {args.name}-multiprocess\n"
          f"  pappus conformance --backend {args.name} -n 0   # every property not claimed yet\n"
          f"then implement {names.package}/device.py, claim capabilities in {names.package}/plugin.py,\n"
          "and follow 'Writing a backend' in the pappus docs (docs/writing-a-backend.md).")
    return 0
