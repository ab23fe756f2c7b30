"""Lifecycle events on the real stack, heard by a real MQTT client through RabbitMQ's plugin.

What a subscriber who is not the submitter sees: `accepted`, `running` and the final event of
a Job under `mstc/job/<phase>/<state>/<name>`, all final events under `mstc/job/final/#`, and
with MSTC_EVENTS_JOB_LISTENER_TOPIC the completion under the MQTT job listener's topic.
The exact rules are tests/unit/test_service_events.py's; crashes and outages are
tests/faults/test_event_faults.py's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client as k8s

from tests.support.events import Event, MqttEvents
from tests.support.stack import StackInfo
from tests.support.worker import AmqpClient
from tests.worker.conftest import MakeWorker
from tests.worker.test_service import pod_fate, request, wait_released

pytestmark = pytest.mark.stack


@pytest.fixture
def name() -> str:
    return f"events-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def mqtt_events(stack: StackInfo, name: str) -> Iterator[MqttEvents]:
    """A subscriber of everything about `name`, and of the job listener's completion of it."""
    subscriber = MqttEvents(stack, [
        f"mstc/job/+/+/{name}",
        f"services/mqtt_job_listener/job_complete/{name}",
    ])  # fmt: skip
    yield subscriber
    subscriber.close()


@pytest.fixture
def all_finals(stack: StackInfo) -> Iterator[MqttEvents]:
    """Another client, subscribed to every final event."""
    subscriber = MqttEvents(stack, ["mstc/job/final/#"])
    yield subscriber
    subscriber.close()


def about(events: list[Event], name: str) -> list[Event]:
    return [(topic, body) for topic, body in events if body.get("requestedName") == name]


def test_an_mqtt_subscriber_hears_accepted_running_and_succeeded_of_a_job(
    make_worker: MakeWorker, mqtt_events: MqttEvents, all_finals: MqttEvents,
    client: AmqpClient, bucket: str, work_queue: str, api_client: k8s.ApiClient,
    namespace: str, name: str,
) -> None:  # fmt: skip
    make_worker(MSTC_EVENTS_JOB_LISTENER_TOPIC="true")
    cid = client.send(request(bucket, jobName=name, **pod_fate(run_for="2s")), queue=work_queue)
    reply = client.wait(cid, timeout=120)
    assert reply["status"] == "succeeded"
    wait_released(api_client, namespace, reply["jobName"])

    heard = mqtt_events.wait_for(lambda got: len(about(got, name)) >= 4)
    topics = [topic for topic, _ in about(heard, name)]
    assert topics[:2] == [f"mstc/job/progress/accepted/{name}", f"mstc/job/progress/running/{name}"]
    # The same final event, under its own topic and the job listener's (published in turn).
    assert topics[2:] == [
        f"mstc/job/final/succeeded/{name}",
        f"services/mqtt_job_listener/job_complete/{name}",
    ]
    bodies = {body["event"]: body for _, body in about(heard, name)}
    final = bodies["succeeded"]
    assert {key: final[key] for key in reply} == reply  # every field of the reply, as it is
    assert final["correlationId"] == cid
    assert bodies["accepted"]["request"]["jobName"] == name
    assert {b["jobName"] for b in bodies.values()} == {reply["jobName"]}
    # All final events: this one is among them, once.
    finals = all_finals.wait_for(lambda got: len(about(got, name)) >= 1)
    assert about(finals, name) == [(f"mstc/job/final/succeeded/{name}", final)]


def test_a_rejected_request_is_a_final_event_without_a_job(
    make_worker: MakeWorker, mqtt_events: MqttEvents, client: AmqpClient, work_queue: str,
    name: str,
) -> None:  # fmt: skip
    make_worker()
    cid = client.send({"jobName": name}, queue=work_queue)
    assert client.wait(cid, timeout=60)["status"] == "rejected"
    heard = mqtt_events.wait_for(lambda got: len(about(got, name)) >= 1)
    [(topic, event)] = about(heard, name)
    assert topic == f"mstc/job/final/rejected/{name}"
    assert (event["jobName"], event["status"], event["correlationId"]) == (None, "rejected", cid)
