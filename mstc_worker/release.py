"""`mstc-worker release`: let go of every Job the worker holds, answering what it still owes.

Every Job the worker creates carries the `mstc.io/reply-pending` finalizer until its reply is
confirmed. With no worker left to reply (the chart uninstalled, the Deployment scaled to zero,
the worker moved to another namespace) those Jobs would stay Terminating forever and their
namespace could never be deleted. This module is the way out; the chart's pre-delete hook runs
it, and an operator can run it by hand with the worker's settings.

What it does with each Job that holds the finalizer, in bounded time:

* It claims the Job first, with the same test-and-set the workers use, so that no live worker
  replies for it as well. A claim held by a live worker (younger than
  MSTC_CLAIM_STALE_SECONDS) is respected: that worker is finishing the Job, and the release
  waits for it, but only until `timeout_s` has passed.
* An ended Job is finished as a worker would: its log stored, its reply published with
  confirms to the route recorded on the Job, then its finalizer removed.
* A Job still running is deleted (with its pods) and answered `error`, reason
  `WorkerReleased`: no worker would ever read its end, so its client is told now instead of
  waiting forever.
* Whatever cannot be answered (the broker unreachable, a claim still held when time is up)
  is logged, and its finalizer is removed all the same: nothing may hang on the finalizer.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from mstc_worker.broker import Broker
from mstc_worker.delivery import BrokerUnavailable
from mstc_worker.errors import PermanentError, TransientError
from mstc_worker.kube import JobState, JobView, KubeClient
from mstc_worker.names import (
    CLAIMED_BY_ANNOTATION,
    CORRELATION_ID_ANNOTATION,
    FINALIZER,
    REPLY_TO_ANNOTATION,
)
from mstc_worker.outcome import OutcomeBuilder
from mstc_worker.protocol import Outcome, Status, reply_body, reply_for
from mstc_worker.settings import Settings
from mstc_worker.storage import Storage

__all__ = ["RELEASED_REASON", "Releaser", "release_all"]

log = logging.getLogger(__name__)

_ENDED = {JobState.SUCCEEDED, JobState.FAILED, JobState.TIMED_OUT}
# Replies owed to a synchronous REST caller carry this route; that caller is gone with the
# worker's process, so such replies go to the results queue (as the service does).
_HTTP_ROUTE_PREFIX = "http:"
RELEASED_REASON = "WorkerReleased"
# How long to wait between looks at Jobs another worker holds.
_POLL_S = 1.0


@dataclass(frozen=True)
class _Reply:
    body: bytes
    queue: str
    correlation_id: str | None


class Releaser:
    """Releases the worker's held Jobs in one namespace; `publish` sends one reply."""

    def __init__(
        self,
        settings: Settings,
        kube: KubeClient,
        storage: Storage,
        publish: Callable[[str, bytes, str | None], None] | None,
    ) -> None:
        self._settings, self._kube = settings, kube
        self._publish = publish  # None: the broker is unreachable, nothing can be answered
        self._holder = f"release/{socket.gethostname()}/{os.getpid()}"
        self._outcomes = OutcomeBuilder(kube, storage, lambda _kind: None)
        self._answered: set[str] = set()  # uids of the Jobs answered (or given up on) already

    def held(self) -> list[JobView]:
        return [job for job in self._kube.list_jobs()[0] if FINALIZER in job.finalizers]

    def run(self, *, timeout_s: float) -> int:
        """Release every held Job; after `timeout_s`, regardless of claims. Jobs left held."""
        deadline = time.monotonic() + timeout_s
        while True:
            waiting = [job for job in self.held() if not self._released(job)]
            if not waiting:
                return 0
            if time.monotonic() >= deadline:
                break
            names = ", ".join(job.name for job in waiting)
            log.info("waiting for the workers holding %s", names)
            time.sleep(_POLL_S)
        left = 0
        for job in waiting:
            holder = job.annotations.get(CLAIMED_BY_ANNOTATION)
            log.warning("job %s: still claimed by %s after %.0f s; let go unanswered",
                        job.name, holder, timeout_s)  # fmt: skip
            left += not self._let_go(job.name)
        return left

    def _released(self, job: JobView) -> bool:
        try:
            return self._release_one(job)
        except (TransientError, PermanentError) as exc:
            log.warning("job %s: not released yet, trying again: %s", job.name, exc)
            return False

    def _release_one(self, job: JobView) -> bool:
        """Claim, answer and let go of `job`; False while a live worker holds it."""
        claimed = self._kube.claim(
            job, self._holder, stale_after_s=self._settings.claim_stale_seconds
        )
        if claimed is None:
            return self._kube.get_job(job.name) is None  # gone is done; else held elsewhere
        if FINALIZER not in claimed.finalizers:
            return True  # its worker replied and let go in the meantime
        if claimed.uid not in self._answered:  # answered once, even if letting go is retried
            self._answered.add(claimed.uid)
            try:
                reply = self._answer(claimed)
            except (TransientError, PermanentError) as exc:
                log.error("job %s: no reply could be built: %s", job.name, exc)
                reply = None
            if reply is not None:
                self._send(claimed.name, reply)
        return self._let_go(claimed.name)

    def _answer(self, job: JobView) -> _Reply:
        if job.state in _ENDED:
            outcome = self._outcomes.build(job, self._kube.job_pods(job.name), None)
        else:
            # Nobody would ever read this Job's end: stop it, and say so to its client.
            self._kube.delete_job(job.name)
            outcome = Outcome(
                status=Status.ERROR,
                job_name=job.name,
                namespace=job.namespace,
                reason=RELEASED_REASON,
                error=(
                    "the Job was cancelled: its worker was released (uninstalled or stopped "
                    "for good) while the Job was still running"
                ),
                error_type=RELEASED_REASON,
                started_at=job.started_at,
            )
        route = job.annotations.get(REPLY_TO_ANNOTATION, "")
        queue = "" if route.startswith(_HTTP_ROUTE_PREFIX) else route
        reply = reply_for(outcome)
        log.info("job %s: answering %s %s", job.name, reply.status.value, reply.reason or "")
        return _Reply(
            reply_body(reply),
            queue or self._settings.results_queue,
            job.annotations.get(CORRELATION_ID_ANNOTATION),
        )

    def _send(self, name: str, reply: _Reply) -> None:
        if self._publish is None:
            log.error("job %s: reply not sent, the broker is unreachable", name)
            return
        try:
            self._publish(reply.queue, reply.body, reply.correlation_id)
        except BrokerUnavailable as exc:
            log.error("job %s: reply not sent: %s", name, exc)

    def _let_go(self, name: str) -> bool:
        try:
            self._kube.release(name)
        except (TransientError, PermanentError) as exc:
            log.error("job %s: finalizer not removed: %s", name, exc)
            return False
        log.info("job %s: finalizer removed", name)
        return True


def release_all(settings: Settings, *, timeout_s: float) -> int:
    """Release every held Job in `settings.namespace`: the number of Jobs left held."""
    broker = Broker(settings, prefetch=1)
    broker.pause()  # publish only: never take a request from the work queue
    publish: Callable[[str, bytes, str | None], None] | None
    try:
        broker.connect()
    except BrokerUnavailable as exc:
        log.error("%s; Jobs are let go without their replies", exc)
        publish = None
    else:

        def publish(queue: str, body: bytes, correlation_id: str | None) -> None:
            broker.publish(queue, body, correlation_id=correlation_id)

    try:
        releaser = Releaser(settings, KubeClient(settings), Storage(settings), publish)
        return releaser.run(timeout_s=timeout_s)
    finally:
        broker.close()
