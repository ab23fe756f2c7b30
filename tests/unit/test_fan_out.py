"""Fan-out: the request fields and their bounds, the Job spec they give, and how a Job of
many pods is read back (counts, the pod a reply reports, the order of the stored log).

Pure rules only; the stack test (tests/worker/test_fan_out.py) runs such Jobs for real.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from mstc_worker.errors import RequestRejected
from mstc_worker.kube_views import JobState, JobView, PodView, job_view, pod_view
from mstc_worker.manifest import build_job
from mstc_worker.outcome import index_order, pod_counts, reported_pod
from mstc_worker.protocol import Outcome, Status, parse_request, reply_body, reply_for
from mstc_worker.settings import Settings

from .conftest import MakeBody, MakeSettings
from .test_manifest import _check_golden

# --- the request fields ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, (1, 1, False)),
        ({"completions": 20, "parallelism": 5, "completionMode": "Indexed"}, (20, 5, True)),
        ({"parallelism": 5}, (5, 5, False)),  # completions default to parallelism
        ({"completions": 4}, (4, 4, False)),  # parallelism defaults to completions...
        ({"completions": 50}, (50, 10, False)),  # ...within MSTC_MAX_PARALLELISM (10)
        ({"completions": 3.0, "parallelism": None}, (3, 3, False)),  # JSON's 3.0 is 3
        ({"completionMode": "NonIndexed"}, (1, 1, False)),
        ({"completionMode": ""}, (1, 1, False)),
        ({"completionMode": "Indexed"}, (1, 1, True)),
    ],
)
def test_fan_out_fields_and_their_defaults(
    settings: Settings, make_body: MakeBody, fields: dict[str, Any], expected: tuple[int, int, bool]
) -> None:
    fan_out = parse_request(make_body(**fields), settings=settings).fan_out
    assert (fan_out.completions, fan_out.parallelism, fan_out.indexed) == expected


REJECTED = [
    (
        {"parallelism": 11},
        "parallelism",
        "Field 'parallelism' must be a whole number of pods from 1 to 10 (this worker's "
        "MSTC_MAX_PARALLELISM); got the number 11.",
    ),
    (
        {"completions": 101},
        "completions",
        "Field 'completions' must be a whole number of pods from 1 to 100 (this worker's "
        "MSTC_MAX_COMPLETIONS); got the number 101.",
    ),
    (
        {"completions": 0},
        "completions",
        "Field 'completions' must be a whole number of pods from 1 to 100 (this worker's "
        "MSTC_MAX_COMPLETIONS); got the number 0.",
    ),
    (
        {"parallelism": "5"},
        "parallelism",
        "Field 'parallelism' must be a whole number of pods from 1 to 10 (this worker's "
        'MSTC_MAX_PARALLELISM); got the string "5".',
    ),
    (
        {"parallelism": 2.5},
        "parallelism",
        "Field 'parallelism' must be a whole number of pods from 1 to 10 (this worker's "
        "MSTC_MAX_PARALLELISM); got the number 2.5.",
    ),
    (
        {"completions": True},
        "completions",
        "Field 'completions' must be a whole number of pods from 1 to 100 (this worker's "
        "MSTC_MAX_COMPLETIONS); got the boolean true.",
    ),
    (
        {"completionMode": "indexed"},
        "completionMode",
        'Field \'completionMode\' must be "NonIndexed" (the default) or "Indexed"; '
        'got the string "indexed".',
    ),
    (
        {"completionMode": 1},
        "completionMode",
        "Field 'completionMode' must be a string; got the number 1.",
    ),
    (
        {"completions": 3, "parallelism": 5},
        "parallelism",
        "Field 'parallelism' (5) must not exceed 'completions' (3): no more pods can run at "
        "once than must complete.",
    ),
]


@pytest.mark.parametrize(("fields", "field", "message"), REJECTED)
def test_fan_out_fields_out_of_bounds_or_ill_typed_are_rejected_naming_field_and_bound(
    settings: Settings, make_body: MakeBody, fields: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(RequestRejected) as caught:
        parse_request(make_body(**fields), settings=settings)
    assert caught.value.field == field
    assert str(caught.value) == message


def test_the_operator_sets_the_bounds(make_settings: MakeSettings, make_body: MakeBody) -> None:
    settings = make_settings(MSTC_MAX_PARALLELISM="50", MSTC_MAX_COMPLETIONS="1000")
    fan_out = parse_request(make_body(completions=1000, parallelism=50), settings=settings).fan_out
    assert (fan_out.completions, fan_out.parallelism) == (1000, 50)
    bound = r"from 1 to 50 \(this worker's MSTC_MAX_PARALLELISM\)"
    with pytest.raises(RequestRejected, match=bound):
        parse_request(make_body(parallelism=51), settings=settings)


# --- the manifest ------------------------------------------------------------------------------


def _spec(settings: Settings, body: bytes) -> dict[str, Any]:
    job = build_job(parse_request(body, settings=settings), request_id="r-1", settings=settings)
    spec: dict[str, Any] = job["spec"]
    return spec


def test_golden_indexed_fan_out(settings: Settings, make_body: MakeBody) -> None:
    body = make_body(completions=20, parallelism=5, completionMode="Indexed", backoffLimit=1)
    job = build_job(parse_request(body, settings=settings), request_id="r-1", settings=settings)
    _check_golden("fan_out_indexed", job)


def test_an_indexed_job_retries_per_index(settings: Settings, make_body: MakeBody) -> None:
    spec = _spec(settings, make_body(completions=20, parallelism=5, completionMode="Indexed"))
    assert (spec["completions"], spec["parallelism"], spec["completionMode"]) == (20, 5, "Indexed")
    # backoffLimit would count failures over all indexes and stop the others at the first.
    assert spec["backoffLimitPerIndex"] == 0
    assert "backoffLimit" not in spec


def test_a_non_indexed_fan_out_counts_retries_over_the_whole_job(
    settings: Settings, make_body: MakeBody
) -> None:
    spec = _spec(settings, make_body(completions=6, parallelism=3, backoffLimit=2))
    assert (spec["completions"], spec["parallelism"], spec["backoffLimit"]) == (6, 3, 2)
    assert "completionMode" not in spec
    assert "backoffLimitPerIndex" not in spec


def test_a_single_pod_job_spec_has_no_fan_out_fields(
    settings: Settings, make_body: MakeBody
) -> None:
    for body in (make_body(), make_body(completions=1, parallelism=1)):
        spec = _spec(settings, body)
        assert not {"completions", "parallelism", "completionMode", "backoffLimitPerIndex"} & set(
            spec
        )


# --- reading a fan-out Job back ------------------------------------------------------------------


def _job(state: str | None, *, spec: dict[str, Any], **status: Any) -> JobView:
    conditions = [{"type": state, "status": "True", "reason": "R"}] if state else []
    return job_view(
        {"metadata": {"name": "j"}, "spec": spec, "status": {"conditions": conditions, **status}}
    )


def _pod(name: str, index: int | None, code: int | None, *, at: int) -> PodView:
    annotations = {} if index is None else {"batch.kubernetes.io/job-completion-index": str(index)}
    stamp = datetime(2026, 1, 1, 0, 0, at, tzinfo=UTC).isoformat()
    state = {"terminated": {"exitCode": code, "reason": "Error" if code else "Completed",
                            "startedAt": stamp, "finishedAt": stamp}}  # fmt: skip
    return pod_view(
        {
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"containers": [{"name": "c"}]},
            "status": {
                "phase": "Failed" if code else "Succeeded",
                "containerStatuses": [{"name": "c", "state": state}],
            },
        }
    )


def test_job_view_reads_the_controllers_counts_and_whether_it_fans_out() -> None:
    job = _job("Failed", spec={"completions": 6, "parallelism": 3}, succeeded=4, failed=2)
    assert (job.state, job.succeeded, job.failed, job.fan_out) == (JobState.FAILED, 4, 2, True)
    assert _job(None, spec={"completionMode": "Indexed"}).fan_out
    assert not _job(None, spec={"completions": 1, "parallelism": 1}).fan_out
    assert not _job(None, spec={}).fan_out


def test_pod_view_reads_the_completion_index() -> None:
    assert _pod("p", 7, 0, at=1).index == 7
    assert _pod("p", None, 0, at=1).index is None


def test_a_failed_fan_out_reports_its_lowest_failed_index() -> None:
    job = _job("Failed", spec={"completions": 6, "completionMode": "Indexed"}, failed=2)
    # p4 started last: the latest-started rule of one pod would report it.
    pods = [_pod("p0", 0, 0, at=1), _pod("p4", 4, 3, at=9), _pod("p1", 1, 2, at=2)]
    reported = reported_pod(job, pods)
    assert reported is not None
    assert (reported.name, reported.exit_code) == ("p1", 2)


def test_a_succeeded_fan_out_reports_a_succeeded_pod() -> None:
    job = _job("Complete", spec={"completions": 2, "completionMode": "Indexed"}, succeeded=2)
    # An index that failed once and then succeeded on retry does not make the reply "Error".
    pods = [_pod("p0", 0, 0, at=1), _pod("p1-try1", 1, 1, at=2), _pod("p1-try2", 1, 0, at=3)]
    reported = reported_pod(job, pods)
    assert reported is not None
    assert reported.exit_code == 0


def test_counts_are_the_controllers_even_when_pods_are_gone() -> None:
    job = _job("Complete", spec={"completions": 20}, succeeded=20, failed=0)
    assert pod_counts(job, [], None) == (20, 0)


def test_pods_are_logged_in_index_order_then_start_order() -> None:
    pods = [_pod("b", 2, 0, at=1), _pod("a1", 0, 1, at=5), _pod("a0", 0, 1, at=3)]
    assert [pod.name for pod in sorted(pods, key=index_order)] == ["a0", "a1", "b"]


def test_the_reply_carries_the_counts_as_pods_succeeded_and_pods_failed() -> None:
    outcome = Outcome(status=Status.FAILED, job_name="j", pods_succeeded=18, pods_failed=2)
    body = reply_body(reply_for(outcome))
    assert b'"podsSucceeded": 18, "podsFailed": 2' in body
    assert b"pods" not in reply_body(reply_for(Outcome(status=Status.ERROR, error="x")))
