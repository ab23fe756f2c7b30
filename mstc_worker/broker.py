"""The RabbitMQ boundary: the only module that imports pika.

Owns the connection, the Java-compatible topology, consuming, confirmed publishing and acks.
pika's BlockingConnection is not thread-safe, so one thread (the service's main thread) runs
`Broker.run`, which keeps heartbeats flowing; every other thread hands work to it through
`Broker.submit`, which queues a callable and wakes the connection with
`add_callback_threadsafe`. Queued work survives a reconnect: a reply owed is published on
the new connection. Acks of deliveries from a lost channel are dropped, because the broker
has already put those messages back in the queue. The connection is opened through a factory
(pika's BlockingConnection unless the caller gives another), and the consumer is named by
`run`: the service that consumes is also the one that runs the connection.

Requests the worker sends itself (the REST port's, see `Broker.call`) take their replies on a
private queue of the connection: server-named, exclusive and auto-deleted, so that, as for any
client's reply queue, a reply to a lost connection finds no queue and goes to the results
queue instead.

Topology: the direct exchange and durable work queue exactly as the Java worker had them,
declared without arguments, so a Java-era client's own `queue_declare(durable=True)` still
matches; anything more (dead-lettering, limits) belongs in broker policies.
"""

from __future__ import annotations

import collections
import logging
import random
import ssl
import threading
from collections.abc import Callable, Mapping
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from mstc_worker.delivery import BrokerUnavailable, Delivery, DeliveryHandler, ReplyHandler
from mstc_worker.settings import Settings

__all__ = [
    "Broker",
    "BrokerUnavailable",
    "ConnectionFactory",
    "Delivery",
    "backoff_delay",
    "connection_parameters",
]

log = logging.getLogger(__name__)

ConnectionFactory = Callable[[pika.ConnectionParameters], pika.BlockingConnection]
"""Opens a connection with the given parameters; `pika.BlockingConnection` unless a test says."""


def connection_parameters(settings: Settings) -> pika.URLParameters:
    """The connection's parameters: the URL, TLS verified against our CA, heartbeats, a name."""
    params = pika.URLParameters(settings.amqp_url)
    if params.ssl_options is not None:  # amqps: verify against our CA (or the system's)
        context = ssl.create_default_context(
            cafile=str(settings.tls_ca_file) if settings.tls_ca_file else None
        )
        params.ssl_options = pika.SSLOptions(context, server_hostname=params.host)
    params.heartbeat = settings.heartbeat_seconds
    params.blocked_connection_timeout = max(60, 2 * settings.heartbeat_seconds)
    params.client_properties = {"connection_name": "mstc-worker"}
    return params


def _no_consumer(delivery: Delivery) -> None:
    raise RuntimeError(f"delivery {delivery.tag} arrived before Broker.run named a consumer")


def backoff_delay(attempt: int, *, base: float = 0.5, cap: float = 30.0) -> float:
    """Seconds to wait before reconnect attempt `attempt` (1-based): capped, with full jitter."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))  # noqa: S311 - not crypto


class Broker:
    """A consuming and publishing connection, owned by the thread that calls `run`."""

    def __init__(
        self,
        settings: Settings,
        *,
        prefetch: int,
        on_reconnect: Callable[[], None] | None = None,
        connection_factory: ConnectionFactory = pika.BlockingConnection,
    ) -> None:
        self._settings = settings
        self._open_connection = connection_factory
        self._on_delivery: DeliveryHandler = _no_consumer  # `run` says who consumes
        self._on_control: DeliveryHandler = _no_consumer
        self._prefetch = prefetch
        self._on_reconnect = on_reconnect
        self._conn: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._consumer_tag: str | None = None
        self._paused = False
        self._generation = 0
        self._reply_queue: str | None = None  # this connection's, declared on first `call`
        self._calls: dict[str, ReplyHandler] = {}  # correlation id -> who waits for the reply
        self._work: collections.deque[Callable[[], None]] = collections.deque()
        self._lock = threading.Lock()
        self.connected = threading.Event()

    # --- life cycle (owner thread) --------------------------------------------------------

    def connect(self) -> None:
        """Open the connection and channel, declare the topology, start consuming."""
        s = self._settings
        params = connection_parameters(s)
        try:
            conn = self._open_connection(params)
            channel = conn.channel()
            channel.confirm_delivery()
            channel.exchange_declare(s.exchange, exchange_type="direct", durable=True)
            channel.queue_declare(s.work_queue, durable=True)
            channel.queue_bind(s.work_queue, s.exchange, routing_key=s.work_queue)
            channel.queue_declare(s.results_queue, durable=True)
            channel.queue_declare(s.dead_letter_queue, durable=True)
            channel.queue_declare(s.control_queue, durable=True)
            channel.basic_qos(prefetch_count=self._prefetch)
            if s.events_exchange:
                # Passive: it is RabbitMQ's (amq.topic) or the operator's, never ours to make;
                # a missing one says so here instead of breaking the first event's channel.
                channel.exchange_declare(s.events_exchange, passive=True)
        except ssl.SSLCertVerificationError as exc:
            # pika lets the handshake's error through as it is, not as an AMQPError.
            raise BrokerUnavailable(
                f"cannot connect to RabbitMQ at {s.amqp_url_for_logs}: its TLS certificate is "
                f"not trusted ({exc.verify_message}: certificate verify failed); give the CA "
                "that signed it in MSTC_TLS_CA_FILE"
            ) from exc
        except (pika.exceptions.AMQPError, ssl.SSLError, OSError) as exc:
            raise BrokerUnavailable(
                f"cannot connect to RabbitMQ at {s.amqp_url_for_logs}: {exc!r}"
            ) from exc
        self._conn, self._channel = conn, channel
        self._generation += 1
        self._consumer_tag = None
        self._reply_queue = None
        if not self._paused:
            self._start_consuming()
        # Control messages are taken even while paused (draining): a Job in flight may
        # still be cancelled in the grace period.
        channel.basic_consume(s.control_queue, self._deliver_control)
        self.connected.set()
        log.info("broker connected to %s (prefetch %d)", s.amqp_url_for_logs, self._prefetch)

    def run(
        self, stop: threading.Event, on_delivery: DeliveryHandler, on_control: DeliveryHandler
    ) -> None:
        """Consume requests into `on_delivery` and control messages into `on_control` until
        `stop` is set, reconnecting with backoff."""
        self._on_delivery = on_delivery
        self._on_control = on_control
        attempt = 0
        while not stop.is_set():
            try:
                if self._conn is None or self._conn.is_closed:
                    self.connect()
                    if attempt and self._on_reconnect is not None:
                        self._on_reconnect()
                    attempt = 0
                self._drain()
                assert self._conn is not None
                self._conn.process_data_events(time_limit=0.2)
            except (BrokerUnavailable, pika.exceptions.AMQPError) as exc:
                self._lost(exc)
                attempt += 1
                delay = backoff_delay(attempt)
                log.warning("broker unavailable (%s); reconnecting in %.1f s", exc, delay)
                stop.wait(delay)
        self.close()

    def close(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        self.connected.clear()
        self._drop_calls()
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except pika.exceptions.AMQPError as exc:
                log.debug("closing the broker connection: %r", exc)

    def _lost(self, exc: BaseException) -> None:
        self.connected.clear()
        self._drop_calls()
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except pika.exceptions.AMQPError:
                log.debug("connection already broken: %r", exc)

    # --- hand-over from other threads -----------------------------------------------------

    def submit(self, work: Callable[[], None]) -> None:
        """Run `work` on the connection's thread, soon; safe to call from any thread."""
        with self._lock:
            self._work.append(work)
            conn = self._conn
        if conn is not None:
            try:
                conn.add_callback_threadsafe(self._drain)
            except Exception:
                log.debug("connection closing; queued work waits for the next one")

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._work:
                    return
                work = self._work.popleft()
            try:
                work()
            except (BrokerUnavailable, pika.exceptions.AMQPError):
                with self._lock:  # not done: do it again on the next connection
                    self._work.appendleft(work)
                raise
            except Exception:
                # A bug in one piece of work must not take the connection down with it.
                log.exception("work handed to the broker thread failed")

    # --- owner-thread operations ----------------------------------------------------------

    def publish(
        self,
        queue: str,
        body: bytes,
        *,
        correlation_id: str | None,
        headers: Mapping[str, Any] | None = None,
        message_type: str | None = None,
        fallback: bool = True,
    ) -> None:
        """Publish to `queue` through the default exchange and wait for the broker's confirm.

        A queue that does not exist (a client's exclusive reply queue, gone with the client)
        makes the message unroutable; the reply then goes to the durable results queue, so
        it is never dropped. With `fallback` False (progress messages) an unroutable message
        is simply dropped: nobody waits for it any more.
        """
        props = pika.BasicProperties(
            content_type="application/json",
            correlation_id=correlation_id,
            delivery_mode=pika.DeliveryMode.Persistent,
            headers=dict(headers) if headers else None,
            type=message_type,
        )
        channel = self._require_channel()
        try:
            channel.basic_publish("", queue, body, props, mandatory=True)
        except pika.exceptions.UnroutableError:
            if not fallback:
                log.debug("queue %r is gone; message dropped", queue)
                return
            if queue == self._settings.results_queue:
                raise BrokerUnavailable(f"results queue {queue!r} does not exist") from None
            log.warning(
                "reply queue %r is gone; reply goes to %r", queue, self._settings.results_queue
            )
            channel.basic_publish("", self._settings.results_queue, body, props, mandatory=True)
        except pika.exceptions.AMQPError as exc:
            raise BrokerUnavailable(f"publishing to {queue!r} failed: {exc!r}") from exc

    def publish_event(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        message_type: str,
        message_id: str | None = None,
        persistent: bool = True,
    ) -> None:
        """Publish JSON to `exchange` under `routing_key` and wait for the broker's confirm.

        Not mandatory: an event nobody has bound a queue to is simply not kept (a topic's
        subscribers come and go). BrokerUnavailable if it could not be published.
        """
        props = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent if persistent else None,
            message_id=message_id,
            type=message_type,
        )
        channel = self._require_channel()
        try:
            channel.basic_publish(exchange, routing_key, body, props)
        except pika.exceptions.AMQPError as exc:
            raise BrokerUnavailable(
                f"publishing {routing_key!r} to {exchange!r} failed: {exc!r}"
            ) from exc

    def call(self, queue: str, body: bytes, *, correlation_id: str, on_reply: ReplyHandler) -> None:
        """Publish a request to `queue` (confirmed) whose reply comes back to `on_reply`.

        The reply arrives on this connection's private reply queue and `on_reply` runs on
        the owner thread; if the connection is lost first, `on_reply(None)`: the queue went
        with the connection, and the reply will go to the results queue.
        """
        channel = self._require_channel()
        try:
            reply_queue = self._reply_queue or self._open_reply_queue(channel)
            props = pika.BasicProperties(
                content_type="application/json",
                correlation_id=correlation_id,
                delivery_mode=pika.DeliveryMode.Persistent,
                reply_to=reply_queue,
            )
            # Registered first: the reply can come back before the confirm does.
            self._calls[correlation_id] = on_reply
            channel.basic_publish("", queue, body, props, mandatory=True)
        except pika.exceptions.UnroutableError:
            self._calls.pop(correlation_id, None)
            raise BrokerUnavailable(f"queue {queue!r} does not exist") from None
        except pika.exceptions.AMQPError as exc:
            # Not registered across the reconnect: the caller still waits, and the work
            # that called is run again on the next connection.
            self._calls.pop(correlation_id, None)
            raise BrokerUnavailable(f"publishing to {queue!r} failed: {exc!r}") from exc

    def republish(self, delivery: Delivery, *, headers: Mapping[str, Any]) -> None:
        """Put `delivery` back at the end of the work queue (confirmed), then ack it.

        A requeue (nack) would mark it redelivered and, at the head of the queue, hand it
        straight back; this keeps its identity (reply route, ids) and takes `headers`.
        """
        props = pika.BasicProperties(
            content_type="application/json",
            correlation_id=delivery.correlation_id,
            message_id=delivery.message_id,
            reply_to=delivery.reply_to,
            delivery_mode=pika.DeliveryMode.Persistent,
            headers=dict(headers),
        )
        channel = self._require_channel()
        try:
            channel.basic_publish("", self._settings.work_queue, delivery.body, props,
                                  mandatory=True)  # fmt: skip
        except pika.exceptions.UnroutableError:
            raise BrokerUnavailable(f"work queue {self._settings.work_queue!r} is gone") from None
        except pika.exceptions.AMQPError as exc:
            raise BrokerUnavailable(f"republishing a request failed: {exc!r}") from exc
        self.ack(delivery)

    def _open_reply_queue(self, channel: BlockingChannel) -> str:
        declared = channel.queue_declare("", exclusive=True, auto_delete=True)
        name = str(declared.method.queue)
        # No acks: the queue is this connection's and goes with it.
        channel.basic_consume(name, self._on_reply, auto_ack=True, exclusive=True)
        self._reply_queue = name
        return name

    def _on_reply(
        self,
        _channel: BlockingChannel,
        _method: pika.spec.Basic.Deliver,
        props: pika.BasicProperties,
        body: bytes,
    ) -> None:
        correlation_id = _text(props.correlation_id)
        handler = self._calls.pop(correlation_id or "", None)
        if handler is not None and handler(body):
            return
        log.info("reply %s has no caller waiting; it goes to the results queue", correlation_id)
        self.publish(self._settings.results_queue, body, correlation_id=correlation_id)

    def _drop_calls(self) -> None:
        calls, self._calls = self._calls, {}
        for handler in calls.values():
            handler(None)

    # Acks and flow control never raise for a lost connection: the broker has put that
    # channel's deliveries back already, and `connect` honours `paused` on the next one.
    # Raising would make the caller's whole piece of work run again on the new connection,
    # and with it anything it did before (a reply published twice).

    def ack(self, delivery: Delivery) -> None:
        self._settle(delivery, lambda channel: channel.basic_ack(delivery.tag))

    def nack(self, delivery: Delivery, *, requeue: bool) -> None:
        self._settle(delivery, lambda channel: channel.basic_nack(delivery.tag, requeue=requeue))

    def holds(self, delivery: Delivery) -> bool:
        channel = self._channel
        return delivery.generation == self._generation and channel is not None and channel.is_open

    def _settle(self, delivery: Delivery, call: Callable[[BlockingChannel], None]) -> None:
        channel = self._channel
        if not self.holds(delivery) or channel is None:
            return  # its channel is gone; the broker has requeued the message already
        try:
            call(channel)
        except pika.exceptions.AMQPError as exc:
            log.info("delivery %d not settled, its channel broke: %r", delivery.tag, exc)

    def pause(self) -> None:
        """Stop taking new deliveries (unacked ones stay ours); idempotent."""
        self._paused = True
        if self._channel is not None and self._consumer_tag is not None:
            tag, self._consumer_tag = self._consumer_tag, None
            try:
                self._channel.basic_cancel(tag)
            except pika.exceptions.AMQPError as exc:
                log.info("consumer not cancelled, its channel broke: %r", exc)

    def resume(self) -> None:
        self._paused = False
        if self._channel is not None and self._consumer_tag is None:
            try:
                self._start_consuming()
            except (BrokerUnavailable, pika.exceptions.AMQPError) as exc:
                log.info("consuming not resumed yet, the channel broke: %r", exc)

    @property
    def paused(self) -> bool:
        return self._paused

    def _start_consuming(self) -> None:
        channel = self._require_channel()
        self._consumer_tag = channel.basic_consume(self._settings.work_queue, self._deliver)

    def _require_channel(self) -> BlockingChannel:
        if self._channel is None or self._channel.is_closed:
            raise BrokerUnavailable("no open channel to RabbitMQ")
        return self._channel

    def _deliver(
        self,
        _channel: BlockingChannel,
        method: pika.spec.Basic.Deliver,
        props: pika.BasicProperties,
        body: bytes,
    ) -> None:
        self._on_delivery(self._delivery(method, props, body))

    def _deliver_control(
        self,
        _channel: BlockingChannel,
        method: pika.spec.Basic.Deliver,
        props: pika.BasicProperties,
        body: bytes,
    ) -> None:
        self._on_control(self._delivery(method, props, body))

    def _delivery(
        self, method: pika.spec.Basic.Deliver, props: pika.BasicProperties, body: bytes
    ) -> Delivery:
        return Delivery(
            tag=method.delivery_tag,
            generation=self._generation,
            body=body,
            reply_to=_text(props.reply_to),
            correlation_id=_text(props.correlation_id),
            message_id=_text(props.message_id),
            redelivered=bool(method.redelivered),
            headers=dict(props.headers or {}),
        )


def _text(value: str | bytes | None) -> str | None:
    """A short-string property as text; None when absent or empty.

    pika hands over the raw bytes of a property that is not UTF-8. Decoded with
    replacement, it still names a Job and routes a reply (to the results queue when
    the reply queue cannot be named), instead of failing everything downstream.
    """
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return value or None
