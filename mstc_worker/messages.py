"""What the service and its worker processes say to each other, as picklable values.

Owns the vocabulary between the main process (which holds the AMQP connection) and the
worker processes (which hold the Kubernetes and MinIO clients). Everything crosses a
multiprocessing queue, so these are plain frozen dataclasses of plain values and models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mstc_worker.control import CancelAnswer, CancelCommand
from mstc_worker.events import JobFacts
from mstc_worker.manifest import ReplyRoute
from mstc_worker.protocol import Outcome, Request

__all__ = [
    "CancelAnswered",
    "CancelJob",
    "JobAccepted",
    "JobEnded",
    "JobFinished",
    "JobProgress",
    "JobReceived",
    "JobStartFailed",
    "PoolMessage",
    "ReleaseJob",
    "ServiceToWorker",
    "StartJob",
    "StopWorker",
    "Trouble",
    "TroubleBoundary",
    "TroubleKind",
    "WorkerDied",
    "WorkerReady",
    "WorkerToService",
]

# --- service -> worker ------------------------------------------------------------------------


@dataclass(frozen=True)
class StartJob:
    """Create (or find) the Job for a request; `key` is the service's handle for it."""

    key: int
    request: Request
    request_id: str
    route: ReplyRoute


@dataclass(frozen=True)
class ReleaseJob:
    """The reply for this Job is confirmed by the broker: let the Job go.

    `mark_final_event`: its final event went out too; write that on the Job first, so that
    a worker that finishes it again (this one killed before letting it go) does not repeat it.
    """

    job_name: str
    mark_final_event: bool = False


@dataclass(frozen=True)
class CancelJob:
    """Carry out a cancel (see `cancel`); `key` is the service's handle for its message."""

    key: int
    command: CancelCommand


@dataclass(frozen=True)
class StopWorker:
    """Finish what is under way and exit."""


ServiceToWorker = StartJob | ReleaseJob | CancelJob | StopWorker


# --- worker -> service ------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerReady:
    """The worker's watches have listed everything once: it misses no ending from now on."""

    worker: int


@dataclass(frozen=True)
class JobReceived:
    """The process took `key` out of its inbox and works on it from now on.

    Said (and written through to the pool) before any work starts, so that when a process
    dies the service can tell a request it was handling, which may be what killed it, from
    one still waiting in its inbox, which did nothing wrong and is simply sent again.
    """

    worker: int
    key: int


@dataclass(frozen=True)
class JobAccepted:
    """The Job exists and records the request: the message may leave the queue."""

    worker: int
    key: int
    job_name: str
    adopted: bool  # it existed already: a redelivered request found its Job


@dataclass(frozen=True)
class JobStartFailed:
    """No Job was made for the request; the service answers with `outcome` and acks it.

    Either none could be made (`transient` says whether to try again later), or none need be:
    the request was answered already, and `outcome` is that answer, from its record
    (`again`: its final event went out then, and is not said twice).
    """

    worker: int
    key: int
    outcome: Outcome
    transient: bool
    again: bool = False


@dataclass(frozen=True)
class JobFinished:
    """A Job ended and its outcome is known; the reply goes to `reply_to` ('' = results).

    `final_event_sent`: the Job says its final event went out already (it was finished
    before, by a worker that died before letting it go): only the reply is owed.
    """

    worker: int
    job_name: str
    outcome: Outcome
    reply_to: str
    correlation_id: str | None
    facts: JobFacts
    final_event_sent: bool = False


@dataclass(frozen=True)
class JobProgress:
    """A Job reached `state` (running): its event, and a progress message to a client that
    asked (`tell_client`); best effort."""

    worker: int
    job_name: str
    state: str
    reply_to: str
    correlation_id: str | None
    facts: JobFacts
    tell_client: bool = False


@dataclass(frozen=True)
class JobEnded:
    """A Job this worker started no longer needs anyone: it counts against capacity no more."""

    worker: int
    job_name: str


@dataclass(frozen=True)
class CancelAnswered:
    """What to tell the sender of cancel `key`; the Job itself is answered when it stops."""

    worker: int
    key: int
    answer: CancelAnswer


TroubleBoundary = Literal["kube", "storage"]
TroubleKind = Literal["transient", "rejected"]  # retried, or refused and not retried


@dataclass(frozen=True)
class Trouble:
    """A call across a boundary failed (for metrics)."""

    worker: int
    boundary: TroubleBoundary
    kind: TroubleKind


@dataclass(frozen=True)
class WorkerDied:
    """Said by the pool, not a worker: process `worker` died and was started again.

    `incarnation` is the one that died (the pool numbers each process it starts under an
    index); everything that incarnation said came before this message.
    """

    worker: int
    incarnation: int
    exit_code: int | None


WorkerToService = (
    WorkerReady
    | JobReceived
    | JobAccepted
    | JobStartFailed
    | JobFinished
    | JobProgress
    | JobEnded
    | CancelAnswered
    | Trouble
)

PoolMessage = WorkerToService | WorkerDied
"""Everything the service hears from its pool: the processes' messages and the pool's own."""
