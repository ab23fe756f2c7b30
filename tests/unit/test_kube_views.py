"""The Kubernetes adapter's pure rules: reading Jobs, pods and watch events, and what is retried.

The objects are the API server's JSON as it sends them; the integration tests in
tests/worker/test_kube.py check the same rules against the real server.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import pytest

from mstc_worker.kube import (
    JobState,
    KubeRejected,
    KubeUnavailable,
    WatchError,
    WatchExpired,
)
from mstc_worker.kube_errors import api_error, retrying
from mstc_worker.kube_views import (
    CLAIMED_AT_ANNOTATION,
    CLAIMED_BY_ANNOTATION,
    claim_annotations,
    claim_held_elsewhere,
    job_view,
    peek_watch_line,
    pod_view,
    watch_event,
)
from mstc_worker.kube_watch import watch_backoff

T0 = "2026-11-22T10:00:00Z"
T1 = "2026-11-22T10:00:05Z"


def job(conditions: list[dict[str, Any]], **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "j",
            "namespace": "ns",
            "uid": "u",
            "resourceVersion": "7",
            "finalizers": ["mstc.io/reply-pending"],
            "annotations": {"mstc.io/request-id": "r"},
        },
        "status": {"startTime": T0, "conditions": conditions, **status},
    }


def cond(kind: str, reason: str, status: str = "True") -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": reason, "lastTransitionTime": T1}


def test_a_complete_job_succeeded_and_ended_at_its_completion_time() -> None:
    view = job_view(job([cond("Complete", "CompletionsReached")], completionTime=T1))
    assert (view.state, view.reason) == (JobState.SUCCEEDED, "CompletionsReached")
    assert view.started_at == datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
    assert view.finished_at == datetime(2026, 11, 22, 10, 0, 5, tzinfo=UTC)
    assert view.ended
    assert view.finalizers == ("mstc.io/reply-pending",)
    assert not view.deleting


def test_a_job_failed_by_its_deadline_timed_out_and_ended_at_the_condition() -> None:
    view = job_view(
        job([cond("FailureTarget", "DeadlineExceeded"), cond("Failed", "DeadlineExceeded")])
    )
    assert view.state is JobState.TIMED_OUT
    assert view.finished_at == datetime(2026, 11, 22, 10, 0, 5, tzinfo=UTC)


def test_a_job_failed_otherwise_failed() -> None:
    assert job_view(job([cond("Failed", "BackoffLimitExceeded")])).state is JobState.FAILED


def test_only_terminal_true_conditions_end_a_job() -> None:
    # FailureTarget comes first while pods still terminate; a False condition means nothing.
    view = job_view(job([cond("FailureTarget", "PodFailed"), cond("Complete", "x", "False")]))
    assert (view.state, view.reason, view.finished_at) == (JobState.RUNNING, None, None)
    assert not view.ended


def test_a_job_with_a_deletion_timestamp_is_deleting() -> None:
    raw = job([])
    raw["metadata"]["deletionTimestamp"] = T1
    assert job_view(raw).deleting


def test_pod_view_reads_the_first_container_in_spec_order() -> None:
    raw = {
        "metadata": {"name": "p", "namespace": "ns", "labels": {"job-name": "j"}},
        "spec": {"containers": [{"name": "main"}, {"name": "sidecar"}]},
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {"name": "sidecar", "state": {"running": {"startedAt": T0}}},
                {
                    "name": "main",
                    "state": {
                        "terminated": {
                            "exitCode": 3,
                            "reason": "Error",
                            "startedAt": T0,
                            "finishedAt": T1,
                        }
                    },
                },
            ],
        },
    }
    pod = pod_view(raw)
    assert (pod.job_name, pod.phase, pod.exit_code, pod.terminated_reason) == (
        "j",
        "Failed",
        3,
        "Error",
    )
    assert pod.finished_at == datetime(2026, 11, 22, 10, 0, 5, tzinfo=UTC)
    assert not pod.stuck


def test_a_pod_waiting_for_a_fail_fast_reason_is_stuck() -> None:
    raw = {
        "metadata": {"name": "p", "labels": {"batch.kubernetes.io/job-name": "j"}},
        "status": {
            "phase": "Pending",
            "containerStatuses": [
                {"name": "c", "state": {"waiting": {"reason": "ErrImagePull", "message": "no"}}}
            ],
        },
    }
    pod = pod_view(raw)
    assert (pod.job_name, pod.waiting_reason, pod.waiting_message) == ("j", "ErrImagePull", "no")
    assert pod.stuck


def test_a_410_error_event_means_the_watch_expired() -> None:
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}}
    with pytest.raises(WatchExpired, match="too old"):
        watch_event(gone, "jobs")


def test_any_other_error_event_is_a_watch_error_not_an_expiry() -> None:
    broken = {"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "etcd"}}
    with pytest.raises(WatchError) as caught:
        watch_event(broken, "pods")
    assert not isinstance(caught.value, WatchExpired)
    assert caught.value.status == 500


def test_bookmarks_carry_only_a_resource_version() -> None:
    event = watch_event(
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "42"}}}, "jobs"
    )
    assert (event.type, event.resource_version, event.view) == ("BOOKMARK", "42", None)


def server_line(event_type: str, obj: dict[str, Any]) -> bytes:
    """A watch line as the API server writes it: compact JSON, metadata first in the object."""
    return json.dumps({"type": event_type, "object": obj}, separators=(",", ":")).encode()


HOSTILE = '"metadata":{"name":"evil","resourceVersion":"1"},"batch.kubernetes.io/job-name":"evil"'


def test_peeking_at_a_job_line_finds_its_name_and_version_not_those_in_values() -> None:
    obj = {
        "kind": "Job",
        "apiVersion": "batch/v1",
        "metadata": {
            "name": "sort-1",
            "namespace": "ns",
            "uid": "u",
            "resourceVersion": "4711",
            "annotations": {"mstc.io/note": HOSTILE},
        },
        "spec": {"template": {"metadata": {"labels": {"batch.kubernetes.io/job-name": "x"}}}},
    }
    assert peek_watch_line(server_line("MODIFIED", obj), "jobs") == ("sort-1", "4711")


def test_peeking_at_a_pod_line_finds_its_jobs_name_from_either_label() -> None:
    def pod(labels: dict[str, str]) -> dict[str, Any]:
        meta = {"name": "sort-1-abcde", "generateName": "sort-1-", "resourceVersion": "9"}
        return {"kind": "Pod", "metadata": meta | {"labels": labels, "annotations": {"a": HOSTILE}}}

    both = pod({"batch.kubernetes.io/job-name": "sort-1", "job-name": "sort-1"})
    assert peek_watch_line(server_line("ADDED", both), "pods") == ("sort-1", "9")
    legacy = pod({"job-name": "sort-1"})
    assert peek_watch_line(server_line("DELETED", legacy), "pods") == ("sort-1", "9")


def test_lines_that_do_not_show_their_job_at_a_glance_are_left_to_the_decoder() -> None:
    bookmark = server_line("BOOKMARK", {"kind": "Job", "metadata": {"resourceVersion": "5"}})
    error = server_line("ERROR", {"kind": "Status", "code": 410, "message": "too old"})
    unlabelled = server_line(
        "ADDED", {"kind": "Pod", "metadata": {"name": "p", "resourceVersion": "6"}}
    )
    assert peek_watch_line(bookmark, "jobs") is None
    assert peek_watch_line(error, "jobs") is None
    assert peek_watch_line(unlabelled, "pods") is None


def test_a_deleted_job_event_carries_the_jobs_last_view() -> None:
    event = watch_event({"type": "DELETED", "object": job([cond("Complete", "x")])}, "jobs")
    assert event.type == "DELETED"
    assert event.view is not None
    assert event.view.name == "j"


@pytest.mark.parametrize("status", [0, 408, 429, 500, 503, 504])
def test_throttling_server_errors_and_no_answer_are_transient(status: int) -> None:
    error = api_error("read Job j", status=status, body='{"message": "busy"}')
    assert isinstance(error, KubeUnavailable)
    assert "busy" in str(error)


def test_retry_after_is_kept_for_the_retry_policy() -> None:
    error = api_error("list Jobs", status=429, headers={"Retry-After": "3"})
    assert isinstance(error, KubeUnavailable)
    assert error.retry_after == 3.0


@pytest.mark.parametrize(
    ("status", "reason"), [(400, "BadRequest"), (403, "Forbidden"), (422, "Invalid")]
)
def test_other_client_errors_are_rejections_with_the_servers_message(
    status: int, reason: str
) -> None:
    body = f'{{"kind": "Status", "message": "Job.batch \\"x\\" is invalid", "reason": "{reason}"}}'
    error = api_error("create Job x", status=status, body=body)
    assert isinstance(error, KubeRejected)
    assert (error.status, error.reason) == (status, reason)
    assert str(error) == 'create Job x: Job.batch "x" is invalid'


def test_transient_errors_are_retried_a_bounded_number_of_times_honouring_retry_after() -> None:
    waits: list[float] = []
    calls: list[int] = []

    def busy() -> None:
        calls.append(1)
        raise KubeUnavailable("busy", retry_after=3.0 if len(calls) == 1 else None)

    with pytest.raises(KubeUnavailable):
        retrying().copy(sleep=waits.append)(busy)
    assert len(calls) == 5
    assert waits[0] == 3.0  # the server's hint
    assert 0.4 <= waits[1] <= 0.6  # then our own backoff: 0.2 s doubling, plus jitter
    assert all(later >= earlier for earlier, later in pairwise(waits[1:]))
    assert max(waits) <= 5.2


def test_rejections_are_not_retried() -> None:
    calls: list[int] = []

    def refused() -> None:
        calls.append(1)
        raise KubeRejected("no", status=422)

    with pytest.raises(KubeRejected):
        retrying().copy(sleep=lambda _s: None)(refused)
    assert calls == [1]


def test_the_watch_backoff_grows_and_is_capped() -> None:
    delays = [watch_backoff(n) for n in range(10)]
    assert delays[:4] == [0.0, 0.25, 0.5, 1.0]
    assert max(delays) == 10.0
    assert delays == sorted(delays)


def test_the_watch_backoff_waits_at_least_a_servers_retry_after_within_the_cap() -> None:
    assert watch_backoff(1, retry_after=3.0) == 3.0  # longer than our 0.25 s: the server's
    assert watch_backoff(7, retry_after=1.0) == 10.0  # shorter than ours: ours
    assert watch_backoff(1, retry_after=3600.0) == 30.0  # an absurd hint is capped


@pytest.mark.parametrize(
    ("annotations", "held"),
    [
        ({}, False),  # nobody claimed it
        ({CLAIMED_BY_ANNOTATION: "me", CLAIMED_AT_ANNOTATION: T1}, False),  # ours
        ({CLAIMED_BY_ANNOTATION: "other", CLAIMED_AT_ANNOTATION: T1}, True),  # 25 s old
        ({CLAIMED_BY_ANNOTATION: "other", CLAIMED_AT_ANNOTATION: T0}, False),  # stale: 30 s old
        ({CLAIMED_BY_ANNOTATION: "other", CLAIMED_AT_ANNOTATION: "yesterday"}, False),
    ],
)
def test_only_a_recent_claim_of_another_holder_keeps_a_job(
    annotations: dict[str, str], held: bool
) -> None:
    raw = job([])
    raw["metadata"]["annotations"] = annotations
    now = datetime(2026, 11, 22, 10, 0, 30, tzinfo=UTC)
    assert claim_held_elsewhere(job_view(raw), "me", stale_after_s=28, now=now) is held
    # Our own claim annotations read back as a claim made now.
    stamped = claim_annotations("other", now)
    raw["metadata"]["annotations"] = stamped
    assert claim_held_elsewhere(job_view(raw), "me", stale_after_s=28, now=now)
