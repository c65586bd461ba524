"""Sandbox escapes on the CPU backend, through ``pappus.Runtime`` on both engines.

A hostile tenant's kernels try system calls (files, sockets, processes, ptrace, executable
memory, other processes' memory through ``process_vm_readv`` and ``/proc/<pid>/mem``), every
system call number there is, the 32-bit and x32 system call ABIs, and the control memory the
child shares with the device template (command region, status pages, pool), located from the
template's public symbol table. Each attempt is stopped and reported (``SandboxViolation``
naming the call, or ``KernelFault``), only that invocation fails, and the engine keeps serving
another tenant correctly.
"""

from __future__ import annotations

import ctypes
import os
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pappus.errors import KernelFault, PappusError, SandboxViolation
from pappus_cpu.device import EXIT_GRACE

from .conftest import (
    ENGINES,
    LONG,
    Built,
    count,
    descendants,
    function,
    make_runtime,
    out_function,
    template_offsets,
)

CMD_MAGIC = 0x444D4350
ST_RUNNING = 1
AFFINE = function("affine_i64", [{"Ptr": "A"}, {"Ptr": "B"}, {"Sizeof": "A"}, {"Constant": {"type": "i64", "value": 5}},
                                 {"Constant": {"type": "i64", "value": 1}}],
                  inputs=["A"], buffers={"B": {"Sizeof": "A"}}, outputs=["B"])
SUPERVISOR_SECRET = bytearray(b"SUPERVISOR-SECRET-" * 8)


def i64(v: int) -> dict[str, Any]:
    return {"Constant": {"type": "i64", "value": v}}


def u64(v: int) -> dict[str, Any]:
    return {"Constant": {"type": "u64", "value": v}}


@pytest.fixture(scope="module", params=ENGINES)
def rt(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, attacks_lib: Built) -> Any:
    runtime = make_runtime(request.param, tmp_path_factory.mktemp("escapes"), pool_bytes=8 << 20, workers=2)
    for tenant in ("mallory", "bob"):
        runtime.register_library("k", attacks_lib.data, tenant=tenant)
    runtime.register_function("affine", AFFINE, tenant="bob")
    runtime.register_function("probe_pool", PROBE_POOL, tenant="bob")
    runtime.engine().wait_started(120)
    yield runtime
    runtime.close(drain=False, timeout=10)


#: Bob's probe of the pool: bytes of a 4 MiB buffer it never wrote that are not zero.
PROBE_POOL = function("count_u8", [{"Ptr": "X"}, {"Sizeof": "X"}, {"Constant": {"type": "u8", "value": 0}},
                                   {"Ptr": "out"}], buffers={"X": 4 << 20, "out": 16}, outputs=["out"])


def templates() -> list[int]:
    out = []
    for pid in descendants():
        try:
            if os.readlink(f"/proc/{pid}/exe").endswith("pappus-cpu-device"):
                with open(f"/proc/{pid}/stat", "rb") as fh:
                    ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
                try:
                    parent_exe = os.readlink(f"/proc/{ppid}/exe")
                except OSError:
                    parent_exe = ""
                if not parent_exe.endswith("pappus-cpu-device"):  # the template, not a child of it
                    out.append(pid)
        except OSError:
            continue
    return sorted(out)


def bob_is_served(rt: Any, seed: int = 0) -> None:
    a = np.random.default_rng(seed).integers(-1000, 1000, size=333, dtype=np.int64)
    out = rt.invoke("affine", {"A": a.tobytes()}, tenant="bob")
    assert np.array_equal(np.frombuffer(out["B"], np.int64), a * 5 + 1)
    assert rt.engine().healthy


_registered: set[tuple[int, str]] = set()


def attack(rt: Any, name: str, doc: dict[str, Any], inputs: dict[str, bytes] | None = None) -> Any:
    """Run mallory's ``doc``; returns the error (or the outputs)."""
    key = (id(rt), name)
    if key not in _registered:
        rt.register_function(name, doc, tenant="mallory")
        _registered.add(key)
    try:
        return rt.invoke(name, inputs or {}, tenant="mallory", deadline=10)
    except PappusError as exc:
        return exc


def secret_address() -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(SUPERVISOR_SECRET))


# --- named system calls ----------------------------------------------------------------------------


def _targets(rt: Any) -> dict[str, int]:
    found = templates()
    return {"supervisor": os.getpid(), "template": found[0] if found else os.getpid()}


SYSCALLS = [
    ("sys_openat", [], "openat"),
    ("sys_open_self_mem", [], "openat"),
    ("sys_socket", [], "socket"),
    ("sys_unix_socket", [], "socket"),
    ("sys_fork", [], "fork"),
    ("sys_clone_thread", [], "clone"),
    ("sys_execve", [], "execve"),
    ("sys_mprotect_exec", [], "mprotect"),
    ("sys_mmap_exec", [], "mmap"),
    ("sys_write_stdout", [], "write"),
    ("sys_sigaction", [], "rt_sigaction"),
]
TARGETED = [
    ("sys_ptrace_attach", "ptrace"),
    ("sys_kill", "kill"),
    ("sys_open_pid_mem", "openat"),
    ("sys_process_vm_readv", "process_vm_readv"),
]


@pytest.mark.parametrize("kernel,args,syscall", SYSCALLS, ids=[s[0] for s in SYSCALLS])
def test_system_calls_are_stopped_and_named(rt: Any, kernel: str, args: list[Any], syscall: str) -> None:
    escaped = Path("/tmp/pappus-escaped")
    escaped.unlink(missing_ok=True)
    err = attack(rt, kernel, out_function(kernel, args))
    count("attack: sandbox escapes")
    assert isinstance(err, SandboxViolation), err
    assert err.syscall == syscall and err.kernel == kernel, (err.syscall, str(err))
    assert not escaped.exists()
    bob_is_served(rt)


@pytest.mark.parametrize("kernel,syscall", TARGETED, ids=[t[0] for t in TARGETED])
@pytest.mark.parametrize("target", ["supervisor", "template", "worker"])
def test_other_processes_cannot_be_reached(rt: Any, kernel: str, syscall: str, target: str) -> None:
    """ptrace, kill, /proc/<pid>/mem and process_vm_readv against the supervisor (this process,
    holding a secret), the device template, and (multiprocess) a worker."""
    if target == "worker":
        pids = [p for p in getattr(rt.engine(), "worker_pids", lambda: [])() if p]
        if not pids:
            pytest.skip("the sequential engine has no worker processes")
        pid = pids[-1]
    else:
        pid = _targets(rt)[target]
    args: list[Any] = [i64(pid)]
    if kernel == "sys_process_vm_readv":
        args.append(u64(secret_address()))
    before = templates()
    err = attack(rt, f"{kernel}_{target}", out_function(kernel, args, out_bytes=16))
    count("attack: sandbox escapes")
    assert isinstance(err, SandboxViolation) and err.syscall == syscall, err
    assert bytes(SUPERVISOR_SECRET[:8]) not in str(err).encode()
    os.kill(pid, 0)  # still there
    assert templates() == before, "no template was killed or replaced"
    bob_is_served(rt)


@pytest.mark.parametrize("kernel", ["sys_int80_open", "sys_x32_getpid"])
def test_other_system_call_abis_are_stopped(rt: Any, kernel: str) -> None:
    err = attack(rt, kernel, out_function(kernel))
    count("attack: sandbox escapes")
    assert isinstance(err, SandboxViolation), err
    bob_is_served(rt)


@pytest.mark.parametrize("kernel,reason", [("sys_sigreturn_garbage", None), ("exit_early", "early_exit"),
                                           ("trap", "trap")])
def test_allowed_calls_and_early_exits_only_end_the_caller(rt: Any, kernel: str, reason: str | None) -> None:
    """rt_sigreturn and exit_group are allowed: with a garbage frame, or before the work is
    done, they end only the caller's invocation, with a KernelFault."""
    doc = function(kernel, []) if kernel == "trap" else out_function(kernel)
    err = attack(rt, kernel, doc)
    count("attack: sandbox escapes")
    assert isinstance(err, KernelFault), err
    if reason:
        assert reason in err.fields.get("reasons", []), err.fields
    bob_is_served(rt)


#: x86-64 system calls that Linux passes through seccomp unfiltered (uretprobe since 6.11,
#: uprobe since 6.16): they only act when called from a uprobe trampoline.
SECCOMP_EXEMPT = {335, 336}


def _sweep_numbers() -> list[int]:
    allowed = {15, 60, 231}  # rt_sigreturn, exit, exit_group: the allow-list's unconditional entries
    numbers = [n for n in range(0, 600) if n not in allowed]
    return numbers if LONG else numbers[::3] + [0, 10, 39, 57, 59, 62, 101, 157, 310, 311, 317, 321, 323, 335, 336, 425]


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="system call numbers of x86-64")
def test_every_system_call_number_is_stopped(rt: Any) -> None:
    """Every system call number (a sample in the fast profile), with arguments that the
    allow-list does not allow (read on fd 0, mprotect to PROT_READ): SandboxViolation with
    that number, and the engine serves on."""
    # The number travels as the size of input `n` (a Sizeof argument), so one function covers all.
    doc = function("sys_raw", [{"Sizeof": "n"}, i64(0), i64(4096), i64(1), {"Ptr": "out"}], inputs=["n"],
                   buffers={"out": 8}, outputs=["out"])
    failures = []
    for nr in sorted(set(_sweep_numbers())):
        err = attack(rt, "raw", doc, {"n": bytes(nr)})
        count("attack: system call numbers")
        if nr in SECCOMP_EXEMPT:
            # The kernel runs these before (without) seccomp; outside a uprobe trampoline they
            # only fail: SIGILL (uretprobe) or an error return (uprobe).
            ran_and_failed = isinstance(err, dict) and int.from_bytes(err["out"], "little", signed=True) < 0
            if not (isinstance(err, KernelFault) or ran_and_failed):
                failures.append((nr, err))
        elif not isinstance(err, SandboxViolation) or err.fields.get("syscall_number") != nr:
            failures.append((nr, err))
    assert not failures, failures[:10]
    bob_is_served(rt)


# --- the control memory shared with the template ----------------------------------------------------


@pytest.fixture(scope="module")
def offsets() -> bytes:
    return struct.pack("<8Q", *template_offsets())


def _ctl(name: str, which: int | None) -> dict[str, Any]:
    args: list[Any] = [{"Ptr": "offs"}] + ([u64(which)] if which is not None else []) + [{"Ptr": "out"}]
    return function(name, args, inputs=["offs"], buffers={"out": 128}, outputs=["out"])


def test_the_attacker_can_locate_the_control_structures(rt: Any, offsets: bytes) -> None:
    """Positive control of the attacks below: from the template's public symbol table and the
    loader's list (no system call) a kernel finds the command region, its own status page and
    the pool, and reads them."""
    out = attack(rt, "recon", _ctl("ctl_recon", None), {"offs": offsets})
    assert isinstance(out, dict), out
    v = struct.unpack("<16Q", out["out"])
    status_pages, cmd, cmd_size, pool, pool_size, status = v[:6]
    assert v[6] == CMD_MAGIC, "the command header's magic"
    assert v[8] == ST_RUNNING and v[9] == v[7] != 0, "its own status: running, this invocation's number"
    assert status in (status_pages, status_pages + 4096) and cmd_size >= 4096
    # The function's first buffer starts its window: the pool's start, or (the pool alternates
    # windows) a page past the previous invocation's.
    assert pool <= v[10] < pool + pool_size and (v[10] - pool) % 4096 == 0, "the first buffer is in the pool"
    assert pool_size >= 8 << 20
    count("attack: control memory")


# which -> what must happen (see ctl_attack in kernels/attacks.hip)
CONTROL = {
    0: ("write the command header's magic", KernelFault),
    1: ("bump `go` to wake the next child early", KernelFault),
    2: ("write the program area of the command region", KernelFault),
    3: ("write the next child's status page", KernelFault),
    4: ("claim success without doing the work", "own"),
    5: ("claim a violation it did not make (bogus launch id, address, pc)", SandboxViolation),
    6: ("nonsense in every status field", KernelFault),
    7: ("claim a fault with signal 1000", KernelFault),
    8: ("write the pool past its own buffers", KernelFault),
    9: ("write just past the pool's end", KernelFault),
    10: ("write just before the pool", KernelFault),
    11: ("point the fault handler's status at the next child's page, then trap", KernelFault),
    12: ("point the fault handler's status into its own buffer, then trap", KernelFault),
    13: ("take its own view of the command region away, then finish", "own"),
    14: ("say it finished on its done pipe, then keep writing its output", "own"),
    15: ("say it finished on its done pipe, then never exit", "own"),
    16: ("fill its done pipe with every byte value, then finish", "own"),
}


@pytest.mark.parametrize("which", sorted(CONTROL), ids=[CONTROL[w][0] for w in sorted(CONTROL)])
def test_control_memory_attacks_only_hurt_the_attacker(rt: Any, offsets: bytes, which: int) -> None:
    what, expected = CONTROL[which]
    before = templates()
    outcome = attack(rt, f"ctl{which}", _ctl("ctl_attack", which), {"offs": offsets})
    count("attack: control memory")
    if expected == "own":
        # Whatever it claims about itself, only its own invocation is concerned: outputs of
        # its own buffer, or a typed error.
        assert isinstance(outcome, (dict, KernelFault)), outcome
    else:
        assert isinstance(outcome, expected), (what, outcome)
    if which in (8, 9, 10) and isinstance(outcome, KernelFault):
        assert "memory_fault" in outcome.fields["reasons"], outcome.fields
    assert templates() == before, "the template survived and was not replaced"
    started = time.monotonic()
    for seed in range(3):  # the next children (both parities) run correctly
        bob_is_served(rt, seed)
    # A child that said it finished but does not exit is killed before the pool is reused:
    # the next tenant waits for that grace at most, not for the attacker's deadline.
    assert time.monotonic() - started < EXIT_GRACE + 5.0


@pytest.mark.parametrize("which", [14, 15], ids=["keeps-writing", "never-exits"])
def test_what_a_child_writes_after_saying_done_reaches_nobody(rt: Any, offsets: bytes, which: int) -> None:
    """A child that says it finished and then keeps writing its own buffer (14) or spinning (15):
    the next invocations start meanwhile in the pool's other window, and the zeroing of the
    attacker's window waits until it is gone, so its late writes are zeroed too. Two probes in
    a row by another tenant cover both windows."""
    outcome = attack(rt, f"ctl{which}", _ctl("ctl_attack", which), {"offs": offsets})
    assert isinstance(outcome, (dict, KernelFault)), outcome
    bob_is_served(rt)
    for _ in range(2):
        nonzero, _same = struct.unpack("<2Q", rt.invoke("probe_pool", {}, tenant="bob")["out"])
        assert nonzero == 0, f"{nonzero} bytes the attacker wrote after saying done reached another tenant"
    count("attack: control memory")


def test_the_child_shares_only_the_pool_command_and_status_memory(rt: Any) -> None:
    """The attack surface of the control attacks above: the template (and every child it
    forks) maps shared only the pool, the command region and the two status pages; not the
    multiprocess arena, not the registry, not anything of the supervisor's."""
    bob_is_served(rt)
    found = templates()
    assert found
    for pid in found:
        with open(f"/proc/{pid}/maps") as fh:
            lines = fh.read().splitlines()
        shared = set()
        for line in lines:
            parts = line.split(None, 5)
            if parts[1][3] == "s":
                shared.add(parts[5] if len(parts) > 5 else "(anonymous)")
        allowed = {"/memfd:pappus-pool (deleted)", "/memfd:pappus-cmd (deleted)", "/dev/zero (deleted)"}
        assert shared <= allowed, shared - allowed
        text = "\n".join(lines)
        assert "pappus-arena" not in text and "pappus-cpu-multiprocess-" not in text and "/blobs/" not in text
    count("attack: control memory")


# --- findings -------------------------------------------------------------------------------------------

_HEADER_READER = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
/* Reads the command header the way a waiting child does: as soon as `go` shows a new number,
 * it reads the rest (magic, prog_len) and counts headers that are not yet complete; a read
 * during which `go` moved on again is discarded, as a seqlock reader would. */
int main(int argc, char **argv) {
    int fd = atoi(argv[1]);
    uint32_t final = (uint32_t)strtoul(argv[2], 0, 10);
    volatile uint32_t *h = mmap(0, 4096, PROT_READ, MAP_SHARED, fd, 0);
    if (h == MAP_FAILED) return 2;
    uint32_t last = h[0];
    unsigned long long seen = 0, torn = 0;
    printf("ready\n");
    fflush(stdout);
    while (last != final) {
        uint32_t go = __atomic_load_n(&h[0], __ATOMIC_ACQUIRE);
        if (go == last) continue;
        last = go;
        if (go == 0) continue;
        seen++;
        uint32_t magic = h[1];
        uint64_t prog_len = *(volatile uint64_t *)(h + 4);
        /* preempted while the next publication began: not an observation (the real child
         * never races a new header: the next one is written only after it has exited) */
        if (__atomic_load_n(&h[0], __ATOMIC_ACQUIRE) != go) continue;
        if (magic != 0x444d4350u || prog_len != 100 + go % 7) torn++;
    }
    printf("%llu %llu\n", seen, torn);
    return 0;
}
"""


def test_the_command_header_is_published_all_at_once(tmp_path: Path) -> None:
    """Finding, fixed (the text says what it was): ``CpuDevice.run`` publishes an invocation with one
    ``CMD_HEADER.pack_into(cmd, 0, seq, MAGIC, prog_off, prog_len, extent, start, nkeep, 0, *keep)``.
    CPython zero-fills the struct's bytes and then writes the fields in order, ``go`` first,
    while the waiting child starts as soon as it reads ``go == seq`` (it checks once when its
    setup ends, then after each wake-up byte). A child whose setup ends inside that window
    (a freshly forked one, e.g. right after a module load) reads a header that is still zero
    or stale: magic 0 -> "could not run its command block" (seen once in a 4 x 100 storm: an
    honest invocation failed), prog_len 0 -> an empty run reported as success (outputs never
    computed), extent 0 -> the whole pool reachable, a stale keep list -> the previous
    tenant's module left visible. Here a reader process watching the header the same way sees
    incomplete headers. Fix: write every other field first and ``go`` last (a release store),
    and have the child read its wake-up byte before trusting ``go``."""
    import mmap as mmap_mod
    import shutil
    import subprocess
    import time

    from pappus_cpu import protocol as P

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    src = tmp_path / "reader.c"
    src.write_text(_HEADER_READER)
    subprocess.run([cc, "-O2", "-o", str(tmp_path / "reader"), str(src)], check=True)
    fd = os.memfd_create("pappus-cmd-test")
    try:
        os.ftruncate(fd, 4096)
        mm = mmap_mod.mmap(fd, 4096, mmap_mod.MAP_SHARED, mmap_mod.PROT_READ | mmap_mod.PROT_WRITE)
        final = 0xFFFFFFF0
        reader = subprocess.Popen([str(tmp_path / "reader"), str(fd), str(final)], pass_fds=(fd,),
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert reader.stdout is not None and reader.stdout.readline().strip() == "ready"
            keep = [1, 2]
            seq, end = 0, time.monotonic() + 1.5
            while time.monotonic() < end:  # as CpuDevice.run packs it
                seq += 1
                P.CMD_HEADER.pack_into(mm, 0, seq, P.CMD_MAGIC, P.HEADER_BYTES, 100 + seq % 7, 4096, 0, len(keep),
                                       0, *keep, *([0] * (P.KEEP_WORDS - len(keep))))
            P.CMD_HEADER.pack_into(mm, 0, final, P.CMD_MAGIC, P.HEADER_BYTES, 100 + final % 7, 4096, 0, len(keep), 0,
                                   *keep, *([0] * (P.KEEP_WORDS - len(keep))))
            out, _ = reader.communicate(timeout=30)
        finally:  # the reader spins until it sees the final header: never leave it spinning
            reader.kill()
            reader.wait()
        mm.close()
    finally:
        os.close(fd)
    seen, torn = (int(x) for x in out.split())
    count("attack: command header publications watched", seen)
    assert seen > 100, "the reader saw the header change (control)"
    assert torn == 0, f"{torn} of {seen} headers were read with `go` set and the rest not yet written"
