"""Replica heartbeats: golden bodies, routing keys, and the rules of sending them.

The bodies are a wire format (README, "Replica heartbeats"): golden files in tests/unit/golden/
pin them; regenerate with ``MSTC_UPDATE_GOLDEN=1`` after an intended change and review the
diff. The sending rules run here on the in-memory broker, whose connection's thread is the
test's own (`run_pending`); tests/worker/test_heartbeats.py checks them on the real stack.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mstc_worker import __version__
from mstc_worker.heartbeat import HEARTBEAT_TYPE, Heartbeats, ReplicaBeat, routing_key, topic_word
from mstc_worker.ports import BrokerUnavailable
from tests.support.fakes import FakeBroker
from tests.unit.conftest import MakeSettings

GOLDEN = Path(__file__).parent / "golden"
STARTED = datetime(2026, 11, 30, 9, 55, 1, 234_000, tzinfo=UTC)
BEAT = ReplicaBeat(
    replica="mstc-worker-7d9f8-abcde",
    version="0.1.0",
    capacity=100,
    started_at=STARTED,
    interval_seconds=5,
)


def _check_golden(name: str, body: bytes) -> None:
    path = GOLDEN / f"{name}.json"
    parsed = json.loads(body)
    if os.environ.get("MSTC_UPDATE_GOLDEN") == "1":
        path.write_text(json.dumps(parsed, indent=2) + "\n")
        return
    assert path.exists(), f"{path} is missing; create it with MSTC_UPDATE_GOLDEN=1"
    golden = json.loads(path.read_text())
    assert list(parsed) == list(golden), "the fields or their order changed"
    assert parsed == golden, f"{path.name} differs from ReplicaBeat.body()"


def test_golden_heartbeat_body() -> None:
    at = STARTED + timedelta(minutes=3, milliseconds=5)
    _check_golden("heartbeat", BEAT.body("heartbeat", in_flight=3, at=at))


def test_golden_stopping_body() -> None:
    at = STARTED + timedelta(hours=1)
    _check_golden("stopping", BEAT.body("stopping", in_flight=0, at=at))


@pytest.mark.parametrize(
    ("name", "word"),
    [
        ("mstc-worker-0", "mstc-worker-0"),
        ("host.example.org", "host_example_org"),
        ("a/b+c#d é", "a_b_c_d__"),
        ("", "_"),
        (None, "_"),
        ("x" * 130, "x" * 100),
    ],
)
def test_a_name_is_exactly_one_topic_word(name: str | None, word: str) -> None:
    assert topic_word(name) == word


def test_routing_keys_name_the_event_and_the_replica() -> None:
    assert routing_key("heartbeat", "pod.1") == "mstc.worker.heartbeat.pod_1"
    assert routing_key("stopping", "pod-1") == "mstc.worker.stopping.pod-1"


# --- sending rules ---------------------------------------------------------------------------


class Rig:
    """Heartbeats on a fake broker that is connected; the test is the connection's thread."""

    def __init__(self, make_settings: MakeSettings, **env: str) -> None:
        self.broker = FakeBroker(prefetch=1)
        self.broker.attach(threading.Event(), lambda _delivery: None)
        self.in_flight = 0
        settings = make_settings(MSTC_CONCURRENCY="7", **env)
        self.beats = Heartbeats(settings, broker=self.broker, in_flight=lambda: self.in_flight)

    def sent(self) -> list[dict[str, Any]]:
        return [json.loads(event.body) for event in self.broker.events]


@pytest.fixture
def rig(make_settings: MakeSettings) -> Rig:
    return Rig(make_settings, MSTC_REPLICA_HEARTBEAT_SECONDS="2")


def test_a_tick_publishes_one_heartbeat_with_the_replicas_counts(rig: Rig) -> None:
    rig.in_flight = 4
    rig.beats.tick()
    rig.broker.run_pending()

    [event] = rig.broker.events
    assert (event.exchange, event.message_type, event.persistent) == (
        "amq.topic",
        HEARTBEAT_TYPE,
        False,
    )
    assert event.routing_key == routing_key("heartbeat", rig.beats.beat.replica)
    body = json.loads(event.body)
    assert body["event"] == "heartbeat"
    assert (body["inFlight"], body["capacity"], body["intervalSeconds"]) == (4, 7, 2)
    assert body["version"] == __version__


def test_ticks_while_one_heartbeat_waits_do_not_queue_more(rig: Rig) -> None:
    for _ in range(5):
        rig.beats.tick()  # the connection's thread is busy: nothing runs meanwhile
    assert rig.broker.run_pending() == 1
    rig.beats.tick()
    assert rig.broker.run_pending() == 1
    assert len(rig.broker.events) == 2


def test_no_heartbeat_is_handed_over_while_the_broker_is_down(rig: Rig) -> None:
    rig.broker.connected.clear()
    rig.beats.tick()
    rig.broker.connected.set()
    assert rig.broker.run_pending() == 0
    rig.beats.tick()
    rig.broker.run_pending()
    assert len(rig.broker.events) == 1


def test_a_heartbeat_that_cannot_be_published_is_dropped(rig: Rig) -> None:
    rig.broker.fail_events = True
    rig.beats.tick()
    rig.broker.run_pending()  # does not raise: the broker thread would otherwise redo it
    rig.broker.fail_events = False
    rig.beats.tick()
    rig.broker.run_pending()
    assert len(rig.broker.events) == 1  # the next one, not the lost one as well


def test_stopping_is_sent_once_and_no_heartbeat_after_it(rig: Rig) -> None:
    rig.beats.tick()  # handed over before stopping: goes out first
    rig.beats.stopping()
    rig.beats.stopping()
    rig.beats.tick()
    rig.broker.run_pending()
    rig.beats.tick()
    rig.broker.run_pending()

    assert [body["event"] for body in rig.sent()] == ["heartbeat", "stopping"]
    assert rig.broker.events[1].routing_key == routing_key("stopping", rig.beats.beat.replica)
    assert rig.beats.announced.is_set()


def test_a_stopping_message_that_meets_an_outage_is_owed_to_the_next_connection(
    rig: Rig,
) -> None:
    rig.broker.fail_events = True
    rig.beats.stopping()
    with pytest.raises(BrokerUnavailable):  # the real broker keeps it for the next connection
        rig.broker.run_pending()
    assert not rig.beats.announced.is_set()


def test_an_empty_events_exchange_turns_heartbeats_off(make_settings: MakeSettings) -> None:
    off = Rig(make_settings, MSTC_EVENTS_EXCHANGE="")
    assert not off.beats.enabled  # (else `run` below would tick for ever)
    off.beats.run(threading.Event())  # returns at once
    off.beats.tick()
    off.beats.stopping()
    off.broker.run_pending()
    assert off.broker.events == []
    assert off.beats.announced.is_set()  # nothing to wait for at shutdown


def test_heartbeat_settings_defaults(make_settings: MakeSettings) -> None:
    settings = make_settings()
    assert (settings.events_exchange, settings.replica_heartbeat_seconds) == ("amq.topic", 5)
    assert settings.heartbeat_seconds == 30  # the AMQP heartbeat is another setting


def test_a_heartbeat_handed_over_in_a_race_with_stopping_is_not_sent(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    def stopping_meanwhile() -> bool:  # SIGTERM lands between the ticker's check and its submit
        rig.beats.stopping()
        return True

    monkeypatch.setattr(rig.broker.connected, "is_set", stopping_meanwhile)
    rig.beats.tick()
    rig.broker.run_pending()
    assert [body["event"] for body in rig.sent()] == ["stopping"]
