"""Tenants: identities (bearer tokens), quotas, scheduling weights, token-bucket rate limits.

The tenant store lives next to the registry, in the state directory::

    tenants.json   {"version": 1, "defaults": {quotas}, "tenants": {name: {...}}}
    tenants.key    32 random bytes: the key tokens are hashed with (created once, mode 0400)

A token is ``secrets.token_urlsafe(32)`` (256 random bits). It is shown once, when the tenant
is added or rotated, and only ``HMAC-SHA256(tenants.key, token)`` is stored. A slow password
hash (scrypt, argon2) exists to make guessing *low-entropy* secrets expensive; a 256-bit random
token cannot be guessed at any speed, so a keyed fast hash is enough, and it keeps a request's
authentication at a couple of microseconds. The key means the file alone does not let anyone
test candidate tokens offline, and the same token hashes differently in two stores.

Authentication hashes the presented token, looks the digest up, and confirms the match with
``hmac.compare_digest``: the work does not depend on how much of a token is right. The store
keeps everything in memory and re-reads the file when it changes (checked at most every
``refresh_interval`` seconds), so ``pappus tenant remove`` / ``rotate`` in another process
takes effect on a running server within that interval.

Quotas have built-in defaults, store-wide defaults (``defaults``) and per-tenant overrides;
``None`` means unlimited. Writers take the registry's lock and write atomically (temp file,
fsync, rename), and every change is recorded in the registry's audit log.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config.parser import library_name_problem
from .errors import FieldError, NotFound, QuotaExceeded, ValidationError

if TYPE_CHECKING:
    from .registry import Registry

log = logging.getLogger("pappus.tenants")

STORE_VERSION = 1
TOKEN_BYTES = 32
MAX_TOKEN_CHARS = 512  # longer bearer values are refused before any hashing


@dataclass(frozen=True)
class Quotas:
    """Per-tenant limits. ``None`` means unlimited. Checked before any work is queued.

    The built-in values suit the in-process Python API (one trusted caller: invocation counts
    are bounded by the engine's queue only); ``pappus serve`` puts its own serving defaults
    under the store's (see ``pappus.serve.SERVE_QUOTAS``).
    """

    #: invocations admitted and not yet settled (queued or running), over all engines
    concurrent_invocations: int | None = None
    #: invocations waiting in one engine's queue (the fair queue's per-tenant bound)
    queued_invocations: int | None = None
    #: pool bytes one invocation may use (its buffers' total, as planned at admission)
    pool_bytes_per_invocation: int | None = None
    #: bytes of one library
    library_bytes: int | None = 256 * 1024 * 1024
    #: number of libraries / functions in the tenant's namespace
    libraries: int | None = 1000
    functions: int | None = 1000
    #: HTTP requests per second (token bucket refill rate) and the bucket's size (burst)
    request_rate: float | None = 1000.0
    request_burst: int | None = 2000
    #: faults per second the tenant's invocations may cause (kernel faults, sandbox violations,
    #: lost workers, deadlines: each costs the device a recovery) and how many at once (a token
    #: bucket); past them the tenant's invocations are refused until the bucket refills
    fault_rate: float | None = None
    fault_burst: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


QUOTA_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Quotas))
_FLOAT_QUOTAS = {"request_rate", "fault_rate"}
BUILTIN_QUOTAS = Quotas()


def parse_quota_value(name: str, value: Any, path: str = "") -> int | float | None:
    """Check one quota value (``None``/"none"/"unlimited" -> None); raises ValidationError."""
    where = path or name
    if name not in QUOTA_NAMES:
        raise ValidationError(FieldError(where, f"unknown quota {name!r} (known: {', '.join(QUOTA_NAMES)})"),
                              what="quota")
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "unlimited", "null")):
        return None
    if isinstance(value, bool):
        raise ValidationError(FieldError(where, "must be a number, not a boolean"), what="quota")
    try:
        if name in _FLOAT_QUOTAS:
            number: int | float = float(value)
            if not math.isfinite(number):
                raise ValueError
        elif isinstance(value, str):
            number = int(value.strip(), 0)
        elif isinstance(value, int):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        else:
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        kind = "finite number" if name in _FLOAT_QUOTAS else "whole number"
        raise ValidationError(FieldError(where, f"{value!r} is not a {kind}"), what="quota") from None
    if number < 0:
        raise ValidationError(FieldError(where, "must not be negative"), what="quota")
    return number


def parse_quotas(doc: Mapping[str, Any], path: str = "quotas") -> dict[str, int | float | None]:
    errors: list[FieldError] = []
    out: dict[str, int | float | None] = {}
    for key, value in doc.items():
        try:
            out[key] = parse_quota_value(key, value, f"{path}.{key}")
        except ValidationError as exc:
            errors.extend(exc.errors)
    if errors:
        raise ValidationError(errors, what="quota")
    return out


def tenant_name_problem(name: object) -> str | None:
    return library_name_problem(name)


def check_tenant_name(name: str) -> None:
    problem = tenant_name_problem(name)
    if problem:
        raise ValidationError(FieldError("tenant", f"{str(name)[:80]!r} {problem}"), what="tenant")


# --- rate limiting ---------------------------------------------------------------------------


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` stored. Not thread-safe by itself."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float | None = None) -> None:
        self.rate = float(rate)
        self.burst = float(max(burst, 1.0 if rate > 0 else 0.0))
        self.tokens = self.burst
        self.stamp = time.monotonic() if now is None else now

    def take(self, now: float, n: float = 1.0) -> float:
        """Take ``n`` tokens: 0.0 when allowed, else the seconds until they would be there."""
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens >= n:
            self.tokens = tokens - n
            return 0.0
        self.tokens = tokens
        if self.rate <= 0:
            return math.inf
        return (n - tokens) / self.rate


def retry_after(wait: float) -> float:
    """A refill wait (seconds, ``inf`` for a bucket that never refills) as a ``Retry-After``."""
    return 3600.0 if math.isinf(wait) else max(0.001, wait)


class RateLimiter:
    """One token bucket per key (tenant or client address), bounded in number (LRU)."""

    def __init__(self, max_keys: int = 65536) -> None:
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str, rate: float | None, burst: float | None, now: float | None = None) -> float:
        """0.0 when allowed (or unlimited), else the seconds to wait."""
        if rate is None:
            return 0.0
        burst = rate if burst is None else burst
        now = time.monotonic() if now is None else now
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None or bucket.rate != rate or bucket.burst != max(burst, 1.0 if rate > 0 else 0.0):
                bucket = self._buckets[key] = TokenBucket(rate, burst, now)
                if len(self._buckets) > self.max_keys:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
            return bucket.take(now)

    def peek(self, key: str, now: float | None = None) -> float:
        """Seconds until ``key`` has a token again (0.0 if it has one); takes nothing."""
        now = time.monotonic() if now is None else now
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                return 0.0
            tokens = min(bucket.burst, bucket.tokens + (now - bucket.stamp) * bucket.rate)
            if tokens >= 1.0:
                return 0.0
            return math.inf if bucket.rate <= 0 else (1.0 - tokens) / bucket.rate

    def forget(self, key: str) -> None:
        with self._lock:
            self._buckets.pop(key, None)


# --- the store -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tenant:
    name: str
    created_at: float
    rotated_at: float | None = None
    weight: int = 1
    operator: bool = False  # may read /metrics
    quotas: dict[str, Any] = field(default_factory=dict)  # overrides only
    token_hash: str = ""  # hex HMAC-SHA256 of the token

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "created_at": self.created_at, "rotated_at": self.rotated_at,
                "weight": self.weight, "operator": self.operator, "quotas": dict(self.quotas)}


class _Snapshot:
    """The store's content as read from disk at one moment (immutable after construction)."""

    def __init__(self, doc: dict[str, Any], key: bytes | None, stamp: Any, base: Quotas = BUILTIN_QUOTAS) -> None:
        self.stamp = stamp
        self.key = key
        self.tenants: dict[str, Tenant] = {}
        for name, rec in (doc.get("tenants") or {}).items():
            self.tenants[name] = Tenant(name=name, created_at=rec.get("created_at", 0.0),
                                        rotated_at=rec.get("rotated_at"), weight=int(rec.get("weight", 1)),
                                        operator=bool(rec.get("operator", False)),
                                        quotas=dict(rec.get("quotas") or {}), token_hash=rec.get("token_hash", ""))
        defaults: dict[str, Any] = parse_quotas(doc.get("defaults") or {}, path="defaults")
        self.defaults = replace(base, **defaults)
        self.by_hash: dict[bytes, Tenant] = {}
        for t in self.tenants.values():
            if t.token_hash:
                self.by_hash[bytes.fromhex(t.token_hash)] = t
        self.quotas: dict[str, Quotas] = {}
        for name, t in self.tenants.items():
            overrides: dict[str, Any] = parse_quotas(t.quotas, path=f"tenants.{name}.quotas")
            self.quotas[name] = replace(self.defaults, **overrides)
        self.weights: dict[str, int] = {name: t.weight for name, t in self.tenants.items() if t.weight != 1}


_DUMMY_DIGEST = bytes(32)


class TenantStore:
    """Tenants of one state directory. Thread-safe; cheap to query on every request."""

    def __init__(self, root: str | Path | None = None, *, refresh_interval: float = 0.1,
                 registry: Registry | None = None, base_quotas: Quotas = BUILTIN_QUOTAS) -> None:
        """``base_quotas``: what a quota is when neither the store's defaults nor the tenant's
        overrides set it."""
        from .registry import Registry

        self.registry = registry if registry is not None else Registry(root)
        self.root = self.registry.root
        self.path = self.root / "tenants.json"
        self.key_path = self.root / "tenants.key"
        self.refresh_interval = refresh_interval
        self.base_quotas = base_quotas
        self._snap = _Snapshot({}, None, None, base_quotas)
        self._checked = -math.inf
        self._lock = threading.Lock()
        self._listeners: list[Callable[[TenantStore], None]] = []
        self.refresh(force=True)

    # --- reading ---------------------------------------------------------------------------

    def _stamp(self) -> Any:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def refresh(self, force: bool = False) -> bool:
        """Re-read the file if it changed (at most every ``refresh_interval`` s unless forced)."""
        now = time.monotonic()
        if not force and now - self._checked < self.refresh_interval:
            return False
        self._checked = now
        stamp = self._stamp()
        if stamp == self._snap.stamp and not force:
            return False
        with self._lock:
            stamp = self._stamp()
            if stamp == self._snap.stamp and not force:
                return False
            try:
                self._snap = self._load(stamp)
            except (ValidationError, ValueError, TypeError, AttributeError) as exc:
                if force:
                    raise
                # A running server keeps its last good view rather than failing every request.
                log.error("tenant store %s is unreadable, keeping the previous one: %s", self.path, exc)
                return False
            listeners = list(self._listeners)
        for fn in listeners:
            fn(self)
        return True

    def _load(self, stamp: Any) -> _Snapshot:
        doc = self._read_doc()
        key = self._read_key()
        return _Snapshot(doc, key, stamp, self.base_quotas)

    def _read_doc(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ValidationError(FieldError(str(self.path), f"tenant store is unreadable: {exc}"),
                                  what="tenant store") from None
        if not isinstance(doc, dict) or doc.get("version") != STORE_VERSION:
            raise ValidationError(FieldError(str(self.path), f"unknown tenant store version "
                                             f"{doc.get('version') if isinstance(doc, dict) else doc!r}"),
                                  what="tenant store")
        return doc

    def _read_key(self) -> bytes | None:
        try:
            key = self.key_path.read_bytes()
        except FileNotFoundError:
            return None
        return key if len(key) >= 32 else None

    def snapshot(self) -> _Snapshot:
        self.refresh()
        return self._snap

    def on_change(self, fn: Callable[[TenantStore], None]) -> None:
        """Call ``fn(store)`` after every reload (e.g. to update scheduling weights)."""
        with self._lock:
            self._listeners.append(fn)

    # --- the hot path ----------------------------------------------------------------------

    def authenticate(self, token: str | bytes | None) -> str | None:
        """The tenant a bearer token belongs to, or None. Constant time in the token's content."""
        snap = self.snapshot()
        if not token or snap.key is None or len(token) > MAX_TOKEN_CHARS:
            return None
        raw = token.encode("utf-8", "surrogateescape") if isinstance(token, str) else token
        digest = hmac.digest(snap.key, raw, "sha256")
        tenant = snap.by_hash.get(digest)
        expected = bytes.fromhex(tenant.token_hash) if tenant is not None else _DUMMY_DIGEST
        if hmac.compare_digest(expected, digest) and tenant is not None:
            return tenant.name
        return None

    def quotas(self, tenant: str) -> Quotas:
        snap = self.snapshot()
        q = snap.quotas.get(tenant)
        return q if q is not None else snap.defaults

    def weights(self) -> dict[str, int]:
        return dict(self.snapshot().weights)

    def is_operator(self, tenant: str) -> bool:
        t = self.snapshot().tenants.get(tenant)
        return bool(t and t.operator)

    def get(self, name: str) -> Tenant:
        t = self.snapshot().tenants.get(name)
        if t is None:
            raise NotFound("tenant", name)
        return t

    def list_tenants(self) -> list[Tenant]:
        return sorted(self.snapshot().tenants.values(), key=lambda t: t.name)

    def defaults(self) -> Quotas:
        return self.snapshot().defaults

    def __contains__(self, name: object) -> bool:
        return name in self.snapshot().tenants

    # --- writing (under the registry lock, atomically, audited) ------------------------------

    def _ensure_key(self) -> bytes:
        key = self._read_key()
        if key is None:
            key = secrets.token_bytes(32)
            self.registry._atomic_write(self.key_path, key, mode=0o400)
        return key

    def _mutate(self, fn: Callable[[dict[str, Any], bytes], Any]) -> Any:
        with self.registry.locked():
            key = self._ensure_key()
            doc = self._read_doc() or {"version": STORE_VERSION, "defaults": {}, "tenants": {}}
            doc.setdefault("defaults", {})
            doc.setdefault("tenants", {})
            result = fn(doc, key)
            self.registry._atomic_write(self.path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())
        self.refresh(force=True)
        return result

    @staticmethod
    def _hash(key: bytes, token: str) -> str:
        return hmac.digest(key, token.encode(), "sha256").hex()

    def add(self, name: str, *, weight: int = 1, operator: bool = False,
            quotas: Mapping[str, Any] | None = None) -> str:
        """Create a tenant; returns its token (shown once, never stored)."""
        check_tenant_name(name)
        overrides = parse_quotas(dict(quotas or {}))
        _check_weight(weight)
        token = secrets.token_urlsafe(TOKEN_BYTES)

        def change(doc: dict[str, Any], key: bytes) -> None:
            if name in doc["tenants"]:
                raise ValidationError(FieldError("name", f"tenant {name!r} already exists "
                                                 "(use 'pappus tenant rotate' for a new token)"), what="tenant")
            doc["tenants"][name] = {"created_at": time.time(), "rotated_at": None, "weight": weight,
                                    "operator": operator, "quotas": overrides,
                                    "token_hash": self._hash(key, token)}
            self.registry.audit(name, "add", "tenant", name, None)

        self._mutate(change)
        return token

    def rotate(self, name: str) -> str:
        """A new token for ``name``; the old one stops working."""
        check_tenant_name(name)
        token = secrets.token_urlsafe(TOKEN_BYTES)

        def change(doc: dict[str, Any], key: bytes) -> None:
            rec = doc["tenants"].get(name)
            if rec is None:
                raise NotFound("tenant", name)
            rec["token_hash"] = self._hash(key, token)
            rec["rotated_at"] = time.time()
            self.registry.audit(name, "rotate", "tenant", name, None)

        self._mutate(change)
        return token

    def remove(self, name: str, *, purge: bool = True) -> list[str]:
        """Delete a tenant (its token stops working). With ``purge``, its libraries and
        functions are removed too (each removal audited), so a later tenant of the same name
        starts empty. Returns what was purged, as ``kind/name``."""
        check_tenant_name(name)

        def change(doc: dict[str, Any], key: bytes) -> list[str]:
            if name not in doc["tenants"]:
                raise NotFound("tenant", name)
            del doc["tenants"][name]
            self.registry.audit(name, "remove", "tenant", name, None)
            return self.registry.purge_tenant_locked(name) if purge else []

        removed: list[str] = self._mutate(change)
        return removed

    def update(self, name: str, *, weight: int | None = None, operator: bool | None = None,
               quotas: Mapping[str, Any] | None = None) -> Tenant:
        """Change a tenant's weight, operator flag or quota overrides (a None quota unsets it)."""
        check_tenant_name(name)
        overrides = parse_quotas(dict(quotas or {}))
        if weight is not None:
            _check_weight(weight)

        def change(doc: dict[str, Any], key: bytes) -> None:
            rec = doc["tenants"].get(name)
            if rec is None:
                raise NotFound("tenant", name)
            if weight is not None:
                rec["weight"] = weight
            if operator is not None:
                rec["operator"] = operator
            for k, v in overrides.items():
                rec.setdefault("quotas", {})[k] = v
            self.registry.audit(name, "update", "tenant", name, None)

        self._mutate(change)
        return self.get(name)

    def unset_quotas(self, name: str, keys: Iterable[str]) -> None:
        def change(doc: dict[str, Any], key: bytes) -> None:
            rec = doc["tenants"].get(name)
            if rec is None:
                raise NotFound("tenant", name)
            for k in keys:
                rec.get("quotas", {}).pop(k, None)

        self._mutate(change)

    def set_defaults(self, quotas: Mapping[str, Any]) -> Quotas:
        """Change store-wide default quotas (what tenants without an override get)."""
        values = parse_quotas(dict(quotas), path="defaults")

        def change(doc: dict[str, Any], key: bytes) -> None:
            doc["defaults"].update(values)
            self.registry.audit("*", "update", "quota-defaults", "defaults", None)

        self._mutate(change)
        return self.defaults()


def _check_weight(weight: Any) -> None:
    if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= 1000:
        raise ValidationError(FieldError("weight", f"{weight!r} is not a whole number from 1 to 1000"),
                              what="tenant")


def quota_error(tenant: str, name: str, limit: float, retry_after: float | None = None) -> QuotaExceeded:
    """The error for a quota that is used up. Quotas that waiting does not clear (counts,
    sizes) still carry a Retry-After, a long one, so HTTP clients back off."""
    if retry_after is None:
        retry_after = 60.0
    return QuotaExceeded(name, limit, tenant, retry_after=retry_after)
