"""What the worker needs to know about a Job and its pods, as plain frozen values.

Owns the reading of the API server's JSON (Jobs and Pods exactly as the server sends them)
into `JobView` and `PodView`, and the rules that turn a Job's conditions into a `JobState`.
Also owns the decoding of one line of a watch stream into a `WatchEvent`, including
the server's ERROR events (410 Gone means "relist"). Kept apart from the Kubernetes
adapter (`kube`) and free of the kubernetes library on purpose: views are built from
plain dicts, so they are cheap to pickle across worker processes, no library model type
leaks to callers, and the rules are unit-tested without a server. Import these names
from `mstc_worker.kube`, which re-exports them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from mstc_worker.errors import TransientError
from mstc_worker.names import CLAIMED_AT_ANNOTATION, CLAIMED_BY_ANNOTATION

__all__ = [
    "CLAIMED_AT_ANNOTATION",
    "CLAIMED_BY_ANNOTATION",
    "COMPLETION_INDEX_ANNOTATION",
    "DEADLINE_EXCEEDED",
    "FAIL_FAST_REASONS",
    "JobState",
    "JobView",
    "PodView",
    "WatchError",
    "WatchEvent",
    "WatchExpired",
    "claim_annotations",
    "claim_held_elsewhere",
    "job_view",
    "peek_watch_line",
    "pod_view",
    "watch_event",
]

# A container waiting for one of these reasons will not start by itself (or keeps crashing):
# the worker ends such a Job at once instead of waiting for its deadline.
FAIL_FAST_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "CrashLoopBackOff",
        "RunContainerError",
        "CreateContainerConfigError",
        "InvalidImageName",
    }
)
# The reason the Job controller puts on the Failed condition when activeDeadlineSeconds passed.
DEADLINE_EXCEEDED = "DeadlineExceeded"
# Which worker is finishing a Job, and since when (see KubeClient.claim).
# Both label keys: `job-name` is the legacy one, kept by the Job controller for compatibility.
_JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
# Set by the Job controller on each pod of an Indexed Job (and given to it as JOB_COMPLETION_INDEX).
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


class JobState(StrEnum):
    """How a Job stands, as the worker reports it."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"  # Failed with reason DeadlineExceeded
    STUCK = "stuck"  # never read from a Job: the caller's verdict from a FAIL_FAST_REASONS pod


@dataclass(frozen=True)
class JobView:
    """A Job as the worker sees it. `annotations` and `labels` are copies; do not mutate."""

    name: str
    namespace: str
    uid: str
    resource_version: str
    annotations: Mapping[str, str]
    labels: Mapping[str, str]
    finalizers: tuple[str, ...]
    deleting: bool  # deletionTimestamp is set; finalizers may still hold the Job
    state: JobState
    reason: str | None  # of the deciding condition (Complete or Failed)
    message: str | None
    started_at: datetime | None
    finished_at: datetime | None
    ready: int = 0  # pods running and ready: the Job has started for the user's eyes
    suspended: bool = False  # spec.suspend: no pod until resumed (see job_access)
    succeeded: int = 0  # pods the Job controller counted succeeded (status.succeeded)
    failed: int = 0  # and failed (status.failed): counted once each, even after pods are gone
    fan_out: bool = False  # more than one pod (completions, parallelism) or Indexed

    @property
    def ended(self) -> bool:
        """Whether the Job controller has given its verdict (Complete or Failed)."""
        return self.state in (JobState.SUCCEEDED, JobState.FAILED, JobState.TIMED_OUT)


@dataclass(frozen=True)
class PodView:
    """A pod of a Job, reduced to the state of its first container."""

    name: str
    namespace: str
    job_name: str | None
    phase: str
    waiting_reason: str | None
    waiting_message: str | None
    exit_code: int | None
    terminated_reason: str | None
    started_at: datetime | None
    finished_at: datetime | None
    index: int | None = None  # the completion index of an Indexed Job's pod

    @property
    def stuck(self) -> bool:
        """Whether the container waits for a reason that will not resolve by itself."""
        return self.waiting_reason in FAIL_FAST_REASONS


def job_view(obj: Mapping[str, Any]) -> JobView:
    """The view of a batch/v1 Job given as the API server's JSON."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    state, deciding = _verdict(status.get("conditions") or [])
    finished_at = _time(status.get("completionTime"))
    if finished_at is None and deciding is not None:
        # A failed Job has no completionTime; its Failed condition says when it ended.
        finished_at = _time(deciding.get("lastTransitionTime"))
    return JobView(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        uid=meta.get("uid", ""),
        resource_version=meta.get("resourceVersion", ""),
        annotations=dict(meta.get("annotations") or {}),
        labels=dict(meta.get("labels") or {}),
        finalizers=tuple(meta.get("finalizers") or ()),
        deleting=meta.get("deletionTimestamp") is not None,
        state=state,
        reason=deciding.get("reason") if deciding else None,
        message=deciding.get("message") if deciding else None,
        started_at=_time(status.get("startTime")),
        finished_at=finished_at,
        ready=int(status.get("ready") or 0),
        suspended=bool((obj.get("spec") or {}).get("suspend")),
        succeeded=int(status.get("succeeded") or 0),
        failed=int(status.get("failed") or 0),
        fan_out=_is_fan_out(obj.get("spec") or {}),
    )


def _is_fan_out(spec: Mapping[str, Any]) -> bool:
    """Whether a Job's spec asks for more than the one pod (Kubernetes' default of 1 each)."""
    counts = (spec.get("completions"), spec.get("parallelism"))
    return any(count not in (None, 1) for count in counts) or (
        spec.get("completionMode") == "Indexed"
    )


def _verdict(conditions: list[Mapping[str, Any]]) -> tuple[JobState, Mapping[str, Any] | None]:
    """The state the Job's terminal conditions give, and the condition that decided it.

    Only Complete and Failed count: since Kubernetes 1.31 the controller first adds
    SuccessCriteriaMet or FailureTarget while pods are still terminating, and the Job is
    not over until the terminal condition follows.
    """
    for cond in conditions:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            return JobState.SUCCEEDED, cond
        if cond.get("type") == "Failed":
            timed_out = cond.get("reason") == DEADLINE_EXCEEDED
            return (JobState.TIMED_OUT if timed_out else JobState.FAILED), cond
    return JobState.RUNNING, None


def pod_view(obj: Mapping[str, Any]) -> PodView:
    """The view of a v1 Pod given as the API server's JSON."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    status = obj.get("status") or {}
    state = _first_container_state(obj)
    waiting = state.get("waiting") or {}
    running = state.get("running") or {}
    terminated = state.get("terminated") or {}
    exit_code = terminated.get("exitCode")
    return PodView(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        job_name=next((labels[key] for key in _JOB_NAME_LABELS if key in labels), None),
        phase=status.get("phase") or "Unknown",
        waiting_reason=waiting.get("reason"),
        waiting_message=waiting.get("message"),
        exit_code=int(exit_code) if exit_code is not None else None,
        terminated_reason=terminated.get("reason"),
        started_at=_time(terminated.get("startedAt") or running.get("startedAt")),
        finished_at=_time(terminated.get("finishedAt")),
        index=_completion_index(meta.get("annotations") or {}),
    )


def _completion_index(annotations: Mapping[str, str]) -> int | None:
    """The pod's index, from the annotation the Job controller puts on an Indexed Job's pods."""
    value = annotations.get(COMPLETION_INDEX_ANNOTATION, "")
    return int(value) if value.isdigit() else None


def _first_container_state(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    """The state of the pod's first container in spec order (statuses may come in any order)."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    if not statuses:
        return {}
    containers = (pod.get("spec") or {}).get("containers") or []
    first = containers[0].get("name") if containers else None
    chosen = next((s for s in statuses if s.get("name") == first), statuses[0])
    return chosen.get("state") or {}


def _time(value: str | None) -> datetime | None:
    """An RFC 3339 timestamp as an aware datetime (UTC when the text has no offset)."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def claim_annotations(holder: str, now: datetime) -> dict[str, str]:
    """The annotations that record `holder`'s claim on a Job, made at `now`."""
    stamp = now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {CLAIMED_BY_ANNOTATION: holder, CLAIMED_AT_ANNOTATION: stamp}


def claim_held_elsewhere(job: JobView, holder: str, *, stale_after_s: float, now: datetime) -> bool:
    """Whether another holder's claim on `job` is younger than `stale_after_s` at `now`.

    A claim without a readable time counts as stale: its holder cannot be shown alive.
    """
    other = job.annotations.get(CLAIMED_BY_ANNOTATION)
    if not other or other == holder:
        return False
    try:
        at = _time(job.annotations.get(CLAIMED_AT_ANNOTATION))
    except ValueError:
        return False
    return at is not None and (now - at).total_seconds() < stale_after_s


class WatchError(TransientError):
    """The API server ended a watch with an ERROR event; the watcher relists and resumes."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class WatchExpired(WatchError):
    """410 Gone: the server no longer holds history from the resourceVersion asked for.

    Normal on long-lived watches (the watch cache and etcd keep a bounded history); the
    only correct answer is a fresh list, whose items cover whatever the gap hid.
    """


@dataclass(frozen=True)
class WatchEvent:
    """One event of a Job or Pod watch; `view` is None for a BOOKMARK and a SKIPPED event.

    SKIPPED is the watcher's own type: an event about a Job it was told to leave alone,
    not decoded (see `peek_watch_line`).
    """

    type: Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "SKIPPED"]
    resource_version: str
    view: JobView | PodView | None


def watch_event(raw: Mapping[str, Any], kind: Literal["jobs", "pods"]) -> WatchEvent:
    """Decode one watch event, as the API server sends it, for a watch on `kind`.

    Raises WatchExpired for an ERROR event with code 410 and WatchError for any other
    ERROR event (the object of an ERROR event is a Status, not a Job or Pod).
    """
    kind_of_event = raw.get("type")
    obj = raw.get("object") or {}
    if kind_of_event == "ERROR":
        code = obj.get("code")
        text = f"{kind} watch ended by the API server: {obj.get('message') or obj}"
        if code == 410:
            raise WatchExpired(text, status=code)
        raise WatchError(text, status=code if isinstance(code, int) else None)
    rv = (obj.get("metadata") or {}).get("resourceVersion", "")
    if kind_of_event == "BOOKMARK":
        return WatchEvent("BOOKMARK", rv, None)
    if kind_of_event not in ("ADDED", "MODIFIED", "DELETED"):
        raise WatchError(f"{kind} watch sent an unknown event type {kind_of_event!r}")
    view = job_view(obj) if kind == "jobs" else pod_view(obj)
    return WatchEvent(kind_of_event, rv, view)


# What `peek_watch_line` looks for. The API server writes JSON with Go's encoder: a `"`
# inside a string value is always escaped, so these byte patterns only match real keys.
# An object's metadata comes before its spec and status and starts with its name, so the
# first name after "metadata" and the first resourceVersion of a line are the object's own.
_FIRST_NAME = re.compile(rb'"metadata":\{"name":"([^"\\]+)"')
_FIRST_VERSION = re.compile(rb'"resourceVersion":"([^"\\]+)"')
_POD_JOB_NAME = tuple(re.compile(b'"' + re.escape(key.encode()) + rb'":"([^"\\]+)"')
                      for key in _JOB_NAME_LABELS)  # fmt: skip


def peek_watch_line(line: bytes, kind: Literal["jobs", "pods"]) -> tuple[str, str] | None:
    """The Job a raw watch line is about and the object's resourceVersion, without decoding.

    For a pod that is its Job's name (label). None when the line does not show both at a
    glance (bookmarks, errors, a pod without the label): such a line must be decoded.
    Lets a worker process skip the events of other processes' Jobs for the cost of a
    search instead of a full JSON decode (most events of a busy namespace are not its own).
    """
    if kind == "jobs":
        name = _FIRST_NAME.search(line)
    else:
        name = next((m for m in (p.search(line) for p in _POD_JOB_NAME) if m), None)
    version = _FIRST_VERSION.search(line)
    if name is None or version is None:
        return None
    return name.group(1).decode(), version.group(1).decode()
