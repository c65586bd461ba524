"""Rebuild tests/cuda/prebuilt/: the code objects test_device.py falls back to on a GPU machine
that has neither nvcc nor NVRTC. Each is an uncompressed fatbin with sm_80 and sm_90 cubins and
compute_80 PTX (so newer GPUs JIT it). Run: python tests/cuda/make_prebuilt.py"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
STEMS = ("clean", "fault", "heap_probe")
TARGETS = ["sm_80", "sm_90", "compute_80"]


def main() -> int:
    sys.path.insert(0, str(HERE.parents[1] / "plugins"))
    from pappus_cuda.build import build_cuda

    out = HERE / "prebuilt"
    for stem in STEMS:
        for path in build_cuda(HERE / "kernels" / f"{stem}.hip", out, TARGETS):
            print(path.relative_to(HERE.parents[1]), path.stat().st_size, "bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
