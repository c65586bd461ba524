"""A worker's replies cannot make its supervisor run code (engine/replies.py).

A multiprocess worker runs next to tenant code, so its supervisor reads it as untrusted: JSON,
bounded, every field checked. These tests send what a subverted worker could send, on a real
pipe and through a real engine.
"""

from __future__ import annotations

import os
import pickle
import socket
import struct

import numpy as np
import pytest

import pappus
from pappus.engine import replies
from pappus.errors import DeviceError, KernelFault

from .helpers import fill_config
from .hostile_device import Mkdir, hostile_runtime


@pytest.fixture
def pipe():
    from multiprocessing.connection import Connection

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    worker, supervisor = Connection(a.detach()), Connection(b.detach())
    yield worker, supervisor
    worker.close()
    supervisor.close()


@pytest.mark.parametrize("reply", [
    replies.Ready(1234, 1 << 30, None, "gpu", {"arch": "sm_90", "notes": ["a"]}),
    replies.Ready(1, 0, 4 << 20, "host", {}),
    replies.Done("inv-1"),
    replies.Done("inv-1", cold=True),
    replies.Failed("inv-2", KernelFault("boom", kernel="k", address=8, signal="SIGSEGV"), False),
    replies.Failed("inv-3", DeviceError("gone", status="CUDA_ERROR_ILLEGAL_ADDRESS"), True),
    replies.StartFailed(DeviceError("no device", status="CUDA_ERROR_NO_DEVICE")),
])
def test_every_reply_arrives_as_it_was_sent(pipe, reply):
    worker, supervisor = pipe
    replies.send(worker, reply)
    got = replies.receive(supervisor)
    assert type(got) is type(reply)
    if isinstance(reply, (replies.Failed, replies.StartFailed)):
        assert type(got.error) is type(reply.error) and got.error.to_dict() == reply.error.to_dict()
        if isinstance(reply, replies.Failed):
            assert (got.invocation, got.fatal) == (reply.invocation, reply.fatal)
    else:
        assert got == reply


def test_a_detail_json_cannot_hold_arrives_as_text(pipe):
    worker, supervisor = pipe
    replies.send(worker, replies.Ready(1, 2, None, "d", {"path": pappus.__name__, "blob": b"\x01", "set": {1}}))
    got = replies.receive(supervisor)
    assert got.details["blob"] == str(b"\x01") and got.details["set"] == "{1}"


def test_a_workers_start_steps_are_kept_only_where_they_fit_what_the_supervisor_saw():
    from pappus.engine.multiprocess import start_steps

    asked, ready, served = 100.0, 100.5, 100.6  # the supervisor's clock: 0.5 s until Ready
    honest = {"started_at": 100.1, "start_seconds": {"open": 0.2, "lockdown": 0.01}}
    assert start_steps(honest, asked, ready, served) == pytest.approx(
        {"fork": 0.1, "open": 0.2, "lockdown": 0.01, "handshake": 0.1, "total": 0.6})
    forged = {"started_at": 99.0,  # before the supervisor asked
              "start_seconds": {"open": -1.0, "reserve": 3.0, "pool": True, "monitors": "0.1", "x" * 33: 0.1,
                                **{f"s{i}": 0.001 for i in range(40)}}}
    steps = start_steps(forged, asked, ready, served)
    assert "fork" not in steps and not {"open", "reserve", "pool", "monitors", "x" * 33} & set(steps)
    assert len(steps) <= 16 + 2  # a handful of the worker's, then handshake and total
    assert start_steps({"start_seconds": [1, 2]}, asked, ready, served).keys() == {"handshake", "total"}


def test_a_pickle_from_a_worker_runs_nothing(pipe, tmp_path):
    worker, supervisor = pipe
    marker = tmp_path / "unpickled"
    worker.send(Mkdir(str(marker)))  # what the supervisor's recv() used to unpickle
    with pytest.raises(replies.ProtocolError, match="not JSON"):
        replies.receive(supervisor)
    assert not marker.exists()
    pickle.loads(pickle.dumps(Mkdir(str(marker))))  # the payload does what it says when unpickled
    assert marker.exists()


def test_a_reply_past_the_bound_is_refused_unread(pipe):
    worker, supervisor = pipe
    os.write(worker.fileno(), struct.pack("!i", replies.MAX_REPLY + 1))  # a length header, nothing after
    with pytest.raises(replies.ProtocolError, match="longer than"):
        replies.receive(supervisor)


@pytest.mark.parametrize("body, complaint", [
    (b"{}", "tagged list"),
    (b"[]", "tagged list"),
    (b"[1, 2]", "tagged list"),
    (b'["done", "a"]', "unknown reply"),
    (b"D\xff\xfe", "invocation is not a string"),
    (b'["exec", "os.system"]', "unknown reply"),
    (b'["error", "i", {"message": "m"}, false]', "code and a message"),
    (b'["error", "i", {"error": "kernel_fault", "message": 3}, false]', "code and a message"),
    (b'["error", "i", {"error": "kernel_fault", "message": "m"}, "yes"]', "fatal"),
    (b'["ready", -1, 0, null, "n", {}]', "pid"),
    (b'["ready", 1, true, null, "n", {}]', "capacity"),
    (b'["ready", 1, 2, 1.5, "n", {}]', "heap_limit"),
    (b'["ready", 1, 2, null, "n", []]', "details"),
    (b'["failed", "text"]', "code and a message"),
    (b'["error", ' + b"[" * 200_000 + b"]" * 200_000 + b"]", "nested too deeply"),
])
def test_malformed_replies_are_named(body, complaint):
    with pytest.raises(replies.ProtocolError, match=complaint):
        replies.decode(body)


def test_a_subverted_worker_fails_its_invocation_and_is_replaced_without_reaching_the_supervisor(tmp_path):
    """The worker writes a pickle on its control socket mid-run (tests/core/hostile_device.py):
    the supervisor runs none of it, fails that invocation, replaces the worker and serves on."""
    marker = tmp_path / "unpickled-in-the-supervisor"
    rt = hostile_runtime(tmp_path, marker=str(marker))
    try:
        rt.register_function("fill", fill_config())
        a = np.arange(16 * 16, dtype=np.int64).reshape(16, 16)
        expected = (a @ a.T + 2).tobytes()
        assert rt.invoke("mm", {"A": a.tobytes()})["B"] == expected
        engine = rt.engine("hostile-multiprocess")
        pid = engine.worker_pids()[0]
        with pytest.raises(DeviceError, match="malformed reply") as info:
            rt.invoke("fill", {})
        assert info.value.fields["status"] == "protocol_error"
        assert not marker.exists()
        assert rt.invoke("mm", {"A": a.tobytes()}, deadline=30)["B"] == expected
        assert engine.worker_pids()[0] not in (None, pid) and engine.metrics.respawns == 1
    finally:
        rt.close(drain=False, timeout=10)
    assert not marker.exists()


def test_a_worker_that_answers_its_start_with_a_pickle_never_starts(tmp_path):
    marker = tmp_path / "unpickled-in-the-supervisor"
    rt = hostile_runtime(tmp_path, marker=str(marker), forge_at_open=True)
    try:
        with pytest.raises(DeviceError, match="answered its start with a malformed reply: a reply that is not JSON"):
            rt.invoke("mm", {"A": np.zeros(16 * 16, dtype=np.int64).tobytes()}, deadline=30)
        assert not marker.exists()
    finally:
        rt.close(drain=False, timeout=10)
    assert not marker.exists()
