"""The flow service's inbox on RabbitMQ: the one module of the flow that imports pika.

Owns one connection and the one thread that touches it (pika's BlockingConnection is not
thread-safe): it declares the durable inbox queue the replicas share, keeps it bound to the
events exchange with the wanted keys (the worker's `mstc.job.#` and `mstc.worker.#`, the
refresh topic, every catalog entry's trigger), and hands each message to the handler on that
thread with manual acks and a prefetch. A message is acked only after the handler returned,
so what the handler committed before a crash comes back redelivered, and what it did not
commit comes back too; the handler makes that idempotent. Other threads change the bindings
through `set_binding_keys`, which wakes the thread with pika's one thread-safe call.

Errors: a TransientError from the handler (the store is down) puts the message back and
waits before the next; pika's errors drop the connection and reconnect with backoff (the
broker requeues what was unacked). `start` raises TransientError if the first connection
cannot be made in the client's connect timeout.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions

from mstc_flow.errors import TransientError
from mstc_flow.settings import FlowSettings

__all__ = ["Inbox", "InboxMessage"]

log = logging.getLogger(__name__)

WORKER_KEYS = frozenset({"mstc.job.#", "mstc.worker.#"})


@dataclass(frozen=True)
class InboxMessage:
    """One inbox delivery, as the handler sees it (no pika types)."""

    routing_key: str
    body: bytes
    message_id: str | None
    redelivered: bool
    message_type: str | None


Handler = Callable[[InboxMessage], None]


def _delay(attempt: int) -> float:
    return random.uniform(0, min(10.0, 0.5 * 2 ** (attempt - 1)))  # noqa: S311 - not crypto


class Inbox:
    """The durable inbox: consume, bind, unbind, reconnect; `handler` runs on its thread."""

    def __init__(self, settings: FlowSettings, handler: Handler, keys: frozenset[str]) -> None:
        self._settings = settings
        self._handler = handler
        self._exchange = settings.client.events_exchange or "amq.topic"
        self._lock = threading.Lock()
        self._wanted = WORKER_KEYS | keys
        self._bound: set[str] = set()
        self._conn: Any = None
        self._channel: Any = None
        self._stopping = threading.Event()
        self._first = threading.Event()
        self._first_error: str | None = None
        self.connected = threading.Event()
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="mstc-flow-inbox", daemon=True)

    # --- any thread ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self._first.wait()
        if self._first_error is not None:
            raise TransientError(self._first_error)

    def set_binding_keys(self, keys: frozenset[str]) -> None:
        """Bind the inbox to exactly the worker's keys plus `keys` (bind new, unbind dropped)."""
        with self._lock:
            self._wanted = WORKER_KEYS | keys
            conn = self._conn
        if conn is not None:
            try:
                conn.add_callback_threadsafe(lambda: None)  # wakes the loop, which applies them
            except pika.exceptions.AMQPError:
                log.debug("connection closing; the next one binds the wanted keys")

    @property
    def bound_keys(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._bound)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop consuming after the message in hand; what was not acked goes back to the queue."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # --- the inbox thread ---------------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        deadline = time.monotonic() + self._settings.client.connect_timeout_seconds
        while not self._stopping.is_set():
            try:
                if self._conn is None:
                    self._connect()
                    attempt = 0
                self._apply_bindings()
                self._conn.process_data_events(time_limit=0.5)
            except (pika.exceptions.AMQPError, OSError) as exc:
                self._drop(exc)
                attempt += 1
                if not self._first.is_set() and time.monotonic() >= deadline:
                    self._first_error = f"Cannot reach RabbitMQ for the inbox: {exc!r}."
                    self._first.set()
                    return
                self._stopping.wait(_delay(attempt))
        self._close()
        self._first.set()

    def _connect(self) -> None:
        cfg = self._settings.client
        params = pika.URLParameters(cfg.amqp_url)
        params.heartbeat = cfg.heartbeat_seconds
        params.connection_attempts = 1
        params.socket_timeout = 5
        params.client_properties = {"connection_name": f"mstc-flow {self._settings.replica_id}"}
        conn = pika.BlockingConnection(params)
        channel = conn.channel()
        channel.queue_declare(self._settings.inbox_queue, durable=True)
        channel.basic_qos(prefetch_count=self._settings.inbox_prefetch)
        with self._lock:
            self._conn, self._channel, self._bound = conn, channel, set()
        self._apply_bindings()  # bound before consuming: nothing published from now is missed
        channel.basic_consume(self._settings.inbox_queue, self._on_message)
        self.connected.set()
        self._first.set()
        log.info("inbox %s consuming", self._settings.inbox_queue)

    def _apply_bindings(self) -> None:
        with self._lock:
            wanted, bound, channel = set(self._wanted), set(self._bound), self._channel
        queue = self._settings.inbox_queue
        for key in sorted(wanted - bound):
            channel.queue_bind(queue, self._exchange, routing_key=key)
            with self._lock:
                self._bound.add(key)
        for key in sorted(bound - wanted):
            channel.queue_unbind(queue, self._exchange, routing_key=key)
            with self._lock:
                self._bound.discard(key)

    def _on_message(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        message = InboxMessage(
            str(method.routing_key), bytes(body), props.message_id, bool(method.redelivered),
            props.type,
        )  # fmt: skip
        try:
            self._handler(message)
        except TransientError as exc:
            # Nothing of it is committed for sure: it comes back, after a pause for the store.
            log.warning("inbox message %s put back: %s", method.routing_key, exc)
            channel.basic_nack(method.delivery_tag, requeue=True)
            self._stopping.wait(2.0)
            return
        except Exception:
            # A bug or a message no retry can handle: keep the traceback, do not loop on it.
            log.exception("inbox message %s dropped", method.routing_key)
        channel.basic_ack(method.delivery_tag)

    def _drop(self, exc: BaseException) -> None:
        self.connected.clear()
        self.last_error = repr(exc)
        log.warning("inbox connection lost: %r", exc)
        with self._lock:
            conn, self._conn, self._channel, self._bound = self._conn, None, None, set()
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except (pika.exceptions.AMQPError, OSError) as close_exc:
                log.debug("connection already broken: %r", close_exc)

    def _close(self) -> None:
        self.connected.clear()
        with self._lock:
            conn, self._conn, self._channel = self._conn, None, None
        if conn is not None and conn.is_open:
            try:
                conn.close()  # the broker requeues every delivery not acked
            except (pika.exceptions.AMQPError, OSError) as exc:
                log.debug("closing the inbox connection: %r", exc)
