"""The published JSON Schema of ``pappus/function@1`` (shipped in the package, rendered in docs)."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any


@lru_cache(maxsize=1)
def function_schema() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("function.schema.json").read_text("utf-8")
    return json.loads(text)
