"""``GET /metrics``: the runtime and its HTTP adapter in the Prometheus text format.

Each app has its own :class:`~prometheus_client.CollectorRegistry` (several apps
may live in one process, as in the tests). The runtime's numbers are not kept
twice: :class:`RuntimeCollector` reads one ``GetRuntime`` result per scrape, so
the metrics agree with ``GET /v1/runtime`` at every moment. The HTTP counters
and the two histograms are updated as requests and store syncs happen.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import falcon
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from worker_runtime import Runtime
from worker_runtime.commands import GetRuntime
from worker_runtime.errors import WorkerRuntimeError

__all__ = ["Metrics", "MetricsResource", "RuntimeCollector"]

log = logging.getLogger("adapters.metrics")

UNMATCHED_ROUTE = "unmatched"
"""The ``route`` label of a request no route serves (never the raw path)."""
OTHER_METHOD = "OTHER"
# Labels are bounded: a client choosing paths or methods must not create series.
_KNOWN_METHODS = frozenset(falcon.COMBINED_METHODS)


class RuntimeCollector(Collector):
    """The runtime gauges and counters, built at scrape time from ``GetRuntime``."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def collect(self) -> Iterator[Metric]:
        try:
            info = self._runtime.dispatch(GetRuntime())
        except WorkerRuntimeError as exc:  # state lock busy past the deadline
            log.warning("runtime metrics skipped: %s", exc.message)
            return
        workers = GaugeMetricFamily(
            "worker_runtime_workers", "Workers by status.", labels=["status"]
        )
        for status in ("idle", "running", "stopped"):
            workers.add_metric([status], getattr(info.workers, status))
        yield workers
        runs = CounterMetricFamily(
            "worker_runtime_runs", "Runs ended, by final status.", labels=["status"]
        )
        for status in ("completed", "failed", "cancelled", "timed_out", "interrupted"):
            runs.add_metric([status], getattr(info.runs, status))
        yield runs
        yield GaugeMetricFamily("worker_runtime_runs_active", "Runs executing.", info.active_runs)
        yield GaugeMetricFamily(
            "worker_runtime_runs_queued", "Runs waiting for a slot.", info.queued_runs
        )
        yield CounterMetricFamily(
            "worker_runtime_events", "Events appended (the last event id).", info.last_event_id
        )
        yield GaugeMetricFamily(
            "worker_runtime_waiters", "Event long-polls currently held.", info.waiters
        )


class Metrics:
    """One app's metrics registry; :meth:`observe_request` is the middleware's hook."""

    def __init__(self, runtime: Runtime) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(RuntimeCollector(runtime))
        self._requests = Counter(
            "worker_runtime_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self._duration = Histogram(
            "worker_runtime_http_request_duration_seconds",
            "Time from request to response (long-polls included).",
            registry=self.registry,
        )
        self._sync = Histogram(
            "worker_runtime_store_sync_seconds",
            "Time to make staged store writes durable.",
            registry=self.registry,
        )
        # The runtime reports each sync; the latest app built on it receives them.
        runtime.sync_observer = self._sync.observe

    def observe_request(self, route: str | None, method: str, status: int, seconds: float) -> None:
        """Count one answered request (``route`` is the path template, or None)."""
        method = method if method in _KNOWN_METHODS else OTHER_METHOD
        self._requests.labels(route or UNMATCHED_ROUTE, method, str(status)).inc()
        self._duration.observe(seconds)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


class MetricsResource:
    """``GET /metrics`` (the token is checked by the guard, like every route)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = self._metrics.exposition()
