"""Quotas through the Python API: QuotaExceeded at exactly the configured limit, checked before
any work is queued; namespaces; fair-scheduling weights reach the engines."""

from __future__ import annotations

import time

import numpy as np
import pytest

import pappus
from pappus.errors import KernelFault, NotFound, QuotaExceeded, ValidationError
from pappus.tenants import TenantStore

from ..core.helpers import HOST_LIB, fault_config, fill_config, matmul_config, sleep_config


def runtime(tmp_path, engine="host-sequential", **quotas):
    store = TenantStore(tmp_path)
    if "alice" not in store:
        store.add("alice", quotas=quotas)
    else:
        store.update("alice", quotas=quotas)
    return pappus.Runtime(engine=engine, state_dir=tmp_path, pool_bytes=1 << 20)


def test_library_and_function_counts_at_exactly_the_limit(tmp_path):
    with runtime(tmp_path, libraries=2, functions=2) as rt:
        rt.register_library("l1", HOST_LIB, tenant="alice")
        rt.register_library("l2", HOST_LIB, tenant="alice")
        with pytest.raises(QuotaExceeded) as info:
            rt.register_library("l3", HOST_LIB, tenant="alice")
        assert (info.value.quota, info.value.limit, info.value.tenant) == ("libraries", 2, "alice")
        assert info.value.http_status == 429 and info.value.retry_after > 0
        rt.register_library("l2", HOST_LIB, tenant="alice")  # replacing is not a new library
        rt.register_library("l3", HOST_LIB, tenant="bob")  # other tenants have their own count
        rt.register_function("f1", matmul_config(library="l1"), tenant="alice")
        rt.register_function("f2", matmul_config(library="l1"), tenant="alice")
        with pytest.raises(QuotaExceeded) as info:
            rt.register_function("f3", matmul_config(library="l1"), tenant="alice")
        assert (info.value.quota, info.value.limit) == ("functions", 2)
        rt.remove_function("f2", tenant="alice")
        rt.register_function("f3", matmul_config(library="l1"), tenant="alice")
        assert sorted(r.name for r in rt.registry.list_functions("alice")) == ["f1", "f3"]


def test_library_bytes_at_exactly_the_limit(tmp_path):
    with runtime(tmp_path, library_bytes=len(HOST_LIB)) as rt:
        rt.register_library("ok", HOST_LIB, tenant="alice")
        bigger = HOST_LIB[:-1] + b" }"
        with pytest.raises(QuotaExceeded) as info:
            rt.register_library("big", bigger, tenant="alice")
        assert (info.value.quota, info.value.limit) == ("library_bytes", len(HOST_LIB))
        path = tmp_path / "big.json"
        path.write_bytes(bigger)
        with pytest.raises(QuotaExceeded):
            rt.register_library("big", path, tenant="alice")
        assert [r.name for r in rt.registry.list_libraries("alice")] == ["ok"]
        assert not any(p.name.startswith(".tmp") for p in tmp_path.rglob("*"))


def test_pool_bytes_per_invocation(tmp_path):
    with runtime(tmp_path, pool_bytes_per_invocation=4096) as rt:
        rt.register_library("m", HOST_LIB, tenant="alice")
        rt.register_function("fits", fill_config(size=4096), tenant="alice")
        rt.register_function("big", fill_config(size=4097), tenant="alice")
        assert rt.invoke("fits", {}, tenant="alice")["X"] == b"\xab" * 4096
        with pytest.raises(QuotaExceeded) as info:
            rt.invoke("big", {}, tenant="alice")
        assert (info.value.quota, info.value.limit) == ("pool_bytes_per_invocation", 4096)
        assert rt.engine().metrics.submitted == 1, "refused before it was queued"


@pytest.mark.parametrize("engine", ["host-sequential", "host-multiprocess"])
def test_fault_rate_throttles_a_tenant_whose_kernels_keep_faulting(tmp_path, engine):
    """Each fault costs the device a recovery; past its burst a faulting tenant is refused (all
    of its invocations, the honest ones too) until the bucket refills. Others are not."""
    with runtime(tmp_path, engine, fault_rate=4.0, fault_burst=3) as rt:
        for tenant in ("alice", "bob"):
            rt.register_library("m", HOST_LIB, tenant=tenant)
            rt.register_function("fault", fault_config(address=1 << 40), tenant=tenant)
            rt.register_function("fill", fill_config(size=64), tenant=tenant)
        for _ in range(3):
            with pytest.raises(KernelFault):
                rt.invoke("fault", {}, tenant="alice")
        submitted = rt.engine().metrics.submitted
        for name in ("fault", "fill"):
            with pytest.raises(QuotaExceeded) as info:
                rt.invoke(name, {}, tenant="alice")
            assert (info.value.quota, info.value.limit, info.value.tenant) == ("fault_rate", 4.0, "alice")
            assert info.value.http_status == 429 and info.value.retry_after >= 1
        assert rt.engine().metrics.submitted == submitted, "refused before it was queued"
        for _ in range(4):  # alice's faults do not count against bob
            with pytest.raises(KernelFault):
                rt.invoke("fault", {}, tenant="bob")
        time.sleep(0.3)  # one token back (4 per second)
        assert rt.invoke("fill", {}, tenant="alice")["X"] == b"\xab" * 64  # honest runs cost no token
        assert rt.invoke("fill", {}, tenant="alice")["X"] == b"\xab" * 64
        with pytest.raises(KernelFault):
            rt.invoke("fault", {}, tenant="alice")
        with pytest.raises(QuotaExceeded):
            rt.invoke("fill", {}, tenant="alice")


def test_a_fault_rate_of_zero_refuses_for_good_after_the_burst(tmp_path):
    """A bucket that never refills: refused with a finite Retry-After, not a crash."""
    with runtime(tmp_path, fault_rate=0, fault_burst=1) as rt:
        rt.register_library("m", HOST_LIB, tenant="alice")
        rt.register_function("fault", fault_config(address=1 << 40), tenant="alice")
        with pytest.raises(KernelFault):
            rt.invoke("fault", {}, tenant="alice")
        for _ in range(2):
            with pytest.raises(QuotaExceeded) as info:
                rt.invoke("fault", {}, tenant="alice")
            assert (info.value.quota, info.value.limit, info.value.retry_after) == ("fault_rate", 0, 3600)


@pytest.mark.parametrize("engine", ["host-sequential", "host-multiprocess"])
def test_concurrent_invocations_at_exactly_the_limit(tmp_path, engine):
    with runtime(tmp_path, engine, concurrent_invocations=3) as rt:
        rt.register_library("m", HOST_LIB, tenant="alice")
        rt.register_function("nap", sleep_config(300), tenant="alice")
        futures = [rt.invoke_async("nap", {}, tenant="alice") for _ in range(3)]
        with pytest.raises(QuotaExceeded) as info:
            rt.invoke_async("nap", {}, tenant="alice")
        assert (info.value.quota, info.value.limit) == ("concurrent_invocations", 3)
        assert rt.active("alice") == 3
        rt.register_library("m", HOST_LIB, tenant="bob")
        rt.register_function("nap", sleep_config(1), tenant="bob")
        rt.invoke("nap", {}, tenant="bob")  # another tenant is not affected
        for f in futures:
            f.result(timeout=30)
        deadline = time.monotonic() + 5
        while rt.active("alice") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rt.active("alice") == 0
        rt.invoke("nap", {}, tenant="alice")


def test_queued_invocations_is_the_fair_queue_bound(tmp_path):
    with runtime(tmp_path, queued_invocations=2) as rt:
        rt.register_library("m", HOST_LIB, tenant="alice")
        rt.register_function("nap", sleep_config(300), tenant="alice")
        first = rt.invoke_async("nap", {}, tenant="alice")
        deadline = time.monotonic() + 5
        while len(rt.engine().queue) and time.monotonic() < deadline:  # wait until it runs
            time.sleep(0.005)
        queued = [rt.invoke_async("nap", {}, tenant="alice") for _ in range(2)]
        with pytest.raises(QuotaExceeded) as info:
            rt.invoke_async("nap", {}, tenant="alice")
        assert (info.value.quota, info.value.limit) == ("queued_invocations", 2)
        assert rt.active("alice") == 3, "a refused invocation does not count"
        for f in [first, *queued]:
            f.result(timeout=30)


def test_namespaces_in_the_python_api(tmp_path):
    a = np.eye(4, dtype=np.int64)
    with pappus.Runtime(engine="host-sequential", state_dir=tmp_path) as rt:
        rt.register_library("m", HOST_LIB, tenant="alice")
        rt.register_function("mm", matmul_config(repeat=1), tenant="alice")
        with pytest.raises(NotFound):
            rt.invoke("mm", {"A": a.tobytes()}, tenant="bob")
        with pytest.raises(ValidationError) as info:  # bob cannot name alice's library either
            rt.register_function("mm", matmul_config(repeat=5), tenant="bob")
        assert "library 'm' is not registered" in str(info.value)
        rt.register_library("m", HOST_LIB, tenant="bob")
        rt.register_function("mm", matmul_config(repeat=5), tenant="bob")
        out_a = np.frombuffer(rt.invoke("mm", {"A": a.tobytes()}, tenant="alice")["B"], np.int64)
        out_b = np.frombuffer(rt.invoke("mm", {"A": a.tobytes()}, tenant="bob")["B"], np.int64)
        assert out_a.reshape(4, 4)[0, 0] == 1 + 2 and out_b.reshape(4, 4)[0, 0] == 1 + 10
        with pytest.raises(NotFound):
            rt.remove_function("mm", tenant="carol")
        # The default tenant is its own namespace too.
        with pytest.raises(NotFound):
            rt.invoke("mm", {"A": a.tobytes()})


def test_weights_reach_the_fair_queue_and_follow_changes(tmp_path):
    store = TenantStore(tmp_path, refresh_interval=0.0)
    store.add("alice", weight=4)
    with pappus.Runtime(engine="host-sequential", state_dir=tmp_path, tenants=store) as rt:
        engine = rt.engine()
        assert engine.queue.weights == {"alice": 4}
        store.update("alice", weight=2)
        assert engine.queue.weights == {"alice": 2}
        assert engine.queue.per_tenant_max("alice") is None
        store.update("alice", quotas={"queued_invocations": 5})
        assert engine.queue.per_tenant_max("alice") == 5
