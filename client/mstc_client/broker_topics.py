"""Listening on a topic exchange: the client's other RabbitMQ boundary (with `broker`, pika's).

Owns one subscription: a connection, a server-named queue (`amq.gen-...`, exclusive and
auto-deleted, so nothing is left behind when the listener goes, and so the chart's client user
needs no rights beyond that name pattern and reading the exchange), bound to the given keys,
read on the calling thread. Unlike `broker.BrokerLink` it keeps no requests and has nothing to
re-send: a lost connection ends the subscription (BrokerUnreachable), since what was published
meanwhile is gone for a listener anyway.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions

from mstc_client.config import ClientConfig
from mstc_client.errors import BrokerUnreachable

__all__ = ["TopicMessage", "TopicSubscription"]

_TICK = 0.25


@dataclass(frozen=True)
class TopicMessage:
    """One message as it came: its routing key, AMQP `type` and body."""

    routing_key: str
    message_type: str | None
    body: bytes


class TopicSubscription:
    """A queue of our own bound to `keys` on `exchange`; a context manager."""

    def __init__(self, config: ClientConfig, exchange: str, keys: Sequence[str]) -> None:
        self._config = config
        self._exchange = exchange
        self._keys = list(keys)
        self._conn: Any = None
        self._channel: Any = None
        self._queue = ""

    def __enter__(self) -> TopicSubscription:
        self.open()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Connect, declare the queue and bind it; BrokerUnreachable if any of it fails."""
        params = pika.URLParameters(self._config.amqp_url)
        params.heartbeat = self._config.heartbeat_seconds
        params.connection_attempts = 1
        params.socket_timeout = max(1.0, self._config.connect_timeout_seconds)
        params.client_properties = {"connection_name": "mstc-client-listener"}
        try:
            self._conn = pika.BlockingConnection(params)
            self._channel = self._conn.channel()
            declared = self._channel.queue_declare("", exclusive=True, auto_delete=True)
            self._queue = str(declared.method.queue)
            for key in self._keys:
                self._channel.queue_bind(self._queue, self._exchange, routing_key=key)
        except (pika.exceptions.AMQPError, OSError) as exc:
            self.close()
            raise BrokerUnreachable(self._why(exc)) from exc

    def messages(self, *, until: float | None = None) -> Iterator[TopicMessage]:
        """The messages as they arrive, until the monotonic time `until` (None: for ever)."""
        if self._channel is None:
            raise BrokerUnreachable("The subscription is not open.")
        try:
            # pika's generator takes fixed parameters; it wakes every _TICK seconds with None,
            # so the clock is looked at (and Ctrl-C is never held up) that often.
            for method, props, body in self._channel.consume(
                self._queue, auto_ack=True, exclusive=True, inactivity_timeout=_TICK
            ):
                if method is not None:
                    yield TopicMessage(str(method.routing_key), props.type, bytes(body))
                if until is not None and time.monotonic() >= until:
                    return
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise BrokerUnreachable(f"Lost the broker while listening: {exc!r}.") from exc

    def close(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None and conn.is_open:
            # Closing anyway; the server drops the exclusive queue with the connection.
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                conn.close()

    def _why(self, exc: BaseException) -> str:
        where = self._config.amqp_url_for_display
        if isinstance(exc, pika.exceptions.ProbableAuthenticationError):
            return f"RabbitMQ at {where} refused the login: check WORK_QUEUE_USER/PASS."
        if isinstance(exc, pika.exceptions.ChannelClosedByBroker):
            return (
                f"RabbitMQ at {where} refused to subscribe to exchange {self._exchange!r}: "
                f"{exc.reply_text} (the user needs read on it; MSTC_EVENTS_EXCHANGE names it)."
            )
        return f"Cannot reach RabbitMQ at {where}: {exc!r}."
