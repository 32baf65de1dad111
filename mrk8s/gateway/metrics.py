"""Prometheus metrics of one gateway: jobs by state and queue, submission latency.

A registry per app (not the client library's global one), so two gateways
in one process, as in tests, do not share counters. The job counts are read
from the database at scrape time, so they are right across restarts and
across gateways sharing one database.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from mrk8s.gateway import state as st


class _JobsCollector(Collector):
    def __init__(self, state: st.State, supervisor: Any) -> None:
        self.state = state
        self.supervisor = supervisor

    def collect(self) -> Iterator[Any]:
        jobs = GaugeMetricFamily(
            "mrk8s_gateway_jobs",
            "Jobs known to the gateway, by state and queue",
            labels=["state", "queue"],
        )
        counts = self.state.counts()
        queues = sorted({q for _, q in counts}) or ["default"]
        for status in st.STATUSES:
            for queue in queues:
                jobs.add_metric([status, queue], counts.get((status, queue), 0))
        yield jobs
        resumed = CounterMetricFamily(
            "mrk8s_gateway_job_resumes",
            "Runs launched again (same job id) after their process died, since start",
        )
        resumed.add_metric([], self.supervisor.resumed)
        yield resumed
        reattached = CounterMetricFamily(
            "mrk8s_gateway_job_reattaches",
            "Running jobs whose live process was re-attached after a gateway restart",
        )
        reattached.add_metric([], self.supervisor.reattached)
        yield reattached
        reconnects = CounterMetricFamily(
            "mrk8s_gateway_watch_reconnects",
            "Watches of a cluster started again (ended by the server, broken, or 410 Gone "
            "and listed again), since start",
            labels=["cluster"],
        )
        for name, backend in self.supervisor.backends.items():
            count = getattr(backend, "watch_reconnects", None)
            if count is not None:
                reconnects.add_metric([name], count())
        yield reconnects


class Metrics:
    def __init__(self, state: st.State, supervisor: Any) -> None:
        self.registry = CollectorRegistry()
        self.submit_seconds = Histogram(
            "mrk8s_gateway_submission_seconds",
            "Time to accept a job (POST /v1/jobs answered 202)",
            registry=self.registry,
        )
        self.registry.register(_JobsCollector(state, supervisor))
