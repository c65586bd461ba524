"""The worker lockdown (engine/lockdown.py): what a worker can no longer do once its device is open.

A filter cannot be taken back, so the unit tests install it in a child interpreter; the engine
tests run a device whose kernel tries to leave its worker (tests/core/hostile_device.py).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pappus import landlock
from pappus.engine import lockdown

from .hostile_device import escape_attempts, hostile_runtime

#: Every attempt reaches the kernel (setns on a bad fd: the kernel's own EBADF, not a filter's EPERM).
ALL_ALLOWED = {"spawn a program": "ok", "IPv4 socket": "ok", "IPv6 socket": "ok", "local socket pair": "ok",
               "read process memory": "ok", "enter a namespace": "EBADF"}
DENIED = {"spawn a program": "EPERM", "IPv4 socket": "EPERM", "IPv6 socket": "EPERM", "local socket pair": "ok",
          "read process memory": "EPERM", "enter a namespace": "EPERM"}


SCOPED = landlock.abi() >= landlock.SCOPES_ABI
needs_scopes = pytest.mark.skipif(not SCOPED, reason=f"Landlock ABI {landlock.abi()} here; scoping signals and "
                                  f"abstract unix sockets needs {landlock.SCOPES_ABI} (Linux 6.12)")


@pytest.fixture
def abstract_listener():
    """A listening abstract unix socket in this (the supervisor's) process; yields its name."""
    name = f"pappus-lockdown-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind("\0" + name)
        sock.listen(8)
        yield name


def _in_child(code: str) -> dict:
    """Run ``code`` in a fresh interpreter (with the tests importable); it prints one JSON object."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_without_a_lockdown_every_attempt_succeeds_here():
    """The control: this machine allows each attempt to an unlocked process (else the tests
    below would prove nothing)."""
    got = _in_child("""
        import json
        from tests.core.hostile_device import escape_attempts
        print(json.dumps(escape_attempts()))
    """)
    assert got == ALL_ALLOWED


def test_a_locked_down_process_keeps_every_thread_inside():
    got = _in_child("""
        import json, os, signal, ctypes, threading, time
        from pappus.engine import lockdown
        from tests.core.hostile_device import escape_attempts
        child = os.fork()
        if child == 0:
            time.sleep(30); os._exit(0)
        before = threading.Event(); go = threading.Event(); out = {}
        def older_thread():  # started before the filter: TSYNC must cover it too
            before.set(); go.wait(); out.update(escape_attempts())
        t = threading.Thread(target=older_thread); t.start(); before.wait()
        state = lockdown.lock_down()
        go.set(); t.join()
        libc = ctypes.CDLL(None, use_errno=True)
        attach = libc.ptrace(16, child, 0, 0)  # PTRACE_ATTACH to our own child: Yama allows it
        out["ptrace own child"] = "ok" if attach == 0 else os.strerror(ctypes.get_errno())
        os.kill(child, signal.SIGKILL); os.waitpid(child, 0)
        out["main thread"] = escape_attempts()
        out["state"] = state.describe()
        print(json.dumps(out))
    """)
    assert got["main thread"] == DENIED
    assert {k: got[k] for k in DENIED} == DENIED
    assert got["ptrace own child"] == "Operation not permitted"
    assert got["state"].startswith("seccomp deny-list (EPERM): execve, execveat, ptrace")


def test_a_backend_keeps_the_calls_it_names():
    got = _in_child("""
        import json, subprocess
        from pappus.engine import lockdown
        state = lockdown.lock_down({"execve"})
        ran = subprocess.run(["/bin/true"]).returncode
        from tests.core.hostile_device import escape_attempts
        print(json.dumps({"ran": ran, "state": state.describe(), **escape_attempts()}))
    """)
    assert got["ran"] == 0 and got["spawn a program"] == "ok"
    assert "execve," not in got["state"] and "execveat" in got["state"]
    assert got["IPv4 socket"] == "EPERM"


@pytest.mark.parametrize(("value", "on"), [("", True), ("1", True), ("on", True), ("0", False), ("off", False),
                                           ("No", False), ("false", False)])
def test_the_environment_turns_it_off(value, on):
    assert lockdown.enabled({lockdown.ENV: value}) is on


def test_turned_off_it_installs_nothing_and_says_why():
    state = lockdown.lock_down(enable=False)  # in this process: nothing may be installed
    assert not state.applied and state.describe() == f"off: turned off ({lockdown.ENV}=0)"
    assert escape_attempts()["IPv4 socket"] == "ok"


def test_a_workers_kernel_cannot_leave_the_worker(tmp_path, abstract_listener):
    """Tenant code that took over its worker (hostile_device.py's ``fill_u8``) tries to start a
    program, open network sockets, read process memory, enter a namespace, signal the process
    that started the worker and connect to the supervisor's abstract socket: each fails with
    EPERM (the last two where the kernel has Landlock scopes), and the worker goes on serving."""
    report = tmp_path / "escape.json"
    rt = hostile_runtime(tmp_path, escape_report=str(report), abstract_socket=abstract_listener)
    try:
        from .helpers import fill_config

        rt.register_function("fill", fill_config())
        assert rt.invoke("fill", {})["X"] == b"\xab" * 4096
        scoped = "EPERM" if SCOPED else "ok"
        assert json.loads(report.read_text()) == {**DENIED, "signal its parent": scoped, "abstract unix socket": scoped}
        engine = rt.engine("hostile-multiprocess")
        assert engine.slots[0].details["worker_lockdown"].startswith("seccomp deny-list (EPERM)")
        assert engine.slots[0].details["worker_scope"] == (
            "Landlock: abstract unix sockets, signals of its own processes only" if SCOPED else
            f"none: this kernel's Landlock ABI is {landlock.abi()}; scoping signals and abstract unix sockets "
            f"needs {landlock.SCOPES_ABI} (Linux 6.12)")
        a = np.arange(16 * 16, dtype=np.int64).reshape(16, 16)
        assert rt.invoke("mm", {"A": a.tobytes()})["B"] == (a @ a.T + 2).tobytes()
        assert engine.metrics.respawns == 0
    finally:
        rt.close(drain=False, timeout=10)


def test_turned_off_the_worker_says_so(tmp_path, monkeypatch, caplog, abstract_listener):
    monkeypatch.setenv(lockdown.ENV, "0")
    report = tmp_path / "escape.json"
    rt = hostile_runtime(tmp_path, escape_report=str(report), abstract_socket=abstract_listener)
    try:
        from .helpers import fill_config

        rt.register_function("fill", fill_config())
        with caplog.at_level("WARNING", logger="pappus.engine"):
            assert rt.invoke("fill", {})["X"] == b"\xab" * 4096
        assert json.loads(report.read_text()) == {**ALL_ALLOWED, "signal its parent": "ok", "abstract unix socket": "ok"}
        details = rt.engine("hostile-multiprocess").slots[0].details
        assert details["worker_lockdown"].startswith("off: turned off") and details["worker_scope"].startswith("off")
        assert "is not locked down (turned off" in caplog.text
    finally:
        rt.close(drain=False, timeout=10)


def test_a_backend_that_keeps_a_call_the_lockdown_does_not_deny_is_told_so(tmp_path):
    import dataclasses

    from pappus.devices.host import HOST_BACKEND
    from pappus.engine import EngineOptions
    from pappus.engine.multiprocess import MultiprocessEngine

    typo = dataclasses.replace(HOST_BACKEND, worker_keeps=frozenset({"exec", "execve"}))
    with pytest.raises(ValueError, match=r"worker_keeps names exec, which the worker lockdown does not deny"):
        MultiprocessEngine(typo, EngineOptions(workers=1))
    assert lockdown.unknown_keeps({"execve", "socket"}) == []


@needs_scopes
def test_a_scoped_process_reaches_only_what_it_started(abstract_listener):
    """Scoped before it forks (as a worker is before its device starts anything): it can signal
    and reach its own child, not its parent or the parent's abstract socket."""
    got = _in_child(f"""
        import json, os, signal, socket, time
        from pappus.engine import lockdown
        from tests.core.hostile_device import scope_attempts
        state = lockdown.scope()
        inner = "pappus-lockdown-inner-" + str(os.getpid())
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind("\\0" + inner); listener.listen(1)
        child = os.fork()
        if child == 0:
            time.sleep(30); os._exit(0)
        own = scope_attempts(inner)["abstract unix socket"]
        os.kill(child, signal.SIGKILL); os.waitpid(child, 0)
        print(json.dumps({{"state": state, "own socket": own, "own child": "ok",
                          **scope_attempts({abstract_listener!r})}}))
    """)
    assert got == {"state": "Landlock: abstract unix sockets, signals of its own processes only",
                   "own socket": "ok", "own child": "ok", "signal its parent": "EPERM",
                   "abstract unix socket": "EPERM"}


def test_a_backend_may_keep_a_scope():
    got = _in_child("""
        import json
        from pappus.engine import lockdown
        from tests.core.hostile_device import scope_attempts
        state = lockdown.scope({"signals", "abstract_unix_sockets"})
        print(json.dumps({"state": state, "signal": scope_attempts("none")["signal its parent"]}))
    """)
    assert got == {"state": "none: the backend keeps every scope", "signal": "ok"}
