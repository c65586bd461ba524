"""Importers and exporters between pappus and the config formats of other systems.

Only Dandelion (both generations of its GPU backend's config) is supported today; see
``docs/dandelion.md``.
"""

from .dandelion import (
    GENERATIONS,
    ImportResult,
    detect_dandelion,
    export_dandelion,
    import_dandelion,
    narrow_constants,
    pappus_from_input_accepts,
    upstream_from_input_accepts,
)

__all__ = [
    "GENERATIONS", "ImportResult", "detect_dandelion", "export_dandelion", "import_dandelion",
    "narrow_constants", "pappus_from_input_accepts", "upstream_from_input_accepts",
]
