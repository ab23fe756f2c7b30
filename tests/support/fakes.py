"""In-memory stand-ins for the service's broker, worker pool and HTTP port, and a rig to drive them.

For unit tests of the service's exact rules (ack after the Job exists, the cap, the drain, a
dead process's requests, dead-lettering) without RabbitMQ or worker processes; the real-stack
tests in tests/worker and tests/faults still cover the boundaries themselves. They implement
`mstc_worker.ports` to the letter, and nothing runs by itself: the test's thread plays the
connection's thread and decides when deliveries arrive, when submitted work runs and what each
worker process says, so a test is one exact sequence of events and needs no sleeps.

The broker behaves as RabbitMQ and pika do where the service can tell: at most `prefetch`
deliveries unacked; a consumer window handed over in one go and dispatched one by one, whatever
was not yet dispatched when the consumer is cancelled going back to the queue marked
redelivered (pika's `basic_cancel` rejects it); a closed connection returning every unacked
delivery the same way; settling a delivery twice is an error; a settle of a delivery from an
older connection is ignored (as `broker.Broker` does); a republished delivery is acked and
joins the end of the queue with the headers given, not marked redelivered. A request the
service sends itself (`call`) joins the work queue with the reply queue `REPLY_QUEUE`; a
reply published there goes to its caller, or to the results queue if the caller has gone, and
closing the connection tells every caller still waiting that its reply will not come. Work
submitted to the fake broker that raises fails the test at once, where the real broker logs
it and carries on: a test should see it; work that raises BrokerUnavailable (`refuse_events`,
`refuse_publishes` make an outage) is also kept to run again, as the real broker does on its
next connection.
"""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from mstc_worker import manifest
from mstc_worker.events import JobFacts
from mstc_worker.messages import (
    JobAccepted,
    JobEnded,
    JobFinished,
    JobReceived,
    JobStartFailed,
    PoolMessage,
    ServiceToWorker,
    StartJob,
    WorkerDied,
)
from mstc_worker.ports import (
    BrokerUnavailable,
    Delivery,
    DeliveryHandler,
    HttpEndpoints,
    ReplyHandler,
)
from mstc_worker.protocol import Outcome

REPLY_QUEUE = "amq.gen-fake-reply"
"""The fake connection's private reply queue (RabbitMQ names the real one)."""

Journal = list[tuple[Any, ...]]
"""What the fakes did, in order, across broker and pool: ("publish", queue, corr id), ..."""


@dataclass(frozen=True)
class Message:
    """A message waiting in the fake work queue."""

    body: bytes
    reply_to: str | None = None
    correlation_id: str | None = None
    message_id: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    redelivered: bool = False


@dataclass(frozen=True)
class Event:
    """One confirmed publish to an exchange (a lifecycle event or a heartbeat)."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str | None
    message_type: str
    persistent: bool


@dataclass(frozen=True)
class Published:
    """One confirmed publish."""

    queue: str
    body: bytes
    correlation_id: str | None
    headers: Mapping[str, Any]
    message_type: str | None


class FakeBroker:
    """The work queue and one consuming channel, in memory (a `ports.BrokerPort`)."""

    def __init__(
        self,
        *,
        prefetch: int,
        journal: Journal | None = None,
        results_queue: str = "mstc.queue.results",
    ) -> None:
        self.prefetch = prefetch
        self.results_queue = results_queue
        self.calls: dict[str, ReplyHandler] = {}
        self.journal: Journal = journal if journal is not None else []
        self.queue: collections.deque[Message] = collections.deque()
        self.unacked: dict[int, tuple[Delivery, Message]] = {}
        self.published: list[Published] = []
        self.events: list[Event] = []
        self.refuse_events = 0  # how many next publish_event calls fail (a broker outage)
        self.refuse_publishes = 0  # the same for publish
        self.fail_events = False  # every publish_event fails until cleared (a longer outage)
        self.generation = 1
        self._connected = threading.Event()
        self._paused = False
        self._consumer: DeliveryHandler | None = None
        self.control_consumer: DeliveryHandler | None = None
        self._stop: threading.Event | None = None
        self._work: collections.deque[Callable[[], None]] = collections.deque()
        self._lock = threading.Lock()
        self._work_came = threading.Condition(self._lock)
        self._tags = itertools.count(1)

    # --- the port -------------------------------------------------------------------------

    @property
    def connected(self) -> threading.Event:
        return self._connected

    @property
    def paused(self) -> bool:
        return self._paused

    def run(
        self, stop: threading.Event, on_delivery: DeliveryHandler, on_control: DeliveryHandler
    ) -> None:
        """Attach, wait for `stop`, close; submitted work runs only when the test pumps it."""
        self.control_consumer = on_control
        self.attach(stop, on_delivery)
        stop.wait()
        self.close()

    def submit(self, work: Callable[[], None]) -> None:
        with self._lock:
            self._work.append(work)
            self._work_came.notify_all()

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
        del fallback  # every queue exists here: nothing is unroutable
        if self.refuse_publishes:
            self.refuse_publishes -= 1
            raise BrokerUnavailable(f"the fake broker refuses to publish to {queue} (an outage)")
        self.published.append(Published(queue, body, correlation_id, dict(headers or {}),
                                        message_type))  # fmt: skip
        self.journal.append(("publish", queue, correlation_id))
        if queue == REPLY_QUEUE:
            handler = self.calls.pop(correlation_id or "", None)
            if handler is None or not handler(body):
                self.publish(self.results_queue, body, correlation_id=correlation_id)

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
        if self.fail_events:
            raise BrokerUnavailable("the broker is down (fake)")
        if self.refuse_events:
            self.refuse_events -= 1
            raise BrokerUnavailable("the fake broker refuses this event (an outage)")
        self.events.append(Event(exchange, routing_key, body, message_id, message_type, persistent))
        self.journal.append(("event", routing_key))

    def call(self, queue: str, body: bytes, *, correlation_id: str, on_reply: ReplyHandler) -> None:
        self.journal.append(("call", queue, correlation_id))
        self.calls[correlation_id] = on_reply
        self.enqueue(body, reply_to=REPLY_QUEUE, correlation_id=correlation_id)

    def republish(self, delivery: Delivery, *, headers: Mapping[str, Any]) -> None:
        message = self._settle(delivery)
        self.journal.append(("republish", delivery.tag))
        if message is not None:
            self.queue.append(Message(message.body, message.reply_to, message.correlation_id,
                                      message.message_id, dict(headers)))  # fmt: skip
            self.journal.append(("ack", delivery.tag))

    def ack(self, delivery: Delivery) -> None:
        if self._settle(delivery) is not None:
            self.journal.append(("ack", delivery.tag))

    def nack(self, delivery: Delivery, *, requeue: bool) -> None:
        message = self._settle(delivery)
        if message is None:
            return
        self.journal.append(("nack", delivery.tag, requeue))
        if requeue:
            self.queue.appendleft(_redelivered(message))

    def pause(self) -> None:
        if not self._paused:
            self.journal.append(("pause",))
        self._paused = True

    def resume(self) -> None:
        if self._paused:
            self.journal.append(("resume",))
        self._paused = False

    # --- the test's side ------------------------------------------------------------------

    def attach(self, stop: threading.Event, on_delivery: DeliveryHandler) -> None:
        """What `run` does first: the consumer is known and the connection is up."""
        self._stop, self._consumer = stop, on_delivery
        self._connected.set()

    @property
    def stop_requested(self) -> threading.Event:
        assert self._stop is not None, "attach() first"
        return self._stop

    def enqueue(self, body: bytes, **properties: Any) -> Message:
        """Put a message in the work queue (as a client's publish would)."""
        message = Message(body, **properties)
        self.queue.append(message)
        return message

    def dispatch(self) -> int:
        """RabbitMQ pushes what the prefetch window allows; the number handed to the consumer.

        The window goes over in one go and pika dispatches it one by one; whatever is not yet
        dispatched when the consumer is cancelled goes back to the queue, redelivered. One
        window per call, so that a message requeued from the consumer waits for the next.
        """
        assert self._consumer is not None, "attach() first"
        if self._paused:
            return 0
        window = [self._deliver_next() for _ in range(self._window())]
        for index, delivery in enumerate(window):
            if self._paused:
                for undispatched in reversed(window[index:]):
                    message = self.unacked.pop(undispatched.tag)[1]
                    self.queue.appendleft(_redelivered(message))
                self.journal.append(("returned", len(window) - index))
                return index
            self._consumer(delivery)
        return len(window)

    def wait_for_work(self, timeout: float) -> bool:
        """Wait until another thread (a REST caller, the drain) has submitted work."""
        with self._lock:
            return self._work_came.wait_for(lambda: bool(self._work), timeout)

    def run_pending(self) -> int:
        """Run submitted work on the calling thread (the connection's thread); how many ran."""
        ran = 0
        while True:
            with self._lock:
                if not self._work:
                    return ran
                work = self._work.popleft()
            try:
                work()
            except BrokerUnavailable:
                with self._lock:  # as Broker._drain: done again on the next connection
                    self._work.appendleft(work)
                raise
            ran += 1

    def close(self) -> None:
        """The connection closes: every unacked delivery goes back to the queue, redelivered."""
        self._connected.clear()
        returned = [message for _, message in self.unacked.values()]
        self.unacked.clear()
        self.queue.extendleft(_redelivered(m) for m in reversed(returned))
        self.generation += 1
        self.journal.append(("close", len(returned)))
        calls, self.calls = self.calls, {}
        for handler in calls.values():
            handler(None)

    def published_to(self, queue: str) -> list[Published]:
        return [p for p in self.published if p.queue == queue]

    # --- inside ---------------------------------------------------------------------------

    def _window(self) -> int:
        return max(0, min(self.prefetch - len(self.unacked), len(self.queue)))

    def _deliver_next(self) -> Delivery:
        message = self.queue.popleft()
        tag = next(self._tags)
        delivery = Delivery(tag, self.generation, message.body, message.reply_to,
                            message.correlation_id, message.message_id, message.redelivered,
                            dict(message.headers))  # fmt: skip
        self.unacked[tag] = (delivery, message)
        return delivery

    def holds(self, delivery: Delivery) -> bool:
        return delivery.generation == self.generation

    def _settle(self, delivery: Delivery) -> Message | None:
        """Take `delivery` out of the unacked set; None for one of an older connection."""
        if delivery.generation != self.generation:
            return None  # as Broker._settle: the broker requeued it when that channel closed
        if delivery.tag not in self.unacked:
            raise AssertionError(f"delivery {delivery.tag} settled twice (a channel error)")
        return self.unacked.pop(delivery.tag)[1]


def _redelivered(message: Message) -> Message:
    return Message(message.body, message.reply_to, message.correlation_id, message.message_id,
                   message.headers, redelivered=True)  # fmt: skip


class FakePool:
    """Worker processes that only ever say what the test makes them say (a `ports.PoolPort`).

    Each index starts at incarnation 1; `die` starts the next one at once (as the real pool
    does before its `WorkerDied` is read), so what is sent after it goes to the new process.
    """

    def __init__(self, size: int, *, journal: Journal | None = None) -> None:
        self._size = size
        self.incarnations = [1] * size
        self.received: set[int] = set()  # keys a process said it took from its inbox
        self.journal: Journal = journal if journal is not None else []
        self.sent: list[tuple[int, ServiceToWorker]] = []
        self.outbox: collections.deque[PoolMessage] = collections.deque()
        self.alive = [True] * size
        self.started = self.stopped = False

    # --- the port -------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._size

    def start(self) -> None:
        self.started = True

    def send(self, index: int, message: ServiceToWorker) -> int:
        self.sent.append((index, message))
        self.journal.append(("send", index, message))
        return self.incarnations[index]

    def all_alive(self) -> bool:
        return all(self.alive)

    def messages(self) -> Iterator[PoolMessage]:
        """What the processes have said so far; ends when that is all (the real one blocks)."""
        while self.outbox:
            yield self.outbox.popleft()

    def stop(self) -> None:
        self.stopped = True

    # --- the processes' side, played by the test ------------------------------------------

    def starts(self) -> list[StartJob]:
        return [m for _, m in self.sent if isinstance(m, StartJob)]

    def worker_of(self, start: StartJob) -> int:
        return next(i for i, m in self.sent if m is start)

    def say(self, message: PoolMessage) -> None:
        self.outbox.append(message)

    def receive(self, start: StartJob) -> None:
        """The process took `start` from its inbox (said once; `accept` and `fail_start` do)."""
        if start.key not in self.received:
            self.received.add(start.key)
            self.say(JobReceived(self.worker_of(start), start.key))

    def accept(self, start: StartJob, *, adopted: bool = False) -> str:
        """The process made (or found) the Job for `start`; returns the Job's name."""
        self.receive(start)
        name = job_name(start)
        self.say(JobAccepted(self.worker_of(start), start.key, name, adopted))
        return name

    def fail_start(
        self, start: StartJob, outcome: Outcome, *, transient: bool, again: bool = False
    ) -> None:
        self.receive(start)
        self.say(JobStartFailed(self.worker_of(start), start.key, outcome, transient, again))

    def finish(self, start: StartJob, outcome: Outcome, *, final_event_sent: bool = False) -> None:
        """The Job of `start` ended with `outcome`; the reply goes where its route says.

        `final_event_sent`: the Job says its final event went out already (finished again).
        """
        name = job_name(start)
        route = start.route
        facts = facts_of(start)
        self.say(JobFinished(self.worker_of(start), name, outcome, route.reply_to,
                             route.correlation_id, facts, final_event_sent))  # fmt: skip

    def end(self, start: StartJob) -> None:
        self.say(JobEnded(self.worker_of(start), job_name(start)))

    def die(self, worker: int, exit_code: int | None = -9) -> None:
        """The process died and the pool started the next incarnation under its index."""
        dead = self.incarnations[worker]
        self.incarnations[worker] += 1
        self.say(WorkerDied(worker, dead, exit_code))


def facts_of(start: StartJob) -> JobFacts:
    """What a worker process says of the request of `start` in its events."""
    return manifest.job_facts(start.request, start.request_id, start.route.correlation_id)


def job_name(start: StartJob) -> str:
    """The Job name a worker process gives the request of `start`."""
    return manifest.job_name_for(start.request.job_name, start.request_id)


class FakeHttp:
    """The HTTP port: only remembers the endpoints it was made with (a `ports.HttpPort`)."""

    def __init__(self, endpoints: HttpEndpoints) -> None:
        self.endpoints = endpoints
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True
