"""Replies: the Java `result` text to the letter, and the structured fields beside it."""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from mstc_worker.errors import RequestRejected, TransientError
from mstc_worker.protocol import (
    Outcome,
    Reply,
    Status,
    error_outcome,
    parse_request,
    rejection_reply,
    reply_body,
    reply_for,
)
from mstc_worker.settings import Settings

from .conftest import MakeBody

JOB = "test-job-0d3f8a5e-6a3c-5d3e-9c1e-4b1f2a3c4d5e"
START = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def _decode(body: bytes) -> dict[str, Any]:
    decoded = json.loads(body.decode("utf-8"))
    assert isinstance(decoded, dict)
    return decoded


def _rejected(body: bytes, settings: Settings) -> RequestRejected:
    with pytest.raises(RequestRejected) as caught:
        parse_request(body, settings=settings)
    return caught.value


def test_status_values_are_exactly_the_six_of_the_contract() -> None:
    assert {status.value for status in Status} == {
        "succeeded",
        "failed",
        "timeout",
        "rejected",
        "error",
        "cancelled",
    }


@pytest.mark.parametrize(
    "status", [Status.SUCCEEDED, Status.FAILED, Status.TIMEOUT, Status.CANCELLED]
)
def test_any_job_that_ran_gets_the_java_complete_text(status: Status) -> None:
    reply = reply_for(Outcome(status=status, job_name=JOB))
    assert reply.result == f"Job {JOB} complete."


def test_an_error_after_the_job_was_created_still_gets_the_complete_text() -> None:
    outcome = error_outcome(TransientError("MinIO is unreachable"), job_name=JOB)
    reply = reply_for(outcome)
    assert reply.result == f"Job {JOB} complete."
    assert (reply.status, reply.error) == (Status.ERROR, "MinIO is unreachable")


def test_java_era_clients_find_the_job_name_as_word_two_of_result() -> None:
    body = reply_body(reply_for(Outcome(status=Status.SUCCEEDED, job_name=JOB)))
    assert _decode(body)["result"].split(" ")[1] == JOB


def test_an_error_without_a_job_gets_class_name_colon_message() -> None:
    class KubeUnavailableError(TransientError):
        pass

    reply = reply_for(error_outcome(KubeUnavailableError("the API server did not answer")))
    assert reply.result == "KubeUnavailableError: the API server did not answer"
    assert (reply.status, reply.reason, reply.job_name) == (
        Status.ERROR,
        "KubeUnavailableError",
        None,
    )


def test_an_error_without_a_message_is_named_by_its_class() -> None:
    reply = reply_for(error_outcome(RuntimeError()))
    assert reply.result == "RuntimeError"
    assert reply.error == "RuntimeError"


@pytest.mark.parametrize("missing", ["image", "jobName", "inputBucket"])
def test_invalid_request_echoes_the_raw_body_after_the_java_prefix(
    settings: Settings, make_body: MakeBody, missing: str
) -> None:
    body = make_body(without=(missing,), note="café")
    reply = rejection_reply(_rejected(body, settings), body)
    assert reply.result == "Invalid request No image: " + body.decode("utf-8")
    assert reply.status == Status.REJECTED
    assert reply.reason == "InvalidRequest"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "MalformedRequest"),
        (b'{"image": 5, "jobName": "j", "inputBucket": "bkt"}', "RequestRejected"),
    ],
)
def test_other_rejections_get_class_name_colon_message(
    settings: Settings, body: bytes, reason: str
) -> None:
    exc = _rejected(body, settings)
    reply = rejection_reply(exc, body)
    assert reply.result == f"{reason}: {exc}"
    assert (reply.status, reply.reason, reply.error) == (Status.REJECTED, reason, str(exc))


def test_reply_body_is_camel_case_json_without_absent_fields_and_result_first() -> None:
    outcome = Outcome(
        status=Status.FAILED,
        job_name=JOB,
        namespace="mstc-dev",
        exit_code=3,
        reason="BackoffLimitExceeded",
        message="Job has reached the specified backoff limit",
        started_at=START,
        finished_at=START + timedelta(seconds=12, milliseconds=345),
        log_bucket="results",
        log_object=f"run-1-{JOB}.log",
        output_bucket="results",
    )
    data = _decode(reply_body(reply_for(outcome)))
    assert list(data) == [
        "result",
        "status",
        "jobName",
        "namespace",
        "exitCode",
        "reason",
        "message",
        "startedAt",
        "finishedAt",
        "logBucket",
        "logObject",
        "outputBucket",
        "durationMs",
    ]
    assert data["status"] == "failed"
    assert data["exitCode"] == 3
    assert data["durationMs"] == 12345
    assert "error" not in data
    assert "errorType" not in data


def test_times_are_iso_8601_utc_with_z_whatever_zone_they_came_in() -> None:
    eastern = timezone(timedelta(hours=-5))
    started = datetime(2024, 5, 1, 7, 0, 0, 250_000, tzinfo=eastern)
    outcome = Outcome(
        status=Status.SUCCEEDED,
        job_name=JOB,
        started_at=started,
        finished_at=started + timedelta(minutes=1),
    )
    data = _decode(reply_body(reply_for(outcome)))
    assert data["startedAt"] == "2024-05-01T12:00:00.250Z"
    assert data["finishedAt"] == "2024-05-01T12:01:00.250Z"
    assert data["durationMs"] == 60_000


def test_naive_times_are_refused_because_their_zone_is_unknown() -> None:
    with pytest.raises(ValidationError):
        Outcome(status=Status.SUCCEEDED, job_name=JOB, started_at=datetime(2024, 5, 1))


def test_result_is_present_even_in_the_smallest_reply(settings: Settings) -> None:
    exc = _rejected(b"[]", settings)
    data = _decode(reply_body(rejection_reply(exc, b"[]")))
    assert set(data) == {"result", "status", "reason", "error"}


def test_reply_body_keeps_non_ascii_text_readable() -> None:
    reply = reply_for(error_outcome(ValueError("bucket «données» is gone")))
    body = reply_body(reply)
    assert "«données»".encode() in body


@pytest.mark.parametrize(
    "status", [Status.SUCCEEDED, Status.FAILED, Status.TIMEOUT, Status.CANCELLED]
)
def test_a_job_status_without_a_job_name_is_a_bug_caught_early(status: Status) -> None:
    with pytest.raises(ValidationError, match="needs the name of the Job"):
        Outcome(status=status)


def test_outcome_survives_a_round_trip_between_processes() -> None:
    outcome = Outcome(status=Status.TIMEOUT, job_name=JOB, started_at=START)
    assert pickle.loads(pickle.dumps(outcome)) == outcome


def test_a_reply_body_reads_back_into_the_same_reply() -> None:
    outcome = Outcome(
        status=Status.SUCCEEDED,
        job_name=JOB,
        exit_code=0,
        started_at=START,
        finished_at=START + timedelta(seconds=1),
    )
    reply = reply_for(outcome)
    assert Reply.model_validate_json(reply_body(reply)) == reply
