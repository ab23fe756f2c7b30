"""The flow service's own metrics, beside the API's request counter on the same registry.

Counted as things happen: inbox messages by kind (job events, heartbeats, refreshes, others
such as trigger topics). Read at scrape time, from the parts that hold them, so they cannot
drift: firings by state (from the store, which all replicas share, so every replica reports
the same totals), the active catalog's entries, whether its last reload was refused, and
whether the inbox is connected. A scrape that cannot reach the store reports no firings
rather than failing the whole scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mstc_flow.errors import FlowError

__all__ = ["FlowMetrics"]

log = logging.getLogger(__name__)


class FlowMetrics:
    """Registers the flow's metrics on `registry`; `message(kind)` counts one inbox message."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        firing_counts: Callable[[], dict[str, int]],
        catalog_entries: Callable[[], int | None],
        catalog_refused: Callable[[], bool],
        inbox_connected: Callable[[], bool],
    ) -> None:
        self._messages = Counter(
            "mstc_flow_inbox_messages",
            "Inbox messages handled, by kind (job_event, heartbeat, refresh, other).",
            ["kind"],
            registry=registry,
        )
        registry.register(
            _ReadAtScrape(firing_counts, catalog_entries, catalog_refused, inbox_connected)
        )

    def message(self, routing_key: str, refresh_key: str) -> None:
        self._messages.labels(_kind(routing_key, refresh_key)).inc()


def _kind(routing_key: str, refresh_key: str) -> str:
    if routing_key.startswith("mstc.job."):
        return "job_event"
    if routing_key.startswith("mstc.worker."):
        return "heartbeat"
    return "refresh" if routing_key == refresh_key else "other"


class _ReadAtScrape(Collector):
    def __init__(
        self,
        firing_counts: Callable[[], dict[str, int]],
        catalog_entries: Callable[[], int | None],
        catalog_refused: Callable[[], bool],
        inbox_connected: Callable[[], bool],
    ) -> None:
        self._firing_counts, self._catalog_entries = firing_counts, catalog_entries
        self._catalog_refused, self._inbox_connected = catalog_refused, inbox_connected

    def collect(self) -> Iterator[Metric]:
        firings = GaugeMetricFamily(
            "mstc_flow_firings", "Firings in the store, by state.", labels=["state"]
        )
        try:
            for state, count in sorted(self._firing_counts().items()):
                firings.add_metric([state], count)
        except FlowError as exc:
            log.warning("metrics: firings not counted: %s", exc)
        yield firings
        entries = self._catalog_entries()
        yield GaugeMetricFamily(
            "mstc_flow_catalog_entries", "Entries of the active catalog (-1: none active).",
            value=-1 if entries is None else entries,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "mstc_flow_catalog_refused", "1 when the catalog's newest version was refused.",
            value=1 if self._catalog_refused() else 0,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "mstc_flow_inbox_connected", "1 while the inbox is connected to RabbitMQ.",
            value=1 if self._inbox_connected() else 0,
        )  # fmt: skip
