"""The service: wires the broker, the worker processes and the HTTP port together.

Owns the main process's side of a request's life, and the rules that keep work safe:

* A request leaves the queue (is acked) only once its Job exists and records where the reply
  goes; from then on the Job, not the message, is the request. Long Jobs therefore never hold
  an unacked delivery past RabbitMQ's consumer timeout, and a crash loses nothing.
* A bad request gets a `rejected` reply and is acked at once: never requeued in a loop.
* Replies are published with confirms (see `replier`), from the connection's own thread;
  only then is the worker process told to let the Job go (remove its finalizer).
* Every request has lifecycle events (see `announcer`): `accepted` when its Job exists,
  `running` when its pod runs, and a final event, owed like the reply and published before
  it, on every path that answers it (the reply's status is the event's state).
* At most `concurrency` requests are in flight per replica, the rest held; another try is
  counted in the request's `x-mstc-attempts` header. The bookkeeping of both is
  `admission`'s; the service says when a request is held, started, put back or done.
* A worker process that dies costs a request a try only if the process had taken it from
  its inbox (`JobReceived`); one still waiting there is sent to the new process. What is
  heard about one incarnation of a process never touches a request given to the next.
* A REST request goes through the work queue like any other (see `rest_bridge`), so the
  cap, the acks and a request's identity are the AMQP ones.
* Every few seconds a heartbeat says who the replica is and how busy (see `heartbeat`);
  SIGTERM sends a last, `stopping`, one.
* SIGTERM: stop consuming, hand held requests back to the queue, give in-flight requests the
  grace period, then hand back whatever is left (unaccepted deliveries return to the queue;
  running Jobs are adopted by the next worker through their annotations).
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import threading
import time
from types import FrameType
from typing import Any, assert_never

from mstc_worker import manifest
from mstc_worker.admission import Admission, Pending, attempts_of
from mstc_worker.announcer import Announcer
from mstc_worker.control_desk import ControlDesk
from mstc_worker.errors import RequestRejected
from mstc_worker.events import JobFacts, facts_from_body
from mstc_worker.heartbeat import Heartbeats
from mstc_worker.messages import (
    CancelAnswered,
    JobAccepted,
    JobEnded,
    JobFinished,
    JobProgress,
    JobReceived,
    JobStartFailed,
    PoolMessage,
    ReleaseJob,
    Trouble,
    WorkerDied,
    WorkerReady,
)
from mstc_worker.metrics import Metrics
from mstc_worker.ports import BrokerPort, Delivery, HttpEndpoints, HttpFactory, PoolPort
from mstc_worker.protocol import (
    Reply,
    Request,
    Status,
    parse_request,
    rejection_reply,
    reply_for,
    wants_progress,
)
from mstc_worker.replier import Replier, crash_reply, internal_error_reply
from mstc_worker.rest_bridge import RestBridge
from mstc_worker.runner import shard_of
from mstc_worker.settings import Settings

__all__ = ["Service"]

log = logging.getLogger(__name__)

_STOPPING_WAIT_SECONDS = 2.0  # a confirm takes milliseconds; an outage must not hold SIGTERM


class Service:
    """One replica of the worker: call `run()` from the main thread.

    It is given its collaborators (see `ports`); `__main__` makes the real ones. The HTTP
    port is given as a factory because it answers with the service's own endpoints. It
    makes its own parts: the `admission` (the cap's bookkeeping), the `replier` (what it
    publishes about a request), the `rest` bridge (the REST execute call), the `control`
    desk (cancel messages, see `control_desk`) and its `heartbeats`.
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
        self.admission = Admission(settings.concurrency, broker=broker, pool=pool)
        self.replier = Replier(settings, broker=broker, metrics=metrics)
        self.announcer = Announcer(settings, broker=broker)
        self.rest = RestBridge(settings, broker=broker, metrics=metrics)
        self.control = ControlDesk(broker=broker, pool=pool)
        self.heartbeats = Heartbeats(settings, broker=broker, in_flight=lambda: self.in_flight)
        self._stop = threading.Event()
        self._draining = threading.Event()
        self._drained = threading.Event()  # while draining: nothing is in flight
        self.http = http(HttpEndpoints(self._is_live, self._is_ready, self.rest.execute))

    # --- life cycle -------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (or `stop()`); returns the process exit code."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.http.start()
        self.pool.start()
        threading.Thread(target=self._pump, name="pump", daemon=True).start()
        threading.Thread(target=self.admission.watch, args=(self._stop,), name="held",
                         daemon=True).start()  # fmt: skip
        threading.Thread(target=self.heartbeats.run, args=(self._stop,), name="heartbeats",
                         daemon=True).start()  # fmt: skip
        log.info("serving %s with %d processes", self.settings.work_queue, self.settings.processes)
        try:
            self.broker.run(self._stop, self._on_delivery, self.control.on_delivery)
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
        self.heartbeats.stopping()
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
        # The stopping message goes out before the connection closes.
        self.heartbeats.announced.wait(_STOPPING_WAIT_SECONDS)
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
        return self.admission.in_flight

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
            self._answer(delivery, rejection_reply(exc, delivery.body), _facts_of_body(delivery))
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
        request_id = _request_id(delivery)
        # Progress messages only for a client that asked: a Java-era client takes the first
        # message on its callback queue as the reply.
        progress = bool(delivery.reply_to) and wants_progress(delivery.headers)
        route = manifest.ReplyRoute(delivery.reply_to or "", delivery.correlation_id, progress)
        self._dispatch(delivery, request, request_id, route)

    def _unhandled(self, delivery: Delivery, exc: Exception) -> None:
        log.exception("request %s could not be handled", delivery.correlation_id)
        reason = f"the worker failed reading this request ({type(exc).__name__}: {exc})"
        reply = internal_error_reply(reason)
        self.replier.dead_letter(delivery, reason)
        self._answer(delivery, reply, _facts_of_body(delivery))
        self.broker.ack(delivery)
        self.metrics.request_done(reply.status.value, None)

    def _dispatch(
        self,
        delivery: Delivery,
        request: Request,
        request_id: str,
        route: manifest.ReplyRoute,
    ) -> None:
        name = manifest.job_name_for(request.job_name, request_id)
        worker = shard_of(name, self.pool.size)
        self.admission.hold(delivery, worker, request, request_id, route)
        self._capacity_changed()

    def _capacity_changed(self) -> None:
        """Start held requests while there is room; hand them back once draining."""
        if self._draining.is_set():
            self.admission.hand_back_held()
        self.admission.start_held()
        self.metrics.set_in_flight(self.in_flight)
        if self._draining.is_set():  # wakes the drain as soon as the last one is done
            if self.in_flight:
                self._drained.clear()
            else:
                self._drained.set()

    # --- worker messages (connection thread) -----------------------------------------------

    def _on_worker_message(self, message: PoolMessage) -> None:
        match message:
            case JobReceived() | JobEnded():
                self._admission_note(message)
            case JobAccepted():
                self._accepted(message)
            case JobProgress():
                self._progress(message)
            case JobStartFailed():
                self._start_failed(message)
            case JobFinished():
                self._finished(message)
            case CancelAnswered():
                self.control.answered(message)
            case WorkerDied():
                self._worker_died(message)
            case WorkerReady():
                self._ready_workers.add(message.worker)
            case Trouble():
                self._trouble(message)
            case _:
                assert_never(message)
        self._capacity_changed()

    def _admission_note(self, message: JobReceived | JobEnded) -> None:
        """A process took a request from its inbox, or a Job of its no longer counts."""
        if isinstance(message, JobReceived):
            self.admission.received(message.key)
        else:
            self.admission.ended(message.job_name)

    def _accepted(self, message: JobAccepted) -> None:
        pending = self.admission.accepted(message.key, message.job_name)
        if pending is None:
            # About a request dealt with already (sent again, or put back, when its process
            # died): its next try finds this Job and is acked then.
            log.info("job %s: accepted for a request no longer waiting", message.job_name)
            return
        self.broker.ack(pending.delivery)
        if pending.route.progress:
            route = pending.route
            self.replier.progress(
                route.reply_to, route.correlation_id, message.job_name, "accepted"
            )
        self.announcer.progress("accepted", _facts_of(pending), message.job_name,
                                request=_request_object(pending.delivery.body))  # fmt: skip

    def _progress(self, message: JobProgress) -> None:
        if message.tell_client:
            self.replier.progress(
                message.reply_to, message.correlation_id, message.job_name, message.state
            )
        self.announcer.progress(message.state, message.facts, message.job_name)

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
        pending = self.admission.withdraw(message.key)
        if pending is None:
            return  # about a request dealt with already (see `_accepted`)
        delivery = pending.delivery
        if message.transient and attempts_of(delivery) < 1:
            # Kubernetes is unreachable even after retries: give the request another go later.
            self.admission.put_back(delivery)
            return
        reply = reply_for(message.outcome)
        self.metrics.request_done(reply.status.value, None)
        # Answered from its record: its final event went out when it was first answered.
        self._answer(delivery, reply, None if message.again else _facts_of(pending))
        self.broker.ack(delivery)

    def _finished(self, message: JobFinished) -> None:
        reply = reply_for(message.outcome)
        duration = reply.duration_ms / 1000 if reply.duration_ms is not None else None
        if not message.final_event_sent:
            self.announcer.final(reply, message.facts)
        self.replier.reply(reply, message.reply_to, message.correlation_id)
        self.announcer.settled(message.facts)
        self.metrics.request_done(reply.status.value, duration)
        log.info("job %s replied: %s", message.job_name, reply.status.value)
        for pending in self.admission.answered(message.job_name):
            self.broker.ack(pending.delivery)  # answered now: not to be answered again
        mark = self.announcer.on and not message.final_event_sent
        self.pool.send(shard_of(message.job_name, self.pool.size),
                       ReleaseJob(message.job_name, mark_final_event=mark))  # fmt: skip

    def _worker_died(self, died: WorkerDied) -> None:
        """Deal with what a dead incarnation held: retry its requests once, then dead-letter.

        Only what that incarnation took from its inbox is charged to the crash; the rest is
        sent again, to the new process. Its Jobs are safe already (the restarted process
        finishes them); they stop counting here because the process that would have said
        they ended is gone. Requests given to the new incarnation are not touched.
        """
        self.metrics.worker_process_restarted()
        self._ready_workers.discard(died.worker)
        self.control.worker_died(died.worker, died.incarnation)
        self.admission.forget_jobs_of(died.worker, died.incarnation)
        for pending in self.admission.take_handed_to(died.worker, died.incarnation):
            delivery = pending.delivery
            if not pending.received:  # still in the dead one's inbox: it did nothing wrong
                self.admission.resend(pending)
                continue
            if attempts_of(delivery) < 1:
                self.admission.put_back(delivery)  # maybe bad luck: one more try
                continue
            reason = f"a worker process died (exit code {died.exit_code}) handling it twice"
            reply = crash_reply(reason)
            self.replier.dead_letter(delivery, reason)
            self._answer(delivery, reply, _facts_of(pending))
            self.broker.ack(delivery)
            self.metrics.request_done(reply.status.value, None)

    def _answer(self, delivery: Delivery, reply: Reply, facts: JobFacts | None) -> None:
        """Answer a request that has no Job: its final event (unless None), then its reply."""
        if facts is not None:
            self.announcer.final(reply, facts)
        self.replier.reply(reply, delivery.reply_to or "", delivery.correlation_id)
        if facts is not None:
            self.announcer.settled(facts)


def _request_id(delivery: Delivery) -> str:
    return manifest.request_identity(
        delivery.correlation_id or delivery.message_id, delivery.reply_to or "", delivery.body
    )


def _facts_of(pending: Pending) -> JobFacts:
    start = pending.start
    return manifest.job_facts(start.request, start.request_id, start.route.correlation_id)


def _facts_of_body(delivery: Delivery) -> JobFacts:
    """The facts of a request not understood: what its body says, if anything."""
    return facts_from_body(delivery.body, request_id=_request_id(delivery),
                           correlation_id=delivery.correlation_id)  # fmt: skip


def _request_object(body: bytes) -> dict[str, Any]:
    """The request body as received, as a JSON object (it parsed as one to get this far)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
