"""Admission: the cap on requests in flight, and where each request under it stands.

Owns the service's bookkeeping of requests, from delivery until their Job's end: held at the
cap, handed to a worker process (pending: no Job yet), or accepted (its Job runs), and the
rules of that bookkeeping alone. The service owns one and decides what a worker's message
means for a request; this module keeps the books and does what the service decides (hold,
start, hand back, put back), so that the cap's rules read in one place:

* At most `concurrency` requests are in flight per replica. A request that arrives at the
  limit is held (unacked, so at most the prefetch of them) until a slot frees; the consumer
  is never cancelled for it, because pika hands back what it has buffered then, marked
  redelivered, and the broker pushes it again at once. One held too long for RabbitMQ's
  consumer timeout goes back to the end of the queue (republished, then acked).
* Another try is counted by the worker in the request's `x-mstc-attempts` header, set when
  it puts a request back; `redelivered` says nothing (a broker returns messages for many
  reasons that are not the request's fault).
* The admission knows which incarnation of a process it gave each request, so what is heard
  about one incarnation never touches a request given to the next.

Everything here but `watch` runs on the connection's thread, as the broker's calls must.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mstc_worker import manifest
from mstc_worker.messages import StartJob
from mstc_worker.ports import BrokerPort, Delivery, PoolPort
from mstc_worker.protocol import Request

__all__ = ["ATTEMPTS_HEADER", "HOLD_LIMIT_S", "Admission", "Pending", "attempts_of"]

# The service's log lines, moved here with the code that writes them, keep their logger.
log = logging.getLogger("mstc_worker.service")


ATTEMPTS_HEADER = "x-mstc-attempts"
"""How many times this worker put the request back for another try (absent: none)."""

HOLD_LIMIT_S = 300.0
"""A request held at the cap this long goes back to the queue: well inside RabbitMQ's
consumer timeout (30 min by default and in the chart, which lets it be set lower), after
which the broker would close the whole channel and every unacked delivery on it."""

_HOLD_CHECK_S = 30.0


@dataclass
class Pending:
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


class Admission:
    """The requests of one replica: held, pending and active; see the module docstring."""

    def __init__(self, concurrency: int, *, broker: BrokerPort, pool: PoolPort) -> None:
        self._concurrency = concurrency
        self._broker = broker
        self._pool = pool
        self._keys = itertools.count(1)
        self._held: collections.deque[Pending] = collections.deque()  # at the cap, in order
        self._pending: dict[int, Pending] = {}  # by key: handed to a process
        # Accepted Job -> the process (index, incarnation) that made it.
        self._active: dict[str, tuple[int, int | None]] = {}

    @property
    def in_flight(self) -> int:
        return len(self._pending) + len(self._active)

    # --- in at the cap ---------------------------------------------------------------------

    def hold(
        self,
        delivery: Delivery,
        worker: int,
        request: Request,
        request_id: str,
        route: manifest.ReplyRoute,
    ) -> None:
        """Hold a new request at the cap until `start_held` finds it room."""
        start = StartJob(next(self._keys), request, request_id, route)
        self._held.append(Pending(delivery, worker, start, since=time.monotonic()))

    def start_held(self) -> None:
        """Hand held requests to their processes, in order, while there is room."""
        while self._held and self.in_flight < self._concurrency:
            pending = self._held.popleft()
            if not self._broker.holds(pending.delivery):
                # Held across a lost connection: the broker delivers its own copy again, and
                # starting this one as well would answer the request twice.
                log.info("request %s: held on a closed channel, left to its redelivery",
                         pending.delivery.correlation_id)  # fmt: skip
                continue
            self._send(pending)

    def hand_back_held(self) -> None:
        """Return every held request to the queue: none was accepted, nothing is lost."""
        while self._held:
            self._broker.nack(self._held.popleft().delivery, requeue=True)

    def watch(self, stop: threading.Event) -> None:
        """Until `stop`: have the connection's thread return long-held requests, now and then."""
        while not stop.wait(_HOLD_CHECK_S):
            self._broker.submit(self.return_long_held)

    def return_long_held(self) -> None:
        """Put back at the end of the queue what has been held for `HOLD_LIMIT_S`."""
        cutoff = time.monotonic() - HOLD_LIMIT_S
        while self._held and self._held[0].since <= cutoff:
            delivery = self._held.popleft().delivery
            log.info("request %s held %.0f s at the cap: back to the queue",
                     delivery.correlation_id, HOLD_LIMIT_S)  # fmt: skip
            self._broker.republish(delivery, headers=delivery.headers)

    def put_back(self, delivery: Delivery) -> None:
        """Another try, counted: to the end of the queue with its attempts header raised."""
        headers: dict[str, Any] = {**delivery.headers, ATTEMPTS_HEADER: attempts_of(delivery) + 1}
        self._broker.republish(delivery, headers=headers)

    # --- handed to a process ---------------------------------------------------------------

    def _send(self, pending: Pending) -> None:
        """Hand a request to the process of its shard, remembering which incarnation took it."""
        self._pending[pending.start.key] = pending
        pending.incarnation = self._pool.send(pending.worker, pending.start)

    def resend(self, pending: Pending) -> None:
        """Hand a request again, under a new key, to whichever process has its shard now."""
        start = dataclasses.replace(pending.start, key=next(self._keys))
        self._send(dataclasses.replace(pending, start=start, incarnation=None))

    def received(self, key: int) -> None:
        """The process took the request from its inbox: a crash from now on is charged to it."""
        pending = self._pending.get(key)
        if pending is not None:
            pending.received = True

    def withdraw(self, key: int) -> Pending | None:
        """Stop counting a request that will have no Job; None if it was dealt with already."""
        return self._pending.pop(key, None)

    def accepted(self, key: int, job_name: str) -> Pending | None:
        """The request's Job exists: it counts as that Job from now until `ended`.

        None if the request was dealt with already (its Job is then not counted here).
        """
        pending = self._pending.pop(key, None)
        if pending is not None:
            self._active[job_name] = (pending.worker, pending.incarnation)
        return pending

    def ended(self, job_name: str) -> None:
        self._active.pop(job_name, None)

    def answered(self, job_name: str) -> list[Pending]:
        """Withdraw the handed-over requests whose Job is `job_name`, which was just answered.

        A process can make a Job and stop before saying so (a crash, a SIGTERM mid-start);
        the Job still finishes and is answered, and its request's delivery, never acked,
        would otherwise go back to the queue and be answered a second time from the record.
        """
        keys = [
            key
            for key, pending in self._pending.items()
            if manifest.job_name_for(pending.start.request.job_name, pending.start.request_id)
            == job_name
        ]
        return [self._pending.pop(key) for key in keys]

    # --- a process died --------------------------------------------------------------------

    def forget_jobs_of(self, worker: int, incarnation: int) -> None:
        """Stop counting the Jobs a dead incarnation made: none will say they ended."""
        dead = (worker, incarnation)
        for name in [n for n, w in self._active.items() if w == dead]:
            del self._active[name]

    def take_handed_to(self, worker: int, incarnation: int) -> Iterator[Pending]:
        """The requests handed to a dead incarnation, each withdrawn as it is yielded.

        One at a time, so that if dealing with one fails the rest are still counted.
        """
        dead = (worker, incarnation)
        for key in [k for k, p in self._pending.items() if (p.worker, p.incarnation) == dead]:
            yield self._pending.pop(key)
