"""How a finished Job becomes an Outcome: its status and reason, and its log stored in MinIO.

Owns the judgement of what ended a Job (the container's reason says more than the Job
controller's) and the log's way from the API server to the output bucket, including the
cases where there is no log to store: a container that never started, a log that could not
be read, or a pod the Job's TTL deleted before anyone read it. Used by the worker process
that won the claim on the Job; it talks to Kubernetes and MinIO only through their adapters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from mstc_worker import manifest
from mstc_worker.cancel import CANCELLED_REASON, cancel_message
from mstc_worker.errors import PermanentError, TransientError
from mstc_worker.kube import JobState, JobView, KubeClient, PodView
from mstc_worker.messages import TroubleKind
from mstc_worker.protocol import Outcome, Status
from mstc_worker.storage import Storage

__all__ = ["OutcomeBuilder", "pod_order", "why"]

log = logging.getLogger(__name__)

_STATUS = {
    JobState.SUCCEEDED: Status.SUCCEEDED,
    JobState.FAILED: Status.FAILED,
    JobState.TIMED_OUT: Status.TIMEOUT,
}


def pod_order(pod: PodView) -> datetime:
    """Sort key: the latest-started pod is the one a Job's outcome reports."""
    return pod.started_at or datetime.min.replace(tzinfo=UTC)


def why(job: JobView, pod: PodView | None, stuck: PodView | None) -> tuple[str | None, str | None]:
    """The reason and message a user can act on, most specific first."""
    if stuck is not None:
        return stuck.waiting_reason, stuck.waiting_message
    if job.state is JobState.SUCCEEDED:
        return None, None
    if job.state is JobState.FAILED and pod is not None and pod.terminated_reason:
        # "Error" or "OOMKilled" from the container says more than "BackoffLimitExceeded".
        return pod.terminated_reason, job.message
    return job.reason, job.message


class OutcomeBuilder:
    """Builds a finished Job's Outcome, storing its log on the way.

    `on_storage_trouble(kind)` hears of each failed store ("transient" or "rejected"), for
    the metrics; the Outcome itself says so in its `error`.
    """

    def __init__(
        self, kube: KubeClient, storage: Storage, on_storage_trouble: Callable[[TroubleKind], None]
    ) -> None:
        self._kube, self._storage = kube, storage
        self._on_storage_trouble = on_storage_trouble

    def build(
        self, job: JobView, pod: PodView | None, stuck: PodView | None, *, cancelled: bool = False
    ) -> Outcome:
        """The Outcome of `job`, whose reported pod is `pod` (`stuck`: it never started).

        `cancelled`: the Job is being stopped on a cancel; its log so far is stored.
        """
        reason: str | None
        message: str | None
        if cancelled:
            status, reason, message = Status.CANCELLED, CANCELLED_REASON, cancel_message(job)
        else:
            status = Status.FAILED if stuck is not None else _STATUS[job.state]
            reason, message = why(job, pod, stuck)
        bucket = job.annotations.get(manifest.OUTPUT_BUCKET_ANNOTATION, "")
        prefix = job.annotations.get(manifest.PREFIX_ANNOTATION)
        log_object = manifest.log_object_name(job.name, prefix)
        container = job.labels.get(manifest.LABEL_NAME)  # the one container is named so
        text = self._log_text(job.name, pod, container)
        stored, error = self._store(job.name, text, bucket, log_object)
        return Outcome(
            status=status,
            job_name=job.name,
            namespace=job.namespace,
            exit_code=pod.exit_code if pod and not cancelled else None,
            reason=reason,
            message=message,
            started_at=job.started_at,
            finished_at=(None if cancelled else job.finished_at) or datetime.now(UTC),
            log_bucket=bucket if stored else None,
            log_object=log_object if stored else None,
            output_bucket=bucket or None,
            error=error,
        )

    def _log_text(self, name: str, pod: PodView | None, container: str | None) -> str:
        """What goes into the log object: the log, or a line saying why there is none."""
        if pod is None:
            return ""
        try:
            text = self._kube.read_log(pod.name, container=container)
        except (TransientError, PermanentError) as exc:
            return f"(the log of Job {name} could not be read: {exc})\n"
        if text is None:
            # The Job's TTL deletes its pods even while our finalizer holds the Job itself, so
            # a reply delayed past the TTL (a restart, a backlog, throttling) finds no pod.
            log.warning("job %s: its pod was deleted before its log was read", name)
            return (
                f"(the log of Job {name} is lost: its pod was deleted before the worker could "
                "read it, most likely by the Job's ttlSecondsAfterFinished while the reply "
                "was delayed)\n"
            )
        return text

    def _store(self, name: str, text: str, bucket: str, log_object: str) -> tuple[bool, str | None]:
        try:
            self._storage.put_text(bucket, log_object, text)
        except (TransientError, PermanentError) as exc:
            log.warning("job %s: log not stored in %s/%s: %s", name, bucket, log_object, exc)
            self._on_storage_trouble("transient" if isinstance(exc, TransientError) else "rejected")
            return False, f"the Job's log could not be stored in {bucket}/{log_object}: {exc}"
        return True, None
