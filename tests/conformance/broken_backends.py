"""Deliberately broken backends: each violates one isolation property, to prove the conformance
suite catches it. Loaded with ``PAPPUS_PLUGIN_MODULES=tests.conformance.broken_backends``.

Each is the CPU backend with one thing broken, so everything else about it is real.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from pappus._files import file_lock
from pappus.errors import DeviceError, KernelFault
from pappus.hookspecs import hookimpl
from pappus.interfaces import DeviceSpec
from pappus.kernels import KernelParam, ParamKind
from pappus.plan import Loop, Program
from pappus_cpu import native
from pappus_cpu.device import CpuDevice
from pappus_cpu.driver import CpuDriver
from pappus_cpu.plugin import CPU_BACKEND


class NoZeroing(CpuDevice):
    """Never zeroes the pool."""

    def memset(self, address: int, value: int, nbytes: int) -> None:
        pass


class ZeroingOnlyAfterSuccess(CpuDevice):
    """Zeroes after a clean run, skips it on the error path (the bug the thesis's code had)."""

    _failed = False

    def run(self, program: Any) -> None:
        try:
            super().run(program)
        except Exception:
            self._failed = True
            raise

    def memset(self, address: int, value: int, nbytes: int) -> None:
        if self._failed:
            self._failed = False
            return
        super().memset(address, value, nbytes)


class IgnoresHeapLimit(CpuDevice):
    """Gives every invocation a 1 MiB device heap whatever the limit says."""

    def set_malloc_heap_limit(self, nbytes: int) -> int:
        super().set_malloc_heap_limit(1 << 20)
        return nbytes  # and reports the requested limit, as if it held


class BlindToHeapUse(CpuDriver):
    """Does not tell registration which kernels call malloc."""

    def inspect_library(self, data: bytes) -> Any:
        info = super().inspect_library(data)
        return replace(info, kernels={k: replace(v, uses_heap=False) for k, v in info.kernels.items()})


class SwallowsFaults(CpuDevice):
    """Reports a faulting run as a success."""

    def run(self, program: Any) -> None:
        try:
            super().run(program)
        except KernelFault:
            pass


class AbortIgnored(CpuDevice):
    """Claims the watchdog, and that an abort ends a run at once (``abort_ends_run``, inherited),
    but ``abort()`` returns without stopping anything: a kernel past its deadline runs on."""

    def abort(self) -> None:
        pass


class NoAbort(CpuDevice):
    """Claims the watchdog but cannot abort a run (``DeviceAPI.abort``'s default): the caller
    is told at the deadline, the kernel runs on until the engine gives up on the device."""

    abort_ends_run = False

    def abort(self) -> None:
        raise NotImplementedError


#: What the template says about its filters in its hello (``details["seccomp"]``).
SECCOMP_HELLO = '"deny-list in the template; allow-list in children: '


def _patched_template(what: str, edits: dict[str, str]) -> Path:
    """The CPU device template built from its source with ``edits`` (text -> replacement, each
    found exactly once), its hello saying ``BROKEN (what)``. Returns a cache directory in
    which ``native.device_binary`` finds it under the real template's name, so that the device
    runs it through its own ``cache_dir`` option."""
    source = native.SOURCE.read_text()
    for old, new in edits.items():
        if source.count(old) != 1:
            raise DeviceError(f"the CPU template changed: cannot leave out {what} ({old.strip()!r})", api="open")
        source = source.replace(old, new)
    if SECCOMP_HELLO not in source:
        raise DeviceError("the CPU template changed: its hello no longer describes its filters", api="open")
    source = source.replace(SECCOMP_HELLO, f'"BROKEN ({what}); ')
    cc = native.find_cc()
    if cc is None:
        raise DeviceError("no C compiler found to build the CPU device template", api="open")
    key = hashlib.sha256()  # the key native.device_binary gives the real template
    for part in (native.SOURCE.read_bytes(), native.ABI_HEADER.read_bytes(), os.path.realpath(cc).encode(),
                 " ".join(native.CFLAGS).encode()):
        key.update(part)
        key.update(b"\0")
    root = native.cache_root() / f"broken-{hashlib.sha256(source.encode()).hexdigest()[:16]}"
    binary = root / f"cpu-{key.hexdigest()[:16]}" / native.BINARY_NAME
    binary.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(root / ".lock"):
        if not binary.is_file():
            with tempfile.TemporaryDirectory(dir=root) as tmp:
                src = Path(tmp) / "device.c"
                src.write_text(source)
                subprocess.run([cc, *native.CFLAGS, "-I", str(native.INCLUDE_DIR), "-o", str(src.with_suffix("")),
                                str(src)], check=True, capture_output=True, timeout=120)
                os.replace(src.with_suffix(""), binary)
    return root


class _PatchedTemplate(CpuDevice):
    """The CPU device on a template with one piece of its sandbox left out."""

    LEFT_OUT = ""
    EDITS: dict[str, str] = {}

    def __init__(self, **options: Any) -> None:
        super().__init__(**{**options, "cache_dir": str(_patched_template(self.LEFT_OUT, self.EDITS))})

    def _spawn(self) -> None:
        super()._spawn()
        if not str(self._details.get("seccomp", "")).startswith("BROKEN"):
            self._stop_template()
            raise DeviceError(f"{type(self).__name__} runs the real template", api="open")


class NoChildFilter(_PatchedTemplate):
    """Its sandboxed child never installs its system-call allow-list: only the template's
    deny-list (exec, sockets, ...) and Landlock stand between a kernel and the host."""

    LEFT_OUT = "the children's allow-list"
    EDITS = {"    if (load_filter(child_prog, child_len) != 0) bad_command();\n": ""}


class NoPoolFence(_PatchedTemplate):
    """Its sandboxed child does not fence itself to its window of the pool: a kernel reaches the
    whole pool, past its buffers (and the device zeroes only the window)."""

    LEFT_OUT = "the pool fence"
    EDITS = {
        "        if (below && mprotect(pool, below, PROT_NONE) != 0) bad_command();\n": "        (void)below;\n",
        "        if (above < pool_size && mprotect(pool + above, pool_size - above, PROT_NONE) != 0) bad_command();\n":
            "        (void)above;\n",
    }


class ShowsOtherModules(CpuDevice):
    """Leaves every loaded library readable in a run, not only its function's (the device's
    ``hide_other_modules=False``): a kernel reads another tenant's code object by address."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**{**options, "hide_other_modules": False})


class PacksArgumentsTogether(CpuDevice):
    """Lays each launch's arguments out back to back, as a backend that builds a kernel-argument
    buffer without the code object's offsets would, while the kernel reads each parameter at its
    naturally aligned offset: after a narrow argument, the next ones arrive shifted (kernels
    whose parameters are all 8 bytes, like affine's, are unaffected)."""

    def run(self, program: Any) -> None:
        super().run(Program(_repacked(tuple(program)), program.extent, program.start)
                    if isinstance(program, Program) else _repacked(tuple(program)))


def _repacked(steps: tuple[Any, ...]) -> tuple[Any, ...]:
    out = []
    for step in steps:
        if isinstance(step, Loop):
            out.append(replace(step, body=_repacked(step.body)))
            continue
        packed = b"".join(step.args) + bytes(8 * len(step.args))
        args, at = [], 0
        for arg in step.args:
            at = -(-at // len(arg)) * len(arg) if arg else at  # where the kernel reads it
            args.append(packed[at:at + len(arg)])
            at += len(arg)
        out.append(replace(step, args=tuple(args)))
    return tuple(out)


class PointersAsWords(CpuDriver):
    """Reports every pointer parameter as an 8-byte unsigned integer: registration then lets a
    launch pass any constant where the kernel dereferences an address."""

    def inspect_library(self, data: bytes) -> Any:
        info = super().inspect_library(data)
        word = {ParamKind.POINTER: ParamKind.UINT}
        return replace(info, kernels={k: replace(v, params=tuple(replace(p, kind=word.get(p.kind, p.kind))
                                                                 for p in v.params))
                                      for k, v in info.kernels.items()})


class NoParams(CpuDriver):
    """Reports every kernel without its parameters."""

    def inspect_library(self, data: bytes) -> Any:
        info = super().inspect_library(data)
        return replace(info, kernels={k: replace(v, params=()) for k, v in info.kernels.items()})


class WordSizedParams(CpuDriver):
    """Counts each kernel's parameters right but reports every one as an 8-byte word (as if each
    argument took a 64-bit slot): a launch that passes 8 bytes where the kernel takes 4 fits."""

    def inspect_library(self, data: bytes) -> Any:
        info = super().inspect_library(data)
        word = KernelParam(size=8, kind=ParamKind.BYTES)
        return replace(info, kernels={k: replace(v, params=tuple(replace(word, name=p.name) for p in v.params))
                                      for k, v in info.kernels.items()})


def _spec(cls: str) -> Any:
    return lambda **options: DeviceSpec(f"tests.conformance.broken_backends:{cls}", options)


BROKEN = [
    replace(CPU_BACKEND, name="brokennozero", device=_spec("NoZeroing")),
    replace(CPU_BACKEND, name="brokenzeroerror", device=_spec("ZeroingOnlyAfterSuccess")),
    replace(CPU_BACKEND, name="brokenheap", device=_spec("IgnoresHeapLimit"), driver=BlindToHeapUse()),
    replace(CPU_BACKEND, name="brokenfaults", device=_spec("SwallowsFaults")),
    replace(CPU_BACKEND, name="brokenabort", device=_spec("AbortIgnored")),
    replace(CPU_BACKEND, name="brokennoabort", device=_spec("NoAbort")),
    replace(CPU_BACKEND, name="brokenseccomp", device=_spec("NoChildFilter")),
    replace(CPU_BACKEND, name="brokenfence", device=_spec("NoPoolFence")),
    replace(CPU_BACKEND, name="brokenhide", device=_spec("ShowsOtherModules")),
    replace(CPU_BACKEND, name="brokenparams", driver=NoParams()),
    replace(CPU_BACKEND, name="brokensizes", driver=WordSizedParams()),
    replace(CPU_BACKEND, name="brokenlayout", device=_spec("PacksArgumentsTogether")),
    replace(CPU_BACKEND, name="brokenkinds", driver=PointersAsWords()),
    replace(CPU_BACKEND, name="stalegap", known_gaps={"test_after_success": "pretends to fail, but passes"}),
    # Not broken: claims less. Without watchdog, zeroing and fault_containment each have a test
    # that needs a second capability (not_claimed) and must still be proven.
    replace(CPU_BACKEND, name="nowatchdog",
            capabilities=frozenset(c for c in CPU_BACKEND.capabilities if c.value != "watchdog")),
]


@hookimpl
def pappus_register_backends(registry: Any) -> None:
    for backend in BROKEN:
        registry.add(backend)
