"""The on-chip scrub kernels (plugins/pappus_cuda/scrub): the committed PTX is what scrub.cu
compiles to, and ptxas gives each local variant a real frame of its size (a frame kept in
registers, or optimised away, would scrub nothing). They run on a GPU in the conformance suite."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pappus_cuda.onchip import LOCAL_VARIANTS, scrub_ptx

SCRUB = Path(__file__).resolve().parents[2] / "plugins" / "pappus_cuda" / "scrub"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not found (CUDA toolkit)")
    return path


def test_committed_ptx_is_generated_from_the_source(tmp_path):
    nvcc = _tool("nvcc")
    out = tmp_path / "scrub.ptx"
    subprocess.run([nvcc, "-ptx", "-arch=compute_75", "-o", str(out), str(SCRUB / "scrub.cu")], check=True,
                   capture_output=True)

    def body(text: str) -> str:  # the compiler's banner names its build; the code must match
        return "\n".join(line for line in text.splitlines() if not line.startswith("//"))

    assert body(out.read_text()) == body((SCRUB / "scrub.ptx").read_text()), "run make -C plugins/pappus_cuda/scrub"
    assert scrub_ptx().endswith(b"\0")  # cuModuleLoadData takes PTX as a C string


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_each_local_variant_has_a_real_frame(tmp_path, arch):
    ptxas = _tool("ptxas")
    proc = subprocess.run([ptxas, f"-arch={arch}", "-v", str(SCRUB / "scrub.ptx"), "-o", str(tmp_path / "s.cubin")],
                          check=True, capture_output=True, text=True)
    frames: dict[str, int] = {}
    regs: dict[str, int] = {}
    current = None
    for line in proc.stderr.splitlines():
        if m := re.search(r"Compiling entry function '(\w+)'", line):
            current = m.group(1)
        elif current and (m := re.search(r"(\d+) bytes stack frame", line)):
            frames[current] = int(m.group(1))
        elif current and (m := re.search(r"Used (\d+) registers", line)):
            regs[current] = int(m.group(1))
    for size, name in LOCAL_VARIANTS:
        assert frames[name] >= size, (name, frames)
    for name in regs:  # full occupancy (2048 threads per SM) needs at most 32 registers a thread
        assert regs[name] <= 32, (name, regs)
