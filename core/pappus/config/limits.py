"""Bounds on what a function config may ask for; every one is checked at registration."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

U64_MAX = 2**64 - 1


@dataclass(frozen=True)
class Limits:
    max_config_bytes: int = 4 * 1024 * 1024
    max_inputs: int = 4096
    max_buffers: int = 16384
    max_kernels: int = 16384
    max_actions: int = 200_000
    max_args: int = 256
    max_nesting: int = 16
    max_sizing_depth: int = 32
    max_repeat: int = 10_000_000
    max_launches: int = 50_000_000
    max_deadline: float = 24 * 3600.0
    default_deadline: float = 30.0
    max_buffer_bytes: int = 2**48

    def with_overrides(self, **overrides: Any) -> Limits:
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown limits: {', '.join(sorted(unknown))}")
        return replace(self, **overrides)


DEFAULT_LIMITS = Limits()

# Scalar types of Constant args and FromInput reads: name -> (bytes, kind, min, max)
DTYPES: dict[str, tuple[int, str, float, float]] = {
    "i8": (1, "int", -(2**7), 2**7 - 1),
    "i16": (2, "int", -(2**15), 2**15 - 1),
    "i32": (4, "int", -(2**31), 2**31 - 1),
    "i64": (8, "int", -(2**63), 2**63 - 1),
    "u8": (1, "uint", 0, 2**8 - 1),
    "u16": (2, "uint", 0, 2**16 - 1),
    "u32": (4, "uint", 0, 2**32 - 1),
    "u64": (8, "uint", 0, 2**64 - 1),
    "f32": (4, "float", -3.4028234663852886e38, 3.4028234663852886e38),
    "f64": (8, "float", -1.7976931348623157e308, 1.7976931348623157e308),
}

INTEGER_DTYPES = tuple(name for name, spec in DTYPES.items() if spec[1] != "float")
