"""The on-chip scrub kernels (plugins/pappus_cuda/scrub): the committed PTX is what scrub.cu
compiles to, ptxas gives each local variant a real frame of its size (a frame kept in
registers, or optimised away, would scrub nothing), and the register scrub's machine code
writes every register a kernel can be given, on the path every thread takes. They run on a GPU
in the conformance suite."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pappus_cuda.onchip import LOCAL_VARIANTS, REGISTERS, scrub_ptx

from .conftest import find_tool

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
        if name != REGISTERS:
            assert regs[name] <= 32, (name, regs)
    assert regs[REGISTERS] == 255, regs  # the most a thread may have: one block of 256 takes the file


def _sass(tmp_path: Path, arch: str, source: Path, function: str) -> list[str]:
    """The instructions of ``function`` (opcode and operands) as cuobjdump prints them."""
    ptxas, cuobjdump, nvdisasm = _tool("ptxas"), find_tool("cuobjdump"), find_tool("nvdisasm")
    if cuobjdump is None or nvdisasm is None:  # cuobjdump -sass runs nvdisasm
        pytest.skip("cuobjdump or nvdisasm not found (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm, "
                    "or a full CUDA toolkit)")
    cubin = tmp_path / f"{function}.{arch}.cubin"
    if source.suffix == ".ptx":
        subprocess.run([ptxas, f"-arch={arch}", str(source), "-o", str(cubin)], check=True, capture_output=True)
    else:
        subprocess.run([_tool("nvcc"), "-cubin", f"-arch={arch}", "-o", str(cubin), str(source)], check=True,
                       capture_output=True)
    dump = subprocess.run([cuobjdump, "-sass", "-fun", function, str(cubin)], check=True, capture_output=True,
                          text=True, env={**os.environ, "NVDISASM_PATH": str(Path(nvdisasm).parent)}).stdout
    return [m.group(1).strip() for line in dump.splitlines()
            if (m := re.match(r"\s*/\*[0-9a-f]{4}\*/\s*(.*?);", line))]


def _registers(instructions: list[str]) -> set[int]:
    return {int(r) for ins in instructions for r in re.findall(r"\bR(\d+)\b", ins)}


def _written_by_every_thread(instructions: list[str]) -> set[int]:
    """Registers written by instructions that every thread runs: those before the first branch
    (where the thread that counts blocks goes its own way) and those from where the threads meet
    again (WARPSYNC/BAR) up to the next branch or predicated instruction (the stores that never
    run)."""
    written: set[int] = set()
    phase = "before"  # -> "apart" -> "together"
    for ins in instructions:
        op, _, operands = ins.partition(" ")
        branch = ins.startswith("@") or op in ("BRA", "EXIT")
        if phase == "before" and branch:
            phase = "apart"
        elif phase == "apart":
            phase = "together" if op.startswith(("WARPSYNC", "BAR.")) else "apart"
        elif phase == "together" and branch:
            break
        elif (dest := re.match(r"R(\d+)\b", operands)) and not op.startswith(("ST", "RED", "ATOM")):
            width = 4 if ".128" in op else 2 if (".64" in op or ".WIDE" in op) else 1
            written.update(range(int(dest.group(1)), int(dest.group(1)) + width))
    return written


@pytest.mark.parametrize("arch", ["sm_75", "sm_80", "sm_90"])
def test_register_scrub_writes_every_register_a_kernel_can_have(tmp_path, arch):
    # The most a kernel can be given: a kernel with more live values than registers.
    pressure = tmp_path / "pressure.cu"
    pressure.write_text(
        'extern "C" __global__ void pressure(const double* a, double* b, int n) {\n'
        "    double v[200]; double s = 0;\n"
        "#pragma unroll\n    for (int i = 0; i < 200; ++i) v[i] = a[i * n + threadIdx.x];\n"
        "#pragma unroll\n    for (int i = 0; i < 200; ++i) s += v[i] * v[(i * 7) % 200];\n"
        "#pragma unroll\n    for (int i = 0; i < 200; ++i) b[i] = v[i] * s;\n}\n")
    highest = max(_registers(_sass(tmp_path, arch, pressure, "pressure")))
    scrub = _sass(tmp_path, arch, SCRUB / "scrub.ptx", REGISTERS)
    assert max(_registers(scrub)) == highest
    missing = set(range(highest + 1)) - _written_by_every_thread(scrub)
    assert not missing, f"registers the scrub leaves unwritten on {arch}: {sorted(missing)}"
