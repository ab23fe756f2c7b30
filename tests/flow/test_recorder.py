"""The recorder on a real store (SQLite and PostgreSQL): what it records, what it leaves to
others, and that no body, however hostile, makes it raise or leaves the store unusable."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mstc_flow.recorder import Recorder, purge_expired
from mstc_flow.store.db import Database
from mstc_flow.store.history import History, JobQuery
from tests.flow.history_support import T0, event, heartbeat, lifecycle, rid

EVENT_KEY = "mstc.job.progress.accepted.convert"
FINAL_KEY = "mstc.job.final.succeeded.convert"
BEAT_KEY = "mstc.worker.heartbeat.worker-a"


@pytest.fixture
def history(database: Database) -> History:
    return History(database)


@pytest.fixture
def recorder(history: History) -> Recorder:
    return Recorder(history)


def encode(body: Any) -> bytes:
    return json.dumps(body).encode()


def test_job_events_and_heartbeats_are_recorded(recorder: Recorder, history: History) -> None:
    assert recorder.handle(EVENT_KEY, encode(event("accepted", rid(1))))
    assert recorder.handle(FINAL_KEY, encode(event("succeeded", rid(1), 2)))
    assert recorder.handle(FINAL_KEY, encode(event("succeeded", rid(1), 2)))  # a redelivery
    assert recorder.handle(BEAT_KEY, encode(heartbeat("worker-a", 3)))
    assert history.get_job(rid(1)).state == "succeeded"
    assert len(history.events(rid(1))) == 2
    assert [r.replica for r in history.replicas()] == ["worker-a"]


@pytest.mark.parametrize("key", ["services.mqtt_job_listener.REFRESH", "sensors.a.b", "mstc.jobs"])
def test_other_messages_are_left_to_others(recorder: Recorder, history: History, key: str) -> None:
    assert recorder.handle(key, encode(event("accepted", rid(2)))) is False
    assert history.list_jobs(JobQuery()).items == []


DEEP = b"[" * 100_000 + b"]" * 100_000
HOSTILE_BODIES: list[bytes] = [
    b"",
    b"not json",
    b"\xff\xfe\x00garbage",
    b"[]",
    b"null",
    b'"a string"',
    b"42",
    DEEP,
    b'{"a":' * 5000 + b"1" + b"}" * 5000,
    encode({}),
    encode({"eventId": None, "requestId": None, "event": "accepted"}),
    encode({**event("accepted", rid(3)), "eventId": 17}),
    encode({**event("accepted", rid(3)), "requestId": ["x"]}),
    encode({**event("accepted", rid(3)), "requestId": "r" * 10_000}),
    encode({**event("accepted", rid(3)), "event": "exploded"}),
    encode({**event("accepted", rid(3)), "event": {"nested": True}}),
    b'{"eventId": "x", "requestId": "y", "event": "accepted", "exitCode": ' + b"9" * 5000 + b"}",
]


@pytest.mark.parametrize("body", HOSTILE_BODIES, ids=range(len(HOSTILE_BODIES)))
@pytest.mark.parametrize("key", [EVENT_KEY, BEAT_KEY])
def test_a_body_it_cannot_record_is_dropped_not_raised(
    recorder: Recorder, history: History, key: str, body: bytes
) -> None:
    assert recorder.handle(key, body) is True  # handled: the caller acks it
    assert history.list_jobs(JobQuery()).items == []
    # ... and the store still works.
    assert recorder.handle(EVENT_KEY, encode(event("accepted", rid(4))))
    assert history.get_job(rid(4)).state == "accepted"


def test_hostile_values_in_a_valid_event_are_stored_cleanly(
    recorder: Recorder, history: History
) -> None:
    text = "nul\x00 surrogate\ud800 " + "long" * 1000
    body = event(
        "failed",
        rid(5),
        requestedName=text,
        image=text,
        labels={"k\x00": text, "n": 3, "deep": {"a": [1]}},
        exitCode=10**30,
        durationMs=True,
        podsFailed=-(2**70),
        reason=text,
        at="yesterday",
        finishedAt=12,
        request={"x": "\x00\ud800"},
        extra={"anything": [None, 1.5, "\x00"]},
    )
    raw = json.dumps(body).encode()  # json escapes the surrogate: valid UTF-8 on the wire
    assert recorder.handle(FINAL_KEY, raw)
    job = history.get_job(rid(5))
    assert job.state == "failed"
    assert job.requested_name is not None
    assert "\x00" not in job.requested_name
    assert len(job.requested_name) == 1000
    assert (job.exit_code, job.duration_ms, job.pods_failed) == (None, None, None)
    assert set(job.labels) == {"k\N{REPLACEMENT CHARACTER}", "n"}
    assert job.labels["n"] == "3"
    [stored] = history.events(rid(5))
    assert stored["extra"] == {"anything": [None, 1.5, "\x00"]}


def test_a_heartbeat_with_hostile_numbers_is_stored_cleanly(
    recorder: Recorder, history: History
) -> None:
    beat = heartbeat("w\x00", 1, inFlight=2**40, capacity="many", intervalSeconds=float("inf"))
    assert recorder.handle(BEAT_KEY, json.dumps(beat).encode())
    [replica] = history.replicas()
    assert (replica.in_flight, replica.capacity, replica.interval_seconds) == (None, None, None)


def test_retention_purges_what_finished_longer_ago_and_zero_keeps_all(history: History) -> None:
    lifecycle(history, rid(6), 0)
    now = T0 + timedelta(days=3)
    assert purge_expired(history, 0, now) == 0
    assert purge_expired(history, 5, now) == 0
    assert purge_expired(history, 2, now) == 1
    assert history.list_jobs(JobQuery()).items == []


def test_retention_is_measured_from_now(history: History) -> None:
    lifecycle(history, rid(7), 0)
    assert purge_expired(history, 1, datetime(2026, 5, 1, 13, tzinfo=UTC)) == 0
