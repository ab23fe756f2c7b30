"""The service's rules for lifecycle events, exactly, on the in-memory broker and pool.

Which event goes out on which path, in which order with the reply, what an outage does, and
what a Job finished again says; the wire format itself is tests/unit/test_events.py's, and
the real broker's and MQTT's side tests/worker/test_events.py's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from mstc_worker.messages import JobProgress, ReleaseJob
from mstc_worker.ports import BrokerUnavailable
from mstc_worker.protocol import Outcome, Status
from tests.support.fakes import facts_of, job_name
from tests.support.service_rig import ServiceRig
from tests.unit.conftest import MakeBody, MakeSettings

CLIENT = "amq.gen-client"
MakeRig = Callable[..., ServiceRig]


@pytest.fixture
def make_rig(make_settings: MakeSettings) -> MakeRig:
    def make(**env: str) -> ServiceRig:
        return ServiceRig(make_settings(**{"MSTC_PROCESSES": "2", **env}))

    return make


@pytest.fixture
def rig(make_rig: MakeRig) -> ServiceRig:
    return make_rig(MSTC_REQUEST_LABEL_PREFIXES="example.com/")


def succeeded(name: str) -> Outcome:
    return Outcome(status=Status.SUCCEEDED, job_name=name, namespace="mstc-dev", exit_code=0)


def keys(rig: ServiceRig) -> list[str]:
    return [event.routing_key for event in rig.broker.events]


def bodies(rig: ServiceRig) -> list[dict[str, Any]]:
    return [json.loads(event.body) for event in rig.broker.events]


def started(rig: ServiceRig, make_body: MakeBody, **fields: Any) -> tuple[Any, str]:
    rig.request(make_body(**fields), reply_to=CLIENT, correlation_id="1")
    [start] = rig.pool.starts()
    name = rig.pool.accept(start)
    rig.settle()
    return start, name


def test_a_job_says_accepted_running_then_its_final_event_before_its_reply(
    rig: ServiceRig, make_body: MakeBody
) -> None:
    start, name = started(rig, make_body, labels={"example.com/team": "a"})
    worker = rig.pool.worker_of(start)
    rig.pool.say(JobProgress(worker, name, "running", CLIENT, "1", facts_of(start)))
    rig.settle()
    rig.pool.finish(start, succeeded(name))
    rig.settle()

    assert keys(rig) == [
        "mstc.job.progress.accepted.test-job",
        "mstc.job.progress.running.test-job",
        "mstc.job.final.succeeded.test-job",
    ]
    accepted, running, final = bodies(rig)
    assert accepted["request"] == json.loads(make_body(labels={"example.com/team": "a"}))
    assert (accepted["jobName"], running["jobName"], final["jobName"]) == (name, name, name)
    assert final["labels"] == {"example.com/team": "a"}
    assert final["requestId"] == start.request_id
    assert [e.message_id for e in rig.broker.events] == [
        f"{start.request_id}:{state}" for state in ("accepted", "running", "succeeded")
    ]
    # Owed like the reply, and before it; the Job is let go after both, told to mark it.
    assert rig.events("event", "publish", "send")[-3:] == [
        ("event", "mstc.job.final.succeeded.test-job"),
        ("publish", CLIENT, "1"),
        ("send", rig.pool.worker_of(start), ReleaseJob(name, mark_final_event=True)),
    ]
    # No progress message to a client that did not ask for them.
    assert len(rig.replies_to(CLIENT)) == 1


def test_a_final_event_not_confirmed_holds_back_the_reply_and_is_retried_once(
    rig: ServiceRig, make_body: MakeBody
) -> None:
    start, name = started(rig, make_body)
    rig.broker.refuse_events = 1
    rig.pool.finish(start, succeeded(name))
    with pytest.raises(BrokerUnavailable):
        rig.settle()
    assert rig.replies_to(CLIENT) == []
    assert not any(isinstance(m, ReleaseJob) for _, m in rig.pool.sent)

    rig.settle()  # the next connection
    assert keys(rig)[-1] == "mstc.job.final.succeeded.test-job"
    assert keys(rig).count("mstc.job.final.succeeded.test-job") == 1
    assert len(rig.replies_to(CLIENT)) == 1


def test_a_reply_not_confirmed_after_its_event_does_not_repeat_the_event(
    rig: ServiceRig, make_body: MakeBody
) -> None:
    start, name = started(rig, make_body)
    rig.broker.refuse_publishes = 1
    rig.pool.finish(start, succeeded(name))
    with pytest.raises(BrokerUnavailable):
        rig.settle()
    rig.settle()
    assert keys(rig).count("mstc.job.final.succeeded.test-job") == 1
    assert len(rig.replies_to(CLIENT)) == 1


def test_a_job_finished_again_after_its_event_went_out_replies_without_it(
    rig: ServiceRig, make_body: MakeBody
) -> None:
    start, name = started(rig, make_body)
    rig.pool.finish(start, succeeded(name), final_event_sent=True)
    rig.settle()
    assert [k for k in keys(rig) if ".final." in k] == []
    assert len(rig.replies_to(CLIENT)) == 1
    assert rig.pool.sent[-1] == (rig.pool.worker_of(start), ReleaseJob(name))


def test_a_rejected_request_says_rejected_with_what_its_body_says(rig: ServiceRig) -> None:
    rig.request(b'{"jobName": "no image", "labels": {"a": "b"}}', reply_to=CLIENT,
                correlation_id="7")  # fmt: skip
    assert keys(rig) == ["mstc.job.final.rejected.no_image"]
    [event] = bodies(rig)
    assert (event["requestedName"], event["labels"]) == ("no image", {"a": "b"})
    assert event["jobName"] is None
    assert event["correlationId"] == "7"
    assert rig.events("event", "publish")[0][0] == "event"


def test_a_request_that_failed_to_start_says_error(rig: ServiceRig, make_body: MakeBody) -> None:
    rig.request(make_body(), reply_to=CLIENT, correlation_id="1")
    [start] = rig.pool.starts()
    failed = Outcome(status=Status.ERROR, namespace="mstc-dev", error="no", error_type="X")
    rig.pool.fail_start(start, failed, transient=False)
    rig.settle()
    assert keys(rig) == ["mstc.job.final.error.test-job"]
    assert bodies(rig)[0]["image"] == "mstc/python-test:latest"


def test_a_request_answered_again_from_its_record_says_no_final_event_twice(
    rig: ServiceRig, make_body: MakeBody
) -> None:
    rig.request(make_body(), reply_to=CLIENT, correlation_id="1")
    [start] = rig.pool.starts()
    rig.pool.fail_start(start, succeeded(job_name(start)), transient=False, again=True)
    rig.settle()
    assert keys(rig) == []
    assert len(rig.replies_to(CLIENT)) == 1


def test_a_request_that_crashed_a_process_twice_says_error(
    rig: ServiceRig, make_body: MakeBody
) -> None:
    rig.request(make_body(), reply_to=CLIENT, correlation_id="1")
    for attempt in (0, 1):
        start = rig.pool.starts()[attempt]
        rig.pool.receive(start)
        rig.pool.die(rig.pool.worker_of(start), exit_code=-9)
        rig.settle()
    assert keys(rig) == ["mstc.job.final.error.test-job"]
    assert bodies(rig)[0]["reason"] == "WorkerCrashed"


def test_the_job_listener_topic_carries_completions_only_when_asked(
    make_rig: MakeRig, make_body: MakeBody
) -> None:
    rig = make_rig(MSTC_EVENTS_JOB_LISTENER_TOPIC="true")
    start, name = started(rig, make_body)
    rig.pool.finish(start, succeeded(name))
    rig.settle()
    assert keys(rig)[-2:] == [
        "mstc.job.final.succeeded.test-job",
        "services.mqtt_job_listener.job_complete.test-job",
    ]
    assert rig.broker.events[-1].body == rig.broker.events[-2].body
    failed = Outcome(status=Status.FAILED, job_name="x", namespace="mstc-dev", exit_code=1)
    rig.request(make_body(jobName="other"), reply_to=CLIENT, correlation_id="2")
    other = rig.pool.starts()[-1]
    rig.pool.accept(other)
    rig.pool.finish(other, failed)
    rig.settle()
    assert keys(rig)[-1] == "mstc.job.final.failed.other"  # an error is no completion


def test_an_empty_events_exchange_turns_events_off(make_rig: MakeRig, make_body: MakeBody) -> None:
    rig = make_rig(MSTC_EVENTS_EXCHANGE="")
    start, name = started(rig, make_body)
    rig.pool.finish(start, succeeded(name))
    rig.settle()
    assert rig.broker.events == []
    assert len(rig.replies_to(CLIENT)) == 1
    assert rig.pool.sent[-1] == (rig.pool.worker_of(start), ReleaseJob(name))


def test_events_go_to_the_events_exchange(make_rig: MakeRig, make_body: MakeBody) -> None:
    rig = make_rig(MSTC_EVENTS_EXCHANGE="mstc.events")
    started(rig, make_body)
    assert {event.exchange for event in rig.broker.events} == {"mstc.events"}


@pytest.mark.parametrize(
    "body",
    [b"[" * 5000 + b"]" * 5000, json.dumps({"jobName": "big", "image": "x" * 70_000}).encode()],
    ids=["nested-too-deep", "oversized"],
)
def test_a_hostile_rejected_body_is_still_announced_and_replied(
    rig: ServiceRig, body: bytes
) -> None:
    """What the body says is not read from these; the rejection goes out all the same."""
    rig.request(body, reply_to=CLIENT, correlation_id="9")
    assert keys(rig) == ["mstc.job.final.rejected._"]
    [event] = bodies(rig)
    assert (event["requestedName"], event["image"]) == (None, None)
    [reply] = rig.replies_to(CLIENT)
    assert reply["status"] == "rejected"
