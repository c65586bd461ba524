"""HIP source -> pappus libraries: a shared object for the CPU backend, code objects for AMD GPUs.

For target ``cpu`` the source is compiled as C++17 against the compatibility header shipped in
``include/`` (``<hip/hip_runtime.h>`` resolves there). Kernel names are found by preprocessing
the source with a marker for ``__global__``; a generated wrapper translation unit includes the
source and exports, per kernel, ``extern "C" __pappus_entry_<name>`` plus a manifest record of
the kernel's real parameter types in the ELF section ``.pappus_manifest``. The result is checked
by the same static validator the backend runs at registration, so a library that would run code
at load time is refused here already, with the reason.

For ``gfx*`` targets ``hipcc --genco`` writes one offload bundle holding every named
architecture (``HIP_PLATFORM=amd`` is always set: an ``nvcc`` on PATH hijacks hipcc otherwise).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pappus.errors import FieldError, LibraryError, ValidationError

try:  # core owns the type where it has it; this fallback keeps older cores working
    from pappus.errors import BuildError
except ImportError:  # pragma: no cover - depends on the core version

    class BuildError(ValidationError):  # type: ignore[no-redef]
        """HIP source could not be built; the message carries the compiler's own diagnostics."""

        code = "build_error"

        def __init__(self, message: str, path: str = "source", output: str | None = None) -> None:
            super().__init__([FieldError(path, message)], what="source")
            self.output = output or ""

INCLUDE_DIR = Path(__file__).resolve().parent / "include"
COMPAT_HEADER = "pappus_hip_cpu.h"
ENTRY_PREFIX = "__pappus_entry_"
CPU_TARGET = "cpu"
GFX_PATTERN = re.compile(r"gfx[0-9a-f]{3,5}(?::(?:xnack|sramecc)[+-])*")
COMPILE_TIMEOUT = 300.0

#: Flags of every CPU kernel library. -nostartfiles and -fno-threadsafe-statics keep the library
#: free of constructors and of calls into libstdc++; -fno-gnu-unique keeps it unloadable.
CPU_FLAGS = (
    "-std=c++17", "-O2", "-fPIC", "-shared", "-nostartfiles",
    "-fno-exceptions", "-fno-rtti", "-fvisibility=hidden", "-fvisibility-inlines-hidden",
    "-fno-threadsafe-statics", "-fno-math-errno", "-fno-semantic-interposition",
    "-Wl,-z,noexecstack", "-Wl,-z,now", "-Wl,-z,relro", "-Wl,-z,defs", "-Wl,--as-needed",
)


@dataclass(frozen=True)
class KernelDecl:
    """A ``__global__`` function definition found in the preprocessed source."""

    name: str  # exported name: the unqualified identifier
    qualified: str  # how the wrapper names it: "::ns::name"


# --- entry point ------------------------------------------------------------------------------


def build_library(source: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                  targets: Sequence[str] = (CPU_TARGET,), *, validate: bool = True,
                  extra_flags: Sequence[str] = ()) -> list[Path]:
    """Build ``source`` for ``targets``; return the paths written under ``out_dir``.

    ``cpu`` writes ``<stem>.so`` and ``<stem>.manifest.json``; any ``gfx*`` targets are built
    together into ``<stem>.hsaco``. ``validate=False`` skips the static validation of the CPU
    library (for tests that need a library the validator refuses).
    """
    src = Path(source).resolve()
    out = Path(out_dir).resolve()
    if not src.is_file():
        raise BuildError(f"source {str(src)!r} does not exist or is not a file")
    wanted = list(dict.fromkeys(t.strip() for t in targets if t.strip()))
    if not wanted:
        raise BuildError("no build targets given (use 'cpu' and/or AMD targets such as 'gfx90a')",
                         path="targets")
    gfx = [t for t in wanted if t != CPU_TARGET]
    for t in gfx:
        if not GFX_PATTERN.fullmatch(t):
            raise BuildError(f"unknown target {t!r}: the cpu backend builds 'cpu' and AMD GPU "
                             "targets such as 'gfx90a'", path="targets")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if CPU_TARGET in wanted:
        written += build_cpu(src, out, validate=validate, extra_flags=extra_flags)
    if gfx:
        written.append(build_gfx(src, out, gfx))
    return written


def supports_target(target: str) -> bool:
    return target == CPU_TARGET or bool(fnmatch.fnmatch(target, "gfx*"))


# --- the CPU library ---------------------------------------------------------------------------


def find_cxx() -> str | None:
    """The C++ compiler for kernel libraries: $PAPPUS_CXX, else g++, c++, clang++."""
    explicit = os.environ.get("PAPPUS_CXX")
    if explicit:
        return shutil.which(explicit) or None
    for name in ("g++", "c++", "clang++"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _arch_flags(cxx: str) -> list[str]:
    flags: list[str] = []
    if "clang" not in Path(cxx).name:
        flags.append("-fno-gnu-unique")
    machine = platform.machine()
    if machine in ("x86_64", "AMD64"):
        flags.append("-fcf-protection=none")  # fibers switch stacks: no shadow stack
    elif machine in ("aarch64", "arm64"):
        flags.append("-mbranch-protection=none")
    return flags


def build_cpu(src: Path, out: Path, *, validate: bool = True, extra_flags: Sequence[str] = ()) -> list[Path]:
    cxx = find_cxx()
    if cxx is None:
        raise BuildError("no C++ compiler found (install g++, or set PAPPUS_CXX)")
    try:
        text = src.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BuildError(f"{src.name} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    stem = src.stem
    origin = str(src.resolve())
    with tempfile.TemporaryDirectory(prefix="pappus-build-") as tmp:
        work = Path(tmp)
        processed = work / f"{stem}.pappus.hip"
        processed.write_text(f'#line 1 "{_c_string(origin)}"\n' + rewrite_dynamic_shared(text), encoding="utf-8")
        common = ["-I", str(INCLUDE_DIR), "-iquote", str(src.resolve().parent), "-include", COMPAT_HEADER]
        scan = _run([cxx, "-std=c++17", "-E", "-P", "-x", "c++", "-D__PAPPUS_SCAN__", *common, str(processed)],
                    "preprocessing", work, origin)
        kernels = find_kernels(scan)
        if not kernels:
            raise BuildError(f"{src.name} defines no __global__ kernels (templates are not exported: "
                             "wrap an instantiation in a plain __global__ function)")
        wrapper = work / f"{stem}.pappus.cpp"
        wrapper.write_text(wrapper_source(processed, kernels), encoding="utf-8")
        tmp_so = work / f"{stem}.so"
        _run([cxx, *CPU_FLAGS, *_arch_flags(cxx), *common, *extra_flags, "-o", str(tmp_so), str(wrapper), "-lm"],
             "compiling", work, origin)
        data = tmp_so.read_bytes()
        info = None
        if validate:
            from .driver import CpuDriver

            try:
                info = CpuDriver().inspect_library(data)
            except LibraryError as exc:
                raise BuildError(f"the compiled library would be refused: {exc.errors[0].message}") from None
        so_path = out / f"{stem}.so"
        _replace(so_path, data)
        manifest_path = out / f"{stem}.manifest.json"
        _replace(manifest_path, (json.dumps(manifest_document(data, kernels, info), indent=2) + "\n").encode())
    return [so_path, manifest_path]


def manifest_document(data: bytes, kernels: list[KernelDecl], info: object | None) -> dict[str, object]:
    """The human-readable copy of a library's manifest (what the validator read, when it ran)."""
    doc: dict[str, object] = {
        "format": "pappus-cpu/1",
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "target": platform.machine(),
    }
    kinfo = getattr(info, "kernels", None)
    if kinfo:
        doc["kernels"] = {
            name: {
                "entry": ENTRY_PREFIX + name,
                "params": [{"size": p.size, "kind": p.kind.value} for p in k.params],
                "uses_heap": k.uses_heap,
            }
            for name, k in kinfo.items()
        }
        notes = getattr(info, "notes", ())
        if notes:
            doc["notes"] = list(notes)
    else:
        doc["kernels"] = {k.name: {"entry": ENTRY_PREFIX + k.name} for k in kernels}
    return doc


def wrapper_source(processed: Path, kernels: Iterable[KernelDecl]) -> str:
    lines = [
        "// Generated by pappus_cpu.build: exports every kernel of the source with its manifest.",
        f'#include "{_c_string(str(processed))}"',
        "",
    ]
    for k in kernels:
        nbytes = (len(k.name.encode()) + 1 + 7) // 8 * 8
        lines.append(f'PAPPUS_EXPORT_KERNEL({k.name}, &{k.qualified}, "{k.name}", {nbytes})')
    return "\n".join(lines) + "\n"


# --- source rewriting --------------------------------------------------------------------------

_EXTERN_SHARED = re.compile(
    r"\bextern\s+__shared__\s+"
    r"(?P<attrs>(?:(?:__align__|alignas)\s*\(\s*[^()]*\)\s*|__attribute__\s*\(\([^;]*?\)\)\s*)*)"
    r"(?P<type>[A-Za-z_][\w\s:<>,*]*?)\s*\b(?P<name>[A-Za-z_]\w*)\s*\[\s*\]\s*"
    r"(?:__attribute__\s*\(\([^;]*?\)\)\s*)?;"
)


def rewrite_dynamic_shared(text: str) -> str:
    """``extern __shared__ T name[];`` -> a handle on the launch's dynamic shared memory.

    Line breaks inside the declaration are kept, so compiler diagnostics keep their lines.
    """

    def repl(m: re.Match[str]) -> str:
        typ = " ".join(m.group("type").split())
        newlines = m.group(0).count("\n")
        return (f"[[maybe_unused]] static constexpr ::__pappus::dynshared<{typ}> {m.group('name')}{{}};"
                + "\n" * newlines)

    return _EXTERN_SHARED.sub(repl, text)


# --- finding kernels ---------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
      |(?P<str>[uUL]?R?"(?:\\.|[^"\\\n])*")
      |(?P<chr>[uUL]?'(?:\\.|[^'\\\n])*')
      |(?P<id>[A-Za-z_$][A-Za-z0-9_$]*)
      |(?P<num>\.?\d(?:[eEpP][+-]|[\w.'])*)
      |(?P<punct>::|->|.)""",
    re.X | re.S,
)
MARKER = "__pappus_global__"


def _tokens(text: str) -> list[str]:
    out = []
    for m in _TOKEN.finditer(text):
        if m.lastgroup != "ws":
            out.append(m.group())
    return out


def _skip_balanced(toks: list[str], i: int, open_: str, close: str) -> int:
    """Index just past the bracket that closes ``toks[i]`` (which is ``open_``)."""
    depth = 0
    n = len(toks)
    while i < n:
        if toks[i] == open_:
            depth += 1
        elif toks[i] == close:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return n


def _is_ident(tok: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$]*", tok))


def find_kernels(preprocessed: str) -> list[KernelDecl]:
    """Every ``__global__`` function *definition* at namespace scope, in source order.

    Raises BuildError for overloaded kernel names (their address is ambiguous) and for two
    kernels of the same name in different namespaces (exported names must be unique).
    """
    toks = _tokens(preprocessed)
    n = len(toks)
    scopes: list[tuple[str, str | None]] = []  # ("namespace", name|None) | ("extern", None) | ("other", None)
    stmt = 0
    found: dict[str, KernelDecl] = {}
    templates: list[str] = []
    i = 0
    while i < n:
        t = toks[i]
        if t == "{":
            scopes.append(_classify_scope(toks[stmt:i]))
            stmt = i + 1
        elif t == "}":
            if scopes:
                scopes.pop()
            stmt = i + 1
        elif t == ";":
            stmt = i + 1
        elif t == MARKER and all(kind != "other" for kind, _ in scopes):
            decl, end, is_def = _parse_kernel(toks, i, scopes)
            if decl is not None and is_def:
                if "template" in toks[stmt:i]:
                    templates.append(decl.name)
                else:
                    prev = found.get(decl.name)
                    if prev is not None:
                        what = "is overloaded" if prev.qualified == decl.qualified else \
                            f"is defined as both {prev.qualified} and {decl.qualified}"
                        raise BuildError(f"kernel {decl.name!r} {what}; exported kernel names must be unique")
                    found[decl.name] = decl
            i = max(i + 1, end)
            continue
        i += 1
    return list(found.values())


def _classify_scope(head: list[str]) -> tuple[str, str | None]:
    if "namespace" in head:
        k = head.index("namespace")
        parts = [tok for tok in head[k + 1:] if _is_ident(tok) and tok not in ("inline", "__attribute__")]
        return ("namespace", "::".join(parts) if parts else None)
    if len(head) >= 2 and head[-2] == "extern" and head[-1].startswith('"'):
        return ("extern", None)
    return ("other", None)


def _parse_kernel(toks: list[str], i: int, scopes: list[tuple[str, str | None]]
                  ) -> tuple[KernelDecl | None, int, bool]:
    n = len(toks)
    j = i + 1
    while j < n:
        t = toks[j]
        if t == "__attribute__" and j + 1 < n and toks[j + 1] == "(":
            j = _skip_balanced(toks, j + 1, "(", ")")
            continue
        if t == "[" and j + 1 < n and toks[j + 1] == "[":
            j = _skip_balanced(toks, j, "[", "]")
            continue
        if t in (";", "{", "}"):
            return None, j, False
        if t == "(":
            break
        j += 1
    if j >= n or j == 0 or not _is_ident(toks[j - 1]):
        return None, j, False
    name = toks[j - 1]
    # A qualified out-of-line definition: __global__ void ns::k(...) { ... }
    k = j - 1
    qual = [name]
    while k >= 2 and toks[k - 1] == "::" and _is_ident(toks[k - 2]):
        qual.insert(0, toks[k - 2])
        k -= 2
    end = _skip_balanced(toks, j, "(", ")")
    while end < n and toks[end] not in ("{", ";", "="):
        if toks[end] in ("__attribute__", "noexcept", "throw") and end + 1 < n and toks[end + 1] == "(":
            end = _skip_balanced(toks, end + 1, "(", ")")
        else:
            end += 1
    is_def = end < n and toks[end] == "{"
    outer = [ns for kind, ns in scopes if kind == "namespace" and ns]
    qualified = "::" + "::".join(outer + qual)
    return KernelDecl(name=name, qualified=qualified), end, is_def


# --- AMD GPU code objects ----------------------------------------------------------------------


def build_gfx(src: Path, out: Path, archs: Sequence[str]) -> Path:
    """AMD code objects from the same source: the HIP backend's hipcc build (one implementation)."""
    from pappus_hip.build import build_hsaco

    (path,) = build_hsaco(src, out, list(archs))
    return path


# --- helpers -----------------------------------------------------------------------------------


def _run(cmd: list[str], what: str, cwd: Path, origin: str, env: dict[str, str] | None = None) -> str:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT,
                              env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BuildError(f"{what} {Path(origin).name} took longer than {COMPILE_TIMEOUT:g} s") from None
    except OSError as exc:
        raise BuildError(f"{what} failed: cannot run {cmd[0]}: {exc.strerror}") from None
    if proc.returncode != 0:
        text = _tidy(proc.stderr, cwd)
        raise BuildError(f"{what} {Path(origin).name} failed:\n{text}", output=text)
    return proc.stdout


def _tidy(stderr: str, work: Path) -> str:
    """Compiler output without our temporary paths, at most 60 lines."""
    text = stderr.replace(str(work) + os.sep, "").strip()
    lines = text.splitlines()
    if len(lines) > 60:
        lines = lines[:60] + [f"... ({len(lines) - 60} more lines)"]
    return "\n".join(lines) or "(no compiler output)"


def _c_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _replace(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a reader never sees half a library)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
