"""``pappus serve``: the HTTP API (docs/http.md) on starlette + uvicorn.

Importing this package needs nothing beyond pappus; the web stack (the ``serve`` extra:
starlette, uvicorn, prometheus-client) is imported by :func:`create_app` and :func:`run`.

- ``app``      routes, request parsing, error mapping (``PappusError.to_dict()`` bodies)
- ``auth``     bearer tokens -> tenant, per-address failure limits, per-tenant request rates
- ``limits``   request body size limits, loopback checks
- ``metrics``  Prometheus metrics (a private registry per app; the tenant is a label)
- ``server``   settings, the uvicorn server, graceful shutdown
"""

from __future__ import annotations

from typing import Any

from .settings import SERVE_QUOTAS, ServeSettings

__all__ = ["SERVE_QUOTAS", "ServeSettings", "create_app", "run"]


def create_app(*args: Any, **kwargs: Any) -> Any:
    from .app import create_app as _create_app

    return _create_app(*args, **kwargs)


def run(*args: Any, **kwargs: Any) -> Any:
    from .server import run as _run

    return _run(*args, **kwargs)
