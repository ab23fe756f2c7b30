"""Publishing the flow's own events (pipelines) on the events exchange: a pika adapter.

Best effort, as the spec of pipeline events says: an event is published after the commit
that caused it, and one that cannot be published (the broker is away) is logged and dropped;
it never holds up the pipeline. One connection, opened on first use and again after a
failure, shared by the threads that publish (a lock: pika's BlockingConnection is not
thread-safe). The exchange is the worker's (`MSTC_EVENTS_EXCHANGE`, `amq.topic` by default);
empty means no events, as for the worker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from typing import Any

import pika
import pika.exceptions

from mstc_flow.settings import FlowSettings

__all__ = ["EventPublisher"]

log = logging.getLogger(__name__)

EVENT_TYPE = "mstc.pipeline.event"


class EventPublisher:
    """`publish(routing_key, body)`; `close()` at the end."""

    def __init__(self, settings: FlowSettings) -> None:
        self._settings = settings
        self._exchange = settings.client.events_exchange
        self._lock = threading.Lock()
        self._conn: Any = None
        self._channel: Any = None

    def publish(self, routing_key: str, body: dict[str, Any]) -> bool:
        """Publish one event; False (logged) when it could not be."""
        if not self._exchange:
            return False
        data = json.dumps(body, separators=(",", ":")).encode()
        properties = pika.BasicProperties(
            content_type="application/json", type=EVENT_TYPE,
            message_id=str(body.get("eventId", "")), delivery_mode=2,
        )  # fmt: skip
        with self._lock:
            # An idle connection may have been closed by the broker (missed heartbeats): a
            # second try on a fresh one.
            for attempt in (1, 2):
                try:
                    if self._channel is None:
                        self._connect()
                    self._channel.basic_publish(self._exchange, routing_key, data, properties)
                except (pika.exceptions.AMQPError, OSError) as exc:
                    self._close()
                    if attempt == 2:
                        log.warning("pipeline event %s not published: %s", routing_key, exc)
                else:
                    return True
        return False

    def close(self) -> None:
        with self._lock:
            self._close()

    def _connect(self) -> None:
        cfg = self._settings.client
        params = pika.URLParameters(cfg.amqp_url)
        params.heartbeat = cfg.heartbeat_seconds
        params.connection_attempts = 1
        params.socket_timeout = 5
        params.client_properties = {
            "connection_name": f"mstc-flow events {self._settings.replica_id}"
        }
        self._conn = pika.BlockingConnection(params)
        self._channel = self._conn.channel()

    def _close(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None and conn.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                conn.close()  # it is being dropped anyway
