"""The lifecycle events' wire format, byte for byte: golden files, the name word, the keys.

One golden file per kind of event (tests/unit/golden/events/), made from a fixed time,
replica and request; `MSTC_UPDATE_GOLDEN=1` writes them again (then read the diff: it is
what subscribers see change).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mstc_worker import events
from mstc_worker.events import JobFacts
from mstc_worker.protocol import Outcome, Reply, Status, reply_body, reply_for

GOLDEN = Path(__file__).parent / "golden" / "events"
NOW = datetime(2026, 11, 30, 9, 41, 3, 123456, tzinfo=UTC)
REPLICA = "mstc-worker-7d9f-abcde"
REQUEST_ID = "3f" * 32
FACTS = JobFacts(
    request_id=REQUEST_ID,
    requested_name="spike sort/2",
    correlation_id="c-42",
    image="mstc/python-test:latest",
    labels={"team": "ephys"},
)
JOB = "spike-sort-2-8a0c4d5e-1111-5222-8333-944445555666"
REQUEST = {"image": "mstc/python-test:latest", "jobName": "spike sort/2", "inputBucket": "in"}


def _reply(status: Status, **fields: Any) -> dict[str, Any]:
    outcome = Outcome(status=status, job_name=JOB, namespace="mstc-dev", **fields)
    body: dict[str, Any] = json.loads(reply_body(reply_for(outcome)))
    return body


STARTED = datetime(2026, 11, 30, 9, 40, 0, tzinfo=UTC)
FINISHED = datetime(2026, 11, 30, 9, 41, 2, 500000, tzinfo=UTC)
REJECTED = Reply(status=Status.REJECTED, reason="InvalidRequest", error="image: missing",
                 error_type="InvalidRequest", result="Invalid request: {}")  # fmt: skip

KINDS: dict[str, bytes] = {
    "accepted": events.progress_body(
        "accepted",
        FACTS,
        job_name=JOB,
        namespace="mstc-dev",
        now=NOW,
        replica=REPLICA,
        request=REQUEST,
    ),
    "running": events.progress_body(
        "running", FACTS, job_name=JOB, namespace="mstc-dev", now=NOW, replica=REPLICA
    ),
    "succeeded": events.final_body(
        _reply(
            Status.SUCCEEDED,
            exit_code=0,
            started_at=STARTED,
            finished_at=FINISHED,
            log_bucket="out",
            log_object=f"{JOB}.log",
            output_bucket="out",
        ),
        FACTS,
        now=NOW,
        replica=REPLICA,
    ),
    "failed": events.final_body(
        _reply(
            Status.FAILED, exit_code=3, reason="Error", started_at=STARTED, finished_at=FINISHED
        ),
        FACTS,
        now=NOW,
        replica=REPLICA,
    ),
    "rejected": events.final_body(
        json.loads(reply_body(REJECTED)),
        JobFacts(REQUEST_ID, requested_name=None, correlation_id=None),
        now=NOW,
        replica=REPLICA,
    ),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_event_kind_matches_its_golden_file(kind: str) -> None:
    path = GOLDEN / f"{kind}.json"
    body = json.loads(KINDS[kind])
    if os.environ.get("MSTC_UPDATE_GOLDEN"):
        path.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n")
    assert path.exists(), f"{path} is missing; create it with MSTC_UPDATE_GOLDEN=1"
    assert body == json.loads(path.read_text()), f"{path.name} differs from the event"


def test_every_event_has_the_common_fields_of_the_spec() -> None:
    for kind, raw in KINDS.items():
        body = json.loads(raw.decode("utf-8"))
        assert body["format"] == 1
        assert body["event"] == kind
        assert body["eventId"] == f"{REQUEST_ID}:{kind}"
        assert body["at"] == "2026-11-30T09:41:03.123Z"
        assert body["replica"] == REPLICA
        for key in ("requestId", "requestedName", "correlationId", "image", "labels", "jobName"):
            assert key in body, (kind, key)


def test_a_final_event_carries_every_reply_field_exactly() -> None:
    reply = _reply(Status.SUCCEEDED, exit_code=0, started_at=STARTED, finished_at=FINISHED)
    body = json.loads(events.final_body(reply, FACTS, now=NOW, replica=REPLICA))
    assert {key: body[key] for key in reply} == reply
    assert body["durationMs"] == 62500


def test_a_rejection_has_no_job() -> None:
    body = json.loads(KINDS["rejected"])
    assert body["jobName"] is None
    assert body["requestedName"] is None
    assert body["labels"] == {}


def test_only_accepted_carries_the_request() -> None:
    assert json.loads(KINDS["accepted"])["request"] == REQUEST
    assert "request" not in json.loads(KINDS["running"])


@pytest.mark.parametrize(
    ("name", "word"),
    [
        ("spike sort/2", "spike_sort_2"),
        ("a.b#c+d", "a_b_c_d"),
        ("ok_name-1", "ok_name-1"),
        ("", "_"),
        (None, "_"),
        ("é", "_"),
        ("x" * 150, "x" * 100),
    ],
)
def test_a_name_becomes_one_topic_level(name: str | None, word: str) -> None:
    assert events.word(name) == word


@pytest.mark.parametrize(
    ("state", "key"),
    [
        ("accepted", "mstc.job.progress.accepted.my-job"),
        ("running", "mstc.job.progress.running.my-job"),
        ("succeeded", "mstc.job.final.succeeded.my-job"),
        ("failed", "mstc.job.final.failed.my-job"),
        ("timeout", "mstc.job.final.timeout.my-job"),
        ("error", "mstc.job.final.error.my-job"),
        ("cancelled", "mstc.job.final.cancelled.my-job"),
        ("rejected", "mstc.job.final.rejected.my-job"),
    ],
)
def test_the_routing_key_names_phase_state_and_job(state: str, key: str) -> None:
    assert events.routing_key(state, "my-job") == key


def test_a_state_that_is_no_event_is_refused() -> None:
    with pytest.raises(ValueError, match="not an event state"):
        events.routing_key("finished", "x")
    with pytest.raises(ValueError, match="not a final state"):
        events.final_body({"status": "running"}, FACTS, now=NOW, replica=REPLICA)


def test_the_job_listener_key_is_its_mqtt_topic_in_amqp_form() -> None:
    key = events.job_listener_key("init job")
    assert key.replace(".", "/") == "services/mqtt_job_listener/job_complete/init_job"


def test_facts_round_trip_through_the_job_annotation() -> None:
    text = events.facts_to_annotation(FACTS)
    again = events.facts_from_annotation(text, request_id=REQUEST_ID, correlation_id="c-42")
    assert again == FACTS


@pytest.mark.parametrize("text", [None, "", "not json", "[1]", '{"labels": 3, "image": 4}'])
def test_unreadable_facts_are_left_unknown(text: str | None) -> None:
    facts = events.facts_from_annotation(text, request_id=REQUEST_ID, correlation_id=None)
    assert facts == JobFacts(REQUEST_ID)


def test_a_rejected_body_still_gives_what_it_says() -> None:
    body = b'{"jobName": "x", "labels": {"a": "b"}, "image": 7}'
    facts = events.facts_from_body(body, request_id=REQUEST_ID, correlation_id="c")
    assert facts == JobFacts(REQUEST_ID, "x", "c", None, {"a": "b"})
    assert events.facts_from_body(b"\xff", request_id=REQUEST_ID, correlation_id=None) == (
        JobFacts(REQUEST_ID)
    )
