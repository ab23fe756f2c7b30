"""How a finished Job becomes an Outcome: its status and reason, and its log stored in MinIO.

Owns the judgement of what ended a Job (the container's reason says more than the Job
controller's) and the log's way from the API server to the output bucket, including the
cases where there is no log to store: a container that never started, a log that could not
be read, or a pod the Job's TTL deleted before anyone read it. Used by the worker process
that won the claim on the Job; it talks to Kubernetes and MinIO only through their adapters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from mstc_worker import manifest
from mstc_worker.cancel import CANCELLED_REASON, cancel_message
from mstc_worker.errors import PermanentError, TransientError
from mstc_worker.kube import JobState, JobView, KubeClient, PodView
from mstc_worker.messages import TroubleKind
from mstc_worker.protocol import Outcome, Status
from mstc_worker.storage import Storage

__all__ = ["OutcomeBuilder", "index_order", "pod_counts", "pod_order", "reported_pod", "why"]

log = logging.getLogger(__name__)

# The stored log's bound: one pod's log is cut here, a fan-out Job's pods share it.
_LOG_LIMIT_BYTES = 1_048_576
_MIN_POD_LOG_BYTES = 4096

_STATUS = {
    JobState.SUCCEEDED: Status.SUCCEEDED,
    JobState.FAILED: Status.FAILED,
    JobState.TIMED_OUT: Status.TIMEOUT,
}


def pod_order(pod: PodView) -> datetime:
    """Sort key: the latest-started pod is the one a Job's outcome reports."""
    return pod.started_at or datetime.min.replace(tzinfo=UTC)


def index_order(pod: PodView) -> tuple[int, datetime]:
    """Sort key of a fan-out Job's pods: by index (NonIndexed pods have none), then start."""
    return (pod.index if pod.index is not None else -1, pod_order(pod))


def _failed(pod: PodView) -> bool:
    return pod.phase == "Failed" or (pod.exit_code is not None and pod.exit_code != 0)


def reported_pod(job: JobView, pods: Sequence[PodView]) -> PodView | None:
    """The pod whose exit code and reason the reply carries.

    One pod: the latest started (a retry's, when there were retries). Many: for a Job that
    did not succeed, the first pod to fail (lowest index, then earliest end), which is what
    made it fail; otherwise the latest started, as for one pod.
    """
    if not pods:
        return None
    if job.fan_out and job.state is not JobState.SUCCEEDED:
        failed = [pod for pod in pods if _failed(pod)]
        if failed:
            never = datetime.max.replace(tzinfo=UTC)
            return min(failed, key=lambda pod: (index_order(pod)[0], pod.finished_at or never))
    return max(pods, key=pod_order)


def pod_counts(job: JobView, pods: Sequence[PodView], stuck: PodView | None) -> tuple[int, int]:
    """Pods succeeded and failed: the Job controller's counts, which outlive deleted pods.

    A request ended because a pod is stuck (it never started, so the controller counts it
    nowhere) counts its stuck pods as failed too: they are why it failed.
    """
    if stuck is None:
        return job.succeeded, job.failed
    return job.succeeded, job.failed + max(1, sum(1 for pod in pods if pod.stuck))


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


def _pod_header(pod: PodView) -> str:
    """The line above one pod's log in a fan-out Job's stored log."""
    index = f" index {pod.index}" if pod.index is not None else ""
    code = f", exit code {pod.exit_code}" if pod.exit_code is not None else ""
    return f"===== pod {pod.name}{index}: {pod.phase}{code} =====\n"


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
        self,
        job: JobView,
        pods: Sequence[PodView],
        stuck: PodView | None,
        *,
        cancelled: bool = False,
    ) -> Outcome:
        """The Outcome of `job`, given its pods (`stuck`: the pod that never started).

        For a single-pod Job `pods` may hold just the pod to report. `cancelled`: the Job is
        being stopped on a cancel; its log so far is stored.
        """
        pod = reported_pod(job, pods)
        reason: str | None
        message: str | None
        if cancelled:
            status, reason, message = Status.CANCELLED, CANCELLED_REASON, cancel_message(job)
        else:
            status = Status.FAILED if stuck is not None else _STATUS[job.state]
            reason, message = why(job, pod, stuck)
        succeeded, failed = pod_counts(job, pods, stuck)
        bucket = job.annotations.get(manifest.OUTPUT_BUCKET_ANNOTATION, "")
        prefix = job.annotations.get(manifest.PREFIX_ANNOTATION)
        log_object = manifest.log_object_name(job.name, prefix)
        container = job.labels.get(manifest.LABEL_NAME)  # the one container is named so
        if job.fan_out:
            text = self._fan_out_log(job.name, pods, container)
        else:
            text = self._log_text(job.name, pod, container)
        stored, error = self._store(job.name, text, bucket, log_object)
        return Outcome(
            status=status,
            job_name=job.name,
            namespace=job.namespace,
            exit_code=pod.exit_code if pod and not cancelled else None,
            pods_succeeded=succeeded,
            pods_failed=failed,
            reason=reason,
            message=message,
            started_at=job.started_at,
            finished_at=(None if cancelled else job.finished_at) or datetime.now(UTC),
            log_bucket=bucket if stored else None,
            log_object=log_object if stored else None,
            output_bucket=bucket or None,
            error=error,
        )

    def _fan_out_log(self, name: str, pods: Sequence[PodView], container: str | None) -> str:
        """Every pod's log in index order (then start order), each under a header line.

        All pods together stay within the one-pod log's bound: each is cut at an equal share
        of it (at least `_MIN_POD_LOG_BYTES`), so no pod's log crowds out the others.
        """
        if not pods:
            log.warning("job %s: its pods were deleted before their logs were read", name)
            return (
                f"(the logs of Job {name} are lost: its pods were deleted before the worker "
                "could read them, most likely by the Job's ttlSecondsAfterFinished)\n"
            )
        share = max(_LOG_LIMIT_BYTES // len(pods), _MIN_POD_LOG_BYTES)
        parts = []
        for pod in sorted(pods, key=index_order):
            text = self._log_text(name, pod, container, limit_bytes=share)
            if text and not text.endswith("\n"):
                text += "\n"
            parts.append(_pod_header(pod) + text)
        return "".join(parts)

    def _log_text(
        self,
        name: str,
        pod: PodView | None,
        container: str | None,
        *,
        limit_bytes: int = _LOG_LIMIT_BYTES,
    ) -> str:
        """What goes into the log object: the log, or a line saying why there is none."""
        if pod is None:
            return ""
        try:
            text = self._kube.read_log(pod.name, container=container, limit_bytes=limit_bytes)
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
