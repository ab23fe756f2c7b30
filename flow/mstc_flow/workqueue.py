"""The worker's work queue as an operator sees it: its counts, and taking out what still waits.

The second module of the flow that imports pika (the inbox is the first): the inbox's
connection belongs to its own thread, so each call here opens a short connection of its own
(API calls that need it are rare: `mstc queue status|purge`).

`counts` is a passive declare: messages ready (waiting for a worker) and consumers. AMQP has
no count of the messages the consumers hold unacked; the caller adds what the workers'
heartbeats say instead.

`take_waiting` is exact where RabbitMQ's `queue.purge` is not: it takes ready messages one at
a time with `basic.get` (the broker never hands out a message a consumer holds, so a request a
worker took, which has or is getting its Job, is never touched), shows each to `decide`, and
then either drops it (ack, after the failure reply `decide` asked for was confirmed) or keeps
it. Kept messages stay unacked on this channel until the end, so the next `basic.get` returns
the next one, and are then given back (nack with requeue: RabbitMQ puts them back where they
were). It takes at most the ready count it saw at the start, so publishers adding requests
while it runs cannot keep it going. A crash half-way gives back every message not yet acked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions

from mstc_flow.errors import TransientError
from mstc_flow.settings import FlowSettings

__all__ = ["Decide", "Decision", "QueueCounts", "WaitingRequest", "WorkQueue"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueueCounts:
    queue: str
    ready: int
    consumers: int


@dataclass(frozen=True)
class WaitingRequest:
    """One request taken from the queue, as `decide` sees it (no pika types)."""

    correlation_id: str | None
    reply_to: str | None
    redelivered: bool
    headers: Mapping[str, Any]
    body: bytes


@dataclass(frozen=True)
class Decision:
    """Drop the request (with `reply`, a failure reply for its `reply_to`), or keep it."""

    drop: bool
    reply: bytes | None = None


Decide = Callable[[WaitingRequest], Decision]


class WorkQueue:
    """The work queue named by the client settings (`MSTC_WORK_QUEUE`)."""

    def __init__(self, settings: FlowSettings) -> None:
        self._settings = settings
        self.name = settings.client.work_queue

    def counts(self) -> QueueCounts:
        try:
            conn = self._connect()
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise TransientError(
                f"Cannot reach RabbitMQ to count the work queue: {exc!r}."
            ) from exc
        try:
            ok = conn.channel().queue_declare(self.name, passive=True)
            return QueueCounts(self.name, int(ok.method.message_count),
                               int(ok.method.consumer_count))  # fmt: skip
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:  # nobody declared it yet: nothing waits in it
                return QueueCounts(self.name, 0, 0)
            raise TransientError(f"RabbitMQ refused to count {self.name}: {exc}.") from exc
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise TransientError(f"Counting the work queue failed: {exc!r}.") from exc
        finally:
            _close(conn)

    def take_waiting(self, decide: Decide) -> int:
        """Show each waiting request to `decide` and drop or keep it; how many were dropped.

        TransientError when RabbitMQ cannot be reached (or is lost half-way: what was
        dropped before stays dropped, the rest is back in the queue).
        """
        try:
            conn = self._connect()
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise TransientError(
                f"Cannot reach RabbitMQ to purge the work queue: {exc!r}."
            ) from exc
        try:
            return self._take(conn.channel(), decide)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                return 0
            raise TransientError(f"RabbitMQ refused the purge of {self.name}: {exc}.") from exc
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise TransientError(f"The purge of the work queue was cut off: {exc!r}.") from exc
        finally:
            _close(conn)  # the kept ones, unacked, go back to the queue

    def _take(self, channel: Any, decide: Decide) -> int:
        channel.confirm_delivery()  # a failure reply is sent for sure before its request goes
        waiting = int(channel.queue_declare(self.name, passive=True).method.message_count)
        dropped, kept = 0, []
        for _ in range(waiting):
            method, props, body = channel.basic_get(self.name, auto_ack=False)
            if method is None:
                break  # taken by a worker meanwhile
            decision = decide(_request(method, props, body))
            if not decision.drop:
                kept.append(method.delivery_tag)
                continue
            if decision.reply is not None and props.reply_to:
                _reply(channel, props, decision.reply)
            channel.basic_ack(method.delivery_tag)
            dropped += 1
        for tag in kept:
            channel.basic_nack(tag, requeue=True)
        return dropped

    def _connect(self) -> Any:
        cfg = self._settings.client
        params = pika.URLParameters(cfg.amqp_url)
        params.connection_attempts = 1
        params.socket_timeout = 5
        params.blocked_connection_timeout = 30
        params.client_properties = {
            "connection_name": f"mstc-flow {self._settings.replica_id} work queue"
        }
        return pika.BlockingConnection(params)


def _request(method: Any, props: Any, body: bytes) -> WaitingRequest:
    return WaitingRequest(
        correlation_id=props.correlation_id, reply_to=props.reply_to,
        redelivered=bool(method.redelivered), headers=dict(props.headers or {}), body=bytes(body),
    )  # fmt: skip


def _reply(channel: Any, props: Any, body: bytes) -> None:
    """The failure reply, as the worker sends replies: default exchange, the request's
    correlation id. Not mandatory: a client gone with its reply queue is simply not told."""
    reply_props = pika.BasicProperties(
        content_type="application/json", correlation_id=props.correlation_id,
        delivery_mode=pika.DeliveryMode.Persistent,
    )  # fmt: skip
    channel.basic_publish("", props.reply_to, body, reply_props)


def _close(conn: Any) -> None:
    if conn.is_open:
        try:
            conn.close()
        except (pika.exceptions.AMQPError, OSError) as exc:
            log.debug("closing the work queue connection: %r", exc)
