"""Helpers shared by the HSA tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
HSA_INCLUDE = Path(os.environ.get("PAPPUS_HSA_INCLUDE", "/usr/include"))

PUMP_CDEF = """
int pump_events(hsa_amd_system_event_callback_t cb, void *data, const hsa_amd_event_t *events,
                size_t n_events, size_t repeat, int n_threads, size_t *success, size_t *other);
size_t pump_sizeof_event(void);
void fake_hsa_configure(int init_st, int register_st);
void fake_hsa_counts(int *inits, int *shut_downs, int *refs, int *n_registered);
int fake_hsa_fire(const hsa_amd_event_t *events, size_t n_events, size_t repeat, size_t *handled,
                  size_t *unhandled);
"""


def compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")


def need_toolchain() -> str:
    cc = compiler()
    if cc is None:
        pytest.skip("no C compiler (cc) on PATH")
    if not (HSA_INCLUDE / "hsa" / "hsa_ext_amd.h").exists():
        pytest.skip(f"ROCm HSA headers not found under {HSA_INCLUDE}/hsa (libhsa-runtime-dev)")
    return cc


def build(cc: str, sources: list[Path], out: Path, *, shared: bool) -> Path:
    cmd = [cc, "-std=gnu11", "-O1", "-Wall", "-Werror", f"-I{HSA_INCLUDE}", "-pthread"]
    if shared:
        cmd += ["-shared", "-fPIC", "-Wl,-Bsymbolic"]
    cmd += [str(s) for s in sources] + ["-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return out


class Helper:
    """The helper library opened through a cffi FFI that includes the binding's types, so
    structs and callbacks made with :data:`pappus_hsa.binding.ffi` pass straight through."""

    def __init__(self, path: Path) -> None:
        import cffi

        from pappus_hsa.binding import ffi as hsa_ffi

        self.path = path
        self.ffi = cffi.FFI()
        self.ffi.include(hsa_ffi)
        self.ffi.cdef(PUMP_CDEF)
        self.lib = self.ffi.dlopen(str(path))

    def pump(self, callback, events, repeat: int = 1, threads: int = 1) -> tuple[int, int]:
        ok = self.ffi.new("size_t *")
        other = self.ffi.new("size_t *")
        rc = self.lib.pump_events(callback, self.ffi.NULL, events, len(events), repeat, threads, ok, other)
        assert rc == 0, "pthread_create failed"
        return ok[0], other[0]

    def fire(self, events, repeat: int = 1) -> tuple[int, int]:
        handled = self.ffi.new("size_t *")
        unhandled = self.ffi.new("size_t *")
        assert self.lib.fake_hsa_fire(events, len(events), repeat, handled, unhandled) == 0
        return handled[0], unhandled[0]

    def counts(self) -> dict[str, int]:
        vals = [self.ffi.new("int *") for _ in range(4)]
        self.lib.fake_hsa_counts(*vals)
        return dict(zip(("inits", "shut_downs", "refcount", "handlers"), (v[0] for v in vals), strict=True))


def make_events(*specs: tuple) -> object:
    """Real ``hsa_amd_event_t[]`` built through the binding's declarations.

    Each spec: ``(event_type, agent_handle, address, reason_mask)``.
    """
    from pappus_hsa.binding import ffi

    events = ffi.new("hsa_amd_event_t[]", len(specs))
    for ev, (etype, agent, address, mask) in zip(events, specs, strict=True):
        ev.event_type = etype
        ev.memory_fault.agent.handle = agent
        ev.memory_fault.virtual_address = address
        ev.memory_fault.fault_reason_mask = mask
    return events


def fault(agent: int, address: int, mask: int = 1) -> tuple:
    return (0, agent, address, mask)
