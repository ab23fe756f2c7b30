"""The service: wires the broker, the worker processes and the HTTP port together.

Owns the main process's side of a request's life, and the rules that keep work safe:

* A request leaves the queue (is acked) only once its Job exists and records where the reply
  goes; from then on the Job, not the message, is the request. Long Jobs therefore never hold
  an unacked delivery past RabbitMQ's consumer timeout, and a crash loses nothing.
* A bad request gets a `rejected` reply and is acked at once: never requeued in a loop.
* Replies are published with confirms, from the connection's own thread; only then is the
  worker process told to let the Job go (remove its finalizer).
* At most `concurrency` requests are in flight per replica. A request that arrives at the
  limit is held (unacked, so at most the prefetch of them) until a slot frees; the consumer
  is never cancelled for it, because pika hands back what it has buffered then, marked
  redelivered, and the broker pushes it again at once. One held too long for RabbitMQ's
  consumer timeout goes back to the end of the queue (republished, then acked).
* Another try is counted by the worker in the request's `x-mstc-attempts` header, set when
  it puts a request back; `redelivered` says nothing (a broker returns messages for many
  reasons that are not the request's fault).
* A worker process that dies costs a request a try only if the process had taken it from
  its inbox (`JobReceived`); one still waiting there is sent to the new process. The
  service knows which incarnation of a process it gave each request, so what it hears about
  one incarnation never touches a request given to the next.
* A REST request goes through the work queue like any other (`_execute` publishes it with a
  reply queue of the connection's own and waits), so the cap, the acks and a request's
  identity are the AMQP ones; at most `http_max_waiting` REST callers wait at a time.
* SIGTERM: stop consuming, hand held requests back to the queue, give in-flight requests the
  grace period, then hand back whatever is left (unaccepted deliveries return to the queue;
  running Jobs are adopted by the next worker through their annotations).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import json
import logging
import signal
import threading
import time
import uuid
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from types import FrameType
from typing import Any, assert_never

from mstc_worker import manifest
from mstc_worker.errors import RequestRejected
from mstc_worker.messages import (
    JobAccepted,
    JobEnded,
    JobFinished,
    JobProgress,
    JobReceived,
    JobStartFailed,
    PoolMessage,
    ReleaseJob,
    StartJob,
    Trouble,
    WorkerDied,
    WorkerReady,
)
from mstc_worker.metrics import Metrics
from mstc_worker.ports import (
    BrokerPort,
    BrokerUnavailable,
    Delivery,
    HttpEndpoints,
    HttpFactory,
    PoolPort,
)
from mstc_worker.protocol import (
    PROGRESS_TYPE,
    Reply,
    Request,
    Status,
    parse_request,
    progress_body,
    rejection_reply,
    reply_body,
    reply_for,
    wants_progress,
)
from mstc_worker.runner import shard_of
from mstc_worker.settings import Settings

__all__ = ["Service"]

log = logging.getLogger(__name__)


ATTEMPTS_HEADER = "x-mstc-attempts"
"""How many times this worker put the request back for another try (absent: none)."""

HOLD_LIMIT_S = 300.0
"""A request held at the cap this long goes back to the queue: well inside RabbitMQ's
consumer timeout (30 min by default and in the chart, which lets it be set lower), after
which the broker would close the whole channel and every unacked delivery on it."""

_HOLD_CHECK_S = 30.0


@dataclass
class _Pending:
    """A request without a Job yet: held at the cap, or handed to a worker process."""

    delivery: Delivery
    worker: int  # the index of the process whose shard its Job is in
    start: StartJob
    since: float  # monotonic time it arrived
    incarnation: int | None = None  # the process it was handed to; None while held
    received: bool = False  # that process took it from its inbox

    @property
    def route(self) -> manifest.ReplyRoute:
        return self.start.route


def attempts_of(delivery: Delivery) -> int:
    """How many times the worker has put this request back already (its own header)."""
    value = delivery.headers.get(ATTEMPTS_HEADER, 0)
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0  # not ours to trust: a client's header counts as none


def crash_reply(reason: str) -> Reply:
    """The reply to a request that crashed its handler twice: an error, in the Java form."""
    return Reply(
        status=Status.ERROR,
        reason="WorkerCrashed",
        error=reason,
        error_type="WorkerCrashed",
        result=f"WorkerCrashed: {reason}",
    )


class Service:
    """One replica of the worker: call `run()` from the main thread.

    It is given its collaborators (see `ports`); `__main__` makes the real ones. The HTTP
    port is given as a factory because it answers with the service's own endpoints.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        broker: BrokerPort,
        pool: PoolPort,
        http: HttpFactory,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.broker = broker
        self.pool = pool
        self._ready_workers: set[int] = set()
        self._keys = itertools.count(1)
        self._held: collections.deque[_Pending] = collections.deque()  # at the cap, in order
        self._pending: dict[int, _Pending] = {}  # by key: handed to a process
        # Accepted Job -> the process (index, incarnation) that made it.
        self._active: dict[str, tuple[int, int | None]] = {}
        self._rest_callers = threading.BoundedSemaphore(settings.http_max_waiting)
        self._stop = threading.Event()
        self._draining = threading.Event()
        self._drained = threading.Event()  # while draining: nothing is in flight
        self.http = http(HttpEndpoints(self._is_live, self._is_ready, self._execute))

    # --- life cycle -------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (or `stop()`); returns the process exit code."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.http.start()
        self.pool.start()
        threading.Thread(target=self._pump, name="pump", daemon=True).start()
        threading.Thread(target=self._watch_held, name="held", daemon=True).start()
        log.info("serving %s with %d processes", self.settings.work_queue, self.settings.processes)
        try:
            self.broker.run(self._stop, self._on_delivery)
        finally:
            self.pool.stop()
            self.http.stop()
        log.info("stopped")
        return 0

    def stop(self) -> None:
        """Begin a graceful shutdown (what SIGTERM does); safe from any thread."""
        if self._draining.is_set():
            return
        self._draining.set()
        self.broker.submit(self._stop_consuming)
        threading.Thread(target=self._drain_then_stop, name="shutdown", daemon=True).start()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._draining.is_set():
            return  # a second signal (e.g. from a wrapper forwarding it) changes nothing
        log.info("%s: no new requests; %d s for those in flight", signal.Signals(signum).name,
                 self.settings.shutdown_grace_seconds)  # fmt: skip
        self.stop()

    def _drain_then_stop(self) -> None:
        deadline = time.monotonic() + self.settings.shutdown_grace_seconds
        while self.in_flight and (left := deadline - time.monotonic()) > 0:
            self._drained.wait(left)
        if self.in_flight:
            log.info("grace period over: %d requests handed back for adoption", self.in_flight)
        self._stop.set()  # closing the channel returns unacked deliveries to the queue

    def _stop_consuming(self) -> None:
        self.broker.pause()
        self._capacity_changed()  # hands back what is held

    def _pump(self) -> None:
        """Carry worker messages to the connection's thread, where replies and acks go out."""
        for message in self.pool.messages():
            self.broker.submit(functools.partial(self._on_worker_message, message))

    # --- health ----------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._pending) + len(self._active)

    def _is_live(self) -> bool:
        return self.pool.all_alive()

    def _is_ready(self) -> bool:
        ready = len(self._ready_workers) == self.settings.processes
        return ready and self.broker.connected.is_set() and not self._draining.is_set()

    # --- requests in (connection thread) ---------------------------------------------------

    def _on_delivery(self, delivery: Delivery) -> None:
        try:
            request = parse_request(delivery.body, settings=self.settings)
        except RequestRejected as exc:
            log.info("request rejected: %s", exc)
            self._reply(rejection_reply(exc, delivery.body), delivery.reply_to or "",
                        delivery.correlation_id)  # fmt: skip
            self.broker.ack(delivery)
            self.metrics.request_done(Status.REJECTED.value, None)
            return
        except Exception as exc:
            # This runs on the connection's thread: a bug here must cost one message, not
            # the replica (and then every replica the message is redelivered to).
            self._unhandled(delivery, exc)
            return
        # The Job's name comes from the request id, so a redelivery finds the same Job; the
        # id covers the reply queue and the body too, so two clients' "1" are two requests.
        request_id = manifest.request_identity(
            delivery.correlation_id or delivery.message_id, delivery.reply_to or "", delivery.body
        )
        # Progress messages only for a client that asked: a Java-era client takes the first
        # message on its callback queue as the reply.
        progress = bool(delivery.reply_to) and wants_progress(delivery.headers)
        route = manifest.ReplyRoute(delivery.reply_to or "", delivery.correlation_id, progress)
        self._dispatch(delivery, request, request_id, route)

    def _unhandled(self, delivery: Delivery, exc: Exception) -> None:
        log.exception("request %s could not be handled", delivery.correlation_id)
        reason = f"the worker failed reading this request ({type(exc).__name__}: {exc})"
        reply = Reply(
            status=Status.ERROR,
            reason="InternalError",
            error=reason,
            error_type="InternalError",
            result=f"InternalError: {reason}",
        )
        self._dead_letter(delivery, reason)
        self._reply(reply, delivery.reply_to or "", delivery.correlation_id)
        self.broker.ack(delivery)
        self.metrics.request_done(reply.status.value, None)

    def _dispatch(
        self,
        delivery: Delivery,
        request: Request,
        request_id: str,
        route: manifest.ReplyRoute,
    ) -> None:
        key = next(self._keys)
        name = manifest.job_name_for(request.job_name, request_id)
        worker = shard_of(name, self.pool.size)
        start = StartJob(key, request, request_id, route)
        self._held.append(_Pending(delivery, worker, start, since=time.monotonic()))
        self._capacity_changed()

    def _send(self, pending: _Pending) -> None:
        """Hand a request to the process of its shard, remembering which incarnation took it."""
        self._pending[pending.start.key] = pending
        pending.incarnation = self.pool.send(pending.worker, pending.start)

    def _capacity_changed(self) -> None:
        """Start held requests while there is room; hand them back once draining."""
        if self._draining.is_set():
            while self._held:  # not accepted: back to the queue, nothing lost
                self.broker.nack(self._held.popleft().delivery, requeue=True)
        while self._held and self.in_flight < self.settings.concurrency:
            self._send(self._held.popleft())
        self.metrics.set_in_flight(self.in_flight)
        if self._draining.is_set():  # wakes the drain as soon as the last one is done
            if self.in_flight:
                self._drained.clear()
            else:
                self._drained.set()

    def _watch_held(self) -> None:
        while not self._stop.wait(_HOLD_CHECK_S):
            self.broker.submit(self._return_long_held)

    def _return_long_held(self) -> None:
        """Put back at the end of the queue what has been held for `HOLD_LIMIT_S`."""
        cutoff = time.monotonic() - HOLD_LIMIT_S
        while self._held and self._held[0].since <= cutoff:
            delivery = self._held.popleft().delivery
            log.info("request %s held %.0f s at the cap: back to the queue",
                     delivery.correlation_id, HOLD_LIMIT_S)  # fmt: skip
            self.broker.republish(delivery, headers=delivery.headers)

    def _put_back(self, delivery: Delivery) -> None:
        """Another try, counted: to the end of the queue with its attempts header raised."""
        headers: dict[str, Any] = {**delivery.headers, ATTEMPTS_HEADER: attempts_of(delivery) + 1}
        self.broker.republish(delivery, headers=headers)

    # --- worker messages (connection thread) -----------------------------------------------

    def _on_worker_message(self, message: PoolMessage) -> None:
        match message:
            case JobReceived():
                self._received(message)
            case JobAccepted():
                self._accepted(message)
            case JobProgress():
                self._progress(message.reply_to, message.correlation_id, message.job_name,
                               message.state)  # fmt: skip
            case JobStartFailed():
                self._start_failed(message)
            case JobFinished():
                self._finished(message)
            case JobEnded():
                self._active.pop(message.job_name, None)
            case WorkerDied():
                self._worker_died(message)
            case WorkerReady():
                self._ready_workers.add(message.worker)
            case Trouble():
                self._trouble(message)
            case _:
                assert_never(message)
        self._capacity_changed()

    def _received(self, message: JobReceived) -> None:
        pending = self._pending.get(message.key)
        if pending is not None:
            pending.received = True

    def _accepted(self, message: JobAccepted) -> None:
        pending = self._pending.pop(message.key, None)
        if pending is None:
            # About a request dealt with already (sent again, or put back, when its process
            # died): its next try finds this Job and is acked then.
            log.info("job %s: accepted for a request no longer waiting", message.job_name)
            return
        self._active[message.job_name] = (pending.worker, pending.incarnation)
        self.broker.ack(pending.delivery)
        if pending.route.progress:
            route = pending.route
            self._progress(route.reply_to, route.correlation_id, message.job_name, "accepted")

    def _trouble(self, message: Trouble) -> None:
        boundary = message.boundary
        match boundary:
            case "kube":
                self.metrics.kube_error(message.kind)
            case "storage":
                self.metrics.storage_error()
            case _:
                assert_never(boundary)

    def _start_failed(self, message: JobStartFailed) -> None:
        pending = self._pending.pop(message.key, None)
        if pending is None:
            return  # about a request dealt with already (see `_accepted`)
        delivery = pending.delivery
        if message.transient and attempts_of(delivery) < 1:
            # Kubernetes is unreachable even after retries: give the request another go later.
            self._put_back(delivery)
            return
        reply = reply_for(message.outcome)
        self.metrics.request_done(reply.status.value, None)
        self._reply(reply, delivery.reply_to or "", delivery.correlation_id)
        self.broker.ack(delivery)

    def _finished(self, message: JobFinished) -> None:
        reply = reply_for(message.outcome)
        duration = reply.duration_ms / 1000 if reply.duration_ms is not None else None
        self._reply(reply, message.reply_to, message.correlation_id)
        self.metrics.request_done(reply.status.value, duration)
        log.info("job %s replied: %s", message.job_name, reply.status.value)
        self.pool.send(shard_of(message.job_name, self.pool.size), ReleaseJob(message.job_name))

    def _progress(
        self, reply_to: str, correlation_id: str | None, job_name: str, state: str
    ) -> None:
        """Tell a waiting client where its Job stands; never retried, never re-routed."""
        if not reply_to:
            return
        body = progress_body(job_name, state, self.settings.namespace)
        try:
            self.broker.publish(reply_to, body, correlation_id=correlation_id,
                                message_type=PROGRESS_TYPE, fallback=False)  # fmt: skip
        except BrokerUnavailable as exc:
            # Re-raising would run the whole hand-over again (an ack, a reply) on the next
            # connection; a progress message is not worth that.
            log.info("job %s: progress %r not sent: %s", job_name, state, exc)

    def _reply(self, reply: Reply, reply_to: str, correlation_id: str | None) -> None:
        queue = reply_to or self.settings.results_queue
        self.broker.publish(queue, reply_body(reply), correlation_id=correlation_id)
        self.metrics.reply_sent()

    def _worker_died(self, died: WorkerDied) -> None:
        """Deal with what a dead incarnation held: retry its requests once, then dead-letter.

        Only what that incarnation took from its inbox is charged to the crash; the rest is
        sent again, to the new process. Its Jobs are safe already (the restarted process
        finishes them); they stop counting here because the process that would have said
        they ended is gone. Requests given to the new incarnation are not touched.
        """
        self.metrics.worker_process_restarted()
        self._ready_workers.discard(died.worker)
        dead = (died.worker, died.incarnation)
        for name in [n for n, w in self._active.items() if w == dead]:
            del self._active[name]
        for key in [k for k, p in self._pending.items() if (p.worker, p.incarnation) == dead]:
            pending = self._pending.pop(key)
            delivery = pending.delivery
            if not pending.received:  # still in the dead one's inbox: it did nothing wrong
                start = dataclasses.replace(pending.start, key=next(self._keys))
                self._send(dataclasses.replace(pending, start=start, incarnation=None))
                continue
            if attempts_of(delivery) < 1:
                self._put_back(delivery)  # maybe bad luck: one more try
                continue
            reason = f"a worker process died (exit code {died.exit_code}) handling it twice"
            reply = crash_reply(reason)
            self._dead_letter(delivery, reason)
            self._reply(reply, delivery.reply_to or "", delivery.correlation_id)
            self.broker.ack(delivery)
            self.metrics.request_done(reply.status.value, None)

    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        headers = {
            **delivery.headers,
            "x-mstc-reason": reason,
            "x-mstc-reply-to": delivery.reply_to or "",
            "x-mstc-correlation-id": delivery.correlation_id or "",
        }
        self.broker.publish(
            self.settings.dead_letter_queue,
            delivery.body,
            correlation_id=delivery.correlation_id,
            headers=headers,
        )
        log.error("request %s dead-lettered: %s", delivery.correlation_id, reason)

    # --- the Java REST controller ----------------------------------------------------------

    def _execute(self, body: bytes) -> tuple[int, str]:
        """Run one REST request through the work queue; (HTTP status, Java `result` text)."""
        try:
            request = parse_request(body, settings=self.settings)
        except RequestRejected as exc:
            self.metrics.request_done(Status.REJECTED.value, None)
            return 400, rejection_reply(exc, body).result
        # Each caller holds a server thread while it waits: a bound keeps them from piling up.
        if not self._rest_callers.acquire(blocking=False):
            limit = self.settings.http_max_waiting
            return 503, (f"Busy: {limit} REST requests are waiting already (MSTC_HTTP_MAX_WAITING);"
                         " retry later, or send the request through the queue")  # fmt: skip
        try:
            return self._call_through_queue(body, request.timeout_minutes * 60 + 300)
        finally:
            self._rest_callers.release()

    def _call_through_queue(self, body: bytes, limit: float) -> tuple[int, str]:
        """Publish the request to the work queue and wait up to `limit` s for its reply."""
        answer: Future[bytes | None] = Future()
        correlation_id = uuid.uuid4().hex  # a fresh id: the request's identity, as any client's
        call = functools.partial(self.broker.call, self.settings.work_queue, body,
                                 correlation_id=correlation_id,
                                 on_reply=functools.partial(_answer, answer))  # fmt: skip
        self.broker.submit(call)
        try:
            reply = answer.result(timeout=limit)
        except TimeoutError:
            if answer.cancel():  # a reply that comes later goes to the results queue
                return 504, f"TimeoutError: no outcome within {limit:.0f} s"
            reply = answer.result()
        if reply is None:
            return 503, ("BrokerUnavailable: the connection to RabbitMQ was lost while this "
                         "request waited; it may still run, and its reply then goes to the "
                         f"results queue {self.settings.results_queue} (correlation id "
                         f"{correlation_id})")  # fmt: skip
        return _http_answer(reply)


def _answer(answer: Future[bytes | None], reply: bytes | None) -> bool:
    """Hand a reply to its waiting REST caller; False if the caller has gone."""
    try:
        answer.set_result(reply)
    except InvalidStateError:  # cancelled: the caller timed out
        return False
    return True


def _http_answer(reply: bytes) -> tuple[int, str]:
    """The Java controller's answer to a reply body: its `result`; 400 rejected, 500 error."""
    data = json.loads(reply)
    status = {Status.REJECTED.value: 400, Status.ERROR.value: 500}.get(data.get("status"), 200)
    return status, str(data.get("result", ""))
