"""No Ray at the address given: a pappus error that says what to do, in the caller's terms
(``ClusterRuntime(...)`` or ``--cluster``), never Ray's text about its own ``--address`` flag.

``ray.init`` is replaced by one that fails as Ray 2.60 does, so these tests do not depend on
whether some other Ray happens to run on this machine."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'pappus[ray]')")

from pappus.cli import main  # noqa: E402
from pappus.cluster import ClusterRuntime, RayUnavailable  # noqa: E402
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


def test_cluster_runtime_unreachable_address_keeps_rays_reason(no_ray, tmp_path):
    with pytest.raises(RayUnavailable, match=r"cannot connect to Ray \(ray client connection timeout\)"):
        ClusterRuntime("ray://head.invalid:10001", engine="cpu-sequential", state_dir=tmp_path)


@pytest.mark.parametrize("extra", [[], ["--cluster-actors", "4"]])
def test_serve_cluster_auto_without_ray_names_the_flag(no_ray, tmp_path, capsys, extra):
    code = main(["serve", "--cluster", "auto", *extra, "--no-auth", "--port", "0", "--state-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and no_ray == ["auto"]
    assert err.startswith("pappus: error: --cluster auto: no running Ray cluster found;"), err
    assert "`ray start --head`" in err and "--cluster ray://HOST:10001" in err and "--cluster local" in err
    assert "--address" not in err and "RAY_ADDRESS" not in err and len(err.strip().splitlines()) == 1
