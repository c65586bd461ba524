"""Config generators and an independent model of what a config must do, for the fuzz tests.

``valid_cases()`` draws configs that are valid by construction, against the honest kernels of
``kernels/attacks.hip`` (``fill_u8``, ``add_u8``, ``noop``), with inputs to invoke them with.
``model()`` computes, without pappus, what the invocation must give: the exact outputs, or the
error class (InvalidInput for a size or bound that does not hold, OutOfMemory past the pool).

``invalid_cases()`` mutates a valid config with one to three hostile edits (deep nesting, huge and
negative sizes, overflowing products, FromInput past its input, zero and 2^32 grids, Repeat
bombs, unknown fields, wrong types, unicode names, cycles, ...). A mutated config may happen to
stay valid; the tests then require a run that settles with outputs or a typed error.

Findings that once crashed registration are drawn too (each also has its own test in
``test_config_fuzz.py``): top-level documents that are not objects, unknown engine names,
products with hundreds of factors, and Constant types that are not type names.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

SCHEMA = "pappus/function@1"
U64_MAX = 2**64 - 1
MAX_BUFFER = 2**48
MAX_REPEAT = 10_000_000
MAX_LAUNCHES = 50_000_000
MAX_GRID = (2**31 - 1, 65535, 65535)
MAX_BLOCK = (1024, 1024, 1024)
MAX_THREADS = 1024
MAX_SHARED = 64 * 1024
ALIGN = 256
DTYPES = {"u8": (1, False), "u16": (2, False), "u32": (4, False), "u64": (8, False),
          "i8": (1, True), "i16": (2, True), "i32": (4, True), "i64": (8, True)}
NAMES = ("A", "B", "x", "buf_1", "Z9", "_t", "out", "weights")
KERNELS = ("fill_u8", "add_u8", "noop")


@dataclass
class Case:
    doc: dict[str, Any]
    inputs: dict[str, bytes]


# --- valid configs ---------------------------------------------------------------------------


def _dim(draw: Any, small_inputs: list[tuple[str, int]]) -> Any:
    if small_inputs and draw(st.integers(0, 5)) == 0:
        name, size = draw(st.sampled_from(small_inputs))
        return {"FromInput": {"input": name, "index": draw(st.integers(0, size - 1)), "type": "u8"}}
    value = draw(st.integers(1, 3))
    return value if draw(st.booleans()) else {"Absolute": value}


def _sizing(draw: Any, depth: int, inputs: list[str], declared: dict[str, int], earlier: list[str]) -> Any:
    kinds = ["int", "abs"]
    if inputs:
        kinds.append("sizeof_input")
    if earlier:
        kinds.append("sizeof_buffer")
    readable = [(n, s) for n, s in declared.items() if s >= 1]
    if readable:
        kinds += ["from_input", "from_input"]
    if depth < 3:
        kinds += ["mul", "add", "ceildiv"]
    kind = draw(st.sampled_from(kinds))
    if kind == "int":
        return draw(st.integers(0, 300))
    if kind == "abs":
        return {"Absolute": draw(st.integers(0, 300))}
    if kind == "sizeof_input":
        return {"Sizeof": draw(st.sampled_from(inputs))}
    if kind == "sizeof_buffer":
        return {"Sizeof": draw(st.sampled_from(earlier))}
    if kind == "from_input":
        name, size = draw(st.sampled_from(readable))
        dtype = draw(st.sampled_from([d for d, (w, _) in DTYPES.items() if w <= size]))
        width = DTYPES[dtype][0]
        body: dict[str, Any] = {"input": name, "index": draw(st.integers(0, size // width - 1))}
        if dtype != "u64" or draw(st.booleans()):
            body["type"] = dtype
        return {"FromInput": body}
    if kind == "ceildiv":
        denominator = draw(st.integers(1, 9)) if draw(st.booleans()) else \
            {"Add": [_sizing(draw, depth + 1, inputs, declared, earlier), draw(st.integers(1, 2))]}
        return {"CeilDiv": [_sizing(draw, depth + 1, inputs, declared, earlier), denominator]}
    parts = [_sizing(draw, depth + 1, inputs, declared, earlier) for _ in range(draw(st.integers(1, 3)))]
    return {"Mul" if kind == "mul" else "Add": parts}


def _actions(draw: Any, depth: int, targets: list[str], used: set[str], small: list[tuple[str, int]]) -> list[Any]:
    out = []
    for _ in range(draw(st.integers(1, 3))):
        if depth < 2 and draw(st.integers(0, 3)) == 0:
            if small and draw(st.booleans()):
                name, size = draw(st.sampled_from(small))
                times: Any = {"FromInput": {"input": name, "index": draw(st.integers(0, size - 1)), "type": "u8"}}
            else:
                times = draw(st.integers(0, 3))
                times = times if draw(st.booleans()) else {"Absolute": times}
            out.append({"Repeat": {"times": times, "body": _actions(draw, depth + 1, targets, used, small)}})
            continue
        kernel = draw(st.sampled_from(KERNELS if targets else ("noop",)))
        used.add(kernel)
        args: list[Any] = []
        if kernel != "noop":
            target = draw(st.sampled_from(targets))
            args = [{"Ptr": target}, {"Sizeof": target}, {"Constant": {"type": "u8", "value": draw(st.integers(0, 255))}}]
        launch: dict[str, Any] = {"name": kernel, "args": args,
                                  "grid": [_dim(draw, small) for _ in range(draw(st.integers(1, 3)))],
                                  "block": [_dim(draw, small) for _ in range(draw(st.integers(1, 3)))]}
        if draw(st.booleans()):
            launch["shared_mem_bytes"] = draw(st.integers(0, 4096))
        out.append({"ExecKernel": launch})
    return out


def _input_bytes(draw: Any, size: int) -> bytes:
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(min_size=size, max_size=size))
    return bytes(draw(st.lists(st.integers(0, 3), min_size=size, max_size=size)))


def _static_value(node: Any) -> int | None:
    """The value of a size that does not depend on inputs (as the parser computes it), else None."""
    if isinstance(node, int):
        return node
    ((kind, body),) = node.items()
    if kind == "Absolute":
        return int(body)
    if kind in ("Mul", "Add"):
        values = [_static_value(v) for v in body]
        if kind == "Mul" and any(v == 0 for v in values):
            return 0
        if any(v is None for v in values):
            return None
        return math.prod(values) if kind == "Mul" else sum(values)  # type: ignore[arg-type]
    if kind == "CeilDiv":
        num, den = _static_value(body[0]), _static_value(body[1])
        return None if num is None or not den else -(-num // den)
    return None


@st.composite
def valid_cases(draw: Any) -> Case:
    names = list(draw(st.permutations(NAMES)))
    inputs = names[:draw(st.integers(0, 3))]
    rest = names[len(inputs):]
    declared = {n: draw(st.integers(0, 16)) for n in inputs if draw(st.booleans())}
    buffers: dict[str, Any] = {}
    earlier: list[str] = []
    for name in rest[:draw(st.integers(0 if inputs else 1, 3))]:
        sizing = _sizing(draw, 0, inputs, declared, earlier)
        static = _static_value(sizing)
        if static is not None and static > MAX_BUFFER:  # refused at registration: not a valid config
            sizing = draw(st.integers(0, 300))
        buffers[name] = sizing
        earlier.append(name)
    for name in inputs:  # an input's own buffer, made larger than the input
        if draw(st.integers(0, 4)) == 0:
            buffers[name] = {"Add": [{"Sizeof": name}, draw(st.integers(0, 64))]}
    targets = inputs + list(buffers)
    small = [(n, s) for n, s in declared.items() if s >= 1]
    used: set[str] = set()
    flow = _actions(draw, 0, sorted(set(targets)), used, small)
    if not used:
        used.add("noop")
        flow.append({"ExecKernel": {"name": "noop", "args": [], "grid": [1], "block": [1]}})
    kernels = sorted(used | set(draw(st.lists(st.sampled_from(KERNELS), max_size=2))))
    outputs = draw(st.lists(st.sampled_from(sorted(set(targets))), unique=True, max_size=4)) if targets else []
    spec_inputs: list[Any] = [{"name": n, "size": declared[n]} if n in declared else n for n in inputs]
    blueprint: dict[str, Any] = {"inputs": spec_inputs, "buffers": buffers, "outputs": outputs, "control_flow": flow}
    if not spec_inputs and draw(st.booleans()):
        del blueprint["inputs"]
    doc: dict[str, Any] = {"schema": SCHEMA, "library": "k", "kernels": kernels, "blueprint": blueprint}
    if draw(st.integers(0, 5)) == 0:
        doc["description"] = draw(st.text(max_size=40))
    if draw(st.integers(0, 5)) == 0:
        doc["deadline"] = draw(st.sampled_from([1, 2.5, 30, 86400]))
    values = {n: _input_bytes(draw, declared[n] if n in declared else draw(st.integers(0, 48))) for n in inputs}
    return Case(doc, values)


# --- the model --------------------------------------------------------------------------------


#: Kernel threads (launches x grid x block) past which a config may honestly run into a 30 s
#: deadline on a busy 2-core machine: then DeadlineExceeded is the deadline doing its job.
HEAVY_THREADS = 50_000_000


class Outputs(dict):  # type: ignore[type-arg]
    """What :func:`model` expects; ``threads`` counts the kernel threads the config launches."""

    threads: int = 0


class Bad(Exception):
    """The invocation must fail: ``kind`` is ``invalid_input`` or ``out_of_memory``."""

    def __init__(self, kind: str, why: str) -> None:
        super().__init__(why)
        self.kind = kind


def _static(node: Any) -> bool:
    return isinstance(node, int) or (isinstance(node, dict) and "Absolute" in node)


def model(doc: dict[str, Any], inputs: dict[str, bytes], capacity: int) -> dict[str, bytes]:
    """The outputs ``doc`` must produce on ``inputs`` in a pool of ``capacity`` bytes, or Bad."""
    bp = doc["blueprint"]
    in_names = [i if isinstance(i, str) else i["name"] for i in bp.get("inputs", [])]
    declared_buffers: dict[str, Any] = bp.get("buffers", {})
    order = [n for n in in_names if n not in declared_buffers] + list(declared_buffers)
    sizing_of = {n: {"Sizeof": n} for n in in_names}
    sizing_of.update(declared_buffers)
    sizes: dict[str, int] = {}

    def check(v: int) -> int:
        if v > U64_MAX:
            raise Bad("invalid_input", f"{v} overflows 64 bits")
        return v

    def ev(node: Any, resolving: str = "") -> int:
        if isinstance(node, int):
            return node
        ((kind, body),) = node.items()
        if kind == "Absolute":
            return int(body)
        if kind == "Sizeof":
            if body in inputs and body in in_names:
                return len(inputs[body])
            return size(body)
        if kind == "FromInput":
            width, signed = DTYPES[body.get("type", "u64")]
            data = inputs[body["input"]]
            at = body["index"] * width
            if at + width > len(data):
                raise Bad("invalid_input", "FromInput past its input")
            value = int.from_bytes(data[at:at + width], "little", signed=signed)
            if value < 0:
                raise Bad("invalid_input", "FromInput read a negative size")
            return value
        if kind == "Mul":
            return check(math.prod(ev(f) for f in body))
        if kind == "Add":
            return check(sum(ev(t) for t in body))
        if kind == "CeilDiv":
            num, den = ev(body[0]), ev(body[1])
            if den == 0:
                raise Bad("invalid_input", "CeilDiv by zero")
            return -(-num // den)
        raise AssertionError(kind)

    def size(name: str) -> int:
        if name not in sizes:
            v = ev(sizing_of[name])
            if v > MAX_BUFFER:
                raise Bad("invalid_input", f"buffer {name} of {v} bytes")
            if name in in_names and v < len(inputs[name]):
                raise Bad("invalid_input", f"input {name} larger than its buffer")
            sizes[name] = v
        return sizes[name]

    for name in order:
        size(name)
    top = 0
    for name in order:
        top = (top + ALIGN - 1) // ALIGN * ALIGN + sizes[name]

    launches = [0]
    threads = [0]
    program: list[Any] = []

    def value(node: Any) -> int:
        return check(ev(node))

    def dims(values: list[Any], maxima: tuple[int, int, int]) -> tuple[int, ...]:
        out = []
        for i, d in enumerate(values):
            v = value(d)
            if not _static(d) and (v == 0 or v > maxima[i]):
                raise Bad("invalid_input", f"launch dimension {v}")
            out.append(v)
        return tuple(out + [1] * (3 - len(out)))

    def walk(actions: list[Any], multiplier: int, into: list[Any]) -> None:
        for action in actions:
            ((kind, body),) = action.items()
            if kind == "ExecKernel":
                launches[0] += multiplier
                if launches[0] > MAX_LAUNCHES:
                    raise Bad("invalid_input", "too many launches")
                grid = dims(body["grid"], MAX_GRID)
                block = dims(body["block"], MAX_BLOCK)
                threads[0] += multiplier * math.prod(grid) * math.prod(block)
                if math.prod(block) > MAX_THREADS:
                    raise Bad("invalid_input", "block too large")
                if value(body.get("shared_mem_bytes", 0)) > MAX_SHARED:
                    raise Bad("invalid_input", "shared memory")
                into.append(body)
            else:
                times = value(body["times"])
                if times > MAX_REPEAT:
                    raise Bad("invalid_input", "Repeat too many times")
                inner: list[Any] = []
                if times:
                    walk(body["body"], multiplier * times, inner)
                into.append((times, inner))

    walk(bp["control_flow"], 1, program)
    if top > capacity:
        raise Bad("out_of_memory", f"{top} bytes of {capacity}")

    memory = {n: bytearray(sizes[n]) for n in order}
    for n in in_names:
        memory[n][:len(inputs[n])] = inputs[n]

    def run(steps: list[Any]) -> None:
        for step in steps:
            if isinstance(step, tuple):
                for _ in range(step[0]):
                    run(step[1])
                continue
            if step["name"] == "noop":
                continue
            buf = memory[step["args"][0]["Ptr"]]
            v = step["args"][2]["Constant"]["value"]
            if step["name"] == "fill_u8":
                buf[:] = bytes([v]) * len(buf)
            else:
                for i in range(len(buf)):
                    buf[i] = (buf[i] + v) & 0xFF

    run(program)
    result = Outputs((n, bytes(memory[n])) for n in bp["outputs"])
    result.threads = threads[0]
    return result


# --- hostile edits -----------------------------------------------------------------------------

_BIG = [2**32, 2**32 - 1, 2**31, 2**48 + 1, 2**63, 2**64 - 1, 2**64, 2**70, 10**30]
_NEG = [-1, -2**31, -2**63, -2**64]
_WEIRD_STR = ["", " ", "ünïcödé", "ＡＢＣ", "名前", "\u202e", "a" * 65, "a" * 300, "../x", "/etc/passwd",
              "..", "x/y", "x\\y", "\x00", "k\x00", "$", ".hidden", "K", "A-B", "🙂", "\ud7ff", "0x10"]


def json_values(max_leaves: int = 6) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(), st.booleans(),
        st.integers(-2**70, 2**70), st.sampled_from(_BIG + _NEG + [0, 1, 255, 256]),
        st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([0.5, -0.0, 1e308, 3.0]),
        st.text(max_size=20), st.sampled_from(_WEIRD_STR),
    )
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                        max_leaves=max_leaves)


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, path + (i,))
    return out


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        node = node[p]
    return node


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    _get(doc, path[:-1])[path[-1]] = value
    return doc


def _launches(doc: Any) -> list[dict[str, Any]]:
    out = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("ExecKernel"), dict):
                out.append(node["ExecKernel"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    return out


def _nest(kind: str, depth: int, leaf: Any) -> Any:
    node = leaf
    for _ in range(depth):
        node = {kind: [node, 1]} if kind != "CeilDiv" else {"CeilDiv": [node, 1]}
    return node


MUTATIONS = ("delete", "unknown_field", "retype", "wrap", "deep_sizing", "deep_repeat", "grid", "block",
             "from_input_past", "repeat_bomb", "launch_bomb", "rename", "constant", "huge_size", "cycle",
             "overflow", "schema", "library_name", "kernel_name", "shared", "deadline", "duplicate",
             "engine", "many_factors", "top_level")


def _obj(parent: Any, key: str) -> dict[str, Any]:
    """``parent[key]`` as a dict to edit (created if absent); a scratch dict when it is not one."""
    if not isinstance(parent, dict):
        return {}
    value = parent.setdefault(key, {})
    return value if isinstance(value, dict) else {}


def _arr(parent: Any, key: str) -> list[Any]:
    if not isinstance(parent, dict):
        return []
    value = parent.setdefault(key, [])
    return value if isinstance(value, list) else []


def mutate(draw: Any, doc: Any) -> tuple[Any, str]:
    if not isinstance(doc, dict):  # an earlier "top_level" edit: nothing left to edit inside
        return doc, "top_level"
    doc = copy.deepcopy(doc)
    kind = draw(st.sampled_from(MUTATIONS))
    if kind == "top_level":
        return draw(st.sampled_from([[], [doc], 1, None, "x", "/etc/passwd", 1.5, True, [1, 2]])), kind
    bp = doc.get("blueprint") if isinstance(doc.get("blueprint"), dict) else {}
    paths = [p for p in _paths(doc) if p]  # never the document itself (see the module docstring)
    launches = _launches(doc)
    if not paths and kind in ("delete", "retype", "wrap"):
        kind = "unknown_field"
    if kind == "delete":
        path = draw(st.sampled_from(paths))
        parent = _get(doc, path[:-1])
        del parent[path[-1]]
    elif kind == "unknown_field":
        objects = [p for p in _paths(doc) if isinstance(_get(doc, p), dict)]
        target = _get(doc, draw(st.sampled_from(objects)))
        target[draw(st.sampled_from(["zz", "Absolute2", "extra", "ünknown", "__proto__", "constructor"]))] = \
            draw(json_values())
    elif kind == "retype":
        doc = _set(doc, draw(st.sampled_from(paths)), draw(json_values()))
    elif kind == "wrap":
        path = draw(st.sampled_from(paths))
        node = _get(doc, path)
        doc = _set(doc, path, draw(st.sampled_from([[node], {"Mul": [node, node]}, {"Add": [node]},
                                                    {"ExecKernel": node}, {"Repeat": node}, {"x": node}])))
    elif kind == "deep_sizing":
        _obj(bp, "buffers")["deep"] = _nest(draw(st.sampled_from(["Mul", "Add", "CeilDiv"])),
                                                     draw(st.integers(30, 80)), 1)
    elif kind == "deep_repeat":
        node: Any = [{"ExecKernel": {"name": "noop", "args": [], "grid": [1], "block": [1]}}]
        for _ in range(draw(st.integers(15, 40))):
            node = [{"Repeat": {"times": 1, "body": node}}]
        bp["control_flow"] = node
        kernels = _arr(doc, "kernels")
        if "noop" not in kernels:
            kernels.append("noop")
    elif kind in ("grid", "block") and launches:
        launch = draw(st.sampled_from(launches))
        launch[kind] = draw(st.sampled_from([[0], [2**32], [2**31], [2**31 - 1, 65536], [65536, 65536, 65536],
                                             [1, 1, 1, 1], [], [-1], [1.5], ["1"], [None], [{"Absolute": 0}],
                                             [{"Mul": [2**16, 2**16]}], [1024, 2], [33, 33], 5, "8", {}]))
    elif kind == "from_input_past":
        size = draw(st.integers(0, 8))
        _arr(bp, "inputs").append({"name": "fi", "size": size})
        width = draw(st.sampled_from([1, 2, 4, 8]))
        dtype = {1: "u8", 2: "u16", 4: "u32", 8: "u64"}[width]
        _obj(bp, "buffers")["past"] = {"FromInput": {"input": "fi", "index": size // width + draw(
            st.integers(0, 2**40)), "type": dtype}}
    elif kind == "repeat_bomb":
        bp["control_flow"] = [{"Repeat": {"times": draw(st.sampled_from([10**7, 10**7 + 1, 2**32, 2**63, 10**30])),
                                          "body": bp.get("control_flow")}}]
    elif kind == "launch_bomb":
        body = bp.get("control_flow")
        for _ in range(draw(st.integers(2, 6))):
            body = [{"Repeat": {"times": 10_000, "body": body}}]
        bp["control_flow"] = body
    elif kind == "rename":
        weird = draw(st.sampled_from(_WEIRD_STR))
        buffers = _obj(bp, "buffers")
        inputs = _arr(bp, "inputs")
        if buffers and draw(st.booleans()):
            old = draw(st.sampled_from(sorted(buffers, key=str)))
            buffers[weird] = buffers.pop(old)
        elif inputs:
            inputs[0] = weird
        else:
            bp["outputs"] = [weird]
    elif kind == "constant" and launches:
        launch = draw(st.sampled_from(launches))
        _arr(launch, "args").append({"Constant": {
            "type": draw(st.sampled_from(["u8", "i8", "u64", "i64", "f32", "f64", "u128", "bool", "", None, 5,
                                          [], ["u8"], {}, {"u8": 1}])),
            "value": draw(st.one_of(st.sampled_from(_BIG + _NEG + [1.5, 1e39, 3.4e38, -3.5e38]),
                                    json_values()))}})
    elif kind == "huge_size":
        _obj(bp, "buffers")["huge"] = draw(st.sampled_from(
            _BIG + _NEG + [{"Absolute": 2**64}, {"Absolute": -1}, {"Mul": [2**32, 2**32]}, {"Add": [2**64 - 1, 1]},
                           {"CeilDiv": [1, 0]}, {"CeilDiv": [2**64, 1]}, {"Sizeof": "nope"}, {"FromInput": {}},
                           {"FromInput": {"input": "nope", "index": 0}}, {"Absolute": True}, 1.0, "12"]))
    elif kind == "cycle":
        buffers = _obj(bp, "buffers")
        buffers["cy1"] = {"Sizeof": "cy2"}
        buffers["cy2"] = {"Add": [{"Sizeof": "cy1"}, 1]}
    elif kind == "overflow":
        n = draw(st.integers(2, 64))
        _obj(bp, "buffers")["ov"] = {draw(st.sampled_from(["Mul", "Add"])): [2**64 - 1] * n}
    elif kind == "schema":
        doc["schema"] = draw(st.sampled_from(["pappus/function@2", "", None, 1, "PAPPUS/FUNCTION@1", [SCHEMA]]))
    elif kind == "library_name":
        doc["library"] = draw(st.sampled_from(_WEIRD_STR + ["nope", "k2", None, 1]))
    elif kind == "kernel_name":
        name = draw(st.sampled_from(_WEIRD_STR + ["missing_kernel", "fill_u8x", "FILL_U8"]))
        _arr(doc, "kernels").append(name if draw(st.booleans()) else {"name": name, "library": draw(
            st.sampled_from(["k", "nope", "../k", 5]))})
    elif kind == "shared" and launches:
        draw(st.sampled_from(launches))["shared_mem_bytes"] = draw(st.sampled_from(
            [65537, 2**32, -1, {"Absolute": 2**20}, 1.5, "0", None]))
    elif kind == "deadline":
        doc["deadline"] = draw(st.sampled_from([0, -1, 1e308, 86401, "1", None, True, [], 2**64]))
    elif kind == "engine":
        doc["engine"] = draw(st.sampled_from(["nope-sequential", "cpu", "cpu-", "-sequential", "cpu-nope", "", 5]))
    elif kind == "many_factors":
        n = draw(st.integers(100, 3000))
        _obj(bp, "buffers")["mf"] = {draw(st.sampled_from(["Mul", "Add"])): [draw(st.sampled_from([2, 3, 255]))] * n}
    elif kind == "duplicate":
        inputs = _arr(bp, "inputs")
        if inputs:
            inputs.append(inputs[0])
        else:
            kernels = _arr(doc, "kernels")
            kernels.extend(list(kernels))
    return doc, kind


@st.composite
def invalid_cases(draw: Any) -> tuple[Case, list[str]]:
    case = draw(valid_cases())
    doc = case.doc
    kinds = []
    for _ in range(draw(st.integers(1, 3))):
        doc, kind = mutate(draw, doc)
        kinds.append(kind)
    return Case(doc, case.inputs), kinds
