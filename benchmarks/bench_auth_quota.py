"""What authentication and quota checks add to a request (issue 16: <= 20 us at p50, in process).

    python benchmarks/bench_auth_quota.py [--n 200000] [--tenants 1000] [--json out.json]

Measured on the code the server runs, per request, each call timed on its own:

- ``auth``: ``Authenticator.tenant_of("Bearer <token>", address)``: the tenant store's change
  check, HMAC-SHA256 of the token, lookup, constant-time compare, the tenant's request-rate
  token bucket;
- ``admission``: ``Runtime._admit`` + ``Runtime._settled``: the tenant's quotas, the pool-bytes
  check, the concurrent-invocations count in and out;
- ``queue_quota``: the fair queue's per-tenant bound lookup (``queued_invocations``);
- ``total``: the three in sequence, as one request pays them.

The store holds ``--tenants`` tenants, so lookups are not a one-entry dict.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from json_out import json_file  # benchmarks/json_out.py

from pappus.bench.report import write_json


def percentiles(samples: list[int]) -> dict[str, float]:
    s = sorted(samples)
    return {"p50_us": s[len(s) // 2] / 1000, "p99_us": s[int(len(s) * 0.99)] / 1000,
            "mean_us": statistics.fmean(s) / 1000}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000, help="requests to time (default: %(default)s)")
    ap.add_argument("--tenants", type=int, default=1000, help="tenants in the store (default: %(default)s)")
    ap.add_argument("--json", metavar="FILE", type=json_file,
                    help="write the figures as JSON (its directories are created)")
    args = ap.parse_args(argv)

    import pappus
    from pappus.serve.auth import Authenticator
    from pappus.tenants import TenantStore

    state = Path(tempfile.mkdtemp(prefix="pappus-bench-auth-"))
    store = TenantStore(state)
    # Write the store in one go (adding 1,000 tenants one by one would fsync 1,000 times).
    tokens = {}

    def fill(doc: dict, key: bytes) -> None:
        for i in range(args.tenants):
            name = f"t{i:05d}"
            token = f"token-{i}-" + "x" * 32
            tokens[name] = token
            doc["tenants"][name] = {"created_at": 0.0, "weight": 1, "operator": False,
                                    "quotas": {"request_rate": 1e9, "request_burst": 1e9,
                                               "concurrent_invocations": 1000},
                                    "token_hash": store._hash(key, token)}

    store._mutate(fill)
    rt = pappus.Runtime(engine="host-sequential", state_dir=state, tenants=store)
    auth = Authenticator(store)
    names = list(tokens)
    headers = [f"Bearer {tokens[n]}" for n in names]
    clock = time.perf_counter_ns
    auth_t, adm_t, q_t, total_t = [], [], [], []
    for i in range(args.n):
        header = headers[i % len(headers)]
        t0 = clock()
        tenant = auth.tenant_of(header, "127.0.0.1")
        t1 = clock()
        key = rt._admit(tenant, "host-sequential", 4096)
        rt._settled(key)
        t2 = clock()
        _ = store.quotas(tenant).queued_invocations
        t3 = clock()
        auth_t.append(t1 - t0)
        adm_t.append(t2 - t1)
        q_t.append(t3 - t2)
        total_t.append(t3 - t0)
    assert tenant == names[(args.n - 1) % len(names)]
    rt.close()
    result = {"n": args.n, "tenants": args.tenants, "python": sys.version.split()[0],
              "auth": percentiles(auth_t), "admission": percentiles(adm_t), "queue_quota": percentiles(q_t),
              "total": percentiles(total_t)}
    for k in ("auth", "admission", "queue_quota", "total"):
        r = result[k]
        print(f"{k:12} p50 {r['p50_us']:6.2f} us   p99 {r['p99_us']:6.2f} us   mean {r['mean_us']:6.2f} us")
    ok = result["total"]["p50_us"] <= 20.0
    print(f"target: total p50 <= 20 us: {'met' if ok else 'NOT met'}")
    if args.json:
        write_json(result, args.json)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
