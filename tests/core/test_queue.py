"""The fair queue: tenants take turns, sparse tenants wait little, nobody starves, bounds hold."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pappus.engine.queue import FairQueue
from pappus.errors import EngineClosed, Overloaded, QuotaExceeded


@dataclass
class Item:
    tenant: str
    n: int


def drain(q):
    out = []
    while len(q):
        out.append(q.get(timeout=0))
    return out


def test_round_robin_between_tenants():
    q = FairQueue(100)
    for i in range(4):
        q.put(Item("a", i))
    for i in range(2):
        q.put(Item("b", i))
    order = [(it.tenant, it.n) for it in drain(q)]
    assert order == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("a", 3)]


def test_weights_give_quanta():
    q = FairQueue(100, weights={"a": 3})
    for i in range(6):
        q.put(Item("a", i))
        q.put(Item("b", i))
    tenants = "".join(it.tenant for it in drain(q))
    assert tenants.startswith("aaabaaab")


def test_sparse_tenant_waits_for_at_most_one_item_of_a_busy_one():
    q = FairQueue(100)
    for i in range(50):
        q.put(Item("busy", i))
    for _ in range(10):
        q.get(timeout=0)
        q.put(Item("sparse", 0))  # arrives while busy has a backlog
        first = q.get(timeout=0)
        second = first if first.tenant == "sparse" else q.get(timeout=0)
        assert second.tenant == "sparse"


def test_one_at_a_time_arrivals_cannot_starve_others():
    q = FairQueue(100)
    for i in range(20):
        q.put(Item("victim", i))
    served = []
    for i in range(20):
        q.put(Item("greedy", i))  # always exactly one request queued
        served.append(q.get(timeout=0).tenant)
    assert served.count("victim") >= 9, served


def test_bounds_are_checked_before_queueing():
    q = FairQueue(3, per_tenant_max=lambda t: 2 if t == "limited" else None)
    q.put(Item("limited", 0))
    q.put(Item("limited", 1))
    with pytest.raises(QuotaExceeded) as info:
        q.put(Item("limited", 2))
    assert info.value.quota == "queued_invocations" and info.value.limit == 2
    q.put(Item("other", 0))
    with pytest.raises(Overloaded):
        q.put(Item("other", 1))
    assert len(q) == 3


def test_close_returns_what_was_queued_and_refuses_more():
    q = FairQueue(10)
    q.put(Item("a", 0))
    q.put(Item("b", 0))
    left = q.close()
    assert sorted(it.tenant for it in left) == ["a", "b"] and len(q) == 0
    assert q.get(timeout=0) is None
    with pytest.raises(EngineClosed):
        q.put(Item("a", 1))
