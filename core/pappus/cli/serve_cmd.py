"""``pappus serve``: the HTTP API (registry, invocations, health, metrics) under uvicorn."""

from __future__ import annotations

import argparse
import importlib.util
from typing import Any

from ..errors import PappusError
from .common import check_state_dir
from .tenant_cmd import quota_pairs

EPILOG = """\
examples:
  pappus tenant add alice                        # prints alice's token (last line)
  pappus serve --engine cpu-multiprocess --workers 2 --port 8080
  pappus serve --config serve.toml               # same names as the flags, plus [quotas]
  pappus serve --no-auth                         # local development: loopback only
  pappus serve --cluster ray://head:10001        # invocations run by engine actors on Ray
  pappus serve --cluster local --no-auth         # a local Ray, one actor per core

  curl -X PUT -H "Authorization: Bearer $TOKEN" --data-binary @matmul.so \\
       http://127.0.0.1:8080/v1/libraries/matmul

SIGTERM / SIGINT: stop accepting, drain in-flight invocations (--drain-timeout), close.
"""


def add_parser(sub: Any, formatter: Any) -> None:
    p = sub.add_parser("serve", formatter_class=formatter, help="serve the HTTP API",
                       description="Serve the registry and invocations over HTTP (the endpoints, errors and "
                                   "metrics: docs/http.md). Every request but GET /v1/health needs a tenant's "
                                   "bearer token.",
                       epilog=EPILOG)
    p.add_argument("--config", metavar="FILE", help="settings file (.toml or .json); flags win over it")
    p.add_argument("--engine", metavar="ENGINE", help="engine, <backend>-<kind> (default: cpu-sequential)")
    p.add_argument("--workers", type=int, metavar="N", help="workers of a multiprocess engine (default: 2)")
    p.add_argument("--spare-workers", type=int, metavar="N",
                   help="workers started ahead and held in reserve: a dead worker's place is taken at once "
                        "instead of after a new process opens the device (about 0.2 s on a GPU); each holds "
                        "a device context and a pool share (default: 0)")
    p.add_argument("--host", metavar="ADDR", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, metavar="PORT", help="port (default: 8080; 0 picks a free one)")
    p.add_argument("--state-dir", metavar="DIR",
                   help="registry and tenants (default: $PAPPUS_HOME or ~/.local/share/pappus)")
    p.add_argument("--no-auth", action="store_true", default=None,
                   help="no tokens: every caller is tenant 'default' (refused unless bound to loopback)")
    p.add_argument("--max-body-bytes", type=int, metavar="BYTES",
                   help="largest request body; larger ones get 413 (default: 64 MiB)")
    p.add_argument("--queue-size", type=int, metavar="N", help="engine queue bound (default: 1024)")
    p.add_argument("--pool-bytes", type=int, metavar="BYTES", help="device pool per engine / worker")
    p.add_argument("--heap-limit", type=int, metavar="BYTES", help="device malloc heap (default: 0)")
    p.add_argument("--deadline", type=float, metavar="SECONDS", help="default invocation deadline")
    p.add_argument("--drain-timeout", type=float, metavar="SECONDS",
                   help="on shutdown, how long in-flight invocations may finish (default: 30)")
    p.add_argument("--quota", action="append", metavar="NAME=VALUE",
                   help="serving default of a quota (under the state directory's own); repeatable")
    p.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"],
                   help="server log level (default: info)")
    p.add_argument("--access-log", action="store_true", default=None, help="log every request")
    # --- scale-out (pappus.cluster; docs/cluster.md) ---
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="run invocations on engine actors on a Ray cluster: ray://HOST:PORT, HOST:PORT, "
                        "'auto', or 'local' (start a local Ray); needs pip install 'pappus[ray]'")
    p.add_argument("--cluster-actors", type=int, metavar="N",
                   help="with --cluster: engine actors to start (default: one per device / CPU engine that "
                        "the cluster's resources hold)")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    missing = [m for m in ("starlette", "uvicorn", "prometheus_client") if importlib.util.find_spec(m) is None]
    if missing:
        raise PappusError(f"pappus serve needs {', '.join(missing)}: pip install 'pappus[serve]'")
    from ..serve import run
    from ..serve.settings import load_config_file, make_settings

    quotas = None
    if args.quota:
        quotas = dict(load_config_file(args.config).get("quotas", {})) if args.config else {}
        quotas.update(quota_pairs(args.quota))
    settings = make_settings(args.config, engine=args.engine, workers=args.workers,
                             spare_workers=args.spare_workers, host=args.host,
                             port=args.port, state_dir=args.state_dir, no_auth=args.no_auth,
                             max_body_bytes=args.max_body_bytes, queue_size=args.queue_size,
                             pool_bytes=args.pool_bytes, heap_limit=args.heap_limit, deadline=args.deadline,
                             drain_timeout=args.drain_timeout, log_level=args.log_level,
                             access_log=args.access_log, quotas=quotas)
    # A state directory that is a file is named here, not reported as a failure to listen.
    check_state_dir(settings.state_dir, "--state-dir" if args.state_dir is not None else f"state_dir in {args.config}")
    if args.cluster:
        return _run_cluster(args, settings)
    return int(run(settings))  # an address that cannot be bound is a ListenError, named there


def _run_cluster(args: argparse.Namespace, settings: Any) -> int:
    if importlib.util.find_spec("ray") is None:
        raise PappusError("pappus serve --cluster needs Ray: pip install 'pappus[ray]'")
    if args.cluster_actors is not None and args.cluster_actors < 1:
        raise PappusError("--cluster-actors must be >= 1")
    from ..cluster.serve import run_cluster

    return int(run_cluster(settings, args.cluster, actors=args.cluster_actors))  # binds through serve.server
