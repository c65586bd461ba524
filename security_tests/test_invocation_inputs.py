"""Hostile inputs at invocation, through the Python API and HTTP: missing, extra, wrong-sized,
empty, larger than the pool, not bytes at all, bad base64, bodies past the limit, absurd
deadlines. Every one is refused before anything runs (InvalidInput / 4xx naming the input),
and the engine goes on serving others correctly.

Findings at the end of the module fail today."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pappus.errors import DeadlineExceeded, InvalidInput, OutOfMemory, PappusError, ValidationError

from .conftest import (
    ENGINES,
    SERVER_MAX_BODY,
    SERVER_POOL_BYTES,
    Built,
    Server,
    count,
    function,
    make_runtime,
)

AFFINE = function("affine_i64", [{"Ptr": "A"}, {"Ptr": "B"}, {"Sizeof": "A"}, {"Constant": {"type": "i64", "value": 3}},
                                 {"Constant": {"type": "i64", "value": -5}}],
                  inputs=["A"], buffers={"B": {"Sizeof": "A"}}, outputs=["B"])
SIZED = function("fill_u8", [{"Ptr": "X"}, {"Sizeof": "X"}, {"Constant": {"type": "u8", "value": 7}}],
                 inputs=[{"name": "N", "size": 4}], buffers={"X": {"FromInput": {"input": "N", "index": 0, "type": "u32"}}},
                 outputs=["X"])
NOTHING = function("noop", [])
PROBE = function("count_u8", [{"Ptr": "X"}, {"Sizeof": "X"}, {"Constant": {"type": "u8", "value": 0x41}}, {"Ptr": "out"}],
                 buffers={"X": 1 << 20, "out": 16}, outputs=["out"])


def affine(a: np.ndarray) -> np.ndarray:
    return a * 3 - 5


def _runtime(engine: str, state: Path, lib: Built) -> Any:
    runtime = make_runtime(engine, state, pool_bytes=4 << 20)
    for tenant in ("mallory", "bob"):
        runtime.register_library("k", lib.data, tenant=tenant)
        for name, doc in (("affine", AFFINE), ("sized", SIZED), ("nothing", NOTHING), ("probe", PROBE)):
            runtime.register_function(name, doc, tenant=tenant)
    return runtime


@pytest.fixture(scope="module", params=ENGINES)
def rt(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, attacks_lib: Built) -> Any:
    runtime = _runtime(request.param, tmp_path_factory.mktemp("inputs"), attacks_lib)
    yield runtime
    runtime.close(drain=False, timeout=10)


@pytest.fixture(params=ENGINES)
def fresh_rt(request: pytest.FixtureRequest, tmp_path: Path, attacks_lib: Built) -> Any:
    """A runtime of its own, for attacks that may leave an engine broken."""
    runtime = _runtime(request.param, tmp_path / "state", attacks_lib)
    yield runtime
    runtime.close(drain=False, timeout=5)


def settled(rt: Any, name: str, inputs: Any, tenant: str, timeout: float = 30, **kw: Any) -> Any:
    """``rt.invoke`` that fails the test instead of hanging when the invocation never settles."""
    from concurrent.futures import TimeoutError as FutureTimeout

    future = rt.invoke_async(name, inputs, tenant=tenant, **kw)
    try:
        return future.result(timeout=timeout)
    except FutureTimeout:
        pytest.fail(f"{tenant}'s invocation of {name!r} never settled ({timeout:g} s)")


def bob_is_served(rt: Any) -> None:
    a = np.arange(512, dtype=np.int64) - 100
    out = settled(rt, "affine", {"A": a.tobytes()}, "bob")
    assert np.array_equal(np.frombuffer(out["B"], np.int64), affine(a))
    probe = np.frombuffer(settled(rt, "probe", {}, "bob")["out"], np.uint64)
    assert probe.tolist() == [0, 0], "bob's fresh buffer is all zeros"


def refused(rt: Any, name: str, inputs: Any, path: str, kind: type[PappusError] = InvalidInput) -> PappusError:
    with pytest.raises(kind) as info:
        rt.invoke(name, inputs, tenant="mallory")
    err = info.value
    if isinstance(err, ValidationError):
        assert any(e.path == path for e in err.errors), (path, str(err))
    count("attack: hostile inputs (Python API)")
    return err


def test_missing_extra_and_wrong_sized_inputs_are_refused(rt: Any) -> None:
    refused(rt, "affine", {}, "inputs.A")
    refused(rt, "affine", {"A": b"\0" * 8, "Z": b"x"}, "inputs.Z")
    refused(rt, "affine", {"A": b"\0" * 8, "": b""}, "inputs.")
    refused(rt, "nothing", {"A": b"x"}, "inputs.A")
    refused(rt, "sized", {"N": b"\1\0\0"}, "inputs.N")  # FromInput's input is declared as 4 bytes
    refused(rt, "sized", {"N": b"\1\0\0\0\0"}, "inputs.N")
    refused(rt, "sized", {}, "inputs.N")
    bob_is_served(rt)


def test_empty_inputs_and_sizes_read_from_inputs(rt: Any) -> None:
    assert rt.invoke("affine", {"A": b""}, tenant="mallory") == {"B": b""}
    assert rt.invoke("sized", {"N": (0).to_bytes(4, "little")}, tenant="mallory") == {"X": b""}
    assert rt.invoke("sized", {"N": (33).to_bytes(4, "little")}, tenant="mallory") == {"X": b"\7" * 33}
    assert rt.invoke("nothing", {}, tenant="mallory") == {}
    # A size read from the input that is past what the pool holds, or past every limit.
    refused(rt, "sized", {"N": (5 << 20).to_bytes(4, "little")}, "X", OutOfMemory)
    refused(rt, "sized", {"N": (2**32 - 1).to_bytes(4, "little")}, "X", OutOfMemory)
    bob_is_served(rt)


def test_inputs_larger_than_the_pool_are_refused_before_running(rt: Any) -> None:
    err = refused(rt, "affine", {"A": b"\1" * (3 << 20)}, "B", OutOfMemory)
    assert err.fields["pool_size"] == 4 << 20
    bob_is_served(rt)


def test_absurd_deadlines_are_refused(rt: Any) -> None:
    for deadline in (0, -1, -0.0, float("nan"), float("-inf")):
        with pytest.raises(ValidationError):
            rt.invoke("nothing", {}, tenant="mallory", deadline=deadline)
        count("attack: hostile inputs (Python API)")
    bob_is_served(rt)


def test_a_repeat_bomb_within_the_limits_ends_at_its_deadline(rt: Any) -> None:
    """50,000,000 launches (the limit) as nested Repeats: accepted, sent to the device as a
    loop (not unrolled), stopped at its deadline; the engine serves on."""
    from .conftest import status_kb

    body: list[Any] = [{"ExecKernel": {"name": "noop", "args": [], "grid": [1], "block": [1]}}]
    for times in (10, 10, 10, 50_000):
        body = [{"Repeat": {"times": times, "body": body}}]
    bomb = {"schema": "pappus/function@1", "library": "k", "kernels": ["noop"],
            "blueprint": {"outputs": [], "control_flow": body}}
    rt.register_function("bomb", bomb, tenant="mallory")
    before = status_kb("RssAnon")
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        settled(rt, "bomb", {}, "mallory", deadline=1.0)
    assert time.monotonic() - t0 < 6
    assert status_kb("RssAnon") - before < 32 * 1024, "the program was not unrolled in the supervisor"
    count("attack: hostile inputs (Python API)")
    bob_is_served(rt)


# --- HTTP -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http(server: Server) -> Any:
    with server.client("mallory") as m, server.client("bob") as b:
        for c in (m, b):
            for name, doc in (("affine", AFFINE), ("sized", SIZED), ("nothing", NOTHING), ("probe", PROBE)):
                assert c.put(f"/v1/functions/{name}", content=json.dumps(doc)).status_code in (200, 201)
        yield m, b


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def http_bob_is_served(bob: Any) -> None:
    a = np.arange(300, dtype=np.int64) * 7
    r = bob.post("/v1/functions/affine/invoke", json={"inputs": {"A": b64(a.tobytes())}})
    assert r.status_code == 200, r.text
    assert np.array_equal(np.frombuffer(base64.b64decode(r.json()["outputs"]["B"]), np.int64), affine(a))


def http_refused(client: Any, name: str, body: Any, status: int, path: str | None) -> dict[str, Any]:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = client.post(f"/v1/functions/{name}/invoke", content=content)
    count("attack: hostile inputs (HTTP)")
    assert r.status_code == status, (body if len(content) < 300 else f"{len(content)} bytes", r.status_code, r.text[:300])
    doc = r.json()
    assert "outputs" not in doc
    if path is not None:
        assert any(e["path"] == path for e in doc["errors"]), doc
    return doc


def test_http_bad_inputs_get_4xx_naming_the_input(http: Any) -> None:
    mallory, bob = http
    cases: list[tuple[str, Any, int, str | None]] = [
        ("affine", {"inputs": {}}, 422, "inputs.A"),
        ("affine", {"inputs": {"A": "", "Z": ""}}, 422, "inputs.Z"),
        ("affine", {}, 422, "inputs"),
        ("affine", {"inputs": []}, 422, "inputs"),
        ("affine", {"inputs": {"A": "@@@@"}}, 422, "inputs.A"),
        ("affine", {"inputs": {"A": "YQ"}}, 422, "inputs.A"),  # missing padding
        ("affine", {"inputs": {"A": "YQ==\n"}}, 422, "inputs.A"),
        ("affine", {"inputs": {"A": "Y Q =="}}, 422, "inputs.A"),
        ("affine", {"inputs": {"A": "ＹＱ=="}}, 422, "inputs.A"),
        ("affine", {"inputs": {"A": 5}}, 422, "inputs.A"),
        ("affine", {"inputs": {"A": None}}, 422, "inputs.A"),
        ("affine", {"inputs": {"A": ["YQ=="]}}, 422, "inputs.A"),
        ("affine", {"inputs": {"A": {"b64": "YQ=="}}}, 422, "inputs.A"),
        ("affine", {"inputs": {"A": ""}, "tenant": "bob"}, 422, "tenant"),
        ("affine", {"inputs": {"A": ""}, "deadline": "1"}, 422, "deadline"),
        ("affine", {"inputs": {"A": ""}, "deadline": -1}, 422, "deadline"),
        ("affine", {"inputs": {"A": ""}, "deadline": 0}, 422, "deadline"),
        ("affine", {"inputs": {"A": ""}, "deadline": True}, 422, "deadline"),
        ("affine", {"inputs": {"A": ""}, "deadline": []}, 422, "deadline"),
        ("sized", {"inputs": {"N": b64(b"\1\0\0")}}, 422, "inputs.N"),
        ("sized", {"inputs": {"N": b64((2**32 - 1).to_bytes(4, "little"))}}, 413, None),
        ("affine", b"not json", 422, "body"),
        ("affine", b"\xff\xfe\xfd", 422, "body"),
        ("affine", b"[1, 2]", 422, "body"),
        ("affine", b"[" * 100_000 + b"]" * 100_000, 422, "body"),
        ("affine", b'{"inputs": {"A": NaN}}', 422, "body"),
        ("nothing", {"inputs": {"A": ""}}, 422, "inputs.A"),
    ]
    for name, body, status, path in cases:
        http_refused(mallory, name, body, status, path)
    # Many unknown inputs at once: answered promptly, not amplified without bound.
    t0 = time.monotonic()
    doc = http_refused(mallory, "nothing", {"inputs": {f"i{i}": "" for i in range(20000)}}, 422, "inputs.i0")
    assert time.monotonic() - t0 < 10 and len(doc["errors"]) == 20000
    http_bob_is_served(bob)


def test_http_input_larger_than_the_pool_is_413(http: Any) -> None:
    mallory, bob = http
    big = b"\1" * (SERVER_POOL_BYTES + 4096)
    assert len(b64(big)) < SERVER_MAX_BODY
    doc = http_refused(mallory, "affine", {"inputs": {"A": b64(big)}}, 413, None)
    assert doc["error"] == "out_of_memory"
    http_bob_is_served(bob)


def test_http_bodies_past_the_limit_are_413_before_they_are_read(http: Any, server: Server) -> None:
    mallory, bob = http
    body = b'{"inputs": {"A": "' + b"A" * SERVER_MAX_BODY + b'"}}'
    r = mallory.post("/v1/functions/affine/invoke", content=body)
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large", r.text[:200]

    def chunks() -> Any:  # no Content-Length: the limit must hold while streaming
        yield b'{"inputs": {"A": "'
        for _ in range(SERVER_MAX_BODY // 65536 + 2):
            yield b"A" * 65536
        yield b'"}}'

    r = mallory.post("/v1/functions/affine/invoke", content=chunks())
    assert r.status_code == 413, r.text[:200]
    # A Content-Length that lies (says small, sends more) is cut off by the HTTP layer.
    r = mallory.put("/v1/libraries/big", content=b"\0" * (SERVER_MAX_BODY + 1))
    assert r.status_code == 413
    count("attack: hostile inputs (HTTP)", 3)
    http_bob_is_served(bob)


# --- findings ------------------------------------------------------------------------------------------


def test_inputs_that_are_not_bytes_are_invalid_input(fresh_rt: Any) -> None:
    """Finding (Python API), fixed (the text says what it was): inputs are not checked to be bytes-like at admission. Objects
    without a length (int, None, float) raise TypeError from ``Plan.check_inputs``. Objects
    with a length but no buffer (str, list, dict) are admitted: cpu-sequential fails them in
    the engine as DeviceError "internal error" (a logged traceback, a device recovery);
    cpu-multiprocess's supervisor thread dies on the TypeError while copying the input into the
    worker's arena, so the invocation never settles and that worker slot serves nobody again
    (two such calls stop a 2-worker engine for every tenant)."""
    from concurrent.futures import TimeoutError as FutureTimeout

    problems = []
    for value in (5, None, 3.5, "abc", [1, 2], {"a": 1}, object()):
        what = type(value).__name__
        try:
            fresh_rt.invoke_async("affine", {"A": value}, tenant="mallory").result(timeout=5)
            problems.append(f"{what}: ran")
        except InvalidInput as exc:
            if not any(e.path == "inputs.A" for e in exc.errors):
                problems.append(f"{what}: {exc}")
        except FutureTimeout:
            problems.append(f"{what}: never settled")
            break  # the engine has lost a worker slot; the rest would only wait too
        except Exception as exc:  # noqa: BLE001 - the finding
            problems.append(f"{what}: {type(exc).__name__}: {str(exc)[:80]}")
    assert not problems, problems
    bob_is_served(fresh_rt)


def test_array_inputs_are_sized_in_bytes_and_never_leak(fresh_rt: Any) -> None:
    """Finding (Python API), fixed (the text says what it was): inputs are sized with ``len()``, which counts *elements* of a numpy
    array or typed memoryview, while the copy into the pool writes all their *bytes*. A
    4,000-element int64 input gets a 4,000-byte buffer and 32,000 bytes written from its start:
    over the function's other buffers and past its last one. cpu-sequential: the bytes past
    the high-water mark are not zeroed at release, and the next tenant's uninitialised buffer
    reads them (23,904 bytes of 0x41 here). cpu-multiprocess: the worker sizes the bytes and the
    supervisor the elements, so the invocation fails with a DeviceError."""
    rt = fresh_rt
    a = np.full(4000, 0x4141414141414141, dtype=np.int64)
    problems = []
    try:
        out = settled(rt, "affine", {"A": a}, "mallory")
        if out["B"] != affine(a).tobytes():
            problems.append(f"wrong output: {len(out['B'])} bytes for a {a.nbytes}-byte input")
    except InvalidInput:
        pass  # refusing arrays outright is also correct
    except PappusError as exc:
        problems.append(f"{type(exc).__name__}: {exc}")
    leaked = np.frombuffer(settled(rt, "probe", {}, "bob")["out"], np.uint64).tolist()
    if leaked != [0, 0]:
        problems.append(f"bob's fresh buffer holds {leaked[0]} non-zero bytes, {leaked[1]} of them mallory's 0x41")
    assert not problems, problems


_OVERFLOW = """
import sys, time, pappus
from concurrent.futures import TimeoutError as FutureTimeout
from pappus.errors import PappusError
rt = pappus.Runtime(engine=sys.argv[1], state_dir=sys.argv[2], pool_bytes=1 << 20, workers=1)
rt.register_library("k", open(sys.argv[3], "rb").read())
rt.register_function("nothing", {"schema": "pappus/function@1", "library": "k", "kernels": ["noop"],
    "blueprint": {"outputs": [], "control_flow": [{"ExecKernel": {"name": "noop", "args": [], "grid": [1], "block": [1]}}]}})
rt.register_function("spin", {"schema": "pappus/function@1", "library": "k", "kernels": ["spin"],
    "blueprint": {"buffers": {"o": 8}, "outputs": [], "control_flow": [{"ExecKernel": {"name": "spin",
    "args": [{"Ptr": "o"}], "grid": [1], "block": [1]}}]}})
def outcome(f, wait):
    try:
        f.result(timeout=wait)
        return "ok"
    except FutureTimeout:
        return "no answer"
    except PappusError as exc:
        return type(exc).__name__
    except Exception as exc:
        return "raised " + type(exc).__name__
try:
    first = outcome(rt.invoke_async("nothing", {}, deadline=1e300), 3)
except PappusError as exc:
    first = "refused " + type(exc).__name__
except Exception as exc:
    first = "raised " + type(exc).__name__
time.sleep(0.5)
later = outcome(rt.invoke_async("spin", {}, deadline=0.5), 4)
print("RESULT", first, "|", later, flush=True)
rt.close(drain=False, timeout=2)
"""


@pytest.mark.parametrize("engine", ENGINES)
def test_a_huge_deadline_does_not_disable_deadlines(tmp_path: Path, attacks_lib: Built, engine: str) -> None:
    """Finding, fixed (the text says what it was): the deadline of an invocation is bounded by nothing (the config's deadline is
    bounded by ``max_deadline``; the per-invocation one of the API and of HTTP
    ``{"deadline": 1e300}`` only has to be positive and finite). The engine then waits with that
    timeout: cpu-sequential's watchdog thread dies with OverflowError, so no deadline of any
    tenant is enforced afterwards and the next hung kernel blocks the engine for good;
    cpu-multiprocess's supervisor thread dies, the invocation never settles and the worker's
    slot serves nobody again."""
    lib = tmp_path / "k.so"
    lib.write_bytes(attacks_lib.data)
    proc = subprocess.run([sys.executable, "-c", _OVERFLOW, engine, str(tmp_path / "state"), str(lib)],
                          capture_output=True, text=True, timeout=120)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line is not None, proc.stderr[-3000:]
    first, later = (part.strip() for part in line[len("RESULT"):].split("|"))
    assert first in ("ok", "refused ValidationError", "refused InvalidInput"), (first, proc.stderr[-1500:])
    assert later == "DeadlineExceeded", (f"after a deadline of 1e300 s, a hung kernel with a 0.5 s deadline: {later}",
                                         proc.stderr[-1500:])


def test_http_a_huge_deadline_is_4xx(tmp_path: Path, attacks_lib: Built) -> None:
    """Finding (HTTP side of the above), fixed (the text says what it was): ``{"deadline": 1e300}`` must be refused with 422 on
    ``deadline``; a private server, since today it breaks the engine."""
    from tests.serve.helpers import add_tenants, process_server

    tokens = add_tenants(tmp_path, "mallory", request_rate=None)
    with process_server(tmp_path, "--engine", "cpu-sequential", "--pool-bytes", str(1 << 20), timeout=120) as srv:
        with srv.client(tokens["mallory"]) as c:
            assert c.put("/v1/libraries/k", content=attacks_lib.data).status_code == 201
            assert c.put("/v1/functions/nothing", content=json.dumps(NOTHING)).status_code == 201
            r = c.post("/v1/functions/nothing/invoke", json={"inputs": {}, "deadline": 1e300})
            assert r.status_code == 422 and r.json()["errors"][0]["path"] == "deadline", r.text
