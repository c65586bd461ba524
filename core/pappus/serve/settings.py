"""Settings of ``pappus serve``: defaults, a config file (TOML or JSON), command-line flags.

A config file holds the same names as the flags (``engine = "cpu-multiprocess"``,
``workers = 4``, ``max_body_bytes = 67108864`` ...) and an optional ``[quotas]`` table of
serving defaults for quotas. Flags given on the command line win over the file. Every wrong
key or value is reported at once, by name.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..config.parser import did_you_mean
from ..errors import FieldError, ValidationError
from ..tenants import BUILTIN_QUOTAS, QUOTA_NAMES, Quotas, parse_quotas

#: Serving defaults, under the state directory's own defaults: one tenant cannot take more
#: than an eighth of an engine's default queue (1024) nor hold more than 256 invocations, and
#: a tenant whose kernels keep faulting is held to 2 faults a second after a burst of 30 (each
#: fault costs the device a recovery: on an H100, 350-490 ms of the driver's time).
SERVE_QUOTAS: Quotas = replace(BUILTIN_QUOTAS, concurrent_invocations=256, queued_invocations=128,
                               fault_rate=2.0, fault_burst=30)


@dataclass
class ServeSettings:
    engine: str = "cpu-sequential"
    workers: int = 2
    #: started workers held in reserve, so a dead worker is replaced at once (GPU backends)
    spare_workers: int = 0
    host: str = "127.0.0.1"
    port: int = 8080
    state_dir: str | None = None
    no_auth: bool = False
    max_body_bytes: int = 64 * 1024 * 1024
    queue_size: int = 1024
    pool_bytes: int | None = None
    heap_limit: int = 0
    deadline: float | None = None
    drain_timeout: float = 30.0
    #: failed authentications a client address may make: refill rate per second and burst
    auth_failure_rate: float = 1.0
    auth_failure_burst: int = 20
    log_level: str = "info"
    access_log: bool = False
    #: serving defaults of quotas (under the state directory's defaults and overrides)
    quotas: dict[str, Any] = field(default_factory=dict)

    def base_quotas(self) -> Quotas:
        values: dict[str, Any] = parse_quotas(self.quotas, path="quotas")
        return replace(SERVE_QUOTAS, **values)

    def check(self) -> ServeSettings:
        errors: list[FieldError] = []

        def need(ok: bool, name: str, message: str) -> None:
            if not ok:
                errors.append(FieldError(name, message))

        need(isinstance(self.engine, str) and bool(self.engine), "engine", "must name an engine, <backend>-<kind>")
        need(_int(self.workers) and self.workers >= 1, "workers", "must be a whole number >= 1")
        need(_int(self.spare_workers) and self.spare_workers >= 0, "spare_workers", "must be a whole number >= 0")
        need(isinstance(self.host, str) and bool(self.host), "host", "must be a host name or address")
        need(_int(self.port) and 0 <= self.port <= 65535, "port", "must be a port number (0-65535)")
        need(_int(self.max_body_bytes) and self.max_body_bytes >= 1024, "max_body_bytes",
             "must be a whole number of bytes >= 1024")
        need(_int(self.queue_size) and self.queue_size >= 1, "queue_size", "must be a whole number >= 1")
        need(self.pool_bytes is None or (_int(self.pool_bytes) and self.pool_bytes > 0), "pool_bytes",
             "must be a positive whole number of bytes")
        need(_int(self.heap_limit) and self.heap_limit >= 0, "heap_limit", "must be a whole number of bytes >= 0")
        need(self.deadline is None or (_num(self.deadline) and self.deadline > 0), "deadline",
             "must be a positive number of seconds")
        need(_num(self.drain_timeout) and self.drain_timeout >= 0, "drain_timeout",
             "must be a number of seconds >= 0")
        need(_num(self.auth_failure_rate) and self.auth_failure_rate >= 0, "auth_failure_rate",
             "must be a number >= 0")
        need(_int(self.auth_failure_burst) and self.auth_failure_burst >= 1, "auth_failure_burst",
             "must be a whole number >= 1")
        need(isinstance(self.no_auth, bool), "no_auth", "must be true or false")
        need(isinstance(self.quotas, dict), "quotas", "must be a table of quota = value")
        if isinstance(self.quotas, dict):
            known = {}
            for key, value in self.quotas.items():
                if key in QUOTA_NAMES:
                    known[key] = value
                    continue
                match = did_you_mean(key, QUOTA_NAMES)
                hint = f", did you mean {match!r}?" if match else ""
                errors.append(FieldError(f"quotas.{key}",
                                         f"unknown quota {key!r}{hint} (known: {', '.join(QUOTA_NAMES)})"))
            try:
                parse_quotas(known, path="quotas")
            except ValidationError as exc:
                errors.extend(exc.errors)
        if errors:
            raise ValidationError(errors, what="serve settings")
        return self


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


FIELD_NAMES = {f.name for f in fields(ServeSettings)}


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a serve config (``.toml`` or ``.json``) into a dict of settings; every unknown name
    and wrong value in it is reported at once."""
    values, spelled, errors, keys = _read_config_file(path)
    errors += _value_errors(values, spelled)
    if errors:
        raise ValidationError(_in_file_order(errors, keys), what="serve settings")
    return values


def _in_file_order(errors: list[FieldError], keys: list[str]) -> list[FieldError]:
    """Errors in the order of the file's keys; those of flags last."""
    where = {key: i for i, key in enumerate(keys)}
    return sorted(errors, key=lambda e: where.get(e.path.partition(".")[0], len(where)))


def _read_config_file(path: str | Path) -> tuple[dict[str, Any], dict[str, str], list[FieldError], list[str]]:
    """The known settings of a config file, how the file spelled each (``max-body-bytes``), an
    error for each unknown name, and the file's keys in order. A file that cannot be read or
    decoded raises at once."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ValidationError(FieldError("config", f"cannot read {str(p)!r}: {exc.strerror}"),
                              what="serve settings") from None
    try:
        if p.suffix == ".json":
            doc = json.loads(raw)
        else:
            doc = _toml().loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(FieldError("config", f"{p.name} is not valid {p.suffix.lstrip('.') or 'TOML'}: {exc}"),
                              what="serve settings") from None
    if not isinstance(doc, dict):
        raise ValidationError(FieldError("config", "must be a table of settings"), what="serve settings")
    doc = dict(doc.get("serve", doc)) if isinstance(doc.get("serve"), dict) else dict(doc)
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    errors = []
    for key, value in doc.items():
        name = str(key).replace("-", "_")
        if name not in FIELD_NAMES:
            match = did_you_mean(name, FIELD_NAMES - set(out))
            if match is not None and "-" in str(key):  # suggest it the way the file writes names
                match = match.replace("_", "-")
            hint = f", did you mean {match!r}?" if match is not None else ""
            errors.append(FieldError(str(key), f"unknown setting{hint} (known: {', '.join(sorted(FIELD_NAMES))})"))
            continue
        out[name] = value
        spelled[name] = str(key)
    return out, spelled, errors, [str(key) for key in doc]


def _value_errors(values: dict[str, Any], spelled: dict[str, str]) -> list[FieldError]:
    """What ``ServeSettings.check`` finds wrong in ``values``, at the names the file used."""
    try:
        ServeSettings(**values).check()
    except ValidationError as exc:
        return [_respell(e, spelled) for e in exc.errors]
    return []


def _respell(error: FieldError, spelled: dict[str, str]) -> FieldError:
    head, dot, rest = error.path.partition(".")
    if head in spelled and spelled[head] != head:
        return FieldError(spelled[head] + dot + rest, error.message)
    return error


def _toml() -> Any:
    import importlib

    try:
        return importlib.import_module("tomllib")
    except ModuleNotFoundError:  # Python 3.10: the tomli backport, if installed
        try:
            return importlib.import_module("tomli")
        except ModuleNotFoundError:
            raise ValidationError(FieldError("config", "TOML needs Python 3.11 or 'pip install tomli'; "
                                             "or write the config as .json"), what="serve settings") from None


def make_settings(config: str | Path | None = None, **overrides: Any) -> ServeSettings:
    """Settings from defaults, then the config file, then ``overrides`` that are not None.

    Every problem is reported in one error: unknown names in the file and wrong values, each
    at the name the file gave it (a value a flag replaces is not checked)."""
    values: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    errors: list[FieldError] = []
    keys: list[str] = []
    if config is not None:
        values, spelled, errors, keys = _read_config_file(config)
    given = {k: v for k, v in overrides.items() if v is not None}
    values.update(given)
    spelled = {k: v for k, v in spelled.items() if k not in given}
    errors += _value_errors(values, spelled)
    if errors:
        raise ValidationError(_in_file_order(errors, keys), what="serve settings")
    return ServeSettings(**values)
