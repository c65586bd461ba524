"""Registration survives SIGKILL at any point (old state or new, never half), and writers in
several processes sharing one state directory do not lose or tear each other's writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import pappus
from pappus.registry import Registry

from ..core.helpers import HOST_LIB, matmul_config
from ..serve.helpers import UNLIMITED_RATE, add_tenants, process_server

# Runs a registration in a child that SIGKILLs itself just before its N-th fsync/rename: every
# step of write-temp, fsync, rename, fsync-directory, audit gets its own kill point.
CHILD = textwrap.dedent("""
    import os, signal, sys
    import pappus
    from pappus.devices.host import host_library
    state, kill_at, new_lib, new_cfg = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    rt = pappus.Runtime(engine="host-sequential", state_dir=state)
    calls = [0]
    def trap(real):
        def wrapper(*a, **k):
            calls[0] += 1
            if calls[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*a, **k)
        return wrapper
    os.fsync, os.replace = trap(os.fsync), trap(os.replace)
    rt.register_library("m", open(new_lib, "rb").read(), tenant="alice")
    rt.register_function("mm", new_cfg, tenant="alice")
    print("completed", calls[0])
""")


def test_sigkill_at_every_step_of_a_registration_leaves_old_or_new(tmp_path):
    from pappus.devices.host import host_library

    new_lib = host_library(["matmul_at_i64", "add_i64", "fill_u8"])  # different bytes, same kernels
    lib_path = tmp_path / "new_lib.json"
    lib_path.write_bytes(new_lib)
    cfg_path = tmp_path / "new.json"
    cfg_path.write_text(json.dumps(matmul_config(repeat=5)))
    a = np.eye(4, dtype=np.int64)
    kill_at, outcomes = 1, set()
    while True:
        state = tmp_path / f"state{kill_at}"
        with pappus.Runtime(engine="host-sequential", state_dir=state) as rt:
            rt.register_library("m", HOST_LIB, tenant="alice")
            rt.register_function("mm", matmul_config(repeat=1), tenant="alice")
            old_sha = rt.registry.get_library("alice", "m").sha256
        res = subprocess.run([sys.executable, "-c", CHILD, str(state), str(kill_at), str(lib_path), str(cfg_path)],
                             capture_output=True, text=True, timeout=60)
        completed = res.returncode == 0
        assert completed or res.returncode == -9, res.stderr
        leftovers = [p for p in state.rglob(".tmp-*")]
        reg = Registry(state)  # opening sweeps what the killed writer left
        assert not [p for p in leftovers if p.exists() and "blobs" not in p.parts]
        libs = reg.list_libraries("alice")
        funcs = reg.list_functions("alice")
        assert [r.name for r in libs] == ["m"] and [f.name for f in funcs] == ["mm"]
        lib_sha = libs[0].sha256
        assert lib_sha in (old_sha, __import__("hashlib").sha256(new_lib).hexdigest())
        reg.read_blob(lib_sha)  # the blob a record names is always complete
        for line in (state / "audit.log").read_text().splitlines():
            json.loads(line)
        with pappus.Runtime(engine="host-sequential", state_dir=state) as rt:
            out = np.frombuffer(rt.invoke("mm", {"A": a.tobytes()}, tenant="alice")["B"], np.int64)
        repeat = (int(out[0]) - 1) // 2
        assert repeat in (1, 5)
        outcomes.add((lib_sha == old_sha, repeat))
        if completed:
            assert repeat == 5 and lib_sha != old_sha
            break
        kill_at += 1
        assert kill_at < 40
    assert kill_at >= 8, "every fsync and rename of the registration was a kill point"
    assert (True, 1) in outcomes and (False, 1) in outcomes and (False, 5) in outcomes


@pytest.fixture
def fast_state(tmp_path):
    """A state directory on tmpfs when there is one: this test is about locking, not disks, and
    3,000 serialised fsyncs on a busy disk would take most of a minute."""
    import shutil
    import tempfile

    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        path = tempfile.mkdtemp(prefix="pappus-test-", dir="/dev/shm")
        yield __import__("pathlib").Path(path)
        shutil.rmtree(path, ignore_errors=True)
    else:
        yield tmp_path


def test_two_server_processes_one_state_directory_1000_registrations(fast_state):
    tmp_path = fast_state
    tokens = add_tenants(tmp_path, "alice", "bob", functions=2000, **UNLIMITED_RATE)
    with process_server(tmp_path, "--engine", "host-sequential") as s1, \
            process_server(tmp_path, "--engine", "host-sequential") as s2:
        for srv, tenant in ((s1, "alice"), (s2, "bob")):
            with srv.client(tokens[tenant]) as c:
                assert c.put("/v1/libraries/m", content=HOST_LIB).status_code == 201
        with s2.client(tokens["alice"]) as c:  # both servers write alice's namespace
            assert c.put("/v1/libraries/m", content=HOST_LIB).status_code == 200
        body = json.dumps(matmul_config(repeat=1))
        clients = {(srv, t): srv.client(tokens[t]) for srv in (s1, s2) for t in ("alice", "bob")}

        def register(i: int) -> int:
            srv = s1 if i % 2 else s2
            tenant = "alice" if i % 4 < 2 else "bob"
            return clients[srv, tenant].put(f"/v1/functions/f{i:04d}", content=body).status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(register, range(1000)))
        for c in clients.values():
            c.close()
        assert codes == [201] * 1000
    reg = Registry(tmp_path)
    names = [f.name for f in reg.list_functions("alice")] + [f.name for f in reg.list_functions("bob")]
    assert len(names) == 1000 and len(set(names)) == 1000
    audit = [json.loads(x) for x in (tmp_path / "audit.log").read_text().splitlines()]
    assert sum(1 for x in audit if x["kind"] == "function" and x["action"] == "register") == 1000
    assert not list(tmp_path.rglob(".tmp-*"))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_tenant_writes_from_many_processes_are_not_lost(tmp_path):
    from pappus.tenants import TenantStore

    code = "import sys; from pappus.tenants import TenantStore; s = TenantStore(sys.argv[1]); " \
           "[s.add(f'{sys.argv[2]}{i}') for i in range(15)]"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), p]) for p in "abcd"]
    assert [p.wait(60) for p in procs] == [0] * 4
    assert len(TenantStore(tmp_path).list_tenants()) == 60
