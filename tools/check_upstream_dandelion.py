"""Validate upstream Dandelion's own HIP configs against upstream's own code objects.

    python tools/check_upstream_dandelion.py UPSTREAM [--arch gfx90a] [--json out.json]

UPSTREAM is a checkout (or export) of eth-easl/dandelion's ``dev/gpu`` branch. Every config in
``machine_interface/tests/data/hip/`` is imported (``pappus.importers.dandelion``) with module
paths resolved in ``machine_interface/tests/libs``, each module is read by the HIP backend's
static code-object validation, and the function is checked against the kernels' real
signatures (argument counts and sizes from the AMDGPU metadata) — exactly what registration
does, with no GPU. Nothing upstream is copied into pappus: this reads a checkout you provide.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def check(upstream: Path, arch: str) -> list[dict[str, Any]]:
    from pappus.config import check_function_against_libraries, parse_function
    from pappus.config.limits import Limits
    from pappus.errors import PappusError
    from pappus.importers.dandelion import import_dandelion, narrow_constants
    from pappus_hip.driver import HipDriver

    driver = HipDriver(arch=arch)
    configs = sorted((upstream / "machine_interface" / "tests" / "data" / "hip").glob("*.json"))
    libs_dir = upstream / "machine_interface" / "tests" / "libs"
    limits = Limits()
    rows = []
    for path in configs:
        row: dict[str, Any] = {"config": path.name}
        try:
            result = import_dandelion(path, modules_dir=libs_dir, limits=limits)
            infos = {name: driver.inspect_library(Path(p).read_bytes()) for name, p in result.libraries.items()}
            config, _ = narrow_constants(result.config, infos, limits=limits)
            errors = check_function_against_libraries(parse_function(config, limits=limits), infos)
            row.update(modules=len(infos), kernels=len(result.function.kernels),
                       ok=not errors, errors=[str(e) for e in errors])
        except PappusError as exc:
            row.update(ok=False, errors=[str(e) for e in getattr(exc, "errors", [exc])])
        rows.append(row)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("upstream", type=Path)
    ap.add_argument("--arch", default="gfx90a")
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = check(args.upstream, args.arch)
    for r in rows:
        status = "ok  " if r["ok"] else "FAIL"
        detail = "" if r["ok"] else f"  {len(r['errors'])} problem(s), first: {r['errors'][0]}"
        print(f"{status} {r['config']:42} modules={r.get('modules', '-'):>3}{detail}")
    ok = sum(r["ok"] for r in rows)
    print(f"{ok}/{len(rows)} upstream HIP configs validate against upstream's own code objects")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0 if ok == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
