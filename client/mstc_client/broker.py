"""The RabbitMQ side of the client: one connection, one I/O thread, replies routed to handles.

pika's BlockingConnection is not thread-safe, so exactly one thread (started by `BrokerLink`)
touches it: it connects, publishes, receives replies and keeps heartbeats flowing, because it
never blocks on anything but the connection. Other threads only append a handle to the outbox
and wake that thread with `add_callback_threadsafe`, the one thread-safe call pika has; they
learn the outcome through the handle (a Future for the reply, an Event for the broker's
publish confirm).

Why the reply queue has a fixed name and is durable (`mstc.reply.<uuid>`, with `x-expires`)
rather than a server-named exclusive one: the worker records the reply route in the Job when it
creates it, and a re-sent request adopts that Job, so replies keep going to the queue named in
the *first* send. A queue that survives a broker restart under the same name therefore still
receives them, including replies published while this client was reconnecting. `x-expires`
removes it if the client dies; `close()` deletes it.

A long-lived submitter (mstc-flow) sets `ClientConfig.reply_queue_name` instead: that queue is
durable without `x-expires` and survives `close()`, because the requests it sent outlive the
process; replies for requests this process never sent (a previous life's) are acked and dropped.

On every reconnect the queue's backlog is read first, then each request still waiting is
re-sent with the same correlation_id: the worker derives the Job's name from it, so a re-send
adopts the running Job instead of making a second one. The first reply per correlation_id wins;
later ones are acknowledged and dropped.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pika
import pika.exceptions

from mstc_client.config import ClientConfig
from mstc_client.control import ANSWER_TYPE, ControlCall, parse_cancel_answer
from mstc_client.errors import BrokerUnreachable, ClientClosed, MstcClientError
from mstc_client.handle import JobHandle
from mstc_client.protocol import PROGRESS_HEADER, PROGRESS_TYPE, parse_progress, parse_reply

__all__ = ["BrokerLink", "ConnectionFactory", "backoff_delay", "default_connection_factory"]

log = logging.getLogger(__name__)

ConnectionFactory = Callable[[], Any]  # returns a pika.BlockingConnection
_BACKLOG_READ_SECONDS = 5.0


def backoff_delay(attempt: int, *, base: float = 0.5, cap: float = 10.0) -> float:
    """Seconds before reconnect attempt `attempt` (1-based): doubling, capped, full jitter."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))  # noqa: S311 - not crypto


def default_connection_factory(config: ClientConfig) -> ConnectionFactory:
    def connect() -> Any:
        params = pika.URLParameters(config.amqp_url)
        params.heartbeat = config.heartbeat_seconds
        params.blocked_connection_timeout = max(60, 2 * config.heartbeat_seconds)
        params.connection_attempts = 1  # the link retries itself, with backoff
        params.socket_timeout = 5
        params.client_properties = {"connection_name": "mstc-client"}
        return pika.BlockingConnection(params)

    return connect


def _describe(exc: BaseException) -> str:
    # pika wraps socket errors in several layers; the innermost one says what happened.
    while exc.args and isinstance(exc.args[0], BaseException):
        exc = exc.args[0]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class BrokerLink:
    """Owns the AMQP connection through its I/O thread; `submit` may be called from any thread."""

    def __init__(self, config: ClientConfig, factory: ConnectionFactory | None = None) -> None:
        self._config = config
        self._factory = factory or default_connection_factory(config)
        self._fixed_queue = config.reply_queue_name is not None
        self.reply_queue = config.reply_queue_name or f"mstc.reply.{uuid.uuid4().hex}"
        self._lock = threading.Lock()
        self._pending: dict[str, JobHandle] = {}
        self._controls: dict[str, ControlCall] = {}  # control messages awaiting an answer
        self._outbox: collections.deque[JobHandle | ControlCall] = collections.deque()
        self._conn: Any = None
        self._channel: Any = None
        self._closing = threading.Event()
        self._first: Future[None] = Future()
        self._received = 0
        self.connected = threading.Event()
        self.reconnects = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="mstc-client-io", daemon=True)

    # --- any thread ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the I/O thread; return once connected, or raise BrokerUnreachable."""
        self._thread.start()
        self._first.result()

    def submit(self, handle: JobHandle) -> None:
        if self._closing.is_set():
            raise ClientClosed("The client is closed; open a new Client to submit requests.")
        with self._lock:
            self._pending[handle.correlation_id] = handle
            self._outbox.append(handle)
            conn = self._conn
        self._wake(conn)

    def control(self, call: ControlCall) -> None:
        """Send a control message; its answer resolves `call.answer` (any thread)."""
        if self._closing.is_set():
            raise ClientClosed("The client is closed; open a new Client to cancel.")
        with self._lock:
            self._controls[call.correlation_id] = call
            self._outbox.append(call)
            conn = self._conn
        self._wake(conn)

    def forget_control(self, call: ControlCall) -> None:
        with self._lock:
            self._controls.pop(call.correlation_id, None)

    def forget(self, handle: JobHandle) -> None:
        """Stop waiting for `handle`'s reply (it is not re-sent any more)."""
        with self._lock:
            self._pending.pop(handle.correlation_id, None)

    @property
    def state(self) -> str:
        if self.connected.is_set():
            return "connected"
        return f"reconnecting to the broker ({self.last_error or 'connection lost'})"

    def close(self, timeout: float = 15.0) -> None:
        self._closing.set()
        with self._lock:
            conn = self._conn
        self._wake(conn)
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._lock:
            left, self._pending = list(self._pending.values()), {}
        for handle in left:
            handle.fail(ClientClosed(f"The client was closed before request "
                                     f"{handle.correlation_id} got its reply."))  # fmt: skip

    def _wake(self, conn: Any) -> None:
        if conn is None:
            return  # the I/O thread flushes the outbox as soon as it is connected again
        try:
            conn.add_callback_threadsafe(self._flush)
        except pika.exceptions.AMQPError:
            log.debug("connection closing; the outbox waits for the next one")

    # --- the I/O thread -----------------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        deadline = time.monotonic() + self._config.connect_timeout_seconds
        while not self._closing.is_set():
            try:
                if self._conn is None:
                    self._connect()
                    attempt = 0
                self._flush()
                self._conn.process_data_events(time_limit=1.0)
            except Exception as exc:  # this thread must outlive any one failure
                if not isinstance(exc, pika.exceptions.AMQPError | OSError):
                    # Not a broker problem (an injected factory, a bug): keep its traceback, and
                    # still reconnect, or every waiting handle would hang with the thread gone.
                    log.exception("unexpected error on the broker connection")
                self._drop(exc)
                attempt += 1
                if not self._first.done() and (
                    time.monotonic() >= deadline
                    or isinstance(exc, pika.exceptions.ProbableAuthenticationError)
                ):
                    self._first.set_exception(self._unreachable(exc, attempt))
                    return
                delay = backoff_delay(attempt)
                log.warning("broker: %s; reconnecting in %.1f s", self.last_error, delay)
                self._closing.wait(delay)
        self._shutdown()
        if not self._first.done():
            self._first.set_exception(ClientClosed("The client was closed while connecting."))

    def _unreachable(self, exc: BaseException, attempts: int) -> BrokerUnreachable:
        where = self._config.amqp_url_for_display
        if isinstance(exc, pika.exceptions.ProbableAuthenticationError):
            return BrokerUnreachable(
                f"RabbitMQ at {where} refused the login ({_describe(exc)}); check "
                "WORK_QUEUE_USER/WORK_QUEUE_PASS or the credentials in MSTC_AMQP_URL."
            )
        return BrokerUnreachable(
            f"Cannot reach RabbitMQ at {where} ({_describe(exc)}; {attempts} attempts in "
            f"{self._config.connect_timeout_seconds:g} s). Check that the broker runs and that "
            "MSTC_AMQP_URL or WORK_QUEUE_HOST/WORK_QUEUE_PORT point at it."
        )

    def _connect(self) -> None:
        conn = self._factory()
        try:
            backlog = self._open(conn)
        except BaseException:
            if conn.is_open:  # a half-made connection must not linger
                conn.close()
            raise
        self._received = 0
        self.connected.set()
        if not self._first.done():
            self._first.set_result(None)
            log.info("broker connected to %s", self._config.amqp_url_for_display)
            return
        self.reconnects += 1
        log.info("broker reconnected; %d replies were waiting", backlog)
        # Replies that came while we were away first, so only requests still owed are re-sent.
        until = time.monotonic() + _BACKLOG_READ_SECONDS
        while self._received < backlog and time.monotonic() < until:
            conn.process_data_events(time_limit=0.2)
        with self._lock:
            queued = {handle.correlation_id for handle in self._outbox}
            for handle in self._pending.values():
                if handle.correlation_id not in queued:
                    self._outbox.append(handle)
            for call in self._controls.values():  # a cancel is idempotent: send it again
                if call.correlation_id not in queued:
                    self._outbox.append(call)

    def _open(self, conn: Any) -> int:
        """Channel, topology and reply consumer on a new connection; returns the reply backlog."""
        cfg = self._config
        channel = conn.channel()
        channel.confirm_delivery()
        if cfg.declare_topology:
            # Exactly as the worker declares them (no arguments), so the declarations agree.
            channel.exchange_declare(cfg.exchange, exchange_type="direct", durable=True)
            channel.queue_declare(cfg.work_queue, durable=True)
            channel.queue_bind(cfg.work_queue, cfg.exchange, routing_key=cfg.work_queue)
        # A fixed queue is shared with this client's next life: it must never expire.
        expires = (
            None if self._fixed_queue else {"x-expires": cfg.reply_queue_expires_seconds * 1000}
        )
        declared = channel.queue_declare(self.reply_queue, durable=True, arguments=expires)
        channel.basic_consume(self.reply_queue, self._on_reply)
        with self._lock:
            self._conn, self._channel = conn, channel
        return int(declared.method.message_count)

    def _drop(self, exc: BaseException) -> None:
        self.connected.clear()
        self.last_error = _describe(exc)
        with self._lock:
            conn, self._conn, self._channel = self._conn, None, None
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except pika.exceptions.AMQPError as close_exc:
                log.debug("connection already broken: %r", close_exc)

    def _shutdown(self) -> None:
        with self._lock:
            conn, channel, self._conn, self._channel = self._conn, self._channel, None, None
        self.connected.clear()
        if conn is None or not conn.is_open:
            return
        try:
            if not self._fixed_queue:
                # Nobody will read it: replies still owed go to the worker's results queue.
                channel.queue_delete(self.reply_queue)
            conn.close()
        except pika.exceptions.AMQPError as exc:
            log.debug("closing the broker connection: %r", exc)

    def _flush(self) -> None:
        while True:
            with self._lock:
                if not self._outbox or self._channel is None:
                    return
                handle = self._outbox.popleft()
                channel = self._channel
            if isinstance(handle, ControlCall):
                self._send_control(channel, handle)
                continue
            if handle.done():
                continue
            try:
                self._publish(channel, handle)
            except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
                self.forget(handle)
                handle.fail(MstcClientError(
                    f"RabbitMQ did not take the request ({_describe(exc)}); check that "
                    f"exchange {self._config.exchange!r} routes {self._config.work_queue!r} "
                    "to a queue (MSTC_EXCHANGE, MSTC_WORK_QUEUE)."
                ))  # fmt: skip
            except pika.exceptions.AMQPError:
                with self._lock:  # not sent: send it on the next connection
                    self._outbox.appendleft(handle)
                raise
            else:
                handle.mark_sent()

    def _publish(self, channel: Any, handle: JobHandle) -> None:
        props = pika.BasicProperties(
            content_type="application/json",
            reply_to=self.reply_queue,
            correlation_id=handle.correlation_id,
            delivery_mode=pika.DeliveryMode.Persistent,
            # Ask for progress messages; a worker that does not know the header ignores it.
            headers={PROGRESS_HEADER: "1"},
        )
        channel.basic_publish(
            self._config.exchange, self._config.work_queue, handle.body, props, mandatory=True
        )

    def _send_control(self, channel: Any, call: ControlCall) -> None:
        props = pika.BasicProperties(
            content_type="application/json",
            reply_to=self.reply_queue,
            correlation_id=call.correlation_id,
            delivery_mode=pika.DeliveryMode.Persistent,
        )
        queue = self._config.control_queue
        try:
            channel.basic_publish("", queue, call.body, props, mandatory=True)
        except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
            self.forget_control(call)
            call.answer.set_exception(MstcClientError(
                f"RabbitMQ did not take the control message ({_describe(exc)}); is a worker "
                f"running that consumes control queue {queue!r} (MSTC_CONTROL_QUEUE)?"
            ))  # fmt: skip
        except pika.exceptions.AMQPError:
            with self._lock:  # not sent: send it on the next connection
                self._outbox.appendleft(call)
            raise

    def _on_answer(self, correlation_id: str, body: bytes) -> None:
        with self._lock:
            call = self._controls.pop(correlation_id, None)
        if call is not None and not call.answer.done():
            call.answer.set_result(parse_cancel_answer(body))

    def _on_reply(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        if props.type == ANSWER_TYPE:
            self._on_answer(props.correlation_id or "", body)
            channel.basic_ack(method.delivery_tag)
            return
        if props.type == PROGRESS_TYPE:
            self._on_progress(props.correlation_id or "", body)
            channel.basic_ack(method.delivery_tag)
            return
        self._received += 1
        reply = parse_reply(body)
        with self._lock:
            handle = self._pending.pop(props.correlation_id or "", None)
        if handle is None:
            log.debug("dropping a reply for %r: answered already or not ours", props.correlation_id)
        else:
            handle.resolve(reply)
        channel.basic_ack(method.delivery_tag)

    def _on_progress(self, correlation_id: str, body: bytes) -> None:
        """A progress message updates the waiting handle; it never resolves it."""
        progress = parse_progress(body)
        if progress is None:
            log.debug("dropping an unreadable progress message for %r", correlation_id)
            return
        with self._lock:
            handle = self._pending.get(correlation_id)
        if handle is not None:
            handle.note_progress(*progress)
