"""Cancel: which Job a cancel means, what the canceller is told, and marking the Job.

Owns the rules of a cancel as a worker process carries them out for the replica that took
the control message off the control queue. Any replica may take it, and the one that finishes
the Job may be another (or a restarted one), so the cancel is written where all of them look:
on the Job, as annotations (`names.CANCEL_*`). The process whose shard holds the Job sees the
change in its Job watch (or in its sweep, or when it lists after a restart), stops the Job and
answers its request `cancelled` through the ordinary finish (see `runner`): claimed, recorded,
replied, and released only after the reply is confirmed.

The rules, in order: a name is first looked up as a made Job name, then as the jobName a
request was sent with (its sanitised form is the Job's name label); of several Jobs sent with
that name, the one still running is meant, and several running ones are named back instead of
guessed between. A Job whose reply is out, or that ended on its own before the cancel, is
"finished" with its status; one already asked to cancel is "cancelling" again (a cancel is
idempotent); otherwise the Job is marked and the answer is "cancelling".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from mstc_worker.control import CancelAnswer, CancelCommand
from mstc_worker.errors import PermanentError, TransientError
from mstc_worker.kube import JobState, JobView, KubeClient
from mstc_worker.kube_syntax import dns1123_subdomain_problem, sanitise_dns1123_label
from mstc_worker.names import (
    CANCEL_AT_ANNOTATION,
    CANCEL_BY_ANNOTATION,
    CANCEL_REASON_ANNOTATION,
    FINALIZER,
    REQUEST_ID_ANNOTATION,
)
from mstc_worker.protocol import Outcome

__all__ = [
    "CANCELLED_REASON",
    "Canceller",
    "cancel_asked",
    "cancel_message",
    "marked_answer",
    "pick_job",
    "settled_answer",
]

log = logging.getLogger(__name__)

CANCELLED_REASON = "Cancelled"
_STATE_STATUS = {
    JobState.SUCCEEDED: "succeeded",
    JobState.FAILED: "failed",
    JobState.TIMED_OUT: "timeout",
}


def cancel_asked(job: JobView) -> bool:
    """Whether a cancel was asked for this Job (by any replica)."""
    return CANCEL_AT_ANNOTATION in job.annotations


def cancel_message(job: JobView) -> str:
    """The cancelled reply's `message`: who asked, when, and why, as far as known."""
    at = job.annotations.get(CANCEL_AT_ANNOTATION, "an unknown time")
    by = job.annotations.get(CANCEL_BY_ANNOTATION)
    reason = job.annotations.get(CANCEL_REASON_ANNOTATION)
    text = f"Cancelled by {by} at {at}" if by else f"Cancelled at {at}"
    return f"{text}: {reason}" if reason else f"{text}."


def pick_job(
    requested: str, exact: JobView | None, same_name: Sequence[JobView]
) -> JobView | CancelAnswer:
    """The Job `requested` means, or the answer when there is none to act on.

    `exact` is the Job whose made name is `requested` (if any); `same_name` the Jobs whose
    request was sent with that jobName.
    """
    if exact is not None:
        return exact
    running = [job for job in same_name if FINALIZER in job.finalizers and not job.ended]
    if len(running) == 1:
        return running[0]
    if len(running) > 1:
        names = tuple(sorted(job.name for job in running))
        return CancelAnswer(
            status="ambiguous",
            requested=requested,
            job_names=names,
            message=f"{len(names)} running Jobs were requested as {requested!r}: "
            f"{', '.join(names)}; cancel one of them by its Job name.",
        )
    if same_name:  # only finished ones: the latest is the one the canceller means
        return max(same_name, key=lambda job: job.started_at or datetime.min.replace(tzinfo=UTC))
    return CancelAnswer(
        status="unknown",
        requested=requested,
        message=f"No Job {requested!r} is known to this worker: it is neither the name of a "
        "Job nor the jobName of a request whose Job still exists.",
    )


def settled_answer(requested: str, job: JobView, recorded: str | None) -> CancelAnswer | None:
    """The answer for a Job that needs no marking, or None: mark it and say "cancelling".

    `recorded` is the status its reply record gives, if it has one.
    """
    finished = FINALIZER not in job.finalizers or job.ended
    if finished:
        status = recorded or _STATE_STATUS.get(job.state)
        said = f" ({status})" if status else ""
        return CancelAnswer(
            status="finished",
            requested=requested,
            job_name=job.name,
            job_status=status,
            message=f"Job {job.name} has finished already{said}; there is nothing to cancel.",
        )
    if cancel_asked(job):
        return CancelAnswer(
            status="cancelling",
            requested=requested,
            job_name=job.name,
            message=f"Job {job.name} is being cancelled already ({cancel_message(job)}); its "
            "request will be answered 'cancelled'.",
        )
    return None


def marked_answer(requested: str, job_name: str) -> CancelAnswer:
    """The answer once Job `job_name` is marked for cancel."""
    return CancelAnswer(
        status="cancelling",
        requested=requested,
        job_name=job_name,
        message=f"Cancelling Job {job_name}: its pods are being deleted, and its request "
        "will be answered 'cancelled'.",
    )


class Canceller:
    """Carries out cancels against the API server; `recorded(request_id)` reads reply records."""

    def __init__(self, kube: KubeClient, recorded: Callable[[str], Outcome | None]) -> None:
        self._kube = kube
        self._recorded = recorded

    def cancel(self, command: CancelCommand) -> CancelAnswer:
        """Mark the Job `command` names for cancel, or say why not; never raises."""
        requested = command.job_name
        try:
            return self._cancel(command)
        except (TransientError, PermanentError) as exc:
            log.warning("cancel of %r failed: %s", requested, exc)
            return CancelAnswer(
                status="error",
                requested=requested,
                message=f"The cancel of {requested!r} could not be carried out ({exc}); "
                "send it again.",
            )

    def _cancel(self, command: CancelCommand) -> CancelAnswer:
        requested = command.job_name
        exact = None
        if dns1123_subdomain_problem(requested) is None:
            exact = self._kube.get_job(requested)
        same_name = [] if exact else self._kube.jobs_named(sanitise_dns1123_label(requested))
        picked = pick_job(requested, exact, same_name)
        if isinstance(picked, CancelAnswer):
            return picked
        answer = settled_answer(requested, picked, self._status_on_record(picked))
        if answer is not None:
            return answer
        marked = self._kube.annotate_job(picked.name, _cancel_annotations(command))
        if marked is None:
            gone = f"Job {picked.name} is gone; there is nothing to cancel."
            return CancelAnswer(status="unknown", requested=requested, message=gone)
        log.info("job %s: cancel asked by %s", picked.name, command.by or "someone")
        return marked_answer(requested, picked.name)

    def _status_on_record(self, job: JobView) -> str | None:
        if FINALIZER in job.finalizers:
            return None  # its reply is not out yet: no record to read
        outcome = self._recorded(job.annotations.get(REQUEST_ID_ANNOTATION, ""))
        return outcome.status.value if outcome is not None else None


def _cancel_annotations(command: CancelCommand) -> dict[str, str]:
    at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    annotations = {CANCEL_AT_ANNOTATION: at}
    if command.by:
        annotations[CANCEL_BY_ANNOTATION] = command.by
    if command.reason:
        annotations[CANCEL_REASON_ANNOTATION] = command.reason
    return annotations
