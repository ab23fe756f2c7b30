"""The trigger engine's rules on a real SQLite store, with a recording stand-in for the
worker's broker (the submitter's own boundary is tests/flow/test_engine_stack.py's).

What is checked: a redelivered message fires nothing twice; every matching entry fires;
concurrency allow/skip/replace; max_in_flight holds a firing pending until a final event frees
a slot; a template that fails, or a submit that keeps failing, parks the firing with why; one
of two replicas wins a claim, and a stale claim is taken over; final events finish firings;
an entry's latest firing (the dashboard's "last fired") is its newest.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from mstc_client.catalog import Catalog, Concurrency, Entry, Trigger
from mstc_flow.broker import InboxMessage
from mstc_flow.errors import NotFound, TransientError
from mstc_flow.settings import FlowSettings, load_settings
from mstc_flow.store.db import Database
from mstc_flow.store.firings import Firings
from mstc_flow.triggers import Triggers

TOKEN = "t" * 16


class RecordingSubmitter:
    def __init__(self, failures: int = 0) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.cancelled: list[str] = []
        self.failures = failures

    def submit(self, correlation_id: str, request: dict[str, Any]) -> None:
        if self.failures:
            self.failures -= 1
            raise TransientError("broker down")
        self.sent.append((correlation_id, request))

    def cancel(self, job_name: str, reason: str, timeout: float = 30.0) -> dict[str, Any]:
        self.cancelled.append(job_name)
        return {"status": "cancelling"}


@pytest.fixture
def settings() -> FlowSettings:
    return load_settings({
        "MSTC_FLOW_ADMIN_TOKEN": TOKEN, "MSTC_FLOW_SUBMIT_BACKOFF_SECONDS": "0",
        "MSTC_FLOW_SUBMIT_ATTEMPTS": "3", "MSTC_FLOW_REPLICA": "r1",
    })  # fmt: skip


@pytest.fixture
def database(tmp_path: Path) -> Database:
    return Database.open(f"sqlite:///{tmp_path / 'flow.sqlite3'}")


@pytest.fixture
def firings(database: Database) -> Firings:
    return Firings(database)


def entry(name: str, topic: str | None = "lab/run", **fields: Any) -> Entry:
    trigger = Trigger.of(topic) if topic else None
    request = {"image": "example.invalid/x:1", "jobName": name}
    return Entry(name, trigger, fields.pop("request", request), **fields)


def engine(
    settings: FlowSettings, firings: Firings, submitter: RecordingSubmitter, *entries: Entry
) -> Triggers:
    triggers = Triggers(settings, firings, submitter)
    triggers.set_catalog(Catalog(tuple(entries), "test", "d"))
    return triggers


def message(
    key: str = "lab.run", body: bytes = b'{"n": 1}', mid: str | None = "m-1"
) -> InboxMessage:
    return InboxMessage(key, body, mid, False, None)


def drain(triggers: Triggers) -> None:
    """Everything the submitting thread would do now, on this thread."""
    triggers.dispatcher.scan()


def final(firing_id: str, state: str = "succeeded", name: str = "a") -> InboxMessage:
    body = {
        "event": state,
        "eventId": f"r-{firing_id}:{state}",
        "requestId": f"r-{firing_id}",
        "correlationId": f"flow:{firing_id}",
        "jobName": f"{name}-x",
        "requestedName": name,
    }
    return message(f"mstc.job.final.{state}.{name}", json.dumps(body).encode(), f"r:{state}")


def test_a_redelivered_message_fires_nothing_twice(
    settings: FlowSettings, firings: Firings
) -> None:
    submitter = RecordingSubmitter()
    triggers = engine(settings, firings, submitter, entry("a"))
    triggers.on_message(message())
    triggers.on_message(InboxMessage("lab.run", b'{"n": 1}', "m-1", True, None))
    drain(triggers)
    assert len(submitter.sent) == 1
    correlation_id, request = submitter.sent[0]
    assert correlation_id.startswith("flow:")
    assert request["env"]["MSTC_TRIGGER_PAYLOAD"] == '{"n": 1}'
    assert request["env"]["MSTC_TRIGGER_TOPIC"] == "lab/run"


def test_every_matching_entry_fires(settings: FlowSettings, firings: Firings) -> None:
    submitter = RecordingSubmitter()
    triggers = engine(settings, firings, submitter, entry("a"), entry("b", "lab/+"),
                      entry("c", "other/x"))  # fmt: skip
    triggers.on_message(message())
    drain(triggers)
    assert sorted(r["jobName"] for _c, r in submitter.sent) == ["a", "b"]


def test_skip_drops_a_firing_while_the_last_one_runs(
    settings: FlowSettings, firings: Firings
) -> None:
    submitter = RecordingSubmitter()
    triggers = engine(settings, firings, submitter, entry("a", concurrency=Concurrency.SKIP))
    triggers.on_message(message(mid="m-1"))
    drain(triggers)
    triggers.on_message(message(mid="m-2"))
    drain(triggers)
    assert len(submitter.sent) == 1
    (skipped,) = firings.in_state("skipped")
    assert "still runs" in (skipped.last_error or "")


def test_replace_cancels_the_running_job_then_submits(
    settings: FlowSettings, firings: Firings
) -> None:
    submitter = RecordingSubmitter()
    triggers = engine(settings, firings, submitter, entry("a", concurrency=Concurrency.REPLACE))
    triggers.on_message(message(mid="m-1"))
    drain(triggers)
    first = submitter.sent[0][0].removeprefix("flow:")
    accepted = {"event": "accepted", "requestId": "r1", "correlationId": f"flow:{first}",
                "jobName": "a-made", "eventId": "r1:accepted"}  # fmt: skip
    triggers.on_message(message("mstc.job.progress.accepted.a", json.dumps(accepted).encode()))
    triggers.on_message(message(mid="m-2"))
    drain(triggers)
    assert submitter.cancelled == ["a-made"]
    assert len(submitter.sent) == 2


def test_max_in_flight_holds_a_firing_until_a_final_event_frees_a_slot(
    settings: FlowSettings, firings: Firings
) -> None:
    submitter = RecordingSubmitter()
    triggers = engine(settings, firings, submitter, entry("a", max_in_flight=1))
    triggers.on_message(message(mid="m-1"))
    triggers.on_message(message(mid="m-2"))
    drain(triggers)
    assert len(submitter.sent) == 1
    assert len(firings.in_state("pending")) == 1
    triggers.on_message(final(submitter.sent[0][0].removeprefix("flow:")))
    drain(triggers)
    assert len(submitter.sent) == 2
    assert [f.job_state for f in firings.in_state("finished")] == ["succeeded"]


def test_a_failing_template_parks_the_firing_with_the_reason(
    settings: FlowSettings, firings: Firings
) -> None:
    submitter = RecordingSubmitter()
    bad = entry("a", request={"image": "x", "jobName": "{{ payload.missing }}"})
    triggers = engine(settings, firings, submitter, bad)
    triggers.on_message(message())
    drain(triggers)
    (parked,) = firings.in_state("parked")
    assert "missing" in (parked.last_error or "")
    assert submitter.sent == []


def test_a_submit_that_keeps_failing_is_parked_after_the_attempts(
    settings: FlowSettings, firings: Firings
) -> None:
    submitter = RecordingSubmitter(failures=3)
    triggers = engine(settings, firings, submitter, entry("a"))
    triggers.on_message(message())
    drain(triggers)
    (parked,) = firings.in_state("parked")
    assert "after 3 attempts" in (parked.last_error or "")


def test_a_submit_that_fails_fewer_times_than_the_attempts_gets_through(
    settings: FlowSettings, firings: Firings
) -> None:
    submitter = RecordingSubmitter(failures=2)
    triggers = engine(settings, firings, submitter, entry("a"))
    triggers.on_message(message())
    drain(triggers)
    assert len(submitter.sent) == 1
    assert len(firings.in_state("submitted")) == 1


def test_one_of_two_replicas_wins_a_claim_and_a_stale_claim_is_taken_over(
    settings: FlowSettings, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    one, two = Firings(Database.open(url)), Firings(Database.open(url))
    one.add(firing_id="f" * 32, entry="a", kind="trigger", topic="t", source_key="k",
            payload=b"", request={"image": "x"})  # fmt: skip
    live = timedelta(minutes=1)
    assert one.claim("f" * 32, "r1", live)
    assert not two.claim("f" * 32, "r2", live)
    assert two.claim("f" * 32, "r2", timedelta(0))  # r1's claim counts as stale now


def test_fire_by_hand_and_retry_link_the_firings(settings: FlowSettings, firings: Firings) -> None:
    submitter = RecordingSubmitter()
    triggers = engine(settings, firings, submitter, entry("a", None))
    fired = triggers.fire("a", b"hand")
    with pytest.raises(NotFound):
        triggers.fire("nope", b"")
    retried = triggers.retry("req-1", {"image": "x", "jobName": "a"})
    drain(triggers)
    assert (fired.kind, retried.kind) == ("manual", "retry")
    assert firings.get(retried.id).retry_of == "req-1"  # type: ignore[union-attr]
    assert len(submitter.sent) == 2


def test_the_latest_firing_of_an_entry_is_its_newest(
    settings: FlowSettings, firings: Firings
) -> None:
    triggers = engine(settings, firings, RecordingSubmitter(), entry("a", None), entry("b", None))
    triggers.fire("a", b"1")
    second = triggers.fire("a", b"2")
    only_b = triggers.fire("b", b"")
    assert firings.latest("a").id == second.id  # type: ignore[union-attr]
    assert firings.latest("b").id == only_b.id  # type: ignore[union-attr]
    assert firings.latest("c") is None


def test_a_final_event_of_a_request_the_flow_did_not_make_changes_nothing(
    settings: FlowSettings, firings: Firings
) -> None:
    submitter = RecordingSubmitter()
    triggers = engine(settings, firings, submitter, entry("a"))
    triggers.on_message(message())
    drain(triggers)
    body = {"event": "succeeded", "eventId": "x:succeeded", "correlationId": "someone-else"}
    triggers.on_message(message("mstc.job.final.succeeded.a", json.dumps(body).encode()))
    assert len(firings.in_state("submitted")) == 1


def test_mstc_flow_refuses_to_start_without_its_admin_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mstc_flow.__main__ import main  # noqa: PLC0415

    monkeypatch.delenv("MSTC_FLOW_ADMIN_TOKEN", raising=False)
    assert main() == 2
    assert "MSTC_FLOW_ADMIN_TOKEN" in capsys.readouterr().err


def test_two_replicas_racing_for_fifty_firings_claim_each_exactly_once(tmp_path: Path) -> None:
    """Two stores (as two replicas have), two threads claiming the same firings at once.

    MSTC_TEST_FLOW_STORE_URL runs it on an empty PostgreSQL database instead of SQLite.
    """
    url = os.environ.get("MSTC_TEST_FLOW_STORE_URL") or f"sqlite:///{tmp_path / 'race.sqlite3'}"
    one, two = Firings(Database.open(url)), Firings(Database.open(url))
    tag = uuid.uuid4().hex[:8]
    ids = [uuid.uuid4().hex for _ in range(50)]
    for firing_id in ids:
        one.add(firing_id=firing_id, entry="race", kind="trigger", topic="t",
                source_key=f"{tag}-{firing_id}", payload=b"", request={})  # fmt: skip
    start = threading.Barrier(2)
    won: dict[str, list[str]] = {"r1": [], "r2": []}

    def race(firings: Firings, replica: str) -> None:
        start.wait()
        won[replica] = [i for i in ids if firings.claim(i, replica, timedelta(minutes=1))]

    threads = [
        threading.Thread(target=race, args=(store, r)) for store, r in ((one, "r1"), (two, "r2"))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won["r1"] + won["r2"]) == sorted(ids)
