"""Request limits: body size (413 naming the limit, checked before and while reading) and the
loopback rule of ``--no-auth``."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from ..errors import PappusError


class PayloadTooLarge(PappusError):
    code = "payload_too_large"
    http_status = 413

    def __init__(self, limit: int, size: int | None = None) -> None:
        got = f" ({size} bytes)" if size is not None else ""
        super().__init__(f"request body is larger than the limit of {limit} bytes{got}", limit=limit)


class InsecureBind(PappusError):
    code = "insecure_bind"
    http_status = 500


async def read_body(request: Any, limit: int) -> bytes:
    """The request body, refused with PayloadTooLarge as soon as it passes ``limit`` bytes
    (from Content-Length when the client sends one, else while streaming)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            size = None
        if size is not None and size > limit:
            raise PayloadTooLarge(limit, size)
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def is_loopback(host: str) -> bool:
    """True when every address ``host`` stands for is a loopback address."""
    name = host.strip("[]")
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    if name == "localhost":
        return True
    try:
        infos = socket.getaddrinfo(name, None)
    except OSError:
        return False
    addrs = {info[4][0] for info in infos}
    return bool(addrs) and all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addrs)


def check_no_auth_bind(host: str, no_auth: bool) -> None:
    if no_auth and not is_loopback(host):
        raise InsecureBind(f"--no-auth puts every caller in tenant 'default', so it is refused on {host!r}: "
                           "bind to a loopback address (127.0.0.1, ::1, localhost) or use tokens "
                           "('pappus tenant add NAME')", host=host)
