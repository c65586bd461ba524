"""Import and export the GPU function configs of Dandelion (ETH EASL), both generations.

Dandelion's GPU backend (``machine_interface/src/function_driver/compute_driver/gpu/`` in
``eth-easl/dandelion``, branch ``dev/gpu``) describes a function with a JSON config that
``serde`` deserialises into Rust types. Two generations exist:

* **thesis** (2024, the format of the thesis' Listing 4.1): ``module_path`` (one code
  object), ``kernels`` (a list of names) and a ``blueprint``;
* **modules** (since November 2024): ``modules`` (a list of ``{module_name, path}``) and
  ``kernels`` (a list of ``{module_name, kernel_name}``); the blueprint is the same, plus an
  optional ``weights`` list in 2025 versions.

Both blueprints spell actions as ``{"ExecKernel": [name, [args], {launch}]}`` and
``{"Repeat": [times, [actions]]}``; sizes as ``{"Absolute": n}``, ``{"Sizeof": name}`` and
``{"FromInput": {"bufname": name, "idx": i}}`` (a u64 read at byte ``8*i`` of an input);
arguments as ``{"Ptr": name}``, ``{"Sizeof": name}`` and ``{"Constant": n}`` (an i64).

:func:`import_dandelion` turns either into a ``pappus/function@1`` config with the same
semantics, resolving every module path safely inside a modules directory, and reports every
problem at once in upstream's own terms (``blueprint.control_flow[2].ExecKernel[2].grid_dim_x``).
:func:`export_dandelion` goes the other way for functions that fit upstream's model.
``docs/dandelion.md`` lists every difference between the two systems and why pappus differs.
"""

from __future__ import annotations

import copy
import re
import struct
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from ..config.limits import DEFAULT_LIMITS, DTYPES, U64_MAX, Limits
from ..config.model import (
    SCHEMA_ID,
    Absolute,
    Action,
    Add,
    CeilDiv,
    ConstantArg,
    ExecKernel,
    FromInput,
    FunctionConfig,
    Mul,
    PtrArg,
    Repeat,
    Sizeof,
    SizeofArg,
    Sizing,
)
from ..config.parser import (
    BUFFER_NAME_RE,
    KERNEL_NAME_RE,
    is_int,
    json_type_name,
    library_name_problem,
    load_config_document,
    parse_function,
)
from ..errors import FieldError, ValidationError
from ..kernels import DeviceLimits, LibraryInfo, ParamKind

__all__ = [
    "GENERATIONS", "ImportResult", "detect_dandelion", "import_dandelion", "export_dandelion",
    "narrow_constants", "upstream_from_input_accepts", "pappus_from_input_accepts",
]

GENERATIONS = ("thesis", "modules")

#: Upstream's FromInput reads one u64; ``idx`` counts such 8-byte elements.
ELEMENT_BYTES = 8
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
USIZE_MOD = 2**64

LAUNCH_FIELDS = ("grid_dim_x", "grid_dim_y", "grid_dim_z",
                 "block_dim_x", "block_dim_y", "block_dim_z", "shared_mem_bytes")

_TOP_FIELDS = {
    "thesis": ("module_path", "kernels", "blueprint"),
    "modules": ("modules", "kernels", "blueprint"),
}
_BLUEPRINT_FIELDS = ("inputs", "buffers", "outputs", "control_flow")
_PLACEHOLDER_SIZE: dict[str, Any] = {"Absolute": 1}
_PLACEHOLDER_ARG: dict[str, Any] = {"Constant": {"type": "i64", "value": 0}}
_PLACEHOLDER_LIBRARY = "unresolved-module"

#: Ends the error of a module that is not a registered library; the HTTP API, which has no
#: modules directory to offer, leaves it out.
MODULES_DIR_ADVICE = ", or give a modules directory (modules_dir) to read the module files instead"


# --- the upstream bounds check, modelled ----------------------------------------------------


def upstream_from_input_accepts(input_size: int, idx: int) -> bool:
    """Whether Dandelion lets ``FromInput {idx}`` read an input item of ``input_size`` bytes.

    Upstream computes ``relative_offset = idx * size_of::<i64>()`` in ``usize`` and refuses
    only when ``relative_offset > size`` (``gpu_utils.rs``, ``get_size``): a read that starts
    at the end of the item (or inside its last 7 bytes) is let through and reads past it, and
    for ``idx >= 2**61`` the product wraps in release builds (debug builds panic).
    """
    offset = (idx * ELEMENT_BYTES) % USIZE_MOD
    return not offset > input_size


def pappus_from_input_accepts(input_size: int, idx: int) -> bool:
    """Whether pappus accepts a u64 read at element ``idx`` of an input of ``input_size`` bytes."""
    return (idx + 1) * ELEMENT_BYTES <= input_size


# --- detection ------------------------------------------------------------------------------


def detect_dandelion(doc: object) -> str | None:
    """``"thesis"`` or ``"modules"`` when ``doc`` is a Dandelion GPU config, else None.

    The generations are told apart by keys that only they have: ``module_path`` (thesis) and
    ``modules`` (later). A document with both, with neither, without a ``blueprint``, or with
    a ``schema`` (every pappus config has one) is not taken for Dandelion.
    """
    if not isinstance(doc, Mapping) or "schema" in doc or "blueprint" not in doc:
        return None
    thesis, modules = "module_path" in doc, "modules" in doc
    if thesis == modules:
        return None
    return "thesis" if thesis else "modules"


# --- result ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportResult:
    """What :func:`import_dandelion` produced.

    ``config`` is a ``pappus/function@1`` dict that :func:`pappus.config.parse_function`
    accepts (``function`` is its parsed form); ``libraries`` maps each library the config
    names, in first-use order, to the resolved code-object file to register under that name.
    ``registered`` lists instead the libraries the config names that are registered already
    (modules resolved by name with ``import_dandelion(..., registered=...)``): nothing to
    register for them. ``module_names`` / ``module_paths`` keep the upstream module name and
    path string of each library and ``weights`` the inputs that were upstream weights, so
    :func:`export_dandelion` can write the same modules and weights back. ``notes`` lists every
    semantic adjustment the import made, in words.
    """

    generation: str
    config: dict[str, Any]
    libraries: dict[str, Path]
    notes: list[str]
    function: FunctionConfig
    module_names: dict[str, str] = field(default_factory=dict)
    module_paths: dict[str, str] = field(default_factory=dict)
    weights: tuple[str, ...] = ()
    registered: tuple[str, ...] = ()


# --- helpers --------------------------------------------------------------------------------


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_LAST_SEGMENT = re.compile(r"(\.[^.\[]*|\[\d+\])$")


def _related(a: str, b: str) -> bool:
    """Whether one path is the other or lies inside it."""
    if a == b:
        return True
    short, long = (a, b) if len(a) < len(b) else (b, a)
    if short == "":
        return True
    return long.startswith(short) and long[len(short)] in ".["


def library_name_for(module: str, taken: set[str]) -> str:
    """A valid, unused pappus library name derived from an upstream module name or path.

    Lower-cases, turns every run of characters outside ``[a-z0-9_.-]`` into ``-``, collapses
    ``..``, strips leading punctuation, truncates to 64 characters and, on a collision, appends
    ``-2``, ``-3``, ... (truncating further so the name stays within 64 characters).
    """
    base = PurePosixPath(module.replace("\\", "/")).name if "/" in module or "\\" in module else module
    name = base.lower()
    name = re.sub(r"[^a-z0-9_.-]+", "-", name)
    name = re.sub(r"\.{2,}", ".", name)
    name = name.lstrip("._-")[:64] or "module"
    candidate, n = name, 1
    while candidate in taken or library_name_problem(candidate) is not None:
        n += 1
        suffix = f"-{n}"
        candidate = name[: 64 - len(suffix)] + suffix
    taken.add(candidate)
    return candidate


@dataclass
class _Module:
    key: str            # upstream module name (thesis: the module_path string)
    path: object        # the upstream path value
    upath: str          # where the path sits in the upstream document
    resolved: Path | None = None
    library: str = _PLACEHOLDER_LIBRARY
    used: bool = False
    registered: bool = False  # resolved to a library registered already, by name

    @property
    def entry(self) -> str:
        """Where the module is declared: ``modules[i]`` (later generation) or ``module_path``."""
        return self.upath[: -len(".path")] if self.upath.endswith(".path") else self.upath


@dataclass
class _Kernel:
    name: str
    module: str
    upath: str          # the entry (kernels[i])
    name_upath: str     # its name (kernels[i] or kernels[i].kernel_name)
    module_upath: str   # its module (module_path or kernels[i].module_name)


# --- import ---------------------------------------------------------------------------------


class _Importer:
    def __init__(self, generation: str, base_dir: Path | None, input_sizes: Mapping[str, object] | None,
                 limits: Limits, registered: Container[str] | None = None) -> None:
        self.gen = generation
        self.base = base_dir
        # Without a modules directory, modules may resolve by name to registered libraries.
        self.registered = registered if base_dir is None else None
        self.input_sizes = dict(input_sizes or {})
        self.limits = limits
        self.errors: list[FieldError] = []
        self.notes: list[str] = []
        self.pmap: dict[str, str] = {}
        self.inputs: list[tuple[str, str]] = []      # (name, upstream path), weights included
        self.weights: set[str] = set()
        self.buffer_names: set[str] = set()
        self.reads: dict[str, list[tuple[int, str]]] = {}
        self.kernel_names: set[str] = set()
        self.bad_names: set[str] = set()    # names already reported as invalid
        self.too_many_inputs = False
        self.broken_modules = False         # a modules entry without a usable module_name
        self.saw_constant = False
        self.saw_sizeof_arg = False
        self.modules: dict[str, _Module] = {}

    # --- bookkeeping ---------------------------------------------------------------------

    def err(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))

    def note(self, message: str) -> None:
        self.notes.append(message)

    def map(self, ppath: str, upath: str) -> None:
        self.pmap[ppath] = upath

    def translate(self, ppath: str) -> str:
        """The upstream path of a place in the generated pappus config."""
        rest = ""
        path = ppath
        while True:
            if path in self.pmap:
                return self.pmap[path] + rest
            m = _LAST_SEGMENT.search(path)
            if not m or not path:
                return ppath
            rest = m.group(0) + rest
            path = path[: m.start()]

    def ignore_unknown(self, obj: dict, path: str, known: tuple[str, ...] | set[str], what: str) -> None:
        for key in obj:
            if key not in known:
                self.note(f"{_join(path, str(key))}: ignored; {what} has no such field and upstream's "
                          "parser (serde) skips unknown fields")

    @property
    def input_names(self) -> set[str]:
        return {name for name, _ in self.inputs}

    @property
    def all_names(self) -> set[str]:
        return self.input_names | self.buffer_names | self.bad_names

    # --- top level -----------------------------------------------------------------------

    def run(self, doc: object) -> dict[str, Any] | None:
        if not isinstance(doc, dict):
            self.err("", f"a Dandelion config must be a JSON object, not {json_type_name(doc)}")
            return None
        known = _TOP_FIELDS[self.gen]
        self.ignore_unknown(doc, "", known, f"Dandelion's {self.gen}-generation config")
        for key in known:
            if key not in doc:
                self.err(key, "is required")

        modules = self.thesis_module(doc) if self.gen == "thesis" else self.module_list(doc.get("modules"))
        kernels = self.kernel_list(doc.get("kernels"), modules)
        self.kernel_names = {k.name for k in kernels}
        blueprint = self.blueprint(doc.get("blueprint"))

        # Libraries: one per referenced module, named in declaration order.
        taken: set[str] = set()
        for module in modules.values():
            if module.used:
                source = module.key if self.gen == "modules" else str(module.path)
                module.library = library_name_for(source, taken)
        for module in modules.values():
            if not module.used:
                self.note(f"{module.entry} ({module.key!r}): no kernel uses this module, so it is not imported "
                          "as a library")
        if self.registered is not None:
            self.resolve_registered(modules)

        out: dict[str, Any] = {"schema": SCHEMA_ID}
        libraries = []
        for k in kernels:
            lib = modules[k.module].library if k.module in modules else _PLACEHOLDER_LIBRARY
            if lib not in libraries:
                libraries.append(lib)
        if len(libraries) == 1:
            out["library"] = libraries[0]
            first = next((m for m in modules.values() if m.library == libraries[0]), None)
            self.map("library", first.upath if first else "kernels")
            out["kernels"] = []
            for i, k in enumerate(kernels):
                self.map(f"kernels[{i}]", k.name_upath)
                out["kernels"].append(k.name)
        else:
            out["kernels"] = []
            for i, k in enumerate(kernels):
                lib = modules[k.module].library if k.module in modules else _PLACEHOLDER_LIBRARY
                self.map(f"kernels[{i}]", k.upath)
                self.map(f"kernels[{i}].name", k.name_upath)
                self.map(f"kernels[{i}].library", k.module_upath)
                out["kernels"].append({"name": k.name, "library": lib})
        self.map("kernels", "kernels")
        if blueprint is not None:
            out["blueprint"] = blueprint
        self.modules = modules
        return out

    # --- modules ---------------------------------------------------------------------------

    def thesis_module(self, doc: dict) -> dict[str, _Module]:
        if "module_path" not in doc:
            return {}
        raw = doc["module_path"]
        module = _Module(key=str(raw), path=raw, upath="module_path")
        if not isinstance(raw, str):
            self.err("module_path", f"must be a string (a path relative to the modules directory), "
                                    f"not {json_type_name(raw)}")
            return {}
        module.resolved = self.resolve(raw, "module_path")
        return {raw: module}

    def module_list(self, value: object) -> dict[str, _Module]:
        modules: dict[str, _Module] = {}
        if value is None:
            return modules
        if not isinstance(value, list):
            self.err("modules", f"must be an array of {{\"module_name\", \"path\"}} objects, not {json_type_name(value)}")
            return modules
        first_at: dict[str, int] = {}
        for i, entry in enumerate(value):
            p = f"modules[{i}]"
            if not isinstance(entry, dict):
                self.err(p, f"must be an object {{\"module_name\": ..., \"path\": ...}}, not {json_type_name(entry)}")
                self.broken_modules = True
                continue
            ok = True
            for key, val in entry.items():
                if not isinstance(val, str):
                    self.err(_join(p, str(key)), f"must be a string (upstream reads each module as a map "
                                                 f"of strings), not {json_type_name(val)}")
                    ok = False
            self.ignore_unknown(entry, p, ("module_name", "path"), "a module entry")
            for key in ("module_name", "path"):
                if key not in entry:
                    self.err(_join(p, key), "is required")
                    ok = False
            if not ok:
                if not isinstance(entry.get("module_name"), str):
                    self.broken_modules = True  # kernels naming it cannot be checked
                continue
            name, raw = entry["module_name"], entry["path"]
            if name in first_at:
                self.err(_join(p, "module_name"), f"module {name!r} is declared twice (first at "
                                                  f"modules[{first_at[name]}]); upstream would silently keep one")
                continue
            first_at[name] = i
            module = _Module(key=name, path=raw, upath=_join(p, "path"))
            module.resolved = self.resolve(raw, module.upath)
            modules[name] = module
        return modules

    def resolve(self, raw: str, upath: str) -> Path | None:
        """The file a module path names, strictly inside the modules directory, or None."""
        if self.base is None and self.registered is not None:
            return None  # resolved by name, once the kernels tell which modules are used
        if self.base is None:
            self.err(upath, "cannot be resolved: the config was not read from a file, so give a "
                            "modules directory (modules_dir / --modules-dir)")
            return None
        if raw == "":
            self.err(upath, "must not be empty")
            return None
        if "\x00" in raw:
            self.err(upath, "must not contain NUL")
            return None
        if raw.startswith(("/", "\\")) or PureWindowsPath(raw).drive or PurePosixPath(raw).is_absolute():
            self.err(upath, f"{raw!r} is an absolute path; module paths are relative to the modules "
                            f"directory {str(self.base.resolve())!r} (upstream would append it to "
                            "DANDELION_LIBRARY_PATH)")
            return None
        parts = re.split(r"[/\\]", raw)
        if ".." in parts:
            self.err(upath, f"{raw!r} climbs out of the modules directory with '..'")
            return None
        base = self.base.resolve()
        try:
            resolved = (base / raw).resolve()
        except (OSError, RuntimeError) as exc:  # symlink loops
            self.err(upath, f"{raw!r} cannot be resolved: {exc}")
            return None
        if not resolved.is_relative_to(base):
            self.err(upath, f"{raw!r} resolves (through a symlink) to {str(resolved)!r}, outside the "
                            f"modules directory {str(base)!r}")
            return None
        if not resolved.exists():
            self.err(upath, f"{raw!r} does not exist in the modules directory {str(base)!r}")
            return None
        if not resolved.is_file():
            self.err(upath, f"{raw!r} is not a regular file")
            return None
        return resolved

    def resolve_registered(self, modules: dict[str, _Module]) -> None:
        """Without a modules directory: each module a kernel uses is the registered library of
        its library name (the naming rule of ``library_name_for``), else the registered library
        named after its path's file, when that differs and names no other module; modules no
        kernel uses are not looked up."""
        assert self.registered is not None
        used = [m for m in modules.values() if m.used]
        primary = {m.library for m in used}
        claimed: set[str] = set()
        for module in used:
            if module.library in self.registered:
                module.registered = True
                self.note(f"{module.entry} ({module.key!r}): resolved to the registered library {module.library!r} "
                          "(no modules directory: the module's path is not read)")
                continue
            alt = None  # the thesis generation names its library after the file already
            if self.gen == "modules" and isinstance(module.path, str) and module.path.strip("/\\"):
                alt = library_name_for(module.path, set())
            if alt is not None and alt not in primary and alt not in claimed and alt in self.registered:
                self.note(f"{module.entry} ({module.key!r}): resolved to the registered library {alt!r}, "
                          f"named after the module's file (no library {module.library!r} is registered; no "
                          "modules directory: the module's path is not read)")
                module.library, module.registered = alt, True
                claimed.add(alt)
                continue
            free = alt is not None and alt not in primary and alt not in claimed
            also = f" (or as {alt!r}, after its file)" if free else ""
            self.err(module.entry, f"module {module.key!r} is not a registered library: register its code "
                                   f"object first as library {module.library!r}{also} (HTTP: PUT /v1/libraries/"
                                   f"{module.library}){MODULES_DIR_ADVICE}")

    # --- kernels ---------------------------------------------------------------------------

    def kernel_list(self, value: object, modules: dict[str, _Module]) -> list[_Kernel]:
        kernels: list[_Kernel] = []
        if value is None:
            return kernels
        if not isinstance(value, list):
            want = "kernel names" if self.gen == "thesis" else "{\"module_name\", \"kernel_name\"} objects"
            self.err("kernels", f"must be an array of {want}, not {json_type_name(value)}")
            return kernels
        seen: dict[str, tuple[int, str]] = {}
        thesis_module = next(iter(modules), None)
        for i, entry in enumerate(value):
            p = f"kernels[{i}]"
            if self.gen == "thesis":
                if not isinstance(entry, str):
                    self.err(p, f"must be a kernel name (a string), not {json_type_name(entry)}")
                    continue
                name, module, name_path, module_path = entry, thesis_module, p, "module_path"
            else:
                if not isinstance(entry, dict):
                    self.err(p, f"must be an object {{\"module_name\": ..., \"kernel_name\": ...}}, "
                                f"not {json_type_name(entry)}")
                    continue
                ok = True
                for key, val in entry.items():
                    if not isinstance(val, str):
                        self.err(_join(p, str(key)), f"must be a string (upstream reads each kernel as a "
                                                     f"map of strings), not {json_type_name(val)}")
                        ok = False
                self.ignore_unknown(entry, p, ("module_name", "kernel_name"), "a kernel entry")
                for key in ("module_name", "kernel_name"):
                    if key not in entry:
                        self.err(_join(p, key), "is required")
                        ok = False
                if not ok:
                    continue
                name, module = entry["kernel_name"], entry["module_name"]
                name_path, module_path = _join(p, "kernel_name"), _join(p, "module_name")
                if module not in modules and not self.broken_modules:
                    known = ", ".join(repr(m) for m in modules) or "none"
                    self.err(module_path, f"module {module!r} is not declared in 'modules' (declared: {known})")
            if not KERNEL_NAME_RE.fullmatch(name):
                self.err(name_path, f"{_short(name)} is not a valid kernel symbol name")
                continue
            if name in seen:
                j, other = seen[name]
                if other == module:
                    self.note(f"{name_path}: kernel {name!r} is listed twice (also kernels[{j}]); "
                              "kept once")
                else:
                    self.err(name_path, f"kernel {name!r} is listed for module {module!r} and for module "
                                        f"{other!r} (kernels[{j}]); upstream keys kernels by name alone and "
                                        "would silently launch one of them")
                continue
            seen[name] = (i, module)  # type: ignore[assignment]
            if module in modules:
                modules[module].used = True
            kernels.append(_Kernel(name, module, p, name_path, module_path))  # type: ignore[arg-type]
        return kernels

    # --- blueprint -------------------------------------------------------------------------

    def blueprint(self, value: object) -> dict[str, Any] | None:
        path = "blueprint"
        self.map(path, path)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.err(path, f"must be an object, not {json_type_name(value)}")
            return None
        known = _BLUEPRINT_FIELDS + (("weights",) if self.gen == "modules" else ())
        self.ignore_unknown(value, path, known, f"a {self.gen}-generation blueprint")
        for key in _BLUEPRINT_FIELDS:
            if key not in value:
                self.err(_join(path, key), "is required")

        for name, upath in self.name_list(value.get("inputs", []), "blueprint.inputs", "input"):
            self.inputs.append((name, upath))
        if self.gen == "modules" and "weights" in value:
            taken = self.input_names
            weights = []
            for name, upath in self.name_list(value["weights"], "blueprint.weights", "weight"):
                if name in taken:
                    self.err(upath, f"{name!r} is both an input and a weight")
                    continue
                self.inputs.append((name, upath))
                self.weights.add(name)
                weights.append(name)
            if weights:
                self.note("blueprint.weights: weights " + ", ".join(repr(w) for w in weights) + " become "
                          "ordinary inputs of the pappus function; pass their bytes with every invocation "
                          "(upstream loads them once, at registration, and may keep them on the device)")

        if len(self.inputs) > self.limits.max_inputs:
            self.too_many_inputs = True
            what = "inputs and weights" if self.weights else "inputs"
            self.err("blueprint.inputs", f"{len(self.inputs)} {what} exceed pappus's limit of "
                                         f"{self.limits.max_inputs}; raise it with "
                                         "limits=Limits().with_overrides(max_inputs=N)")

        raw_buffers = value.get("buffers", {})
        buffer_items: list[tuple[str, object]] = []
        if not isinstance(raw_buffers, dict):
            self.err("blueprint.buffers", f"must be an object mapping buffer names to sizes, not "
                                          f"{json_type_name(raw_buffers)}")
        else:
            for name, spec in raw_buffers.items():
                p = _join("blueprint.buffers", name)
                if not BUFFER_NAME_RE.fullmatch(name):
                    self.err(p, "is not a valid pappus buffer name ([A-Za-z_][A-Za-z0-9_]{0,63}); rename it")
                    self.bad_names.add(name)
                elif name in self.input_names:
                    kind = "weight" if name in self.weights else "input"
                    self.err(p, f"{name!r} is also an {kind}: upstream would silently replace the {kind} "
                                "with an empty buffer of this size; rename one of them")
                else:
                    self.buffer_names.add(name)
                buffer_items.append((name, spec))

        buffers: dict[str, Any] = {}
        self.map("blueprint.buffers", "blueprint.buffers")
        for name, spec in buffer_items:
            p = _join("blueprint.buffers", name)
            refs: set[str] = set()
            buffers[name] = self.sizing(spec, p, p, refs)
            late = sorted(r for r in refs if r in self.buffer_names)
            if late:
                self.note(f"{p}: its size refers to buffer(s) {', '.join(map(repr, late))}; upstream sizes "
                          "buffers in hash-map order and fails when one is not sized yet, pappus sizes "
                          "them in dependency order")

        outputs: list[str] = []
        raw_outputs = value.get("outputs", [])
        self.map("blueprint.outputs", "blueprint.outputs")
        if not isinstance(raw_outputs, list):
            self.err("blueprint.outputs", f"must be an array of buffer names, not {json_type_name(raw_outputs)}")
        else:
            for i, name in enumerate(raw_outputs):
                p = f"blueprint.outputs[{i}]"
                if not isinstance(name, str):
                    self.err(p, f"must be a buffer name (a string), not {json_type_name(name)}")
                elif name not in self.all_names:
                    self.err(p, f"{name!r} is not an input or buffer")
                elif name in outputs:
                    self.note(f"{p}: output {name!r} is listed twice; kept once")
                else:
                    self.map(f"blueprint.outputs[{len(outputs)}]", p)
                    outputs.append(name)

        flow = self.actions(value.get("control_flow", []), "blueprint.control_flow",
                            "blueprint.control_flow", 1)

        inputs = self.input_specs()
        return {"inputs": inputs, "buffers": buffers, "outputs": outputs, "control_flow": flow}

    def name_list(self, value: object, path: str, what: str) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if not isinstance(value, list):
            self.err(path, f"must be an array of {what} names, not {json_type_name(value)}")
            return out
        seen: set[str] = set()
        for i, name in enumerate(value):
            p = f"{path}[{i}]"
            if not isinstance(name, str):
                self.err(p, f"must be an {what} name (a string), not {json_type_name(name)}")
            elif not BUFFER_NAME_RE.fullmatch(name):
                self.err(p, f"{_short(name)} is not a valid pappus {what} name "
                            "([A-Za-z_][A-Za-z0-9_]{0,63}); rename it")
                self.bad_names.add(name)
            elif name in seen:
                self.err(p, f"{what} {name!r} is listed twice (upstream would copy it twice and keep the last)")
            else:
                seen.add(name)
                out.append((name, p))
        return out

    def input_specs(self) -> list[Any]:
        """pappus inputs, with sizes where FromInput reads them or the caller declared one."""
        names = self.input_names
        for name, declared in self.input_sizes.items():
            p = f"input_sizes.{name}"
            if name not in names:
                self.err(p, f"{name!r} is not an input of this config")
            elif not isinstance(declared, int) or isinstance(declared, bool) or declared < 0:
                self.err(p, "must be a non-negative integer number of bytes")
            elif declared > self.limits.max_buffer_bytes:
                self.err(p, f"{declared} bytes exceed the limit of {self.limits.max_buffer_bytes}")
        specs: list[Any] = []
        for i, (name, upath) in enumerate(self.inputs):
            p = f"blueprint.inputs[{i}]"
            self.map(p, upath)
            self.map(_join(p, "name"), upath)
            self.map(_join(p, "size"), upath)
            reads = self.reads.get(name, [])
            raw = self.input_sizes.get(name)
            given: int | None = None  # absent, or invalid and reported above
            if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw <= self.limits.max_buffer_bytes:
                given = raw
            size: int | None = None
            if given is not None:
                size = given
                for idx, rpath in reads:
                    if not pappus_from_input_accepts(size, idx):
                        self.err(rpath, self.past_end(name, size, idx, declared=True))
            elif reads:
                idx, rpath = max(reads)
                need = (idx + 1) * ELEMENT_BYTES
                if need > self.limits.max_buffer_bytes:
                    extra = ""
                    if idx * ELEMENT_BYTES >= USIZE_MOD:
                        extra = (f"; upstream computes idx*8 in 64 bits, so this read wraps to byte "
                                 f"{(idx * ELEMENT_BYTES) % USIZE_MOD} in release builds and panics in debug builds")
                    self.err(rpath, f"reads bytes {need - ELEMENT_BYTES}..{need} of input {name!r}, which "
                                    f"would need an input of {need} bytes, more than the limit of "
                                    f"{self.limits.max_buffer_bytes}{extra}")
                else:
                    size = need
                    self.note(f"{upath} ({name!r}): declared as exactly {need} bytes, the least that holds "
                              f"the FromInput reads (idx up to {idx}); Dandelion inputs carry no size, pappus "
                              f"needs one to bounds-check FromInput at registration. Declare another size "
                              f"with input_sizes={{{name!r}: N}} (CLI: --input-size {name}=N)")
            specs.append(name if size is None else {"name": name, "size": size})
        return specs

    @staticmethod
    def past_end(name: str, size: int, idx: int, *, declared: bool) -> str:
        start = idx * ELEMENT_BYTES
        where = " (declared in input_sizes)" if declared else ""
        text = f"reads bytes {start}..{start + ELEMENT_BYTES} of input {name!r}, which has {size} bytes{where}"
        if upstream_from_input_accepts(size, idx):
            text += ("; upstream's check (idx*8 > size) lets this read through and reads past the "
                     "input, pappus refuses it")
        else:
            text += "; upstream fails it at run time (FromInputOutOfBounds), pappus at registration"
        return text

    # --- sizes -----------------------------------------------------------------------------

    def sizing(self, value: object, upath: str, ppath: str, refs: set[str] | None = None) -> dict[str, Any]:
        self.map(ppath, upath)
        if not isinstance(value, dict) or len(value) != 1:
            hint = " (upstream does not take a bare number here)" if is_int(value) else ""
            self.err(upath, "must be one of {\"Absolute\": n}, {\"Sizeof\": name}, "
                            "{\"FromInput\": {\"bufname\": name, \"idx\": i}}" + hint)
            return dict(_PLACEHOLDER_SIZE)
        (kind, body), = value.items()
        up, pp = _join(upath, kind), _join(ppath, kind)
        self.map(pp, up)
        if kind == "Absolute":
            if not is_int(body) or not 0 <= body <= U64_MAX:
                self.err(up, f"must be an integer from 0 to 2^64-1 (upstream reads a u64), not {_short(body)}")
                return dict(_PLACEHOLDER_SIZE)
            return {"Absolute": body}
        if kind == "Sizeof":
            if not isinstance(body, str):
                self.err(up, f"must name an input or buffer, not {json_type_name(body)}")
                return dict(_PLACEHOLDER_SIZE)
            if body not in self.all_names:
                self.err(up, f"{body!r} is not an input or buffer")
                return dict(_PLACEHOLDER_SIZE)
            if refs is not None:
                refs.add(body)
            return {"Sizeof": body}
        if kind == "FromInput":
            return self.from_input(body, up, pp)
        if kind in ("AbsoluteByBatch", "AbsoluteByBatchEven"):
            self.err(up, "comes from upstream's auto_batching feature, which scales a size by the batch "
                         "size chosen at run time; pappus invocations have no batch size, so write the "
                         "batched size as Absolute")
            return dict(_PLACEHOLDER_SIZE)
        self.err(upath, f"unknown Sizing variant {kind!r} (upstream has Absolute, Sizeof and FromInput)")
        return dict(_PLACEHOLDER_SIZE)

    def from_input(self, body: object, up: str, pp: str) -> dict[str, Any]:
        if isinstance(body, list):  # serde also reads a struct from a sequence of its fields
            if len(body) != 2:
                self.err(up, "must be {\"bufname\": name, \"idx\": i} or [name, i]")
                return dict(_PLACEHOLDER_SIZE)
            bufname, idx = body
            bpath, ipath = f"{up}[0]", f"{up}[1]"
        elif isinstance(body, dict):
            self.ignore_unknown(body, up, ("bufname", "idx"), "FromInput")
            ok = True
            for key in ("bufname", "idx"):
                if key not in body:
                    self.err(_join(up, key), "is required")
                    ok = False
            if not ok:
                return dict(_PLACEHOLDER_SIZE)
            bufname, idx = body["bufname"], body["idx"]
            bpath, ipath = _join(up, "bufname"), _join(up, "idx")
        else:
            self.err(up, f"must be {{\"bufname\": name, \"idx\": i}}, not {json_type_name(body)}")
            return dict(_PLACEHOLDER_SIZE)
        self.map(_join(pp, "input"), bpath)
        self.map(_join(pp, "index"), ipath)
        self.map(_join(pp, "type"), up)
        ok = True
        if not isinstance(bufname, str):
            self.err(bpath, f"must name an input, not {json_type_name(bufname)}")
            ok = False
        elif bufname not in self.input_names:
            what = "a buffer; upstream's FromInput reads only the invocation's input sets" \
                if bufname in self.buffer_names else "not an input"
            self.err(bpath, f"{bufname!r} is {what}")
            ok = False
        if not is_int(idx) or not 0 <= idx <= U64_MAX:
            self.err(ipath, f"must be an integer from 0 to 2^64-1 (upstream reads a usize), not {_short(idx)}")
            ok = False
        if not ok:
            return dict(_PLACEHOLDER_SIZE)
        assert isinstance(bufname, str) and isinstance(idx, int)
        self.reads.setdefault(bufname, []).append((idx, ipath))
        return {"FromInput": {"input": bufname, "index": idx, "type": "u64"}}

    # --- control flow ----------------------------------------------------------------------

    def actions(self, value: object, upath: str, ppath: str, depth: int) -> list[Any]:
        self.map(ppath, upath)
        out: list[Any] = []
        if not isinstance(value, list):
            self.err(upath, f"must be an array of actions, not {json_type_name(value)}")
            return out
        if depth > self.limits.max_nesting:
            self.err(upath, f"Repeat nests deeper than {self.limits.max_nesting} levels")
            return out
        for i, entry in enumerate(value):
            up = f"{upath}[{i}]"
            pp = f"{ppath}[{len(out)}]"
            if not isinstance(entry, dict) or len(entry) != 1:
                self.err(up, "must be {\"ExecKernel\": [name, [args], {launch}]} or "
                             "{\"Repeat\": [times, [actions]]}")
                continue
            (kind, body), = entry.items()
            if kind == "ExecKernel":
                action = self.exec_kernel(body, _join(up, kind), _join(pp, kind))
            elif kind == "Repeat":
                action = self.repeat(body, _join(up, kind), _join(pp, kind), depth)
            else:
                self.err(up, f"unknown action {kind!r} (upstream has ExecKernel and Repeat)")
                continue
            if action is not None:
                self.map(pp, up)
                out.append({kind: action})
        return out

    def exec_kernel(self, body: object, up: str, pp: str) -> dict[str, Any] | None:
        if not isinstance(body, list) or len(body) != 3:
            self.err(up, "must be [kernel_name, [arguments], {launch config}] (an array of 3)")
            return None
        self.map(pp, up)
        name, args, launch = body
        self.map(_join(pp, "name"), f"{up}[0]")
        if not isinstance(name, str):
            self.err(f"{up}[0]", f"must be a kernel name, not {json_type_name(name)}")
        elif name not in self.kernel_names:
            self.err(f"{up}[0]", f"kernel {name!r} is not listed in 'kernels'")
        out_args: list[Any] = []
        self.map(_join(pp, "args"), f"{up}[1]")
        if not isinstance(args, list):
            self.err(f"{up}[1]", f"must be an array of arguments, not {json_type_name(args)}")
        else:
            for j, arg in enumerate(args):
                out_args.append(self.arg(arg, f"{up}[1][{j}]", f"{_join(pp, 'args')}[{j}]"))
        lp = f"{up}[2]"
        for key in ("grid", "block", "shared_mem_bytes"):
            self.map(_join(pp, key), lp)
        fields: dict[str, tuple[object, str]] = {}
        if isinstance(launch, dict):
            self.ignore_unknown(launch, lp, LAUNCH_FIELDS, "a launch config")
            for key in LAUNCH_FIELDS:
                if key in launch:
                    fields[key] = (launch[key], _join(lp, key))
                else:
                    self.err(_join(lp, key), "is required")
        elif isinstance(launch, list) and len(launch) == len(LAUNCH_FIELDS):
            fields = {key: (launch[k], f"{lp}[{k}]") for k, key in enumerate(LAUNCH_FIELDS)}
        else:
            self.err(lp, "must be an object with " + ", ".join(LAUNCH_FIELDS))
        sizes: dict[str, Any] = {}
        for k, key in enumerate(LAUNCH_FIELDS):
            if k < 3:
                ppk = f"{_join(pp, 'grid')}[{k}]"
            elif k < 6:
                ppk = f"{_join(pp, 'block')}[{k - 3}]"
            else:
                ppk = _join(pp, "shared_mem_bytes")
            if key in fields:
                raw, upk = fields[key]
                sizes[key] = self.sizing(raw, upk, ppk)
            else:
                sizes[key] = dict(_PLACEHOLDER_SIZE)
        return {
            "name": name,
            "args": out_args,
            "grid": [sizes["grid_dim_x"], sizes["grid_dim_y"], sizes["grid_dim_z"]],
            "block": [sizes["block_dim_x"], sizes["block_dim_y"], sizes["block_dim_z"]],
            "shared_mem_bytes": sizes["shared_mem_bytes"],
        }

    def arg(self, value: object, up: str, pp: str) -> dict[str, Any]:
        self.map(pp, up)
        if not isinstance(value, dict) or len(value) != 1:
            self.err(up, "must be {\"Ptr\": name}, {\"Sizeof\": name} or {\"Constant\": integer}")
            return dict(_PLACEHOLDER_ARG)
        (kind, body), = value.items()
        uk, pk = _join(up, kind), _join(pp, kind)
        self.map(pk, uk)
        if kind in ("Ptr", "Sizeof"):
            if not isinstance(body, str):
                self.err(uk, f"must name an input or buffer, not {json_type_name(body)}")
                return dict(_PLACEHOLDER_ARG)
            if body not in self.all_names:
                self.err(uk, f"{body!r} is not an input or buffer")
                return dict(_PLACEHOLDER_ARG)
            if kind == "Sizeof":
                self.saw_sizeof_arg = True
            return {kind: body}
        if kind == "Constant":
            self.map(_join(pk, "value"), uk)
            self.map(_join(pk, "type"), uk)
            if not is_int(body) or not I64_MIN <= body <= I64_MAX:
                self.err(uk, f"must be an integer from -2^63 to 2^63-1 (upstream's Constant is an i64), "
                             f"not {_short(body)}")
                return dict(_PLACEHOLDER_ARG)
            self.saw_constant = True
            return {"Constant": {"type": "i64", "value": body}}
        self.err(up, f"unknown argument kind {kind!r} (upstream has Ptr, Sizeof and Constant)")
        return dict(_PLACEHOLDER_ARG)

    def repeat(self, body: object, up: str, pp: str, depth: int) -> dict[str, Any] | None:
        if not isinstance(body, list) or len(body) != 2:
            self.err(up, "must be [times, [actions]] (an array of 2)")
            return None
        self.map(pp, up)
        times = self.sizing(body[0], f"{up}[0]", _join(pp, "times"))
        inner = self.actions(body[1], f"{up}[1]", _join(pp, "body"), depth + 1)
        return {"times": times, "body": inner}


def _base_dir(source: object, modules_dir: Path | str | None) -> Path | None:
    if modules_dir is not None:
        return Path(modules_dir)
    if isinstance(source, Path):
        return source.parent
    if isinstance(source, str) and not source.lstrip().startswith("{"):
        return Path(source).parent
    return None


_SIZE_TEXT = re.compile(r"[0-9]{1,30}")


def parse_input_sizes(items: list[str], path: str) -> tuple[dict[str, int], list[FieldError]]:
    """``NAME=BYTES`` items (``--input-size``, ``?input_size=``) as ``input_sizes``, and every
    malformed one as an error at ``path`` (long items shortened in the message)."""
    sizes: dict[str, int] = {}
    errors: list[FieldError] = []
    for item in items:
        name, sep, value = item.partition("=")
        shown = item if len(item) <= 80 else item[:77] + "..."
        if not sep or not name or not value:
            errors.append(FieldError(path, f"{shown!r} is not NAME=BYTES"))
        elif name in sizes:
            errors.append(FieldError(path, f"{name[:80]!r} is given twice"))
        elif not _SIZE_TEXT.fullmatch(value):
            errors.append(FieldError(path, f"{shown}: BYTES must be a non-negative whole number of bytes"))
        else:
            sizes[name] = int(value)
    return sizes, errors


def modules_dir_problem(modules_dir: str | Path | None) -> str | None:
    """Why ``modules_dir`` cannot be where module paths resolve ("does not exist", "is not a
    directory"); None when it can, or when none is given."""
    if modules_dir is None or Path(modules_dir).is_dir():
        return None
    return "is not a directory" if Path(modules_dir).exists() else "does not exist"


def import_dandelion(
    doc_or_path: str | Path | bytes | Mapping[str, Any],
    *,
    modules_dir: Path | str | None = None,
    generation: str | None = None,
    input_sizes: Mapping[str, int] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    device: DeviceLimits | None = None,
    registered: Container[str] | None = None,
) -> ImportResult:
    """Convert a Dandelion GPU config (either generation) into a ``pappus/function@1`` config.

    ``doc_or_path`` is a path, JSON text or bytes, or a decoded document. Module paths resolve
    inside ``modules_dir`` (default: the directory of the config file; required when the config
    is not read from a file, unless ``registered`` is given); absolute paths, ``..``, symlinks
    that lead outside and missing files are refused.

    ``registered`` (the names of libraries registered already; anything that supports ``in``)
    applies only where there is no modules directory (no ``modules_dir``, and the config is not
    a file): each module a kernel uses then resolves by name, to the registered library of the
    name the import gives it (``mlops.hsaco``; docs/dandelion.md, "Library names") or, failing
    that, of its path's file name; its path is not read. ``result.registered`` lists those
    libraries and ``result.libraries`` is empty; a module that is not registered is an error at
    its entry (``modules[i]``, ``module_path``) naming the library to register.

    ``generation`` forces ``"thesis"`` or ``"modules"`` instead of
    :func:`detect_dandelion`. ``input_sizes`` declares the exact byte size of inputs (by
    default an input that FromInput reads is declared as the least size that holds the reads).

    Raises :class:`ValidationError` listing every problem as ``path: message``, paths in the
    upstream document's own terms.
    """
    if generation is not None and generation not in GENERATIONS:
        raise ValueError(f"generation must be one of {GENERATIONS}, not {generation!r}")
    problem = modules_dir_problem(modules_dir)
    if problem:
        raise ValidationError(FieldError("modules_dir", f"{str(modules_dir)!r} {problem}; module paths are "
                                                        "resolved inside a modules directory"))
    doc = load_config_document(doc_or_path, limits)
    gen = generation or detect_dandelion(doc)
    if gen is None:
        if isinstance(doc, dict) and "schema" in doc:
            why = "it has a 'schema', so it is a pappus config already"
        elif isinstance(doc, dict) and "module_path" in doc and "modules" in doc:
            why = "it has both 'module_path' (thesis generation) and 'modules' (later generation)"
        elif isinstance(doc, dict) and "blueprint" not in doc:
            why = "it has no 'blueprint'"
        else:
            why = "it has neither 'module_path' (thesis generation) nor 'modules' (later generation)"
        raise ValidationError(FieldError("", f"not a Dandelion GPU config: {why}"))

    importer = _Importer(gen, _base_dir(doc_or_path, modules_dir), input_sizes, limits, registered)
    try:
        out = importer.run(doc)
    except RecursionError:
        raise ValidationError(FieldError("", "config nests too deeply")) from None
    errors = list(importer.errors)
    function: FunctionConfig | None = None
    if out is not None:
        try:
            function = parse_function(out, limits=limits, device=device)
        except ValidationError as exc:
            for e in exc.errors:
                path = importer.translate(e.path)
                if any(_related(path, mine.path) for mine in importer.errors):
                    continue  # already reported in upstream terms
                if any(repr(bad) in e.message for bad in importer.bad_names):
                    continue  # follows from a name already reported as invalid
                if importer.too_many_inputs and "is not an input" in e.message:
                    continue  # pappus drops all inputs past its limit; the limit is reported once
                fe = FieldError(path, e.message)
                if fe not in errors:
                    errors.append(fe)
    if errors:
        raise ValidationError(errors)
    assert out is not None and function is not None

    if importer.saw_constant:
        importer.note("Constant arguments are passed as i64 (8 bytes), as upstream passes them; where a "
                      "kernel parameter is narrower, upstream's HIP launch reads only its low bytes, which "
                      "pappus's signature check refuses: narrow_constants() retypes such constants")
    if importer.saw_sizeof_arg and gen == "modules":
        importer.note("Sizeof arguments pass the buffer's size as a u64, as the thesis-era code did; "
                      "dev/gpu since e292fa7 passes a pointer to a temporary Result instead (a bug)")

    modules = importer.modules
    by_library = {m.library: m for m in modules.values() if m.used}
    libraries: dict[str, Path] = {}
    already: list[str] = []
    for lib in function.libraries:
        module = by_library[lib]
        if module.registered:
            already.append(lib)
            continue
        assert module.resolved is not None
        libraries[lib] = module.resolved
    module_names = {lib: (by_library[lib].key if gen == "modules" else PurePosixPath(str(by_library[lib].path)).name)
                    for lib in function.libraries}
    module_paths = {lib: str(by_library[lib].path) for lib in function.libraries}
    return ImportResult(generation=gen, config=out, libraries=libraries, notes=importer.notes,
                        function=function, module_names=module_names, module_paths=module_paths,
                        weights=tuple(name for name, _ in importer.inputs if name in importer.weights),
                        registered=tuple(already))


# --- export ---------------------------------------------------------------------------------


class _Exporter:
    def __init__(self, config: FunctionConfig, allow_lossy: bool) -> None:
        self.fc = config
        self.allow_lossy = allow_lossy
        self.errors: list[FieldError] = []
        self.input_names = set(config.blueprint.input_names)

    def err(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))

    def sizing(self, s: Sizing, path: str) -> Any:
        if isinstance(s, Absolute):
            return {"Absolute": s.value}
        if isinstance(s, Sizeof):
            return {"Sizeof": s.name}
        if isinstance(s, FromInput):
            if s.dtype != "u64":
                self.err(_join(path, "FromInput.type"), f"upstream's FromInput reads only u64, not {s.dtype}")
                return None
            return {"FromInput": {"bufname": s.input, "idx": s.index}}
        kind = type(s).__name__
        self.err(path, f"{kind} has no upstream equivalent (Dandelion sizes are Absolute, Sizeof or "
                       "FromInput u64)")
        return None

    def arg(self, a: object, path: str) -> Any:
        if isinstance(a, PtrArg):
            return {"Ptr": a.buffer}
        if isinstance(a, SizeofArg):
            return {"Sizeof": a.buffer}
        if not isinstance(a, ConstantArg):  # Value: worked out per invocation, unknown upstream
            self.err(_join(path, type(a).__name__.removesuffix("Arg")),
                     "has no upstream equivalent (Dandelion arguments are Ptr, Sizeof and Constant)")
            return None
        if a.dtype == "i64":
            return {"Constant": int(a.value)}
        if a.dtype == "u64":  # the same 8 bytes, read as i64
            v = int(a.value)
            return {"Constant": v - USIZE_MOD if v > I64_MAX else v}
        if a.dtype == "f64":  # the same 8 bytes, read as i64
            return {"Constant": struct.unpack("<q", struct.pack("<d", float(a.value)))[0]}
        width = DTYPES[a.dtype][0]
        self.err(_join(path, "Constant.type"), f"upstream passes every Constant as 8 bytes (an i64); a "
                                               f"{width}-byte {a.dtype} has no upstream equivalent")
        return None

    def actions(self, actions: tuple[Action, ...], path: str) -> list[Any]:
        out: list[Any] = []
        for i, action in enumerate(actions):
            p = f"{path}[{i}]"
            if isinstance(action, ExecKernel):
                p = _join(p, "ExecKernel")
                launch: dict[str, Any] = {}
                for k, key in enumerate(LAUNCH_FIELDS[:3]):
                    launch[key] = self.sizing(action.grid[k], f"{p}.grid[{k}]")
                for k, key in enumerate(LAUNCH_FIELDS[3:6]):
                    launch[key] = self.sizing(action.block[k], f"{p}.block[{k}]")
                launch["shared_mem_bytes"] = self.sizing(action.shared_mem_bytes, _join(p, "shared_mem_bytes"))
                args = [self.arg(a, f"{p}.args[{j}]") for j, a in enumerate(action.args)]
                out.append({"ExecKernel": [action.kernel, args, launch]})
            else:
                assert isinstance(action, Repeat)
                p = _join(p, "Repeat")
                times = self.sizing(action.times, _join(p, "times"))
                out.append({"Repeat": [times, self.actions(action.body, _join(p, "body"))]})
        return out

    def blueprint(self) -> dict[str, Any]:
        bp = self.fc.blueprint
        reads: dict[str, int] = {}
        other_reads: set[str] = set()  # read as another type than u64: reported as such

        def collect(s: Sizing) -> None:
            if isinstance(s, FromInput):
                if s.dtype != "u64":
                    other_reads.add(s.input)
                else:
                    reads[s.input] = max(reads.get(s.input, -1), s.index)
            for child in _children(s):
                collect(child)

        for _, s in bp.buffers:
            collect(s)
        for s in _launch_sizings(bp.control_flow):
            collect(s)
        for i, spec in enumerate(bp.inputs):
            if spec.size is None or self.allow_lossy or spec.name in other_reads:
                continue
            inferred = (reads[spec.name] + 1) * ELEMENT_BYTES if spec.name in reads else None
            if spec.size != inferred:
                self.err(f"blueprint.inputs[{i}].size", "Dandelion inputs carry no size; this declared size "
                         f"({spec.size} bytes) would be lost (an import would declare "
                         f"{inferred if inferred is not None else 'none'}); pass allow_lossy=True to drop it")
        buffers: dict[str, Any] = {}
        for name, s in bp.buffers:
            p = _join("blueprint.buffers", name)
            if name in self.input_names:
                if s != Sizeof(name):
                    self.err(p, "sizes the buffer of an input; upstream would replace the input with an "
                                "empty buffer of that size instead")
                continue
            refs: set[str] = set()
            _sizeof_refs(s, refs)
            late = sorted(r for r in refs if r not in self.input_names)
            if late:
                self.err(p, f"refers to the size of buffer(s) {', '.join(map(repr, late))}; upstream sizes "
                            "buffers in hash-map order, so a buffer size may refer only to inputs")
            buffers[name] = self.sizing(s, p)
        return {
            "inputs": list(bp.input_names),
            "buffers": buffers,
            "outputs": list(bp.outputs),
            "control_flow": self.actions(bp.control_flow, "blueprint.control_flow"),
        }


def _children(s: Sizing) -> tuple[Sizing, ...]:
    if isinstance(s, Mul):
        return s.factors
    if isinstance(s, Add):
        return s.terms
    if isinstance(s, CeilDiv):
        return (s.numerator, s.denominator)
    return ()


def _sizeof_refs(s: Sizing, refs: set[str]) -> None:
    if isinstance(s, Sizeof):
        refs.add(s.name)
    for child in _children(s):
        _sizeof_refs(child, refs)


def _launch_sizings(actions: tuple[Action, ...]):  # type: ignore[no-untyped-def]
    for action in actions:
        if isinstance(action, ExecKernel):
            yield from action.grid
            yield from action.block
            yield action.shared_mem_bytes
        else:
            yield action.times
            yield from _launch_sizings(action.body)


def _module_path_problem(path: object) -> str | None:
    if not isinstance(path, str) or not path:
        return "must be a non-empty string"
    if "\x00" in path:
        return "must not contain NUL"
    if path.startswith(("/", "\\")) or PureWindowsPath(path).drive:
        return "must be relative (upstream appends it to its library directory)"
    if ".." in re.split(r"[/\\]", path):
        return "must not contain '..'"
    return None


def export_dandelion(
    config: Mapping[str, Any] | str | Path | bytes,
    *,
    generation: str = "modules",
    module_paths: Mapping[str, str],
    module_names: Mapping[str, str] | None = None,
    weights: tuple[str, ...] | list[str] = (),
    allow_lossy: bool = False,
) -> dict[str, Any]:
    """Write a pappus function config as a Dandelion GPU config of ``generation``.

    ``module_paths`` maps every library the function uses to the module path to write (relative
    to upstream's library directory); ``module_names`` optionally names the modules (default:
    the library name); ``weights`` names inputs to write as ``blueprint.weights`` (modules
    generation only). Raises :class:`ValidationError` naming everything that has no upstream
    equivalent: Mul/Add/CeilDiv sizes, FromInput of another type than u64, constants that are
    not 8 bytes, a thesis-era export of several libraries, and (unless ``allow_lossy``) declared
    input sizes, ``deadline``, ``engine`` and ``description``, which upstream cannot express.
    """
    if generation not in GENERATIONS:
        raise ValueError(f"generation must be one of {GENERATIONS}, not {generation!r}")
    doc = load_config_document(config)
    upstream = detect_dandelion(doc)
    if upstream is not None:
        key = "module_path" if upstream == "thesis" else "modules"
        raise ValidationError(FieldError("", f"not a pappus config: it is a Dandelion config already ({upstream} "
                                             f"generation: it has {key!r} and no 'schema'); export takes a pappus "
                                             "config (convert this one with import_dandelion)"))
    fc = parse_function(doc)
    ex = _Exporter(fc, allow_lossy)
    names = dict(module_names or {})
    libraries = fc.libraries
    for lib in libraries:
        if lib not in module_paths:
            ex.err(f"module_paths.{lib}", f"no module path given for library {lib!r}")
        else:
            problem = _module_path_problem(module_paths[lib])
            if problem:
                ex.err(f"module_paths.{lib}", problem)
        name = names.get(lib, lib)
        if not isinstance(name, str) or not name:
            ex.err(f"module_names.{lib}", "must be a non-empty string")
    chosen = [names.get(lib, lib) for lib in libraries]
    if len(set(chosen)) != len(chosen):
        ex.err("module_names", "two libraries would get the same module name")
    if generation == "thesis" and len(libraries) != 1:
        ex.err("kernels", f"a thesis-era config has one module_path, but this function uses "
                          f"{len(libraries)} libraries ({', '.join(libraries)}); export generation='modules'")
    if not allow_lossy:
        for key in ("deadline", "engine", "description"):
            if getattr(fc, key) is not None:
                ex.err(key, "has no Dandelion equivalent; pass allow_lossy=True to drop it")
    blueprint = ex.blueprint()
    weights = list(weights)
    for w in weights:
        if w not in ex.input_names:
            ex.err(f"weights.{w}", f"{w!r} is not an input of this function")
    if weights and generation == "thesis":
        ex.err("weights", "thesis-era configs have no weights")
    if ex.errors:
        raise ValidationError(ex.errors)
    if weights:
        blueprint = {
            "inputs": [n for n in blueprint["inputs"] if n not in weights],
            "weights": [n for n in blueprint["inputs"] if n in weights],
            **{k: v for k, v in blueprint.items() if k != "inputs"},
        }
    if generation == "thesis":
        lib = libraries[0]
        return {"module_path": module_paths[lib], "kernels": [k.name for k in fc.kernels], "blueprint": blueprint}
    return {
        "modules": [{"module_name": names.get(lib, lib), "path": module_paths[lib]} for lib in libraries],
        "kernels": [{"module_name": names.get(k.library, k.library), "kernel_name": k.name} for k in fc.kernels],
        "blueprint": blueprint,
    }


# --- constants against real signatures ------------------------------------------------------


def narrow_constants(config: Mapping[str, Any], libraries: Mapping[str, LibraryInfo], *,
                     limits: Limits = DEFAULT_LIMITS) -> tuple[dict[str, Any], list[str]]:
    """Retype imported i64 constants to the width of the kernel parameter they are passed to.

    Upstream passes every Constant as a pointer to an i64, and HIP copies as many bytes as the
    parameter has: an ``int`` parameter gets the low 4 bytes. pappus checks widths at
    registration, so an imported ``{"type": "i64"}`` passed to a 4-byte parameter would be
    refused. Where the parameter is a narrower integer (or plain bytes) and the value fits, this
    returns a copy of ``config`` with the constant retyped (the kernel sees the same bytes
    upstream gives it) and a note per change; values that do not fit are left for the
    signature check to report (upstream would silently truncate them).
    """
    fc = parse_function(config, limits=limits)
    doc = copy.deepcopy(dict(config))
    notes: list[str] = []
    lib_of = {k.name: k.library for k in fc.kernels}
    input_names = set(fc.blueprint.input_names)
    sized_inputs: set[str] = set()

    def walk(actions: tuple[Action, ...], raw: list[Any], path: str) -> None:
        for i, (action, entry) in enumerate(zip(actions, raw, strict=True)):
            if isinstance(action, Repeat):
                walk(action.body, entry["Repeat"]["body"], f"{path}[{i}].Repeat.body")
                continue
            info = libraries.get(lib_of.get(action.kernel, ""))
            kernel = info.kernel(action.kernel) if info else None
            if kernel is None or len(kernel.params) != len(action.args):
                continue
            for j, (arg, param) in enumerate(zip(action.args, kernel.params, strict=True)):
                if (isinstance(arg, PtrArg) and arg.buffer in input_names and param.size in (4, 8)
                        and param.kind in (ParamKind.INT, ParamKind.UINT, ParamKind.BYTES)):
                    # Upstream's ML configs pass {"Ptr": "var_N"} for a count parameter; its harness
                    # fills var_N with the count, but HIP then hands the kernel the low bytes of a
                    # device address. The meaning is "the number in var_N": pass that number.
                    dtype = f"{'u' if param.kind == ParamKind.UINT else 'i'}{param.size * 8}"
                    entry["ExecKernel"]["args"][j] = {"Value": {"type": dtype, "value": {
                        "FromInput": {"input": arg.buffer, "index": 0, "type": "i64"}}}}
                    sized_inputs.add(arg.buffer)
                    notes.append(f"{path}[{i}].ExecKernel.args[{j}]: Ptr {arg.buffer!r} passed to a "
                                 f"{param.size}-byte value parameter of {action.kernel!r}: upstream gives the "
                                 f"kernel the low bytes of a device address; pappus passes the number stored in "
                                 f"{arg.buffer!r} (an i64, read as {dtype})")
                    continue
                if not (isinstance(arg, ConstantArg) and arg.dtype == "i64" and param.size in (1, 2, 4)):
                    continue
                if param.kind not in (ParamKind.INT, ParamKind.UINT, ParamKind.BYTES):
                    continue
                bits = param.size * 8
                signed = param.kind == ParamKind.INT or (param.kind == ParamKind.BYTES and arg.value < 0)
                dtype = f"{'i' if signed else 'u'}{bits}"
                _, _, lo, hi = DTYPES[dtype]
                if not lo <= arg.value <= hi:
                    continue
                entry["ExecKernel"]["args"][j] = {"Constant": {"type": dtype, "value": int(arg.value)}}
                notes.append(f"{path}[{i}].ExecKernel.args[{j}]: i64 {arg.value} passed as {dtype}, the width "
                             f"of parameter {j} of {action.kernel!r}")

    walk(fc.blueprint.control_flow, doc["blueprint"]["control_flow"], "blueprint.control_flow")
    if sized_inputs:  # FromInput needs the size declared; upstream's harness writes one i64 there
        declared = []
        for entry in doc["blueprint"].get("inputs", []):
            name = entry if isinstance(entry, str) else entry.get("name")
            if name in sized_inputs and (isinstance(entry, str) or "size" not in entry):
                entry = {"name": name, "size": 8}
                notes.append(f"blueprint.inputs: {name!r} declared as exactly 8 bytes (one i64 count)")
            declared.append(entry)
        doc["blueprint"]["inputs"] = declared
    return doc, notes
