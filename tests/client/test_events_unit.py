"""The client's reading of job events and heartbeats: tolerant parsing, keys, lines (no servers)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mstc_client.broker_topics import TopicMessage
from mstc_client.config import ClientConfig
from mstc_client.errors import ConfigError
from mstc_client.events import (
    EventFeed,
    JobEvent,
    ReplicaHeartbeat,
    job_event_keys,
    parse_message,
    topic_word,
)
from mstc_client.listen import event_line


def _message(body: Any, key: str = "mstc.job.final.succeeded.x") -> TopicMessage:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return TopicMessage(key, "mstc.event", raw)


def test_a_heartbeat_with_unknown_and_missing_fields_still_parses() -> None:
    parsed = parse_message(_message({"event": "stopping", "replica": "r", "format": 2,
                                     "new": {"x": 1}, "inFlight": "3"}))  # fmt: skip
    assert isinstance(parsed, ReplicaHeartbeat)
    assert parsed.stopping
    assert (parsed.in_flight, parsed.capacity, parsed.version) == (None, None, None)
    assert parsed.fields["new"] == {"x": 1}


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", {"event": "exploded"}, {"event": "heartbeat"}, {"no": "event"}],
)
def test_what_is_not_an_event_or_heartbeat_is_skipped(body: Any) -> None:
    assert parse_message(_message(body)) is None


def test_a_final_event_keeps_every_field_of_the_reply() -> None:
    body = {
        "event": "failed", "requestedName": "a.b", "jobName": "a-b-1", "status": "failed",
        "exitCode": 3, "durationMs": 1500, "at": "2026-11-30T10:00:00.000Z", "pods": 20,
    }  # fmt: skip
    parsed = parse_message(_message(body))
    assert isinstance(parsed, JobEvent)
    assert parsed.final
    assert (parsed.requested_name, parsed.job_name, parsed.fields["pods"]) == ("a.b", "a-b-1", 20)
    assert event_line(parsed) == (
        "2026-11-30T10:00:00.000Z  failed     a.b  a-b-1  failed, exit code 3, 1.5 s"
    )


def test_binding_keys_follow_the_documented_routing_keys() -> None:
    assert job_event_keys() == ["mstc.job.#"]
    assert job_event_keys(final=True) == ["mstc.job.final.#"]
    assert job_event_keys("my job/1") == ["mstc.job.*.*.my_job_1"]
    assert job_event_keys("x", final=True) == ["mstc.job.final.*.x"]
    assert topic_word(None) == "_"
    assert topic_word("é" * 120) == "_" * 100


def test_an_empty_events_exchange_means_events_are_off() -> None:
    config = ClientConfig.from_env({"MSTC_EVENTS_EXCHANGE": ""})
    assert config.events_exchange == ""
    assert ClientConfig.from_env({}).events_exchange == "amq.topic"
    with pytest.raises(ConfigError, match="Events are off"):
        EventFeed(config, ["mstc.job.#"])
