"""The RabbitMQ side of a task queue: one blocking connection, one channel, one queue.

`tasks.TaskQueue` holds the rules a user sees (JSON, task_done, join); this module only
speaks AMQP, and is the one besides `broker` that imports pika. Everything happens on the
calling thread: a `TaskChannel` is used by one thread at a time, as `queue.Queue` users
call it from one worker loop, and pika's BlockingConnection is not thread-safe anyway.

The queue ``mstc.tasks.<name>`` is fed through a direct exchange of the same name rather
than RabbitMQ's default exchange, because publishing to the default exchange needs write
permission on ``amq.default``, which would let a pod publish into every queue of the vhost
(the worker's work queue included). With the exchange, one name covers all a pod needs:
configure (declare both), write (publish to the exchange, bind the queue) and read (take
from the queue, bind from the exchange).

Taking a task starts a consumer with a prefetch of one, waits for its one delivery and
cancels it: the task stays unacknowledged on the channel until `ack`, so if this process
dies first RabbitMQ hands the task to another consumer. A consumer, not polling with
basic.get, so a waiting `get` wakes as soon as a task is published.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pika
import pika.exceptions
import pika.spec

from mstc_client.errors import BrokerUnreachable, TaskQueueError

__all__ = ["TaskChannel"]

_JSON = "application/json"
_PERSISTENT = 2  # delivery_mode: written to disk with the durable queue


def _reason(exc: BaseException) -> tuple[str, int | None]:
    if isinstance(
        exc, pika.exceptions.ChannelClosedByBroker | pika.exceptions.ConnectionClosedByBroker
    ):
        return f"{exc.reply_code} {exc.reply_text}", exc.reply_code
    while exc.args and isinstance(exc.args[0], BaseException):
        exc = exc.args[0]
    return (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__), None


class TaskChannel:
    """An open connection to one task queue, declared on construction."""

    def __init__(self, url: str, queue: str, *, heartbeat_seconds: int) -> None:
        self.queue = queue
        params = pika.URLParameters(url)
        params.heartbeat = heartbeat_seconds
        params.connection_attempts = 3
        params.retry_delay = 1
        params.client_properties = {"connection_name": f"mstc-tasks {queue}"}
        try:
            self._connection = pika.BlockingConnection(params)
        except pika.exceptions.ProbableAuthenticationError as exc:
            raise TaskQueueError(f"RabbitMQ refused the login for task queue {queue}: "
                                 f"{_reason(exc)[0]}", 403) from exc  # fmt: skip
        except pika.exceptions.AMQPError as exc:
            raise BrokerUnreachable(f"cannot reach RabbitMQ for task queue {queue}: "
                                    f"{_reason(exc)[0]}") from exc  # fmt: skip
        try:
            self._call(self._open)
        except BaseException:
            self.close()  # a refused declare leaves the connection open
            raise

    def _open(self) -> None:
        self._channel = self._connection.channel()
        self._channel.confirm_delivery()
        # Per consumer: each take's consumer receives exactly one task.
        self._channel.basic_qos(prefetch_count=1)
        self._channel.exchange_declare(self.queue, exchange_type="direct", durable=True)
        self._channel.queue_declare(self.queue, durable=True)
        self._channel.queue_bind(self.queue, self.queue, routing_key=self.queue)

    def _call(self, action: Any, *args: Any) -> Any:
        """Run a pika call, its failures said in this client's errors."""
        try:
            return action(*args)
        except pika.exceptions.UnroutableError as exc:
            raise TaskQueueError(f"task queue {self.queue}: the task was not routed to "
                                 "the queue (was it deleted?)") from exc  # fmt: skip
        except pika.exceptions.NackError as exc:
            raise TaskQueueError(
                f"task queue {self.queue}: RabbitMQ did not take the task"
            ) from exc
        except (
            pika.exceptions.ChannelClosedByBroker,
            pika.exceptions.ConnectionClosedByBroker,
        ) as exc:
            text, code = _reason(exc)
            raise TaskQueueError(
                f"task queue {self.queue}: RabbitMQ refused: {text}", code
            ) from exc
        except pika.exceptions.AMQPError as exc:
            raise BrokerUnreachable(
                f"task queue {self.queue}: connection lost ({_reason(exc)[0]}); "
                "tasks taken and not done go back to the queue"
            ) from exc

    def publish(self, body: bytes) -> None:
        """Publish one persistent task and wait for RabbitMQ's confirm."""
        properties = pika.BasicProperties(content_type=_JSON, delivery_mode=_PERSISTENT)
        self._call(
            lambda: self._channel.basic_publish(
                self.queue, self.queue, body, properties, mandatory=True
            )
        )

    def take(self, timeout: float | None) -> tuple[int, bytes] | None:
        """One task, unacknowledged (its delivery tag and body); None when none came in time.

        `timeout` 0 asks once (basic.get); None waits as long as it takes.
        """
        if timeout is not None and timeout <= 0:
            method, _, body = self._call(lambda: self._channel.basic_get(self.queue))
            return None if method is None else (int(method.delivery_tag), bytes(body))
        taken: tuple[int, bytes] | None = self._call(self._consume_one, timeout)
        return taken

    def _consume_one(self, timeout: float | None) -> tuple[int, bytes] | None:
        got: list[tuple[int, bytes]] = []

        def on_message(_ch: Any, method: Any, _props: Any, body: bytes) -> None:
            got.append((int(method.delivery_tag), bytes(body)))

        tag = self._channel.basic_consume(self.queue, on_message, auto_ack=False)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not got:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                # Returns on a delivery or at the time limit; heartbeats flow meanwhile.
                self._connection.process_data_events(time_limit=left if left is not None else 60)
        finally:
            self._channel.basic_cancel(tag)
        return got[0] if got else None

    def ack(self, delivery_tag: int) -> None:
        self._call(lambda: self._channel.basic_ack(delivery_tag))

    def reject(self, delivery_tag: int) -> None:
        """Drop a task for good (not requeued): one no TaskQueue can read."""
        self._call(lambda: self._channel.basic_reject(delivery_tag, requeue=False))

    def ready(self) -> int:
        """Tasks in the queue that nobody holds (RabbitMQ's count of ready messages)."""
        declared = self._call(lambda: self._channel.queue_declare(self.queue, passive=True))
        return int(declared.method.message_count)

    def idle(self, seconds: float) -> None:
        """Wait, answering heartbeats, for about `seconds`."""
        self._call(lambda: self._connection.process_data_events(time_limit=seconds))

    def close(self) -> None:
        """Close the connection; tasks taken and not acknowledged go back to the queue."""
        if self._connection.is_open:
            # Closing anyway; the broker requeues what was held.
            with contextlib.suppress(pika.exceptions.AMQPError):
                self._connection.close()
