"""JSON -> :class:`FunctionConfig`, reporting every problem as ``path.to.field: message``.

The parser never stops at the first error: it walks the whole document, records each problem
with its location, and raises one :class:`ValidationError` listing them all. Checks that need
the libraries (kernel existence, argument sizes) live in ``signatures.py``.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .._files import read_regular_file
from ..errors import FieldError, ValidationError
from ..kernels import DeviceLimits
from .limits import DEFAULT_LIMITS, DTYPES, INTEGER_DTYPES, U64_MAX, Limits
from .model import (
    SCHEMA_ID,
    Absolute,
    Action,
    Add,
    Arg,
    Blueprint,
    CeilDiv,
    ConstantArg,
    ExecKernel,
    FromInput,
    FunctionConfig,
    InputSpec,
    KernelRef,
    Mul,
    PtrArg,
    Repeat,
    Sizeof,
    SizeofArg,
    Sizing,
    ValueArg,
    iter_launch_paths,
)

LIBRARY_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
BUFFER_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
KERNEL_NAME_RE = re.compile(r"[A-Za-z_.$][A-Za-z0-9_.$]{0,255}")


def library_name_problem(name: object) -> str | None:
    """Why ``name`` is not a safe library or function name, or None when it is."""
    if not isinstance(name, str):
        return f"must be a string, not {json_type_name(name)}"
    if "\x00" in name:
        return "must not contain NUL"
    if len(name) > 64:
        return f"is {len(name)} characters long; at most 64 are allowed"
    if name.startswith("/"):
        return "must be a name, not an absolute path"
    if ".." in name or "/" in name or "\\" in name:
        return "must not contain '..', '/' or '\\' (names are not paths)"
    if not LIBRARY_NAME_RE.fullmatch(name):
        return "must match [a-z0-9][a-z0-9_.-]{0,63}"
    return None


#: past these a misspelling gets no suggestion (difflib's cost grows with both)
_SUGGEST_MAX_LEN = 256
_SUGGEST_MAX_CHOICES = 1000
#: suggestions one config gets at most (its errors are all listed, each costs a search)
_SUGGEST_BUDGET = 32


def did_you_mean(word: object, choices: Iterable[str], cutoff: float = 0.75) -> str | None:
    """The choice closest to a misspelt ``word`` (case, ``-`` and ``_`` ignored), or None."""
    if not isinstance(word, str) or len(word) > _SUGGEST_MAX_LEN:
        return None

    def norm(text: str) -> str:
        return text.lower().replace("-", "_")

    candidates = list(itertools.islice(choices, _SUGGEST_MAX_CHOICES + 1))
    if len(candidates) > _SUGGEST_MAX_CHOICES:
        return None
    by_norm: dict[str, str] = {}
    for choice in sorted(c for c in candidates if isinstance(c, str) and len(c) <= _SUGGEST_MAX_LEN):
        by_norm.setdefault(norm(choice), choice)
    close = difflib.get_close_matches(norm(word), list(by_norm), n=1, cutoff=cutoff)
    return by_norm[close[0]] if close and by_norm[close[0]] != word else None


def json_type_name(value: object) -> str:
    """The JSON name of a decoded value's type, for messages ("integer", "array", "null")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def is_int(value: object) -> bool:
    """An integer that is not a boolean (JSON true is a Python int)."""
    return isinstance(value, int) and not isinstance(value, bool)


class _Parser:
    def __init__(self, limits: Limits, device: DeviceLimits) -> None:
        self.limits = limits
        self.device = device
        self.errors: list[FieldError] = []
        self.actions_seen = 0
        self.input_sizes: dict[str, int | None] = {}
        #: paths reported as "is required": nothing more is said about them
        self.missing: set[str] = set()
        #: fields that an unknown field looks like a misspelling of ("libary" -> "library")
        self.misspelt: set[str] = set()
        #: inputs whose declared size was wrong (reported there, not again where they are read)
        self.bad_sizes: set[str] = set()
        #: False once the inputs or buffers could not be read whole: then a name that is not
        #: among the known ones may still be declared, and is not reported as unknown
        self.names_complete = True
        #: input and buffer names already reported as wrong: naming them elsewhere is no new error
        self.wrong_names: set[str] = set()
        self.suggestions_left = _SUGGEST_BUDGET

    def err(self, path: str, message: str) -> None:
        # An error is reported once, at its root: a field found missing is not also wrong.
        if path not in self.missing:
            self.errors.append(FieldError(path, message))

    def suggest(self, word: object, choices: Iterable[str]) -> str | None:
        if self.suggestions_left <= 0:
            return None
        self.suggestions_left -= 1
        return did_you_mean(word, choices)

    def hint(self, word: object, choices: Iterable[str]) -> str:
        """``", did you mean 'X'?"`` for a close match among ``choices``, else ``""``."""
        match = self.suggest(word, choices)
        return f", did you mean {_key(match)!r}?" if match is not None else ""

    def unknown_name(self, name: str, names: set[str]) -> bool:
        return name not in names and name not in self.wrong_names and self.names_complete

    # --- helpers ---------------------------------------------------------------------------

    def expect_object(self, value: object, path: str, allowed: set[str], required: set[str]) -> bool:
        if not isinstance(value, dict):
            self.err(path, f"must be an object, not {json_type_name(value)}")
            return False
        for key in value:
            if key not in allowed:
                match = self.suggest(key, (a for a in allowed if a not in value))
                suggestion = f", did you mean {match!r}?" if match is not None else ""
                if match is not None:
                    self.misspelt.add(_join(path, match))
                hint = f" (allowed: {', '.join(sorted(allowed))})" if allowed else ""
                self.err(_join(path, _key(key)), f"unknown field{suggestion}{hint}")
        for key in sorted(required):
            if key not in value:
                self.err(_join(path, key), "is required")
                self.missing.add(_join(path, key))
        return True

    # --- top level -------------------------------------------------------------------------

    def function(self, doc: object) -> FunctionConfig | None:
        allowed = {"schema", "library", "kernels", "blueprint", "deadline", "engine", "description"}
        if not self.expect_object(doc, "", allowed, {"schema", "kernels", "blueprint"}):
            return None
        assert isinstance(doc, dict)
        schema = doc.get("schema")
        if "schema" in doc and schema != SCHEMA_ID:
            self.err("schema", f"must be {SCHEMA_ID!r}, not {schema!r}")

        library = doc.get("library")
        library_wrong = False
        if library is not None:
            problem = library_name_problem(library)
            if problem:
                self.err("library", problem)
                library, library_wrong = None, True

        kernels, listed = self.kernel_refs(doc.get("kernels"), library if isinstance(library, str) else None,
                                           library_wrong)
        blueprint = self.blueprint(doc.get("blueprint"), listed)

        deadline = doc.get("deadline")
        if deadline is not None:
            if not isinstance(deadline, (int, float)) or isinstance(deadline, bool):
                self.err("deadline", f"must be a number of seconds, not {json_type_name(deadline)}")
                deadline = None
            elif (isinstance(deadline, float) and math.isnan(deadline)) or deadline <= 0:
                self.err("deadline", "must be a positive number of seconds")
                deadline = None
            elif deadline > self.limits.max_deadline:  # exact for ints of any size, and for inf
                self.err("deadline", f"{_show(deadline)} s exceeds the limit of {self.limits.max_deadline:g} s")
                deadline = None
        engine = doc.get("engine")
        if engine is not None and not (isinstance(engine, str) and re.fullmatch(r"[a-z0-9_-]{1,64}", engine)):
            self.err("engine", "must be an engine name such as 'cpu-multiprocess'")
            engine = None
        description = doc.get("description")
        if description is not None and not isinstance(description, str):
            self.err("description", f"must be a string, not {json_type_name(description)}")
            description = None
        elif description is not None and _key(description) != description:
            self.err("description", "must be valid Unicode text (it holds a lone surrogate)")
            description = None
        if self.errors or blueprint is None:
            return None
        return FunctionConfig(
            schema=SCHEMA_ID,
            library=library if isinstance(library, str) else None,
            kernels=tuple(kernels),
            blueprint=blueprint,
            deadline=float(deadline) if deadline is not None else None,
            engine=engine,
            description=description,
        )

    def kernel_refs(self, value: object, default_library: str | None,
                    library_wrong: bool) -> tuple[list[KernelRef], set[str] | None]:
        """The kernels, and the names listed (also those of wrong entries: a launch of one is
        not a second error); None for the names when the list itself could not be read."""
        refs: list[KernelRef] = []
        if not isinstance(value, list):  # null too; a missing one is reported as required, and only so
            self.err("kernels", f"must be an array of kernel names, not {json_type_name(value)}")
            return refs, None
        if not value:
            self.err("kernels", "must name at least one kernel")
        if len(value) > self.limits.max_kernels:
            self.err("kernels", f"{len(value)} kernels exceed the limit of {self.limits.max_kernels}")
            return refs, None
        listed = {n for n in (e.get("name") if isinstance(e, dict) else e for e in value) if isinstance(n, str)}
        seen: set[str] = set()
        for i, entry in enumerate(value):
            path = f"kernels[{i}]"
            name: object
            library: object = default_library
            if isinstance(entry, dict):
                if not self.expect_object(entry, path, {"name", "library"}, {"name"}):
                    continue
                name = entry.get("name")
                if "library" in entry:
                    library = entry["library"]
                    problem = library_name_problem(library)
                    if problem:
                        self.err(_join(path, "library"), problem)
                        continue
            else:
                name = entry
            if not isinstance(name, str):
                self.err(path if not isinstance(entry, dict) else _join(path, "name"),
                         f"must be a kernel name, not {json_type_name(name)}")
                continue
            if not KERNEL_NAME_RE.fullmatch(name):
                self.err(path, f"{name[:80]!r} is not a valid kernel symbol name")
                continue
            if library is None:
                # With a wrong or misspelt 'library' that is the one error, reported there.
                if not library_wrong and not {"library", _join(path, "library")} & self.misspelt:
                    self.err(path, f"kernel {name!r} has no library: give the function a default 'library' "
                             f"or use {{\"name\", \"library\"}}")
                continue
            if name in seen:
                self.err(path, f"kernel {name!r} is listed twice")
                continue
            seen.add(name)
            refs.append(KernelRef(name=name, library=str(library)))
        return refs, listed

    # --- blueprint -------------------------------------------------------------------------

    def blueprint(self, value: object, kernel_names: set[str] | None) -> Blueprint | None:
        path = "blueprint"
        allowed = {"inputs", "buffers", "outputs", "control_flow"}
        if not self.expect_object(value, path, allowed, {"outputs", "control_flow"}):
            return None
        assert isinstance(value, dict)
        inputs = self.inputs(value.get("inputs", []))
        self.input_sizes = {spec.name: spec.size for spec in inputs}
        input_names = {spec.name for spec in inputs}
        raw_buffers = value.get("buffers", {})
        buffers = self.buffers(raw_buffers, input_names)
        # A buffer whose size is wrong still exists: naming it elsewhere is no second error.
        names = input_names | {name for name, _ in buffers}
        if isinstance(raw_buffers, dict):
            names |= {name for name in raw_buffers if isinstance(name, str) and BUFFER_NAME_RE.fullmatch(name)}

        # Inputs are buffers of their own size unless the blueprint sizes them explicitly.
        declared = {name for name, _ in buffers}
        all_buffers: list[tuple[str, Sizing]] = [(spec.name, Sizeof(spec.name)) for spec in inputs
                                                 if spec.name not in declared]
        all_buffers += buffers

        self.check_sizing_graph(all_buffers, inputs)
        outputs = self.outputs(value.get("outputs"), names)
        raw_flow = value.get("control_flow")
        flow = self.actions(raw_flow, "blueprint.control_flow", names, kernel_names, 1)
        if raw_flow == []:
            self.err("blueprint.control_flow", "must launch at least one kernel")
        if flow is not None:
            total = self.static_launch_count(flow)
            if total is not None and total > self.limits.max_launches:
                self.err("blueprint.control_flow",
                         f"launches {total} kernels in total; the limit is {self.limits.max_launches}")
        if flow is None:
            return None
        return Blueprint(inputs=tuple(inputs), buffers=tuple(all_buffers), outputs=tuple(outputs),
                         control_flow=tuple(flow))

    def inputs(self, value: object) -> list[InputSpec]:
        path = "blueprint.inputs"
        specs: list[InputSpec] = []
        if not isinstance(value, list):
            self.err(path, f"must be an array of input names, not {json_type_name(value)}")
            self.names_complete = False
            return specs
        if len(value) > self.limits.max_inputs:
            self.err(path, f"{len(value)} inputs exceed the limit of {self.limits.max_inputs}")
            self.names_complete = False
            return specs
        seen: set[str] = set()
        for i, entry in enumerate(value):
            p = f"{path}[{i}]"
            size = None
            bad_size = False
            if isinstance(entry, dict):
                if not self.expect_object(entry, p, {"name", "size"}, {"name"}):
                    continue
                if "name" not in entry:  # reported as required
                    self.names_complete = False
                    continue
                name = entry.get("name")
                if "size" in entry:
                    size = entry["size"]
                    if not is_int(size) or size < 0:
                        self.err(_join(p, "size"), "must be a non-negative integer number of bytes")
                        size, bad_size = None, True
                    elif size > self.limits.max_buffer_bytes:
                        self.err(_join(p, "size"), f"{_show(size)} bytes exceed the limit of "
                                 f"{self.limits.max_buffer_bytes}")
                        size, bad_size = None, True
            else:
                name = entry
            if not isinstance(name, str) or not BUFFER_NAME_RE.fullmatch(name):
                self.err(p, f"{_short(name)} is not a valid input name ([A-Za-z_][A-Za-z0-9_]{{0,63}})")
                if isinstance(name, str):
                    self.wrong_names.add(name)
                else:
                    self.names_complete = False
                continue
            if bad_size:
                self.bad_sizes.add(name)
            if name in seen:
                self.err(p, f"input {name!r} is listed twice")
                continue
            seen.add(name)
            specs.append(InputSpec(name=name, size=size))
        return specs

    def buffers(self, value: object, input_names: set[str]) -> list[tuple[str, Sizing]]:
        path = "blueprint.buffers"
        out: list[tuple[str, Sizing]] = []
        if not isinstance(value, dict):
            self.err(path, f"must be an object mapping buffer names to sizes, not {json_type_name(value)}")
            self.names_complete = False
            return out
        if len(value) > self.limits.max_buffers:
            self.err(path, f"{len(value)} buffers exceed the limit of {self.limits.max_buffers}")
            self.names_complete = False
            return out
        known = input_names | set(value)
        for name, spec in value.items():
            p = _join(path, _key(name))
            if not isinstance(name, str) or not BUFFER_NAME_RE.fullmatch(name):
                self.err(p, "is not a valid buffer name ([A-Za-z_][A-Za-z0-9_]{0,63})")
                self.wrong_names.add(name)
                continue
            sizing = self.sizing(spec, p, known, 0)
            if sizing is not None:
                static = self.static_value(sizing)
                if static is not None and static > self.limits.max_buffer_bytes:
                    self.err(p, f"size {static} bytes exceeds the limit of {self.limits.max_buffer_bytes}")
                    continue
                out.append((name, sizing))
        return out

    def outputs(self, value: object, names: set[str]) -> list[str]:
        path = "blueprint.outputs"
        out: list[str] = []
        if not isinstance(value, list):
            self.err(path, f"must be an array of buffer names, not {json_type_name(value)}")
            return out
        for i, name in enumerate(value):
            p = f"{path}[{i}]"
            if not isinstance(name, str):
                self.err(p, f"must be a buffer name, not {json_type_name(name)}")
            elif self.unknown_name(name, names):
                self.err(p, f"output {name!r} is not an input or buffer{self.hint(name, names)}")
            elif name in out:
                self.err(p, f"output {name!r} is listed twice")
            else:
                out.append(name)
        return out

    # --- sizes -----------------------------------------------------------------------------

    def sizing(self, value: object, path: str, names: set[str], depth: int) -> Sizing | None:
        if depth > self.limits.max_sizing_depth:
            self.err(path, f"sizes nest deeper than {self.limits.max_sizing_depth} levels")
            return None
        if is_int(value):
            assert isinstance(value, int)
            return self.absolute(value, path)
        if not isinstance(value, dict) or len(value) != 1:
            self.err(path, "must be a size: an integer, or one of {\"Absolute\"}, {\"Sizeof\"}, "
                           "{\"FromInput\"}, {\"Mul\"}, {\"Add\"}, {\"CeilDiv\"}")
            return None
        (kind, body), = value.items()
        p = _join(path, kind)
        if kind == "Absolute":
            if not is_int(body):
                self.err(p, f"must be an integer, not {json_type_name(body)}")
                return None
            return self.absolute(body, p)
        if kind == "Sizeof":
            if not isinstance(body, str):
                self.err(p, f"must name an input or buffer, not {json_type_name(body)}")
                return None
            if self.unknown_name(body, names):
                self.err(p, f"{body!r} is not an input or buffer{self.hint(body, names)}")
                return None
            return Sizeof(body)
        if kind == "FromInput":
            if not self.expect_object(body, p, {"input", "index", "type"}, {"input", "index"}):
                return None
            assert isinstance(body, dict)
            name, index, dtype = body.get("input"), body.get("index"), body.get("type", "u64")
            ok = True
            if not isinstance(name, str):
                self.err(_join(p, "input"), "must name an input")
                ok = False
            if not is_int(index) or index < 0:  # type: ignore[operator]
                self.err(_join(p, "index"), "must be a non-negative integer")
                ok = False
            if dtype not in INTEGER_DTYPES:
                self.err(_join(p, "type"), f"must be one of {', '.join(INTEGER_DTYPES)}")
                ok = False
            if not ok:
                return None
            read = FromInput(input=str(name), index=int(index), dtype=str(dtype))  # type: ignore[arg-type]
            before = len(self.errors)
            self.check_from_input(read, path, self.input_sizes)
            return read if len(self.errors) == before else None
        if kind in ("Mul", "Add"):
            if not isinstance(body, list) or not body:
                self.err(p, "must be a non-empty array of sizes")
                return None
            parsed = [self.sizing(v, f"{p}[{i}]", names, depth + 1) for i, v in enumerate(body)]
            items = tuple(part for part in parsed if part is not None)
            if len(items) != len(parsed):
                return None
            node: Sizing = Mul(items) if kind == "Mul" else Add(items)
            static = self.static_value(node)
            if static is not None and static > U64_MAX:
                self.err(p, f"overflows 64 bits (more than {U64_MAX})")
                return None
            return node
        if kind == "CeilDiv":
            if not isinstance(body, list) or len(body) != 2:
                self.err(p, "must be an array [numerator, denominator]")
                return None
            num = self.sizing(body[0], f"{p}[0]", names, depth + 1)
            den = self.sizing(body[1], f"{p}[1]", names, depth + 1)
            if num is None or den is None:
                return None
            if self.static_value(den) == 0:
                self.err(f"{p}[1]", "divides by zero")
                return None
            return CeilDiv(num, den)
        kinds = ("Absolute", "Sizeof", "FromInput", "Mul", "Add", "CeilDiv")
        self.err(path, f"unknown size kind {_key(kind)!r}{self.hint(kind, kinds)} "
                 "(use Absolute, Sizeof, FromInput, Mul, Add or CeilDiv)")
        return None

    def absolute(self, value: int, path: str) -> Absolute | None:
        if value < 0:
            self.err(path, f"must not be negative ({_show(value)})")
            return None
        if value > U64_MAX:
            self.err(path, f"{_show(value)} does not fit in 64 bits")
            return None
        return Absolute(value)

    def static_value(self, sizing: Sizing) -> int | None:
        """The value of a size that does not depend on inputs, else None.

        Products and sums saturate at ``2**64`` (one past ``U64_MAX``): anything larger is refused
        the same way, and no giant integer is ever built (its cost grows with every factor).
        """
        if isinstance(sizing, Absolute):
            return min(sizing.value, _SATURATED)
        if isinstance(sizing, Mul):
            vals = [self.static_value(f) for f in sizing.factors]
            if any(v == 0 for v in vals):
                return 0
            if any(v is None for v in vals):
                return None
            product = 1
            for v in vals:
                product = min(product * v, _SATURATED)  # type: ignore[operator]
            return product
        if isinstance(sizing, Add):
            vals = [self.static_value(t) for t in sizing.terms]
            if any(v is None for v in vals):
                return None
            total = 0
            for v in vals:
                total = min(total + v, _SATURATED)  # type: ignore[operator]
            return total
        if isinstance(sizing, CeilDiv):
            num, den = self.static_value(sizing.numerator), self.static_value(sizing.denominator)
            if num is None or den is None or den == 0:
                return None
            return -(-num // den)
        return None

    def check_sizing_graph(self, buffers: list[tuple[str, Sizing]], inputs: list[InputSpec]) -> None:
        """FromInput reads stay inside declared inputs; buffer sizes do not depend on each other in a cycle.

        In a size expression ``Sizeof(X)`` means the bytes of input ``X`` when ``X`` is an input
        (known when the invocation arrives), else the size of buffer ``X``.
        """
        sizes = {spec.name: spec.size for spec in inputs}
        deps: dict[str, set[str]] = {}
        for name, sizing in buffers:
            refs: set[str] = set()
            self.sizing_refs(sizing, f"blueprint.buffers.{name}", sizes, refs)
            deps[name] = {r for r in refs if r not in sizes}
        state: dict[str, int] = {}

        def visit(node: str, trail: list[str]) -> None:
            if state.get(node) == 2:
                return
            if state.get(node) == 1:
                cycle = trail[trail.index(node):] + [node]
                self.err(f"blueprint.buffers.{node}", "sizes depend on each other in a cycle: "
                         + " -> ".join(cycle))
                return
            state[node] = 1
            for dep in sorted(deps.get(node, ())):
                visit(dep, trail + [node])
            state[node] = 2

        for name, _ in buffers:
            visit(name, [])

    def sizing_refs(self, sizing: Sizing, path: str, sizes: dict[str, int | None], refs: set[str]) -> None:
        if isinstance(sizing, Sizeof):
            refs.add(sizing.name)
        elif isinstance(sizing, Mul):
            for f in sizing.factors:
                self.sizing_refs(f, path, sizes, refs)
        elif isinstance(sizing, Add):
            for t in sizing.terms:
                self.sizing_refs(t, path, sizes, refs)
        elif isinstance(sizing, CeilDiv):
            self.sizing_refs(sizing.numerator, path, sizes, refs)
            self.sizing_refs(sizing.denominator, path, sizes, refs)

    def check_from_input(self, sizing: FromInput, path: str, sizes: dict[str, int | None]) -> None:
        p = f"{path}.FromInput"
        if sizing.input in self.bad_sizes or (sizing.input not in sizes and not self.unknown_name(sizing.input, set())):
            return  # the input's own error says it all
        if sizing.input not in sizes:
            self.err(p + ".input", f"{sizing.input!r} is not an input{self.hint(sizing.input, sizes)}")
            return
        size = sizes[sizing.input]
        width = DTYPES[sizing.dtype][0]
        if size is None:
            self.err(p + ".input", f"input {sizing.input!r} has no declared size, so the read cannot be "
                     f"checked; declare it as {{\"name\": \"{sizing.input}\", \"size\": BYTES}}")
            return
        end = (sizing.index + 1) * width
        if end > size:
            self.err(p + ".index", f"reads bytes {_show(end - width)}..{_show(end)} of input {sizing.input!r}, "
                     f"which has only {size} bytes")

    # --- control flow ----------------------------------------------------------------------

    def actions(self, value: object, path: str, names: set[str], kernels: set[str] | None,
                depth: int) -> list[Action] | None:
        if not isinstance(value, list):
            self.err(path, f"must be an array of actions, not {json_type_name(value)}")
            return None
        if depth > self.limits.max_nesting:
            self.err(path, f"Repeat nests deeper than {self.limits.max_nesting} levels")
            return None
        out: list[Action] = []
        for i, entry in enumerate(value):
            self.actions_seen += 1
            if self.actions_seen > self.limits.max_actions:
                self.err(path, f"more than {self.limits.max_actions} actions")
                return None
            p = f"{path}[{i}]"
            if not isinstance(entry, dict) or len(entry) != 1:
                self.err(p, "must be {\"ExecKernel\": {...}} or {\"Repeat\": {...}}")
                continue
            (kind, body), = entry.items()
            action: Action | None
            if kind == "ExecKernel":
                action = self.exec_kernel(body, f"{p}.ExecKernel", names, kernels)
            elif kind == "Repeat":
                action = self.repeat(body, f"{p}.Repeat", names, kernels, depth)
            else:
                self.err(p, f"unknown action {_key(kind)!r}{self.hint(kind, ('ExecKernel', 'Repeat'))} "
                         "(use ExecKernel or Repeat)")
                continue
            if action is not None:
                out.append(action)
        return out

    def exec_kernel(self, body: object, path: str, names: set[str], kernels: set[str] | None) -> ExecKernel | None:
        allowed = {"name", "args", "grid", "block", "shared_mem_bytes"}
        if not self.expect_object(body, path, allowed, {"name", "args", "grid", "block"}):
            return None
        assert isinstance(body, dict)
        before = len(self.errors)
        name = body.get("name")
        if not isinstance(name, str):
            self.err(_join(path, "name"), f"must be a kernel name, not {json_type_name(name)}")
        elif kernels is not None and name not in kernels:
            self.err(_join(path, "name"), f"kernel {name!r} is not listed in 'kernels'{self.hint(name, kernels)}")
        args = self.args(body.get("args"), _join(path, "args"), names)
        grid = self.dims(body.get("grid"), _join(path, "grid"), names, self.device.max_grid_dims)
        block = self.dims(body.get("block"), _join(path, "block"), names, self.device.max_block_dims)
        if block is not None:
            vals = [self.static_value(d) for d in block]
            if all(v is not None for v in vals):
                threads = math.prod(vals)  # type: ignore[arg-type]
                if threads > self.device.max_block_threads:
                    self.err(_join(path, "block"), f"{threads} threads per block exceed the device "
                             f"limit of {self.device.max_block_threads}")
        shared: Sizing = Absolute(0)
        if "shared_mem_bytes" in body:
            s = self.sizing(body["shared_mem_bytes"], _join(path, "shared_mem_bytes"), names, 0)
            if s is not None:
                v = self.static_value(s)
                if v is not None and v > self.device.max_shared_bytes:
                    self.err(_join(path, "shared_mem_bytes"),
                             f"{v} bytes exceed the device limit of {self.device.max_shared_bytes}")
                shared = s
        if len(self.errors) != before or args is None or grid is None or block is None:
            return None
        return ExecKernel(kernel=name, args=tuple(args), grid=grid, block=block,  # type: ignore[arg-type]
                          shared_mem_bytes=shared)

    def dims(self, value: object, path: str, names: set[str], maxima: tuple[int, int, int]):  # type: ignore[no-untyped-def]
        if not isinstance(value, list) or not 1 <= len(value) <= 3:
            self.err(path, "must be an array of 1 to 3 dimensions, e.g. [8, 8, 1]")
            return None
        dims: list[Sizing] = []
        ok = True
        for i, v in enumerate(value):
            p = f"{path}[{i}]"
            s = self.sizing(v, p, names, 0)
            if s is None:
                ok = False
                continue
            static = self.static_value(s)
            if static == 0:
                self.err(p, "must be at least 1 (a zero-size launch does nothing)")
                ok = False
            elif static is not None and static > maxima[i]:
                self.err(p, f"{static} exceeds the device limit of {maxima[i]}")
                ok = False
            dims.append(s)
        if not ok:
            return None
        while len(dims) < 3:
            dims.append(Absolute(1))
        return (dims[0], dims[1], dims[2])

    def args(self, value: object, path: str, names: set[str]) -> list[Arg] | None:
        if not isinstance(value, list):
            self.err(path, f"must be an array of arguments, not {json_type_name(value)}")
            return None
        if len(value) > self.limits.max_args:
            self.err(path, f"{len(value)} arguments exceed the limit of {self.limits.max_args}")
            return None
        out: list[Arg] = []
        ok = True
        for i, entry in enumerate(value):
            p = f"{path}[{i}]"
            arg = self.arg(entry, p, names)
            if arg is None:
                ok = False
            else:
                out.append(arg)
        return out if ok else None

    def arg(self, entry: object, path: str, names: set[str]) -> Arg | None:
        if not isinstance(entry, dict) or len(entry) != 1:
            self.err(path, "must be {\"Ptr\": buffer}, {\"Sizeof\": buffer}, "
                           "{\"Constant\": {\"type\": ..., \"value\": ...}} or {\"Value\": {\"type\": ..., \"value\": size}}")
            return None
        (kind, body), = entry.items()
        p = _join(path, kind)
        if kind in ("Ptr", "Sizeof"):
            if not isinstance(body, str):
                self.err(p, f"must name a buffer, not {json_type_name(body)}")
                return None
            if self.unknown_name(body, names):
                self.err(p, f"{body!r} is not an input or buffer{self.hint(body, names)}")
                return None
            return PtrArg(body) if kind == "Ptr" else SizeofArg(body)
        if kind == "Constant":
            if not self.expect_object(body, p, {"type", "value"}, {"type", "value"}):
                return None
            assert isinstance(body, dict)
            dtype, val = body.get("type"), body.get("value")
            if not isinstance(dtype, str) or dtype not in DTYPES:
                self.err(_join(p, "type"), f"must be one of {', '.join(DTYPES)}")
                return None
            _, kind_, lo, hi = DTYPES[dtype]
            if kind_ == "float":
                if isinstance(val, bool) or not isinstance(val, (int, float)):
                    self.err(_join(p, "value"), f"must be a number, not {json_type_name(val)}")
                    return None
                if (isinstance(val, float) and not math.isfinite(val)) or not lo <= val <= hi:
                    self.err(_join(p, "value"), f"{_show(val)} does not fit in {dtype}")
                    return None
                return ConstantArg(dtype, float(val))
            if not is_int(val):
                self.err(_join(p, "value"), f"must be an integer for {dtype}, not {json_type_name(val)}")
                return None
            if not lo <= val <= hi:  # type: ignore[operator]
                self.err(_join(p, "value"), f"{_show(val)} does not fit in {dtype} ({int(lo)}..{int(hi)})")
                return None
            return ConstantArg(dtype, int(val))  # type: ignore[arg-type]
        if kind == "Value":
            if not self.expect_object(body, p, {"type", "value"}, {"type", "value"}):
                return None
            assert isinstance(body, dict)
            dtype = body.get("type")
            if dtype not in INTEGER_DTYPES:
                self.err(_join(p, "type"), f"must be one of {', '.join(INTEGER_DTYPES)}")
                return None
            sizing = self.sizing(body.get("value"), _join(p, "value"), names, 0)
            if sizing is None:
                return None
            static = self.static_value(sizing)
            if static is not None and static > DTYPES[dtype][3]:
                self.err(_join(p, "value"), f"{static} does not fit in {dtype}")
                return None
            return ValueArg(dtype, sizing)
        kinds = ("Ptr", "Sizeof", "Constant", "Value")
        self.err(path, f"unknown argument kind {_key(kind)!r}{self.hint(kind, kinds)} (use Ptr, Sizeof, Constant or Value)")
        return None

    def repeat(self, body: object, path: str, names: set[str], kernels: set[str] | None,
               depth: int) -> Repeat | None:
        if not self.expect_object(body, path, {"times", "body"}, {"times", "body"}):
            return None
        assert isinstance(body, dict)
        times = self.sizing(body.get("times"), _join(path, "times"), names, 0)
        if times is not None:
            v = self.static_value(times)
            if v is not None and v > self.limits.max_repeat:
                self.err(_join(path, "times"), f"{v} repetitions exceed the limit of {self.limits.max_repeat}")
                times = None
        inner = self.actions(body.get("body"), _join(path, "body"), names, kernels, depth + 1)
        if times is None or inner is None:
            return None
        return Repeat(times=times, body=tuple(inner))

    def static_launch_count(self, actions: list[Action] | tuple[Action, ...]) -> int | None:
        total = 0
        for action in actions:
            if isinstance(action, ExecKernel):
                total += 1
            else:
                n = self.static_value(action.times)
                inner = self.static_launch_count(action.body)
                if n is None or inner is None:
                    return None
                total += n * inner
        return total


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


_SATURATED = U64_MAX + 1  # static sizes are computed up to here and no further


def _key(key: object) -> str:
    """A mapping key as it may appear in an error path: a string, with any lone surrogate
    escaped (an error must always be encodable as UTF-8, e.g. in an HTTP body)."""
    text = key if isinstance(key, str) else _short(key)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _show(value: object) -> str:
    """A number for an error message; never fails (huge ints cannot always become text)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"a {value.bit_length()}-bit integer"
    return repr(value)


def _short(value: object) -> str:
    text = _show(value) if isinstance(value, int) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def load_config_document(source: str | Path | bytes | Mapping[str, Any], limits: Limits = DEFAULT_LIMITS) -> Any:
    """Read a config from a path, JSON text/bytes or an already-decoded mapping."""
    if isinstance(source, Mapping):
        return dict(source)
    if isinstance(source, Path) or (isinstance(source, str) and source.lstrip()[:1] not in ("{", "[")):
        path = Path(source)

        def check(size: int) -> None:
            if size > limits.max_config_bytes:
                raise ValidationError(FieldError("", f"config is {size} bytes; the limit is {limits.max_config_bytes}"))

        try:  # a regular file only, read with a cap (never a device, FIFO or directory)
            source = read_regular_file(path, limits.max_config_bytes, check)
        except OSError as exc:
            raise ValidationError(FieldError("", f"cannot read config {str(path)!r}: {exc.strerror}")) from None
    if isinstance(source, (bytes, bytearray)):
        if len(source) > limits.max_config_bytes:
            raise ValidationError(FieldError("", f"config is {len(source)} bytes; the limit is {limits.max_config_bytes}"))
        try:
            source = bytes(source).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationError(FieldError("", f"config is not UTF-8: {exc.reason} at byte {exc.start}")) from None
    if not isinstance(source, str):  # an already-decoded document that is not an object
        raise ValidationError(FieldError("", f"a config must be a JSON object, not {json_type_name(source)}"))
    if len(source) > limits.max_config_bytes:
        raise ValidationError(FieldError("", f"config is {len(source)} characters; the limit is {limits.max_config_bytes}"))
    try:
        doc = json.loads(source, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ValidationError(FieldError("", f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")) from None
    except RecursionError:
        raise ValidationError(FieldError("", "JSON nests too deeply")) from None
    except ValueError as exc:
        raise ValidationError(FieldError("", str(exc))) from None
    # Only an object is a config. Anything else is refused here, so that no caller hands a
    # decoded value back in as a source: a JSON string would be taken for a path to read.
    if not isinstance(doc, dict):
        raise ValidationError(FieldError("", f"a config must be a JSON object, not {json_type_name(doc)}"))
    return doc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in a config")


def parse_function(
    source: str | Path | bytes | Mapping[str, Any],
    *,
    limits: Limits = DEFAULT_LIMITS,
    device: DeviceLimits | None = None,
) -> FunctionConfig:
    """Parse and validate a function config; raise :class:`ValidationError` listing every problem."""
    doc = load_config_document(source, limits)
    parser = _Parser(limits, device or DeviceLimits())
    try:
        config = parser.function(doc)
    except RecursionError:
        raise ValidationError(FieldError("", "config nests too deeply")) from None
    if parser.errors:
        raise ValidationError(parser.errors)
    assert config is not None
    _every_launch_listed(config)
    return config


def _every_launch_listed(config: FunctionConfig) -> None:
    """A safety net under the parser: a config that parsed never launches a kernel it does not list
    (an engine would have no handle for it). Reaching the error here is a parser bug."""
    listed = {ref.name for ref in config.kernels}
    for path, launch in iter_launch_paths(config.blueprint.control_flow):
        if launch.kernel not in listed:
            raise ValidationError(FieldError(f"{path}.name", f"kernel {launch.kernel!r} is not listed in 'kernels'"))
