"""What a multiprocess worker says to its supervisor, read without trusting the worker.

A worker runs next to tenant code: a GPU kernel may reach the worker's host memory (CUDA's HMM,
AMD's SVM with XNACK), and a flaw in a DeviceAPI could let tenant code do more. So nothing a
worker sends may make the supervisor run code or grow without bound: replies are JSON, not
pickle (``Done``, which every invocation sends, is a tag byte and the id); at most ``MAX_REPLY``
bytes; and checked field by field before anything uses them. A worker that breaks any rule is
treated as lost (``ProtocolError``): its invocation fails and the worker is replaced. The other
direction (supervisor to worker) stays pickle: the worker trusts its supervisor, never the
reverse.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from ..errors import PappusError, error_from_dict

MAX_REPLY = 1 << 20  # a reply is a few hundred bytes; an error's fields a few KiB at most


class ProtocolError(ValueError):
    """A worker sent something that is not a well-formed reply."""


@dataclass(frozen=True)
class Ready:
    """The worker opened its device share: the supervisor sizes its arena from ``capacity``."""

    pid: int
    capacity: int
    heap_limit: int | None
    device_name: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StartFailed:
    error: PappusError


@dataclass(frozen=True)
class Done:
    """The run finished; its outputs are in the arena. ``cold``: a module was loaded for it."""

    invocation: str
    cold: bool = False


@dataclass(frozen=True)
class Failed:
    """The run failed with ``error``; ``fatal``: the device cannot recover, replace the worker."""

    invocation: str
    error: PappusError
    fatal: bool


Reply = Ready | StartFailed | Done | Failed


def encode(reply: Reply) -> bytes:
    if isinstance(reply, Done):  # one per invocation: a tag byte (C: cold) and the id, no JSON to parse
        return (b"C" if reply.cold else b"D") + reply.invocation.encode()
    if isinstance(reply, Ready):
        body: list[Any] = ["ready", reply.pid, reply.capacity, reply.heap_limit, reply.device_name, reply.details]
    elif isinstance(reply, StartFailed):
        body = ["failed", reply.error.to_dict()]
    else:
        body = ["error", reply.invocation, reply.error.to_dict(), reply.fatal]
    # default=str: a detail no JSON type holds (a path, an enum) arrives as its text, not as an error
    return json.dumps(body, default=str).encode()


def send(conn: Connection, reply: Reply) -> None:
    conn.send_bytes(encode(reply))


def receive(conn: Connection) -> Reply:
    """The next reply on ``conn``; ProtocolError if it is not one (EOFError/OSError if the pipe broke)."""
    try:
        data = conn.recv_bytes(MAX_REPLY)
    except OSError as exc:
        if "bad message length" in str(exc):  # longer than MAX_REPLY (or a forged header)
            raise ProtocolError(f"a reply longer than {MAX_REPLY} bytes") from None
        raise
    return decode(data)


def decode(data: bytes) -> Reply:
    if data[:1] in (b"D", b"C"):
        try:
            return Done(data[1:].decode(), cold=data[:1] == b"C")
        except UnicodeDecodeError:
            raise ProtocolError("invocation is not a string") from None
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("a reply that is not JSON") from None
    except RecursionError:  # nesting deeper than the interpreter's stack
        raise ProtocolError("a reply nested too deeply") from None
    if not isinstance(body, list) or not body or not isinstance(body[0], str):
        raise ProtocolError("a reply that is not a tagged list")
    kind, fields = body[0], body[1:]
    if kind == "error" and len(fields) == 3:
        return Failed(_text(fields[0], "invocation"), _error(fields[1]), _flag(fields[2], "fatal"))
    if kind == "ready" and len(fields) == 5:
        pid, capacity, heap_limit, name, details = fields
        if heap_limit is not None:
            heap_limit = _count(heap_limit, "heap_limit")
        if not isinstance(details, dict):
            raise ProtocolError("ready: details is not an object")
        return Ready(_count(pid, "pid"), _count(capacity, "capacity"), heap_limit, _text(name, "device_name"),
                     details)
    if kind == "failed" and len(fields) == 1:
        return StartFailed(_error(fields[0]))
    raise ProtocolError(f"an unknown reply {kind[:40]!r} with {len(fields)} fields")


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ProtocolError(f"{name} is not a string")
    return value


def _count(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"{name} is not a non-negative integer")
    return value


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError(f"{name} is not true or false")
    return value


def _error(value: Any) -> PappusError:
    if not (isinstance(value, dict) and isinstance(value.get("error"), str)
            and isinstance(value.get("message", ""), str)):
        raise ProtocolError("an error that is not an object with a code and a message")
    try:
        return error_from_dict(value)
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise ProtocolError(f"an error that cannot be rebuilt: {type(exc).__name__}") from None
