"""Prometheus metrics of one server, in a registry of its own (several apps can share a process).

Counted as requests are answered: requests by route/method/status, invocations by
tenant/outcome, invocation latency by tenant, rejections by tenant/quota, failed
authentications. Read from the runtime at scrape time: queue depth and in-flight invocations
per engine and tenant, and per engine the totals, faults, respawns and health. Tenants only
appear as labels once authenticated, so label values are bounded by the number of tenants.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0, 60.0)


class _RuntimeCollector:
    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.seen: set[tuple[str, str]] = set()

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        rt = self.runtime
        depth = GaugeMetricFamily("pappus_queue_depth", "Invocations waiting in an engine queue",
                                  labels=["engine", "tenant"])
        flight = GaugeMetricFamily("pappus_in_flight", "Invocations dequeued and running on an engine",
                                   labels=["engine", "tenant"])
        e_depth = GaugeMetricFamily("pappus_engine_queue_depth", "Invocations waiting, all tenants",
                                    labels=["engine"])
        e_flight = GaugeMetricFamily("pappus_engine_in_flight", "Invocations running, all tenants",
                                     labels=["engine"])
        healthy = GaugeMetricFamily("pappus_engine_healthy", "1 when the engine is healthy", labels=["engine"])
        submitted = CounterMetricFamily("pappus_engine_submitted", "Invocations queued on the engine",
                                        labels=["engine"])
        faults = CounterMetricFamily("pappus_faults", "Invocations that faulted, hung or lost their worker",
                                     labels=["engine"])
        respawns = CounterMetricFamily("pappus_respawns", "Worker processes respawned", labels=["engine"])
        cold = CounterMetricFamily("pappus_cold_invocations", "Invocations that loaded or looked up their kernels "
                                   "on the device they ran on (first use there)", labels=["engine"])
        engines = dict(rt.dispatcher.engines)
        active = rt.active()
        self.seen.update(active)
        for engine_name, tenant in sorted(self.seen):
            engine = engines.get(engine_name)
            queued = engine.queue.depth(tenant) if engine is not None else 0
            depth.add_metric([engine_name, tenant], queued)
            flight.add_metric([engine_name, tenant], max(0, active.get((engine_name, tenant), 0) - queued))
        for name, engine in engines.items():
            snap = engine.metrics.snapshot()
            e_depth.add_metric([name], len(engine.queue))
            e_flight.add_metric([name], snap["in_flight"])
            healthy.add_metric([name], 1.0 if engine.healthy else 0.0)
            submitted.add_metric([name], snap["submitted"])
            faults.add_metric([name], snap["faults"])
            respawns.add_metric([name], snap["respawns"])
            cold.add_metric([name], snap["cold"])
        yield from (depth, flight, e_depth, e_flight, healthy, submitted, faults, respawns, cold)


class ServeMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, runtime: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter("pappus_http_requests", "HTTP requests answered", ["route", "method", "status"],
                                registry=r)
        self.invocations = Counter("pappus_invocations", "Invocations by outcome (ok or an error code)",
                                   ["tenant", "outcome"], registry=r)
        self.latency = Histogram("pappus_invocation_latency_seconds",
                                 "Invocation latency, request received to outputs ready", ["tenant"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.rejections = Counter("pappus_quota_rejections", "Requests refused by a quota", ["tenant", "quota"],
                                  registry=r)
        self.auth_failures = Counter("pappus_auth_failures", "Requests with a missing or wrong token",
                                     registry=r)
        r.register(_RuntimeCollector(runtime))

    def render(self) -> bytes:
        return generate_latest(self.registry)
