"""The cffi declarations against the real installed ROCm headers, compiled with ``cc``.

Everything is generated from :data:`pappus_hsa.binding.CDEF` itself (every struct, every field,
every enum constant, every function and callback type in it), so a declaration added later is
checked too, and a header that changes under us fails here rather than at a fault.
"""

from __future__ import annotations

import json
import re
import subprocess

from pappus_hsa import binding
from pappus_hsa.binding import CDEF, ffi

from .hsa_support import build

STRUCTS = ["hsa_agent_t", "hsa_amd_gpu_memory_fault_info_t", "hsa_amd_event_t"]
ENUM_TYPES = ["hsa_status_t", "hsa_amd_event_type_t", "hsa_amd_memory_fault_reason_t"]
HEADERS = "#include <hsa/hsa.h>\n#include <hsa/hsa_ext_amd.h>\n"


def _fields(ctype, prefix=""):
    """(dotted path, cffi offset, cffi size) for every field, nested structs included."""
    for name, field in ctype.fields:
        path = f"{prefix}{name}"
        yield path, field.offset, ffi.sizeof(field.type)
        if field.type.kind == "struct":
            for sub, off, size in _fields(field.type, path + "."):
                yield sub, field.offset + off, size


def _constants() -> dict[str, int]:
    names: dict[str, int] = {}
    for enum in ENUM_TYPES:
        names.update(ffi.typeof(enum).relements)
    lib = ffi.dlopen(None)
    for name in re.findall(r"^\s*(HSA_STATUS_\w+)\s*=", CDEF, re.M):
        names.setdefault(name, int(getattr(lib, name)))
    return names


def _top_level_declarations(cdef: str) -> list[str]:
    text = re.sub(r"/\*.*?\*/", "", cdef, flags=re.S)
    out, depth, current = [], 0, []
    for ch in text:
        current.append(ch)
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == ";" and depth == 0:
            out.append(" ".join("".join(current).split()))
            current = []
    return out


def test_structs_and_constants_match_the_real_headers(cc, tmp_path):
    lines = [HEADERS, "#include <stddef.h>", "#include <stdio.h>", "#include <stdint.h>",
             "int main(void) {", '  printf("{");']
    expected: dict[str, int] = {}

    def emit(key: str, c_expr: str, value: int) -> None:
        lines.append(f'  printf("\\"%s\\": %lld, ", "{key}", (long long)({c_expr}));')
        expected[key] = value

    for struct in STRUCTS:
        emit(f"sizeof {struct}", f"sizeof({struct})", ffi.sizeof(struct))
        emit(f"alignof {struct}", f"_Alignof({struct})", ffi.alignof(struct))
        for path, offset, size in _fields(ffi.typeof(struct)):
            emit(f"offsetof {struct}.{path}", f"offsetof({struct}, {path})", offset)
            emit(f"sizeof {struct}.{path}", f"sizeof((({struct} *)0)->{path})", size)
    for enum in ENUM_TYPES:
        emit(f"sizeof {enum}", f"sizeof({enum})", ffi.sizeof(enum))
    for name, value in _constants().items():
        # The reason mask is a uint32_t; in C, HSA_AMD_MEMORY_FAULT_HANG (1 << 31) is a negative
        # int, so compare the bit patterns as the field holds them.
        emit(f"const {name}", f"(uint32_t){name}", value & 0xFFFFFFFF)
    lines += ['  printf("\\"end\\": 0}\\n");', "  return 0;", "}"]
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines))
    exe = build(cc, [src], tmp_path / "layout", shared=False)
    measured = json.loads(subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout)
    measured.pop("end")
    mismatches = {k: (expected[k], measured[k]) for k in expected if measured[k] != expected[k]}
    assert not mismatches, f"cffi view (left) differs from the header (right): {mismatches}"
    # The checks above really covered the pieces the monitor reads.
    assert measured["offsetof hsa_amd_event_t.memory_fault.virtual_address"] == 16
    assert measured["offsetof hsa_amd_event_t.memory_fault.fault_reason_mask"] == 24
    assert measured["sizeof hsa_amd_event_t"] == 32
    assert len([k for k in expected if k.startswith("const ")]) >= 40


def test_function_and_callback_declarations_match_the_real_headers(cc, tmp_path):
    """Redeclare every function and callback typedef of CDEF after the real headers: a C11
    compiler rejects any redeclaration whose type is not compatible ("conflicting types")."""
    decls = [d for d in _top_level_declarations(CDEF)
             if "(" in d and not d.startswith(("typedef enum", "typedef struct", "enum"))]
    assert {re.search(r"(\w+)\s*\(", d).group(1) for d in decls if not d.startswith("typedef")} == {
        "hsa_status_string", "hsa_init", "hsa_shut_down", "hsa_amd_register_system_event_handler"}
    assert any("hsa_amd_system_event_callback_t" in d and d.startswith("typedef") for d in decls)
    src = tmp_path / "decls.c"
    src.write_text(HEADERS + "\n".join(decls) + "\nint main(void) { return 0; }\n")
    build(cc, [src], tmp_path / "decls", shared=False)  # -Werror: must compile cleanly


def test_a_header_mismatch_would_be_caught(cc, tmp_path):
    """The redeclaration check is not vacuous: a wrong signature fails to compile."""
    src = tmp_path / "bad.c"
    src.write_text(HEADERS + "hsa_status_t hsa_amd_register_system_event_handler("
                   "hsa_amd_system_event_callback_t callback, int data);\nint main(void){return 0;}\n")
    try:
        build(cc, [src], tmp_path / "bad", shared=False)
    except AssertionError as exc:
        assert "conflicting types" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("an incompatible redeclaration compiled")


def test_c_side_sees_the_same_event_size(helper):
    assert helper.lib.pump_sizeof_event() == ffi.sizeof("hsa_amd_event_t")


def test_reason_table_covers_every_bit_of_the_header():
    assert binding.REASON_BITS == {
        1 << 0: "page_not_present", 1 << 1: "read_only", 1 << 2: "nx", 1 << 3: "host_only",
        1 << 4: "dramecc", 1 << 5: "imprecise", 1 << 6: "sramecc", 1 << 31: "hang"}
