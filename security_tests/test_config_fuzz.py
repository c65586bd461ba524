"""Config fuzzing through every entry point: the Python API, HTTP (``PUT /v1/functions/{name}`` on
a real ``pappus serve``) and the CLI (``pappus validate``).

Every case ends in a clean validation error (``pappus.ValidationError``, every problem as
``path: message``; over HTTP a 4xx naming the field) or in a correct run (outputs exactly as an
independent model computes them, or the error class the model predicts); never another
exception, a 5xx, a hang, or a partial registration (the registry is byte-for-byte unchanged
after a refused registration). Generators and the model: ``fuzzing.py``.

The tests at the end of this module are findings: hostile configs that get through today.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import textwrap
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pappus.config.parser import library_name_problem
from pappus.errors import DeadlineExceeded, PappusError, ValidationError

from .conftest import SERVER_POOL_BYTES, Built, Server, count, fuzz_settings, make_runtime, scaled
from .fuzzing import HEAVY_THREADS, Bad, Case, Outputs, invalid_cases, model, valid_cases

FUZZ_POOL = 4 * 1024 * 1024
TENANT = "fuzz"


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory, attacks_lib: Built) -> Any:
    runtime = make_runtime("cpu-sequential", tmp_path_factory.mktemp("fuzz-state"), pool_bytes=FUZZ_POOL)
    runtime.register_library("k", attacks_lib.data, tenant=TENANT)
    yield runtime
    runtime.close(drain=False, timeout=10)


def registry_state(runtime: Any, tenant: str = TENANT) -> dict[str, Any]:
    """Every file of the tenant's namespace (by content), the blob store and the audit log."""
    root = Path(runtime.registry.root)
    out: dict[str, Any] = {}
    for path in sorted((root / "tenants" / tenant).rglob("*")):
        if path.is_file():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    out["blobs"] = sorted(str(p.relative_to(root)) for p in (root / "blobs").rglob("*") if p.is_file())
    audit = root / "audit.log"
    out["audit.log"] = audit.stat().st_size if audit.exists() else 0
    return out


def check_validation_error(exc: ValidationError) -> None:
    assert exc.errors, "a ValidationError lists its problems"
    text = str(exc)
    for e in exc.errors:
        assert isinstance(e.path, str) and isinstance(e.message, str) and e.message.strip(), e
        assert "Traceback" not in e.message
        assert (f"{e.path}: {e.message}" if e.path else e.message) in text
    json.dumps(exc.to_dict())  # crosses HTTP and process boundaries as plain data


def run_expecting_model(invoke: Any, case: Case, capacity: int) -> str:
    """Invoke and compare with the model; returns the outcome's name."""
    try:
        expected: dict[str, bytes] | Bad = model(case.doc, case.inputs, capacity)
    except Bad as bad:
        expected = bad
    try:
        out = invoke()
    except PappusError as exc:
        if isinstance(exc, DeadlineExceeded) and isinstance(expected, Outputs) \
                and expected.threads > HEAVY_THREADS:
            return "deadline_exceeded (a heavy config)"
        assert isinstance(expected, Bad), f"the model runs this config, pappus raised {exc!r}"
        assert exc.code == expected.kind, (exc, expected)
        return exc.code
    assert not isinstance(expected, Bad), f"pappus ran a config the model refuses ({expected})"
    assert set(out) == set(expected)
    for name, data in expected.items():
        assert out[name] == data, f"output {name!r} differs from the model"
    return "ok"


# --- the Python API -------------------------------------------------------------------------------


@fuzz_settings(120, 3500)
@given(case=valid_cases())
def test_valid_configs_register_and_run_as_the_model_says(rt: Any, case: Case) -> None:
    count("fuzz case: valid configs (Python API)")
    rt.register_function("fv", case.doc, tenant=TENANT)
    outcome = run_expecting_model(lambda: rt.invoke("fv", case.inputs, tenant=TENANT, deadline=30),
                                  case, rt.engine().capacity)
    count(f"fuzz outcome: valid config run -> {outcome}")


@fuzz_settings(260, 5500)
@given(data=invalid_cases())
def test_hostile_configs_are_refused_cleanly_and_change_nothing(rt: Any, data: tuple[Case, list[str]]) -> None:
    case, kinds = data
    count("fuzz case: hostile configs (Python API)")
    before = registry_state(rt)
    try:
        rt.register_function("fh", case.doc, tenant=TENANT)
    except ValidationError as exc:
        check_validation_error(exc)
        assert registry_state(rt) == before, f"a refused registration changed the registry ({kinds})"
        return
    count("fuzz outcome: hostile edits that left the config valid")
    try:  # still valid: it must run to a settled outcome, nothing else
        rt.invoke("fh", case.inputs, tenant=TENANT, deadline=0.5)
    except PappusError:
        pass
    assert rt.engine().healthy


@pytest.fixture(scope="module")
def mp_rt(tmp_path_factory: pytest.TempPathFactory, attacks_lib: Built) -> Any:
    runtime = make_runtime("cpu-multiprocess", tmp_path_factory.mktemp("fuzz-mp"), pool_bytes=FUZZ_POOL, workers=2)
    runtime.register_library("k", attacks_lib.data, tenant=TENANT)
    yield runtime
    runtime.close(drain=False, timeout=10)


@pytest.mark.long
@fuzz_settings(1, 1500)  # skipped in the fast profile (long only)
@given(case=valid_cases())
def test_valid_configs_run_as_the_model_says_on_the_multiprocess_engine(mp_rt: Any, case: Case) -> None:
    """The same model check through worker processes and their shared arenas (long profile)."""
    count("fuzz case: valid configs (Python API, cpu-multiprocess)")
    mp_rt.register_function("fv", case.doc, tenant=TENANT)
    run_expecting_model(lambda: mp_rt.invoke("fv", case.inputs, tenant=TENANT, deadline=30), case,
                        mp_rt.engine().capacity)


def test_the_engine_still_serves_correctly_after_the_fuzzing(rt: Any) -> None:
    rt.register_function("after", {
        "schema": "pappus/function@1", "library": "k", "kernels": ["fill_u8"],
        "blueprint": {"inputs": ["A"], "outputs": ["A"], "control_flow": [{"ExecKernel": {
            "name": "fill_u8", "args": [{"Ptr": "A"}, {"Sizeof": "A"}, {"Constant": {"type": "u8", "value": 9}}],
            "grid": [2], "block": [3]}}]}}, tenant=TENANT)
    assert rt.invoke("after", {"A": b"\0" * 100}, tenant=TENANT) == {"A": b"\x09" * 100}


# --- HTTP -----------------------------------------------------------------------------------------

_clients: dict[str, Any] = {}


def client(server: Server, tenant: str = "alice") -> Any:
    key = f"{server.url}/{tenant}"
    if key not in _clients:
        _clients[key] = server.client(tenant)
    return _clients[key]


def http_state(c: Any, name: str) -> tuple[Any, Any]:
    listing = c.get("/v1/functions")
    one = c.get(f"/v1/functions/{name}")
    assert listing.status_code == 200 and one.status_code in (200, 404)
    return listing.json(), (one.status_code, one.json())


def check_http_refusal(r: Any) -> None:
    assert 400 <= r.status_code < 500, f"{r.status_code}: {r.text[:500]}"
    doc = r.json()
    assert isinstance(doc.get("error"), str) and isinstance(doc.get("message"), str)
    if r.status_code == 422:
        assert doc["errors"], doc
        for e in doc["errors"]:
            assert isinstance(e["path"], str) and isinstance(e["message"], str) and e["message"], e


def _b64(inputs: dict[str, bytes]) -> dict[str, str]:
    return {k: base64.b64encode(v).decode() for k, v in inputs.items()}


@fuzz_settings(110, 2600)
@given(data=st.one_of(valid_cases().map(lambda c: (c, ["valid"])), invalid_cases()), ascii_only=st.booleans())
def test_http_registration_is_4xx_with_the_field_or_a_correct_run(server: Server, data: tuple[Case, list[str]],
                                                                  ascii_only: bool) -> None:
    case, kinds = data
    count("fuzz case: configs over HTTP")
    c = client(server)
    before = http_state(c, "h0")
    r = c.put("/v1/functions/h0", content=json.dumps(case.doc, ensure_ascii=ascii_only).encode())
    if r.status_code in (200, 201):
        if kinds == ["valid"]:
            def invoke() -> dict[str, bytes]:
                resp = c.post("/v1/functions/h0/invoke", json={"inputs": _b64(case.inputs), "deadline": 20})
                if resp.status_code != 200:
                    raise _http_error(resp)
                return {k: base64.b64decode(v) for k, v in resp.json()["outputs"].items()}

            run_expecting_model(invoke, case, SERVER_POOL_BYTES)
        else:
            resp = c.post("/v1/functions/h0/invoke", json={"inputs": _b64(case.inputs), "deadline": 0.5})
            assert resp.status_code < 500 or resp.json()["error"] in ("deadline_exceeded", "kernel_fault"), resp.text
        return
    assert kinds != ["valid"], f"a valid config was refused: {r.text[:500]}"
    check_http_refusal(r)
    assert http_state(c, "h0") == before, "a refused registration changed what the tenant sees"


def _http_error(resp: Any) -> PappusError:
    doc = resp.json()
    err = PappusError(doc.get("message", ""))
    err.code = doc.get("error", "?")  # type: ignore[misc]
    return err


def _truncations(doc: dict[str, Any]) -> st.SearchStrategy[bytes]:
    text = json.dumps(doc).encode()
    return st.integers(0, max(0, len(text) - 1)).map(lambda n: text[:n])


@fuzz_settings(60, 1200)
@given(body=st.one_of(
    st.binary(max_size=300),
    valid_cases().flatmap(lambda c: _truncations(c.doc)),
    st.integers(1, 100_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 100_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.sampled_from([b"\xef\xbb\xbf{}", b"\xff\xfe{\x00}\x00", b"{\"schema\": NaN}", b"{\"schema\": Infinity}",
                     b"{\"a\": 1e999}", b"{\"a\": -0}", b"{" + b"\"a\":1," * 50000 + b"\"b\":1}"]),
))
def test_http_raw_bodies_are_4xx(server: Server, body: bytes) -> None:
    count("fuzz case: raw bodies over HTTP")
    c = client(server)
    before = http_state(c, "h1")
    r = c.put("/v1/functions/h1", content=body)
    check_http_refusal(r)
    assert http_state(c, "h1") == before


@fuzz_settings(60, 1200)
@given(name=st.one_of(st.text(max_size=80), st.sampled_from(["..", "../alice/mm", "a/b", "%2e%2e", "ÄÖ", "a" * 65,
                                                               "a" * 64, "0", "-x", ".x", "x.", "CON", "nul"])))
def test_http_function_names_never_escape_or_500(server: Server, name: str) -> None:
    count("fuzz case: names over HTTP")
    c = client(server)
    doc = {"schema": "pappus/function@1", "library": "k", "kernels": ["noop"],
           "blueprint": {"outputs": [], "control_flow": [{"ExecKernel": {"name": "noop", "args": [], "grid": [1],
                                                                          "block": [1]}}]}}
    r = c.put("/v1/functions/" + urllib.parse.quote(name, safe=""), content=json.dumps(doc))
    if library_name_problem(name) is None:
        assert r.status_code in (200, 201), r.text
        assert c.delete(f"/v1/functions/{name}").status_code == 204
    elif r.status_code in (307, 308) and (name == "" or "/" in name):
        pass  # "/v1/functions/" and friends are redirected by the router; nothing is registered
    else:
        check_http_refusal(r)
    names = [f["name"] for f in c.get("/v1/functions").json()["functions"]]
    assert all(library_name_problem(n) is None for n in names), names
    state = Path(server.state)
    stray = [p for p in state.rglob("*") if p.is_file() and not str(p.relative_to(state)).startswith(
        ("tenants/", "blobs/", "audit.log", "lock", "VERSION", "tenants.json", "tenants", "cache"))]
    assert not stray, stray


# --- the CLI ----------------------------------------------------------------------------------------


def test_cli_validate_reports_problems_without_a_traceback(tmp_path: Path) -> None:
    """``pappus validate`` on hostile configs: exit status 1 with ``path: message`` lines."""
    import random

    from hypothesis import find

    rng = random.Random(7)
    docs: list[Any] = []
    seen = 0

    def keep(data: tuple[Case, list[str]]) -> bool:
        nonlocal seen
        seen += 1
        docs.append(data[0].doc)
        return len(docs) >= scaled(4, 40)

    find(invalid_cases(), keep, settings=fuzz_settings(200, 200))
    rng.shuffle(docs)
    bad = 0
    for i, doc in enumerate(docs[:scaled(4, 40)]):
        path = tmp_path / f"c{i}.json"
        path.write_text(json.dumps(doc))
        res = subprocess.run([sys.executable, "-m", "pappus", "validate", str(path)], capture_output=True,
                             text=True, timeout=120)
        count("fuzz case: configs through the CLI")
        assert "Traceback" not in res.stderr + res.stdout, res.stderr
        assert res.returncode in (0, 1), (res.returncode, res.stderr)
        if res.returncode:
            bad += 1
            assert res.stderr.strip(), "a refusal says why"
    assert bad, "hostile configs are refused by the CLI too"


# --- findings -----------------------------------------------------------------------------------------
# Each test below is a finding of this suite, fixed since: it fails if the attack it names gets
# through again (see docs/security.md).


def _refusal_problems(rt: Any, server: Server, name: str, config: Any, body: bytes, label: str) -> list[str]:
    """Register ``config`` through the Python API and ``body`` over HTTP: what went wrong other
    than a clean refusal (a ValidationError that changes nothing; a 4xx)."""
    problems = []
    before = registry_state(rt)
    try:
        rt.register_function(name, config, tenant=TENANT)
        problems.append(f"{label}: registered")
    except ValidationError:
        pass
    except Exception as exc:  # noqa: BLE001 - the finding
        problems.append(f"{label}: {type(exc).__name__}: {str(exc)[:120]}")
    assert registry_state(rt) == before
    r = client(server).put(f"/v1/functions/{name}", content=body)
    if not 400 <= r.status_code < 500:
        problems.append(f"{label}: HTTP {r.status_code}")
    return problems


def test_top_level_documents_must_be_objects(rt: Any, server: Server) -> None:
    """Finding, fixed (the text says what it was): a config document that is JSON but not an object (array, number, null, boolean)
    reaches ``assert isinstance(source, str)`` in ``load_config_document``: AssertionError from
    the Python API, HTTP 500 from ``pappus serve``."""
    problems = []
    for body in (b"[]", b"[1, 2]", b"1", b"null", b"true", b"1.5"):
        problems += _refusal_problems(rt, server, "top", body, body, repr(body))
    assert not problems, problems


def test_a_json_string_body_is_not_a_path_on_the_server(server: Server, tmp_path: Path) -> None:
    """Finding, fixed (the text says what it was): ``PUT /v1/functions/NAME`` with the body ``"/some/path"`` (a JSON string) makes the
    server treat the string as a config *file on the server*: it stats and reads any path the
    server can read (file-existence oracle; a directory gives HTTP 500; ``"/dev/zero"`` is read
    until the server runs out of memory; a FIFO blocks a server thread forever; a config file
    lying on the server is registered, with the path stored as its config). The answer must not
    depend on the server's filesystem."""
    c = client(server)
    answers = {}
    for path in ("/etc/passwd", "/nonexistent/pappus", "/", str(server.state / "tenants.json"), "/proc/self/status"):
        r = c.put("/v1/functions/pathy", content=json.dumps(path).encode())
        answers[path] = (r.status_code, r.json().get("errors") if r.status_code < 500 else r.text)
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
    shapes = {json.dumps(a, sort_keys=True) for a in answers.values()}
    assert len(shapes) == 1, f"the answer depends on the server's files: {answers}"


def test_a_lone_surrogate_in_a_config_is_a_4xx(server: Server) -> None:
    """Finding, fixed (the text says what it was): a config with a lone UTF-16 surrogate (valid JSON: ``"\\ud800"``) in a field name
    gets HTTP 500: the 422's message echoes the name and the JSON response cannot encode it as
    UTF-8 (UnicodeEncodeError while rendering the error). In a value it is escaped (repr) and
    answered 422."""
    for body in (b'{"schema": "pappus/function@1", "kernels": ["\\udfff"]}', b'{"\\ud800": 1}'):
        check_http_refusal(client(server).put("/v1/functions/sur", content=body))


def test_an_unknown_engine_in_a_config_is_a_validation_error(rt: Any, server: Server) -> None:
    """Finding, fixed (the text says what it was): ``"engine": "nope-sequential"`` in a config raises BackendUnavailable (HTTP 503,
    a 5xx, no field named) instead of a ValidationError on ``engine``."""
    doc = {"schema": "pappus/function@1", "library": "k", "kernels": ["noop"], "engine": "nope-sequential",
           "blueprint": {"outputs": [], "control_flow": [{"ExecKernel": {"name": "noop", "args": [],
                                                                          "grid": [1], "block": [1]}}]}}
    failures = []
    for engine in ("nope-sequential", "cpu-nope", "cpu"):
        doc["engine"] = engine
        try:
            rt.register_function("eng", doc, tenant=TENANT)
            failures.append(f"{engine}: registered")
        except ValidationError as exc:
            if not any(e.path == "engine" for e in exc.errors):
                failures.append(f"{engine}: {exc}")
        except PappusError as exc:
            failures.append(f"{engine}: {type(exc).__name__}: {exc}")
        r = client(server).put("/v1/functions/eng", content=json.dumps(doc))
        if r.status_code != 422:
            failures.append(f"{engine}: HTTP {r.status_code} {r.text[:200]}")
    assert not failures, failures


def test_a_constant_type_must_be_a_type_name(rt: Any, server: Server) -> None:
    """Finding (found by the fuzzer), fixed (the text says what it was): ``{"Constant": {"type": [], "value": 0}}`` raises TypeError
    (``unhashable type``) from the parser's ``dtype not in DTYPES``: a traceback from the
    Python API, HTTP 500 from ``pappus serve``."""
    problems = []
    for dtype in ([], ["u8"], {}, {"u8": 1}):
        doc = {"schema": "pappus/function@1", "library": "k", "kernels": ["fill_u8"],
               "blueprint": {"buffers": {"B": 8}, "outputs": ["B"], "control_flow": [{"ExecKernel": {
                   "name": "fill_u8", "args": [{"Ptr": "B"}, {"Sizeof": "B"},
                                               {"Constant": {"type": dtype, "value": 0}}],
                   "grid": [1], "block": [1]}}]}}
        problems += _refusal_problems(rt, server, "ct", doc, json.dumps(doc).encode(), repr(dtype))
    assert not problems, problems


def test_a_mapping_with_non_string_keys_is_a_validation_error(rt: Any) -> None:
    """Finding (Python API), fixed (the text says what it was): a config mapping whose buffer names are not strings raises
    TypeError from the name regex instead of a ValidationError."""
    doc = {"schema": "pappus/function@1", "library": "k", "kernels": ["noop"],
           "blueprint": {"buffers": {1: 8}, "outputs": [], "control_flow": [
               {"ExecKernel": {"name": "noop", "args": [], "grid": [1], "block": [1]}}]}}
    before = registry_state(rt)
    with pytest.raises(ValidationError):
        rt.register_function("keys", doc, tenant=TENANT)
    assert registry_state(rt) == before


def _many_factors(n: int, leaf: Any) -> dict[str, Any]:
    return {"schema": "pappus/function@1", "library": "k", "kernels": ["noop"],
            "blueprint": {"inputs": [{"name": "A", "size": 8}], "buffers": {"X": {"Mul": [leaf] * n}},
                          "outputs": [], "control_flow": [{"ExecKernel": {"name": "noop", "args": [], "grid": [1],
                                                                          "block": [1]}}]}}


def test_a_product_of_many_factors_is_refused_cleanly(rt: Any, server: Server) -> None:
    """Finding, fixed (the text says what it was): a product of a few hundred large factors is computed in full and then formatted
    into the error message; past Python's 4,300-digit limit for int -> str that raises
    ValueError: at registration (static factors) and at invocation (FromInput factors), from
    the Python API and as HTTP 500."""
    doc = _many_factors(300, 2**64 - 1)
    problems = _refusal_problems(rt, server, "many", doc, json.dumps(doc).encode(), "a product of 300 x (2^64-1)")
    doc = _many_factors(300, {"FromInput": {"input": "A", "index": 0}})
    rt.register_function("many_in", doc, tenant=TENANT)
    try:
        rt.invoke("many_in", {"A": (2**64 - 1).to_bytes(8, "little")}, tenant=TENANT)
        problems.append("ran")
    except ValidationError:
        pass
    except Exception as exc:  # noqa: BLE001 - the finding
        problems.append(f"invocation: {type(exc).__name__}: {str(exc)[:120]}")
    assert not problems, problems


_SLOW_PRODUCT = textwrap.dedent("""
    import json, sys, time
    from pappus.config.parser import parse_function
    from pappus.errors import ValidationError
    from pappus.plan import Plan
    plan = Plan(parse_function(open(sys.argv[1]).read()))
    print("parsed", flush=True)
    t0 = time.monotonic()
    try:
        plan.resolve({"A": (2**64 - 1).to_bytes(8, "little")})
    except Exception as exc:
        print("answered", type(exc).__name__, round(time.monotonic() - t0, 2), flush=True)
""")


def test_a_product_of_many_factors_is_refused_quickly(tmp_path: Path) -> None:
    """Finding, fixed (the text says what it was): products are computed in full before the 64-bit check, at a cost quadratic in the
    number of factors. A config under the 4 MiB limit with ~100,000 FromInput factors holds
    the supervisor's GIL for about a minute in every invocation's admission check
    (``Plan.resolve`` runs in the caller's thread: over HTTP the whole server stalls, for every
    tenant). Here the size check of 60,000 factors must answer within 2 s (today: ~10 s)."""
    doc = _many_factors(60_000, {"FromInput": {"input": "A", "index": 0}})
    (tmp_path / "doc.json").write_text(json.dumps(doc))
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_PRODUCT, str(tmp_path / "doc.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=12)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    assert "parsed" in out, err[-2000:]
    assert "answered" in out, "the admission check of one invocation took more than ~10 s"
    seconds = float(out.split()[-1])
    assert seconds < 2, f"the admission check of one invocation took {seconds:.1f} s"
