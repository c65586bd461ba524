"""Which on-chip memory keeps a tenant's data on this GPU, and which scrub clears it.

    python tools/cuda_onchip_probe.py

Runs the conformance suite's fill_scratch (tenant A: leaves its secret in shared memory,
private memory and registers), then one of pappus_cuda.onchip's scrubs (none, shared, local,
registers, all), then tenant B's probes: probe_scratch (A's words B finds in shared and private
memory) and probe_registers (A's words in the registers B starts with). Each row is printed for
the suite's grid (4 blocks of 128) and for a block of 256 on every SM; "no A" runs the probes
without A first, so what they count there is not A's. Needs a GPU and nvcc.
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
from pappus_cuda.onchip import OnChipScrubber

#: (label, run A first, scrub shared, local bytes, registers)
CASES = [("none", True, False, 0, False), ("shared", True, True, 0, False), ("local 1k", True, False, 1024, False),
         ("registers", True, False, 0, True), ("shared+local 1k", True, True, 1024, False),
         ("all, 1k", True, True, 1024, True), ("no A", False, False, 0, False), ("none again", True, False, 0, False)]


def main() -> None:
    out = Path(tempfile.mkdtemp())
    lib = build_cuda(KERNEL_DIR / "suite.hip", out, [native_target()])[0].read_bytes()
    dev = CudaDevice(scrub_on_chip=False)
    dev.open()
    base = dev.reserve(64 << 20)
    scrub = OnChipScrubber(dev)
    module = dev.load_module(LibraryImage(hashlib.sha256(lib).hexdigest(), lib))
    kernels = {name: dev.get_kernel(module, name) for name in ("fill_scratch", "probe_scratch", "probe_registers")}
    for name, k in kernels.items():
        print(f"{name}: registers {dev.function_attribute(k, 'NUM_REGS')}, local bytes "
              f"{dev.function_attribute(k, 'LOCAL_SIZE_BYTES')}, shared bytes {dev.function_attribute(k, 'SHARED_SIZE_BYTES')}")
    one = struct.pack("<I", 1)

    def run(name: str, grid: int, block: int, *args: bytes) -> None:
        dev.launch(Launch(name, kernels[name], (grid, 1, 1), (block, 1, 1), 0, args))
        dev.synchronize()

    for grid, block in ((4, 128), (scrub.sms, 256)):
        print(f"A's words B finds, {grid} blocks of {block} threads (3 rounds each):")
        for label, fill, shared, local, registers in CASES:
            found: dict[str, list[int]] = {"probe_scratch": [], "probe_registers": []}
            for probe in found:
                for _ in range(3):
                    dev.memset(base, 0, 4096)
                    if fill:
                        run("fill_scratch", grid, block, one, struct.pack("<Q", base))
                    if shared or local or registers:
                        scrub.run(shared, local, registers)
                    probe_args = (one, struct.pack("<Q", base + 64)) if probe == "probe_scratch" else (
                        struct.pack("<I", 0), struct.pack("<Q", base + 64))
                    run(probe, grid, block, *probe_args)
                    got = bytearray(8)
                    dev.read(base + 64, memoryview(got))
                    found[probe].append(struct.unpack("<Q", got)[0])
            print(f"  {label:16s} shared+private {found['probe_scratch']}  registers {found['probe_registers']}")
    dev.close()


if __name__ == "__main__":
    main()
