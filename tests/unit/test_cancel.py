"""Cancel: the control message and its answers (golden file), and the rules of a cancel.

The golden file holds the wire format both sides read: the message the client sends and each
answer the worker gives. After an intended change regenerate it with
``MSTC_UPDATE_GOLDEN=1 uv run pytest tests/unit/test_cancel.py`` and review the diff.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mstc_client.control import cancel_body, parse_cancel_answer
from mstc_worker.cancel import cancel_message, marked_answer, pick_job, settled_answer
from mstc_worker.control import (
    CancelAnswer,
    CancelCommand,
    ControlRejected,
    answer_body,
    parse_control,
)
from mstc_worker.kube import JobState, JobView
from mstc_worker.names import (
    CANCEL_AT_ANNOTATION,
    CANCEL_BY_ANNOTATION,
    CANCEL_REASON_ANNOTATION,
    FINALIZER,
)
from mstc_worker.protocol import Outcome, Status, reply_body, reply_for

GOLDEN = Path(__file__).parent / "golden" / "control_cancel.json"
AT = "2026-11-30T10:00:00.000Z"


def job(name: str, *, state: JobState = JobState.RUNNING, owed: bool = True,
        cancel: bool = False, started: int = 0) -> JobView:  # fmt: skip
    annotations = {CANCEL_AT_ANNOTATION: AT, CANCEL_BY_ANNOTATION: "ann@host"} if cancel else {}
    return JobView(
        name=name, namespace="ns", uid=f"uid-{name}", resource_version="1",
        annotations=annotations, labels={}, finalizers=(FINALIZER,) if owed else (),
        deleting=False, state=state, reason=None, message=None,
        started_at=datetime(2026, 11, 30, 9, started, tzinfo=UTC), finished_at=None,
    )  # fmt: skip


def _golden() -> dict[str, Any]:
    running = job("analysis-1a2b")
    answers: dict[str, CancelAnswer] = {
        "cancelling": _answer("analysis", running, None),
        "finished": _answer("analysis-1a2b", job("analysis-1a2b", owed=False), "succeeded"),
        "unknown": _answer("nothing", None, None),
        "ambiguous": _answer("analysis", None, None, [job("analysis-aaaa"), job("analysis-bbbb")]),
        "invalid": _invalid(b'{"action": "stop", "jobName": "x"}'),
    }
    reply = reply_for(Outcome(
        status=Status.CANCELLED, job_name="analysis-1a2b", namespace="ns", reason="Cancelled",
        message=cancel_message(job("analysis-1a2b", cancel=True)),
    ))  # fmt: skip
    return {
        "message": json.loads(cancel_body("analysis", by="ann@host", reason="wrong input")),
        "answers": {key: json.loads(answer_body(a)) for key, a in answers.items()},
        "cancelledReply": json.loads(reply_body(reply)),
    }


def _answer(requested: str, exact: JobView | None, recorded: str | None,
            same: list[JobView] | None = None) -> CancelAnswer:  # fmt: skip
    picked = pick_job(requested, exact, same or [])
    if isinstance(picked, CancelAnswer):
        return picked
    settled = settled_answer(requested, picked, recorded)
    return settled or marked_answer(requested, picked.name)


def _invalid(body: bytes) -> CancelAnswer:
    with pytest.raises(ControlRejected) as caught:
        parse_control(body)
    return CancelAnswer(status="invalid", message=str(caught.value))


def test_golden_control_message_and_answers() -> None:
    data = _golden()
    if os.environ.get("MSTC_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    assert GOLDEN.exists(), f"{GOLDEN} is missing; create it with MSTC_UPDATE_GOLDEN=1"
    assert data == json.loads(GOLDEN.read_text()), f"{GOLDEN.name} differs from the code"


def test_the_client_and_the_worker_read_each_others_messages() -> None:
    golden = json.loads(GOLDEN.read_text())
    sent = json.dumps(golden["message"]).encode()
    assert parse_control(sent) == CancelCommand("analysis", by="ann@host", reason="wrong input")
    for status, body in golden["answers"].items():
        answer = parse_cancel_answer(json.dumps(body).encode())
        assert (answer.status, answer.message) == (status, body["message"])
    assert parse_cancel_answer(json.dumps(golden["answers"]["ambiguous"]).encode()).job_names == [
        "analysis-aaaa", "analysis-bbbb"]  # fmt: skip


def test_a_cancelled_reply_keeps_the_java_result_text() -> None:
    reply = json.loads(reply_body(reply_for(Outcome(status=Status.CANCELLED, job_name="j-1"))))
    assert reply["result"] == "Job j-1 complete."  # Java-era clients split it for the name
    assert reply["result"].split(" ")[1] == reply["jobName"]
    with pytest.raises(ValueError, match="needs the name of the Job"):
        Outcome(status=Status.CANCELLED)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "not a JSON object"),
        (b"\xff", "not a JSON object"),
        (b"[1]", "must be a JSON object"),
        (b'{"format": 2, "action": "cancel", "jobName": "x"}', "format 2 is not known"),
        (b'{"jobName": "x"}', "Field 'action' must be"),
        (b'{"action": "cancel", "jobName": " "}', "Field 'jobName' must name"),
        (b'{"action": "cancel", "jobName": 7}', "Field 'jobName' must name"),
        (b'{"action": "cancel", "jobName": "x", "by": 1}', "Field 'by' must be a string"),
        (b'{"action": "cancel", "jobName": "' + b"x" * 20000 + b'"}', "over the limit"),
    ],
)
def test_bad_control_messages_are_refused_with_what_to_fix(body: bytes, says: str) -> None:
    with pytest.raises(ControlRejected, match=says):
        parse_control(body)


def test_who_and_why_are_kept_to_one_short_line() -> None:
    body = json.dumps({"action": "cancel", "jobName": "x", "reason": "a\nb  " + "c" * 2000})
    command = parse_control(body.encode())
    assert command.reason is not None
    assert "\n" not in command.reason
    assert len(command.reason) == 1000


def test_a_made_name_wins_over_requested_names() -> None:
    exact = job("a-1")
    assert pick_job("a-1", exact, [job("a-2")]) is exact


def test_of_several_jobs_sent_with_a_name_the_one_running_is_meant() -> None:
    running = job("a-2")
    same = [job("a-1", owed=False, state=JobState.SUCCEEDED), running,
            job("a-3", state=JobState.FAILED)]  # fmt: skip
    assert pick_job("a", None, same) is running


def test_several_running_jobs_of_one_name_are_named_back_not_guessed() -> None:
    answer = pick_job("a", None, [job("a-2"), job("a-1")])
    assert isinstance(answer, CancelAnswer)
    assert (answer.status, answer.job_names) == ("ambiguous", ("a-1", "a-2"))


def test_of_finished_jobs_only_the_latest_is_meant() -> None:
    latest = job("a-2", owed=False, started=30)
    assert pick_job("a", None, [job("a-1", owed=False, started=10), latest]) is latest


def test_no_job_is_unknown() -> None:
    answer = pick_job("nope", None, [])
    assert isinstance(answer, CancelAnswer)
    assert answer.status == "unknown"


def test_a_job_whose_reply_is_out_is_finished_with_its_recorded_status() -> None:
    # The record is the reply the request got; the Job's own state may say otherwise (a
    # cancelled Job whose pods were deleted may be marked failed by its controller).
    answer = settled_answer("a", job("a-1", owed=False, state=JobState.FAILED), "cancelled")
    assert answer is not None
    assert (answer.status, answer.job_status) == ("finished", "cancelled")


def test_a_job_that_ended_on_its_own_is_finished_even_if_its_reply_is_owed() -> None:
    answer = settled_answer("a", job("a-1", state=JobState.TIMED_OUT), None)
    assert answer is not None
    assert (answer.status, answer.job_status) == ("finished", "timeout")


def test_a_cancel_asked_twice_says_cancelling_again_without_marking() -> None:
    answer = settled_answer("a", job("a-1", cancel=True), None)
    assert answer is not None
    assert answer.status == "cancelling"
    assert "already" in answer.message


def test_a_running_job_is_to_be_marked() -> None:
    assert settled_answer("a", job("a-1"), None) is None


def test_the_cancelled_message_says_who_when_and_why() -> None:
    marked = job("a-1", cancel=True)
    assert cancel_message(marked) == f"Cancelled by ann@host at {AT}."
    why = {**marked.annotations, CANCEL_REASON_ANNOTATION: "wrong input"}
    anonymous = {CANCEL_AT_ANNOTATION: AT}
    assert cancel_message(_with(marked, why)) == f"Cancelled by ann@host at {AT}: wrong input"
    assert cancel_message(_with(marked, anonymous)) == f"Cancelled at {AT}."


def _with(view: JobView, annotations: dict[str, str]) -> JobView:
    return replace(view, annotations=annotations)
