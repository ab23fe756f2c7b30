"""The worker's Prometheus metrics: their names, labels and buckets, behind small typed methods.

`Metrics` owns its own `CollectorRegistry` instead of prometheus_client's global
one, so tests, and several services in one process, never collide on a metric
name ("Duplicated timeseries"). The rest of the worker never touches
prometheus_client: it calls `request_done`, `set_in_flight` and the like, which
keeps metric names and label values in this one file.

The counters live in the process that calls these methods. Jobs are handled in
worker processes, but their outcomes come back to the main process, which records
them here; so prometheus_client's multiprocess mode is not needed.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

__all__ = ["JOB_DURATION_BUCKETS", "KUBE_ERROR_KINDS", "OUTCOMES", "Metrics"]

# The reply's `status` values (protocol.Status); one time series each.
OUTCOMES = ("succeeded", "failed", "timeout", "rejected", "error", "cancelled")
KUBE_ERROR_KINDS = ("transient", "rejected")

# Jobs run from about a second to the largest timeout a request may ask for; the
# buckets are roughly 2-3x apart so quantiles stay meaningful across that range.
JOB_DURATION_BUCKETS = (
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1_800.0,
    3_600.0,
    7_200.0,
    14_400.0,
    43_200.0,
    86_400.0,
)


class Metrics:
    """The worker's metrics in a registry of their own; every method is thread-safe."""

    def __init__(self, *, process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self._requests = Counter(
            "mstc_requests",
            "Requests finished, by outcome (the reply's status).",
            ["outcome"],
            registry=registry,
        )
        self._in_flight = Gauge(
            "mstc_jobs_in_flight", "Requests being handled right now.", registry=registry
        )
        self._duration = Histogram(
            "mstc_job_duration_seconds",
            "Time from a Job's start to its end.",
            buckets=JOB_DURATION_BUCKETS,
            registry=registry,
        )
        self._reconnects = Counter(
            "mstc_broker_reconnects",
            "Times the broker connection was re-opened.",
            registry=registry,
        )
        self._kube_errors = Counter(
            "mstc_kube_api_errors",
            "Failed Kubernetes API calls: transient (retried) or rejected (4xx, not retried).",
            ["kind"],
            registry=registry,
        )
        self._replies = Counter("mstc_replies", "Replies published.", registry=registry)
        self._storage_errors = Counter(
            "mstc_storage_errors", "Failed object-storage (MinIO) calls.", registry=registry
        )
        self._process_restarts = Counter(
            "mstc_worker_process_restarts",
            "Worker processes that died and were started again, as the supervisor handled them.",
            registry=registry,
        )
        # Every label value exists from the start at 0, so a rate() or an alert on
        # "failed > 0" works before the first failure instead of seeing no series.
        for outcome in OUTCOMES:
            self._requests.labels(outcome=outcome)
        for kind in KUBE_ERROR_KINDS:
            self._kube_errors.labels(kind=kind)
        if process_metrics:
            # Memory, CPU and open files of this process: the first things to look at
            # when a worker misbehaves; the global registry would have had them too.
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)

    def request_done(self, status: str, duration_s: float | None) -> None:
        """Count a finished request; `duration_s` is the Job's run time, None if none ran.

        Raises ValueError for a status that is not a reply status: a typo must not
        quietly open a new time series.
        """
        if status not in OUTCOMES:
            raise ValueError(f"unknown request outcome {status!r}; expected one of {OUTCOMES}")
        self._requests.labels(outcome=str(status)).inc()
        if duration_s is not None:
            # Clock steps between start and end can give a negative span; it is 0 s.
            self._duration.observe(max(0.0, duration_s))

    def set_in_flight(self, n: int) -> None:
        """Set how many requests are being handled right now."""
        self._in_flight.set(n)

    def broker_reconnected(self) -> None:
        """Count a re-opened broker connection."""
        self._reconnects.inc()

    def kube_error(self, kind: str) -> None:
        """Count a failed Kubernetes API call; `kind` is "transient" or "rejected"."""
        if kind not in KUBE_ERROR_KINDS:
            raise ValueError(f"unknown Kubernetes error kind {kind!r}; expected {KUBE_ERROR_KINDS}")
        self._kube_errors.labels(kind=str(kind)).inc()

    def storage_error(self) -> None:
        """Count a failed object-storage call."""
        self._storage_errors.inc()

    def worker_process_restarted(self) -> None:
        """Count a worker process that died and was started again."""
        self._process_restarts.inc()

    def reply_sent(self) -> None:
        """Count a published reply."""
        self._replies.inc()

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The registry in the exposition format `accept` asks for: (body, content type).

        Prometheus asks for OpenMetrics when it can; anything else gets the classic
        text format (version 0.0.4).
        """
        encoder: Callable[[CollectorRegistry], bytes]
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
