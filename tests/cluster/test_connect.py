"""No Ray at the address given: a pappus error that says what to do, in the caller's terms
(``ClusterRuntime(...)`` or ``--cluster``), never Ray's text about its own ``--address`` flag.

``ray.init`` is replaced by one that fails as Ray 2.60 does, so these tests do not depend on
whether some other Ray happens to run on this machine."""

from __future__ import annotations

import socket
import time

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'pappus[ray]')")

from pappus.cli import main  # noqa: E402
from pappus.cluster import ClusterRuntime, RayUnavailable  # noqa: E402
from pappus.cluster.transport import CONNECT_TIMEOUT, unreachable  # noqa: E402
from pappus.errors import PappusError  # noqa: E402

#: what ``ray.init(address="auto")`` raises when no Ray runs (Ray 2.60)
RAY_AUTO_TEXT = ("Could not find any running Ray instance. Please specify the one to connect to by setting "
                 "`--address` flag or `RAY_ADDRESS` environment variable.")


@pytest.fixture
def no_ray(monkeypatch):
    if ray.is_initialized():  # pragma: no cover - another test left Ray connected
        pytest.skip("Ray is initialised in this process")
    calls = []

    def fake_init(address=None, **kwargs):
        calls.append(address)
        raise ConnectionError(RAY_AUTO_TEXT if address == "auto" else "ray client connection timeout")

    monkeypatch.setattr(ray, "init", fake_init)
    return calls


def test_cluster_runtime_auto_without_ray_says_what_to_do(no_ray, tmp_path):
    with pytest.raises(RayUnavailable) as info:
        ClusterRuntime("auto", engine="cpu-sequential", state_dir=tmp_path)
    err = info.value
    assert isinstance(err, PappusError) and no_ray == ["auto"]
    assert str(err).startswith("ClusterRuntime('auto'): no running Ray cluster found;")
    assert "ray start --head" in str(err) and "ClusterRuntime('local')" in str(err)
    assert "--address" not in str(err)
    assert isinstance(err.__cause__, ConnectionError) and str(err.__cause__) == RAY_AUTO_TEXT
    assert err.to_dict()["error"] == "ray_unavailable" and err.address == "auto"


@pytest.fixture
def listening():
    """A loopback port something accepts connections on (which is not Ray)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


@pytest.fixture
def closed_port():
    """A loopback port nothing listens on: bound once for a free number, then closed."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        return server.getsockname()[1]


def test_cluster_runtime_reachable_address_keeps_rays_reason(no_ray, listening, tmp_path):
    # something answers at the address, so ray.init is tried, and what it says is kept
    address = f"ray://127.0.0.1:{listening}"
    with pytest.raises(RayUnavailable, match=r"cannot connect to Ray \(ray client connection timeout\)"):
        ClusterRuntime(address, engine="cpu-sequential", state_dir=tmp_path)
    assert no_ray == [address]


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_nothing_listening_fails_in_seconds_without_ray_init(no_ray, closed_port, tmp_path, scheme):
    # Ray itself would retry such an address for minutes
    address = f"{scheme}127.0.0.1:{closed_port}"
    t0 = time.monotonic()
    with pytest.raises(RayUnavailable) as info:
        ClusterRuntime(address, engine="cpu-sequential", state_dir=tmp_path)
    assert time.monotonic() - t0 < CONNECT_TIMEOUT
    assert no_ray == []
    assert f"nothing listens at 127.0.0.1:{closed_port}: connection refused" in str(info.value)
    assert info.value.to_dict()["error"] == "ray_unavailable"


def test_unresolvable_host_is_named(no_ray, tmp_path):
    with pytest.raises(RayUnavailable, match=r"cannot resolve the host name 'head\.invalid'"):
        ClusterRuntime("ray://head.invalid:10001", engine="cpu-sequential", state_dir=tmp_path)
    assert no_ray == []


def test_unreachable_reads_the_address_forms(listening, closed_port):
    assert unreachable(f"127.0.0.1:{listening}") is None
    assert unreachable(f"ray://127.0.0.1:{listening}") is None
    assert unreachable("auto") is None  # no port: Ray finds the cluster itself
    assert unreachable("head-node") is None
    assert unreachable("127.0.0.1:70000") == "70000 is not a TCP port (0-65535)"
    ipv6 = unreachable(f"[::1]:{closed_port}")  # refused, or no IPv6 loopback here: either way named
    assert ipv6 is not None and f"[::1]:{closed_port}" in ipv6


def test_serve_cluster_unreachable_names_the_flag(no_ray, closed_port, tmp_path, capsys):
    code = main(["serve", "--cluster", f"127.0.0.1:{closed_port}", "--no-auth", "--port", "0",
                 "--state-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and no_ray == []
    assert err.startswith(f"pappus: error: --cluster 127.0.0.1:{closed_port}: cannot connect to Ray "
                          f"(nothing listens at 127.0.0.1:{closed_port}: connection refused);"), err
    assert "--cluster local" in err


@pytest.mark.parametrize("extra", [[], ["--cluster-actors", "4"]])
def test_serve_cluster_auto_without_ray_names_the_flag(no_ray, tmp_path, capsys, extra):
    code = main(["serve", "--cluster", "auto", *extra, "--no-auth", "--port", "0", "--state-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and no_ray == ["auto"]
    assert err.startswith("pappus: error: --cluster auto: no running Ray cluster found;"), err
    assert "`ray start --head`" in err and "--cluster ray://HOST:10001" in err and "--cluster local" in err
    assert "--address" not in err and "RAY_ADDRESS" not in err and len(err.strip().splitlines()) == 1
