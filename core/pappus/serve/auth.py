"""Who is calling: ``Authorization: Bearer TOKEN`` -> tenant, then the tenant's request rate.

Order of checks, all in memory (a couple of microseconds in all, see
``benchmarks/bench_auth_quota.py``):

1. a client address that has used up its failed-authentication budget gets 429 without its
   token being looked at (so guessing is throttled whatever it guesses);
2. the token is hashed and looked up (``TenantStore.authenticate``: constant time in the
   token's content); a missing or wrong token gets 401 and costs the address one failure;
3. the tenant's request-rate token bucket: empty -> ``QuotaExceeded("request_rate")``, 429.

With ``no_auth`` (loopback only, checked at start-up) every caller is tenant ``default``;
request rates still apply.
"""

from __future__ import annotations

from ..errors import PappusError, Unauthorized
from ..tenants import RateLimiter, TenantStore, quota_error, retry_after

NO_AUTH_TENANT = "default"


class AuthThrottled(PappusError):
    code = "too_many_auth_failures"
    http_status = 429

    def __init__(self, retry_after: float) -> None:
        super().__init__("too many failed authentications from this address; retry later",
                         retry_after=retry_after)


class Authenticator:
    def __init__(self, tenants: TenantStore, *, no_auth: bool = False, failure_rate: float = 1.0,
                 failure_burst: int = 20) -> None:
        self.tenants = tenants
        self.no_auth = no_auth
        self.failure_rate = failure_rate
        self.failure_burst = failure_burst
        self.failures = RateLimiter()
        self.rates = RateLimiter()

    def tenant_of(self, authorization: str | None, client: str) -> str:
        """The caller's tenant; raises Unauthorized (401), AuthThrottled or QuotaExceeded (429)."""
        tenant: str | None
        if self.no_auth:
            tenant = NO_AUTH_TENANT
        else:
            wait = self.failures.peek(client)
            if wait > 0:
                raise AuthThrottled(retry_after(wait))
            token = _bearer(authorization)
            tenant = self.tenants.authenticate(token) if token else None
            if tenant is None:
                self.failures.take(client, self.failure_rate, self.failure_burst)
                raise Unauthorized("missing bearer token" if token is None else "invalid bearer token",
                                   header="Authorization")
        quotas = self.tenants.quotas(tenant)
        if quotas.request_rate is not None:
            wait = self.rates.take(tenant, quotas.request_rate, quotas.request_burst)
            if wait > 0:
                raise quota_error(tenant, "request_rate", quotas.request_rate, retry_after=retry_after(wait))
        return tenant


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    value = value.strip()
    return value or None
