"""The flow service assembled: store, inbox, trigger engine, submitter, and their life cycle.

`FlowService` wires the parts built from one `FlowSettings` and one `Database`; `run` starts
it, waits for SIGTERM or SIGINT and stops it cleanly: the inbox stops consuming after the
message in hand (whose firings are committed before it is acked; anything unacked goes back
to the queue for the next replica), then the submitting thread finishes its current firing
(a firing not yet confirmed stays pending and is submitted by the next life).

The catalog comes in through `set_catalog` (the catalog source keeper calls it on every good
load), which also rebinds the inbox: new entries' topics bound, dropped ones unbound.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from mstc_client.catalog import Catalog, binding_key_of
from mstc_flow.broker import Inbox, InboxMessage
from mstc_flow.settings import FlowSettings
from mstc_flow.store.db import Database
from mstc_flow.store.firings import PARKED, Firings
from mstc_flow.submitter import Submitter
from mstc_flow.triggers import Triggers

__all__ = ["FlowService", "run"]

log = logging.getLogger(__name__)


class FlowService:
    """Everything one replica runs; `start`, then `stop`."""

    def __init__(self, settings: FlowSettings, database: Database) -> None:
        self.settings = settings
        self.database = database
        self.firings = Firings(database)
        self.submitter = Submitter(settings)
        self.triggers = Triggers(settings, self.firings, self.submitter)
        self._refresh_key = binding_key_of(settings.refresh_topic)
        self.inbox = Inbox(settings, self.on_message, frozenset({self._refresh_key}))
        # LEAD (merge): build the history and its recorder here, e.g.
        #   self.history = History(database); self.recorder = Recorder(self.history, ...)
        # and the catalog keeper (H2), started in `start` with `on_change=self.set_catalog`:
        #   self.catalog_keeper = CatalogKeeper(settings, ...)

    def on_message(self, message: InboxMessage) -> None:
        """Every inbox message, on the inbox thread; it is acked once this returns."""
        # LEAD (merge): record the event first (history keeps every job event and heartbeat):
        #   self.recorder.on_message(message)
        # and hand the refresh topic to the catalog keeper:
        #   if message.routing_key == self._refresh_key: self.catalog_keeper.refresh()
        self.triggers.on_message(message)

    def set_catalog(self, catalog: Catalog) -> None:
        """Fire from `catalog` from now on and bind the inbox to exactly its topics."""
        self.triggers.set_catalog(catalog)
        self.inbox.set_binding_keys(catalog.binding_keys | {self._refresh_key})
        log.info("catalog %s (%s) active: %d entries", catalog.source, catalog.digest[:12],
                 len(catalog.entries))  # fmt: skip

    def start(self) -> None:
        self.triggers.dispatcher.start()
        self.inbox.start()
        # LEAD (merge): start the catalog keeper here (its first load calls set_catalog), and
        # the API app (H4's create_app(ports=self, settings, registry)) under uvicorn.

    def stop(self) -> None:
        self.inbox.stop()
        self.triggers.dispatcher.stop()
        self.submitter.close()
        # LEAD (merge): stop the catalog keeper and the API server here.

    def ready(self) -> bool:
        return self.inbox.connected.is_set()

    # --- the parts of the API's ports (FlowPorts) the engine owns ------------------------------

    def fire(self, entry: str, payload: bytes) -> dict[str, Any]:
        return {"firingId": self.triggers.fire(entry, payload).id}

    def parked(self) -> list[dict[str, Any]]:
        return [firing.to_json() for firing in self.firings.in_state(PARKED)]

    def job_firing(self, request_id: str) -> dict[str, Any] | None:
        firing = self.firings.by_request_id(request_id)
        return None if firing is None else firing.to_json()

    def cancel_job(self, job_name: str) -> dict[str, Any]:
        return self.submitter.cancel(job_name, "cancelled through mstc-flow")

    # LEAD (merge): `retry(key)` = history.get_job(key) -> self.triggers.retry(record.request_id,
    #   record.request) -> {"firingId", "retryOf"}; `cancel(key)` resolves key via history.


def run(
    settings: FlowSettings,
    *,
    prepare: Callable[[FlowService], None] | None = None,
    started: Callable[[FlowService], None] | None = None,
) -> int:
    """Run one replica until SIGTERM/SIGINT.

    `prepare` is called before the inbox consumes (give the first catalog there, so its
    topics are bound before the first message), `started` once it consumes.
    """
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    database = Database.open(settings.database_url)
    service = FlowService(settings, database)
    try:
        if prepare is not None:
            prepare(service)
        service.start()
        log.info("mstc-flow %s running", settings.replica_id)
        if started is not None:
            started(service)
        stop.wait()
        log.info("mstc-flow %s stopping", settings.replica_id)
    finally:
        service.stop()
        database.close()
    return 0
