"""The flow service assembled: store, inbox, history, catalog, trigger engine, API and dashboard;
their life.

`FlowService` wires the parts built from one `FlowSettings` and one `Database`; `run` starts
it, waits for SIGTERM or SIGINT and stops it cleanly: the inbox stops consuming after the
message in hand (whose history and firings are committed before it is acked; anything unacked
goes back to the queue for the next replica), then the submitting thread finishes its current
firing (a firing not yet confirmed stays pending and is submitted by the next life).

Every inbox message goes to the history first (every job event and heartbeat is kept, not
only the flow's own; once recorded, the dashboard's live feed hears of it), then to the
catalog keeper when it is the refresh topic, then to the trigger engine, then to the pipeline
runner (`pipeline_runner`: a pipeline task's job events move its task). Beside them the
stalled scan (`stalled`) keeps the flags from the history. The catalog comes in through
`set_catalog` (the keeper calls it on every good load), which also rebinds the inbox: new
entries' topics bound, dropped ones unbound.
"""

from __future__ import annotations

import faulthandler
import logging
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry

from mstc_client.catalog import Catalog, binding_key_of
from mstc_flow.api.server import ApiServer, serve
from mstc_flow.broker import Inbox, InboxMessage
from mstc_flow.catalog_source import CatalogKeeper, open_source
from mstc_flow.desk import Desk
from mstc_flow.errors import FlowError
from mstc_flow.event_publisher import EventPublisher
from mstc_flow.live import Broadcaster, notice, pipeline_notice
from mstc_flow.metrics import FlowMetrics
from mstc_flow.objects import ObjectReader
from mstc_flow.pipeline_runner import PipelineRunner, bucket_exists_check
from mstc_flow.queue_ops import QueueOps
from mstc_flow.recorder import Recorder, purge_expired
from mstc_flow.settings import FlowSettings
from mstc_flow.stalled import StallScanner
from mstc_flow.store.db import Database
from mstc_flow.store.firings import Firings, firing_id_of
from mstc_flow.store.flags import Flags
from mstc_flow.store.history import History
from mstc_flow.store.pipeline_progress import PipelineProgress
from mstc_flow.store.pipelines import Pipelines
from mstc_flow.submitter import Submitter
from mstc_flow.triggers import Triggers
from mstc_flow.web import create_site
from mstc_flow.workqueue import WorkQueue

__all__ = ["FlowService", "run"]

log = logging.getLogger(__name__)

# How often history older than the retention is deleted.
_PURGE_EVERY_SECONDS = 3600.0

_STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


class FlowService:
    """Everything one replica runs; `start`, then `stop`."""

    def __init__(self, settings: FlowSettings, database: Database) -> None:
        self.settings = settings
        self.database = database
        self.history = History(database)
        self.recorder = Recorder(self.history)
        self.firings = Firings(database)
        self.submitter = Submitter(settings)
        self.triggers = Triggers(settings, self.firings, self.submitter)
        self.flags = Flags(database)
        self.stalled = StallScanner(settings, self.flags, self._expected_seconds)
        self.pipelines = Pipelines(database)
        self.events = EventPublisher(settings)
        self.live = Broadcaster()
        exists = bucket_exists_check(lambda b, k: ObjectReader(settings.client).etag(b, k))
        self.runner = PipelineRunner(
            settings,
            self.pipelines,
            PipelineProgress(self.pipelines),
            self.submitter,
            publish=self._pipeline_event,
            exists=exists,
        )
        self._refresh_key = binding_key_of(settings.refresh_topic)
        self.inbox = Inbox(settings, self.on_message, frozenset({self._refresh_key}))
        self.keeper: CatalogKeeper | None = None
        if settings.catalog:
            source = open_source(settings.catalog, settings.client)
            self.keeper = CatalogKeeper(
                source, self.set_catalog, poll_seconds=settings.catalog_poll_seconds
            )
        self.queue = QueueOps(
            settings, WorkQueue(settings), self.firings, self.history,
            slot_freed=self.triggers.dispatcher.slot_freed, pipelines=self.runner,
        )  # fmt: skip
        self.desk = Desk(
            history=self.history, firings=self.firings, triggers=self.triggers,
            submitter=self.submitter, objects=lambda: ObjectReader(settings.client),
            keeper=self.keeper, queue=self.queue, ready=self.ready, flags=self.flags,
            pipelines=self.pipelines, runner=self.runner,
        )  # fmt: skip
        self.registry = CollectorRegistry()
        self.metrics = FlowMetrics(
            self.registry,
            firing_counts=self.firings.counts,
            catalog_entries=self._catalog_entries,
            catalog_refused=lambda: self.keeper is not None and self.keeper.last_error is not None,
            inbox_connected=self.inbox.connected.is_set,
        )
        self.api: ApiServer | None = None
        self._stop = threading.Event()
        self._purger = threading.Thread(target=self._purge_loop, name="purge", daemon=True)

    def on_message(self, message: InboxMessage) -> None:
        """Every inbox message, on the inbox thread; it is acked once this returns."""
        self.metrics.message(message.routing_key, self._refresh_key)
        if self.recorder.handle(message.routing_key, message.body):
            # After the history has it: a page reloading on the notice reads the new state.
            change = notice(message.routing_key, message.body)
            if change is not None:
                self.live.publish(change)
        if message.routing_key == self._refresh_key and self.keeper is not None:
            log.info("refresh topic: reloading the catalog")
            self.keeper.reload_now()
        self.triggers.on_message(message)
        self.runner.on_message(message)

    def _pipeline_event(self, routing_key: str, body: dict[str, Any]) -> None:
        """A pipeline event (published after its commit) to the events exchange and, as a
        notice, to this replica's open pages (a pipeline page redraws its graph on it)."""
        self.events.publish(routing_key, body)
        change = pipeline_notice(body)
        if change is not None:
            self.live.publish(change)

    def set_catalog(self, catalog: Catalog) -> None:
        """Fire from `catalog` from now on and bind the inbox to exactly its topics."""
        self.triggers.set_catalog(catalog)
        self.inbox.set_binding_keys(catalog.binding_keys | {self._refresh_key})
        log.info("catalog %s (%s) active: %d entries", catalog.source, catalog.digest[:12],
                 len(catalog.entries))  # fmt: skip

    def start(self) -> None:
        """API first (probes answer while the rest starts), then catalog, engine and inbox.

        The catalog's first load binds its topics before the inbox consumes anything.
        """
        app = create_site(self.desk, self.settings, self.registry, self.live)
        self.api = serve(app, self.settings, self._stop)
        if self.keeper is not None:
            self.keeper.start()
        self.triggers.dispatcher.start()
        self.runner.start()
        self.inbox.start()
        self.stalled.start()
        self._purger.start()

    def stop(self) -> None:
        self._stop.set()
        self.live.close()  # open dashboard streams end, so the server's stop is not held up
        self.stalled.stop()
        self.inbox.stop()
        if self.keeper is not None:
            self.keeper.stop()
        self.triggers.dispatcher.stop()
        self.runner.stop()
        self.submitter.close()
        self.events.close()
        if self.api is not None:
            self.api.join(timeout=10)

    def ready(self) -> bool:
        """Serving: the inbox is connected (so events are recorded and triggers heard) and the
        store answers."""
        return self.inbox.connected.is_set() and self.database.reachable()

    def _expected_seconds(self, correlation_id: str | None) -> float | None:
        """How long the catalog entry that made this Job expects it to run, if it says."""
        firing_id = firing_id_of(correlation_id)
        catalog = self.triggers.catalog
        if firing_id is None or catalog is None:
            return None
        if not any(entry.expected_seconds for entry in catalog.entries):
            return None  # the common case costs no store lookup per running Job
        firing = self.firings.get(firing_id)
        entry = None if firing is None else self.triggers.entry_or_none(firing.entry)
        return entry.expected_seconds if entry is not None else None

    def _catalog_entries(self) -> int | None:
        catalog = self.triggers.catalog
        return None if catalog is None else len(catalog.entries)

    def _purge_loop(self) -> None:
        days = self.settings.history_retention_days
        while days > 0 and not self._stop.is_set():
            try:
                now = datetime.now(UTC)
                purged = purge_expired(self.history, days, now)
                if purged:
                    log.info("history: %d jobs older than %s days deleted", purged, days)
                self.flags.purge(now - timedelta(days=days))
            except FlowError as exc:
                log.warning("history purge failed, trying again later: %s", exc)
            self._stop.wait(_PURGE_EVERY_SECONDS)


def run(
    settings: FlowSettings,
    *,
    prepare: Callable[[FlowService], None] | None = None,
    started: Callable[[FlowService], None] | None = None,
) -> int:
    """Run one replica until SIGTERM/SIGINT. SIGUSR1 writes every thread's stack to stderr (for
    a replica that does not stop or seems stuck).

    `prepare` is called before the inbox consumes (give the first catalog there, so its
    topics are bound before the first message), `started` once it consumes.
    """
    # Blocked before any thread exists, so every thread inherits the mask and the signal waits
    # for `sigwait` below. (A Python handler setting an Event can deadlock: it runs on the main
    # thread, possibly while that thread holds the Event's own lock inside `wait`.)
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    database = Database.open(settings.database_url)
    service = FlowService(settings, database)
    try:
        if prepare is not None:
            prepare(service)
        service.start()
        log.info("mstc-flow %s running", settings.replica_id)
        if started is not None:
            started(service)
        received = signal.sigwait(_STOP_SIGNALS)
        log.info("mstc-flow %s stopping (%s)", settings.replica_id, signal.Signals(received).name)
    finally:
        service.stop()
        database.close()
    return 0
