"""``GET /metrics``: the runtime and its HTTP adapter in the Prometheus text format.

Each app has its own :class:`~prometheus_client.CollectorRegistry` (several apps
may live in one process, as in the tests). The runtime's numbers are not kept
twice: :class:`RuntimeCollector` reads one ``GetRuntime`` result per scrape, so
the metrics agree with ``GET /v1/runtime`` at every moment. The HTTP counters
and the two histograms are updated as requests and store syncs happen.

Every family is built by a collector of ours from plain numbers, so the
exposition holds exactly the families of SPEC section 9: ``prometheus_client``'s
own ``Histogram`` would add a ``*_created`` gauge beside each (switching that off
is process-wide, ``disable_created_metrics``, so it is not used).
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Iterator

import falcon
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from worker_runtime import Runtime
from worker_runtime.commands import GetRuntime
from worker_runtime.errors import WorkerRuntimeError

from .logs import UNMATCHED_ROUTE

__all__ = [
    "UNMATCHED_ROUTE",
    "HttpCollector",
    "Metrics",
    "MetricsResource",
    "RuntimeCollector",
    "SyncCollector",
]

log = logging.getLogger("adapters.metrics")

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
            "worker_runtime_waiters", "Long-polls (events, runs) held now.", info.waiters
        )


class _Buckets:
    """A histogram as plain numbers (``prometheus_client``'s default buckets);
    the caller holds the lock that guards it."""

    _BOUNDS = tuple(b for b in Histogram.DEFAULT_BUCKETS if b != float("inf"))

    def __init__(self) -> None:
        self._counts = [0] * (len(self._BOUNDS) + 1)  # the last one is +Inf
        self._sum = 0.0

    def add(self, seconds: float) -> None:
        self._counts[bisect.bisect_left(self._BOUNDS, seconds)] += 1  # le: inclusive
        self._sum += seconds

    def snapshot(self) -> tuple[list[int], float]:
        return list(self._counts), self._sum

    @classmethod
    def family(
        cls, name: str, documentation: str, snapshot: tuple[list[int], float]
    ) -> HistogramMetricFamily:
        counts, total = snapshot
        cumulative, running = [], 0
        for bound, count in zip((*cls._BOUNDS, float("inf")), counts, strict=True):
            running += count
            cumulative.append((_bound_label(bound), running))
        return HistogramMetricFamily(name, documentation, buckets=cumulative, sum_value=total)


class HttpCollector(Collector):
    """The HTTP request counter and duration histogram, kept as plain numbers.

    A request costs one lock, one dict update and one bisect, where
    ``prometheus_client``'s ``Counter.labels().inc()`` and ``Histogram.observe``
    take several locks and a Python loop over the buckets; the samples are made
    into metric families only when scraped.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = {}
        self._durations = _Buckets()

    def observe(self, route: str, method: str, status: str, seconds: float) -> None:
        """Count one request and its duration."""
        key = (route, method, status)
        with self._lock:
            self._requests[key] = self._requests.get(key, 0) + 1
            self._durations.add(seconds)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            requests = dict(self._requests)
            durations = self._durations.snapshot()
        counter = CounterMetricFamily(
            "worker_runtime_http_requests",
            "HTTP requests answered, by route template, method and status.",
            labels=["route", "method", "status"],
        )
        for labels, count in requests.items():
            counter.add_metric(list(labels), count)
        yield counter
        yield _Buckets.family(
            "worker_runtime_http_request_duration_seconds",
            "Time from request to response (long-polls included).",
            durations,
        )


class SyncCollector(Collector):
    """The store sync duration histogram; :meth:`observe` is the runtime's
    ``sync_observer``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._durations = _Buckets()

    def observe(self, seconds: float) -> None:
        """Count one store sync and its duration."""
        with self._lock:
            self._durations.add(seconds)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            durations = self._durations.snapshot()
        yield _Buckets.family(
            "worker_runtime_store_sync_seconds",
            "Time to make staged store writes durable.",
            durations,
        )


def _bound_label(bound: float) -> str:
    label: str = floatToGoString(bound)  # type: ignore[no-untyped-call]
    return label  # as prometheus_client's Histogram labels them


class Metrics:
    """One app's metrics registry; :meth:`observe_request` is the middleware's hook."""

    def __init__(self, runtime: Runtime) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(RuntimeCollector(runtime))
        self._http = HttpCollector()
        self.registry.register(self._http)
        sync = SyncCollector()
        self.registry.register(sync)
        # The runtime reports each sync; the latest app built on it receives them.
        runtime.sync_observer = sync.observe

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request (``route``: the path template, or ``unmatched``)."""
        method = method if method in _KNOWN_METHODS else OTHER_METHOD
        self._http.observe(route, method, str(status), seconds)

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
