"""`mstc queue status|purge`: what waits for a worker, and emptying the work queue of it.

Owns what a purge means for each request it takes out (the broker side is
`mstc_flow.workqueue`'s), by the request's correlation id:

* `flow:<firing id>`: the firing finishes with job state `purged` (no Job was made) and its
  entry's slot is free again (`Firings.mark_purged`, then the dispatcher is woken).
* `pipe:<attempt id>`: the attempt's task fails with reason "purged from the work queue"
  (its dependants skipped; `mstc pipeline retry` brings it back), through `PipelinePurges`,
  the pipeline store's side. Without one (no pipeline runner in this service) such a request
  is kept: dropping it would leave its task queued for ever.
* a `flow:`/`pipe:` request whose firing or attempt had ended already (a stray re-send) is
  dropped and counted with the others, without a reply (its reply queue is the flow's own).
* anything else, a client's own request: its client is waiting for a reply on `reply_to`, so
  it gets the failure reply the Java contract has for "any other error" (`result`
  "<ErrorClass>: <message>", here `RequestPurged`, with this project's `status` `error`, as
  the worker answers a request that could not be run); then it is dropped and counted.

Never touched: requests a worker holds (the broker does not hand them out), and requests that
were handed to a worker before and came back (`redelivered`): their Job may exist already,
and the worker adopts it when the request comes round again. Those are counted as kept.
Store changes are committed before the request is acked, as everywhere in the flow: a crash
in between gives the request back to the queue, never loses the record.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from mstc_flow.settings import FlowSettings
from mstc_flow.store.firings import PENDING, Firings, firing_id_of
from mstc_flow.store.history import History
from mstc_flow.workqueue import Decide, Decision, QueueCounts, WaitingRequest

__all__ = [
    "PIPELINE_PREFIX",
    "PURGED_REASON",
    "PipelinePurges",
    "QueueOps",
    "WaitingQueue",
    "purged_reply",
]

log = logging.getLogger(__name__)

PURGED_REASON = "purged from the work queue"
PIPELINE_PREFIX = "pipe:"
_ERROR_TYPE = "RequestPurged"
_MESSAGE = "The request was purged from the work queue before a worker took it (mstc queue purge)."
# A replica not heard for this many heartbeat intervals is not counted as holding anything.
_MISSED_BEATS = 3


class WaitingQueue(Protocol):
    """The work queue's side (`mstc_flow.workqueue.WorkQueue`)."""

    def counts(self) -> QueueCounts: ...
    def take_waiting(self, decide: Decide) -> int: ...


class PipelinePurges(Protocol):
    """The pipeline store's part in a purge and in the status."""

    def purge_attempt(self, attempt_id: str, reason: str) -> dict[str, Any] | None:
        """Fail the attempt's task with `reason` (dependants skipped); what it was, as
        {"pipelineId", "task", "attempt"}, or None if it is not a current queued attempt."""
        ...

    def waiting_tasks(self) -> dict[str, int]:
        """{"waiting": N, "queued": N} over the running pipelines."""
        ...


def purged_reply() -> bytes:
    """The failure reply a purged client request gets (the worker's reply shape)."""
    body = {
        "result": f"{_ERROR_TYPE}: {_MESSAGE}", "status": "error", "reason": _ERROR_TYPE,
        "error": _MESSAGE,
    }  # fmt: skip
    return json.dumps(body).encode()


@dataclass
class _Tally:
    firings: list[str] = field(default_factory=list)
    pipeline_tasks: list[dict[str, Any]] = field(default_factory=list)
    others: int = 0
    replied: int = 0
    kept: int = 0


class QueueOps:
    """Status and purge of the work queue, with the flow's records kept true."""

    def __init__(
        self, settings: FlowSettings, work_queue: WaitingQueue, firings: Firings, history: History,
        *, slot_freed: Callable[[], None], pipelines: PipelinePurges | None = None,
    ) -> None:  # fmt: skip
        self._own_reply_queue = settings.reply_queue
        self._queue, self._firings, self._history = work_queue, firings, history
        self._slot_freed, self._pipelines = slot_freed, pipelines

    def status(self) -> dict[str, Any]:
        counts = self._queue.counts()
        tasks = self._pipelines.waiting_tasks() if self._pipelines is not None else None
        return {
            "workQueue": counts.queue,
            "ready": counts.ready,
            "consumers": counts.consumers,
            "workersInFlight": self._workers_in_flight(),
            "pendingFirings": self._firings.counts().get(PENDING, 0),
            "pipelineTasks": tasks,
        }

    def purge(self) -> dict[str, Any]:
        tally = _Tally()
        purged = self._queue.take_waiting(lambda request: self._decide(request, tally))
        if tally.firings:
            self._slot_freed()
        log.warning("work queue purged: %d requests (%d firings, %d pipeline tasks, %d others; "
                    "%d kept)", purged, len(tally.firings), len(tally.pipeline_tasks),
                    tally.others, tally.kept)  # fmt: skip
        return {
            "purged": purged, "firings": tally.firings, "pipelineTasks": tally.pipeline_tasks,
            "others": tally.others, "replied": tally.replied, "kept": tally.kept,
        }  # fmt: skip

    def _decide(self, request: WaitingRequest, tally: _Tally) -> Decision:
        if request.redelivered:
            tally.kept += 1  # a worker had it: its Job may exist
            return Decision(drop=False)
        correlation_id = request.correlation_id or ""
        firing_id = firing_id_of(correlation_id)
        if firing_id is not None:
            if self._firings.mark_purged(firing_id, PURGED_REASON) is not None:
                tally.firings.append(firing_id)
            else:
                tally.others += 1  # a firing that had ended: a stray re-send
            return Decision(drop=True)
        if correlation_id.startswith(PIPELINE_PREFIX):
            if self._pipelines is None:
                tally.kept += 1
                return Decision(drop=False)
            task = self._pipelines.purge_attempt(correlation_id[len(PIPELINE_PREFIX) :],
                                                 PURGED_REASON)  # fmt: skip
            if task is not None:
                tally.pipeline_tasks.append(task)
            else:
                tally.others += 1  # an attempt no longer current: a stray re-send
            return Decision(drop=True)
        tally.others += 1
        if not request.reply_to or request.reply_to == self._own_reply_queue:
            return Decision(drop=True)
        tally.replied += 1
        return Decision(drop=True, reply=purged_reply())

    def _workers_in_flight(self) -> int:
        """Requests the worker replicas say they hold (their last heartbeats; AMQP itself
        does not count a queue's unacked messages)."""
        now = datetime.now(UTC)
        held = 0
        for replica in self._history.replicas():
            if replica.stopping or replica.last_seen is None or replica.in_flight is None:
                continue
            interval = replica.interval_seconds or 30.0
            if (now - replica.last_seen).total_seconds() <= _MISSED_BEATS * interval:
                held += replica.in_flight
        return held
