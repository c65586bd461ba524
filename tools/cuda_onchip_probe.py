"""Which on-chip memory keeps a tenant's data on this GPU, and which scrub clears it.

    python tools/cuda_onchip_probe.py

Runs the conformance suite's fill_scratch (tenant A: writes shared and local memory) and then
probe_scratch (tenant B: counts nonzero words it reads before writing), with each scrub of
pappus_cuda.onchip in between (none, shared only, local only per variant, registers only, all),
and prints the leftovers B found. Needs a GPU and nvcc.
"""

from __future__ import annotations

import hashlib
import struct
import tempfile
from pathlib import Path

from pappus.interfaces import LibraryImage
from pappus.plan import Launch
from pappus_conformance.fixtures import KERNEL_DIR
from pappus_cuda.build import build_cuda
from pappus_cuda.device import CudaDevice
from pappus_cuda.driver import native_target


def main() -> None:
    out = Path(tempfile.mkdtemp())
    lib = build_cuda(KERNEL_DIR / "suite.hip", out, [native_target()])[0].read_bytes()
    dev = CudaDevice(scrub_on_chip=False)
    dev.open()
    base = dev.reserve(64 << 20)
    from pappus_cuda.onchip import OnChipScrubber

    scrub = OnChipScrubber(dev)
    module = dev.load_module(LibraryImage(hashlib.sha256(lib).hexdigest(), lib))
    fill, probe = dev.get_kernel(module, "fill_scratch"), dev.get_kernel(module, "probe_scratch")
    print("local bytes:", dev.function_attribute(fill, "LOCAL_SIZE_BYTES"), dev.function_attribute(probe, "LOCAL_SIZE_BYTES"),
          "shared:", dev.function_attribute(fill, "SHARED_SIZE_BYTES"), "grids:", scrub.grids)
    for label, shared, local, registers in [
            ("none", False, 0, False), ("shared", True, 0, False), ("local 1k", False, 1024, False),
            ("local 4k", False, 4096, False), ("local 16k", False, 16384, False), ("registers", False, 0, True),
            ("shared+local 1k", True, 1024, False), ("all, 1k", True, 1024, True), ("none again", False, 0, False)]:
        counts = []
        for _ in range(3):
            dev.memset(base, 0, 4096)
            dev.launch(Launch("fill_scratch", fill, (4, 1, 1), (128, 1, 1), 0,
                              (struct.pack("<I", 0x0BADC0DE), struct.pack("<Q", base))))
            dev.synchronize()
            if shared or local or registers:
                scrub.run(shared, local, registers)
            dev.launch(Launch("probe_scratch", probe, (4, 1, 1), (128, 1, 1), 0, (struct.pack("<Q", base + 64),)))
            dev.synchronize()
            got = bytearray(8)
            dev.read(base + 64, memoryview(got))
            counts.append(struct.unpack("<Q", got)[0])
        print(f"{label:12s} leftovers {counts}")
    dev.close()


if __name__ == "__main__":
    main()
