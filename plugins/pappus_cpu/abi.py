"""Constants shared with the C side (include/pappus_cpu_abi.h and csrc/pappus_cpu_device.c).

Keep in step with the headers: ``tests/cpu/test_build.py`` checks that they agree.
"""

from __future__ import annotations

ABI_VERSION = 1
ENTRY_PREFIX = "__pappus_entry_"
MANIFEST_SECTION = ".pappus_manifest"
HEAP_SECTION = ".pappus_uses_heap"
MANIFEST_MAGIC = 0x4B4D5050  # "PPMK"
RECORD_KERNEL = 1
RECORD_HEAP = 2

#: manifest kind number -> pappus.kernels.ParamKind value
KIND_NAMES = {1: "pointer", 2: "int", 3: "uint", 4: "float", 5: "bytes"}
