"""The trigger engine against the real stack: RabbitMQ (AMQP and its MQTT plugin), a real worker
on the KWOK cluster, and `mstc-flow` processes (tests/flow/engine_support.py) with a catalog given
by hand. Each test has its own namespace, work queue, inbox and reply queue, and store (an SQLite
file; the PostgreSQL database named by MSTC_TEST_FLOW_STORE_URL when set).

What a user sees: an AMQP or an MQTT publish on an entry's topic makes a Job whose env carries
the payload; two entries on one topic both fire; an entry chained on another's completion (the
events topic, or the MQTT job listener's) runs after it with its final event as payload; a flow
killed after committing a message's firings but before acking it makes no second Job once
restarted; two flow replicas sharing one store fire each trigger once. The exact rules
(skip, replace, max_in_flight, parking) are tests/flow/test_engine_rules.py's.
"""

from __future__ import annotations

import json
import os
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
import pika
import pytest
import sqlalchemy
from kubernetes import client as k8s
from paho.mqtt.enums import CallbackAPIVersion

from tests.flow.engine_support import FlowProcess, entry_json
from tests.support.events import MqttEvents
from tests.support.kube import watch_until
from tests.support.stack import StackInfo
from tests.worker.conftest import (  # noqa: F401  (fixtures, found by pytest by name)
    MakeWorker,
    bucket,
    make_worker,
    minio,
    minio_secret,
    work_queue,
)

pytestmark = pytest.mark.stack

MakeFlow = Callable[..., FlowProcess]


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    """This test's store: an SQLite file, or the PostgreSQL in MSTC_TEST_FLOW_STORE_URL (entry
    names are unique per test, so tests can share that database)."""
    return os.environ.get("MSTC_TEST_FLOW_STORE_URL") or f"sqlite:///{tmp_path / 'flow.sqlite3'}"


@pytest.fixture
def make_flow(
    stack: StackInfo,
    work_queue: str,  # noqa: F811
    store_url: str,
    tmp_path: Path,
) -> Iterator[MakeFlow]:
    """Flow replicas sharing this test's inbox, reply queue and store; stopped afterwards."""
    tag = uuid.uuid4().hex[:8]
    env = {
        "MSTC_WORK_QUEUE": work_queue,
        "MSTC_FLOW_STORE_URL": store_url,
        "MSTC_FLOW_INBOX_QUEUE": f"test.flow.inbox.{tag}",
        "MSTC_FLOW_REPLY_QUEUE": f"test.flow.replies.{tag}",
        "MSTC_FLOW_PENDING_SCAN_SECONDS": "1",
        "MSTC_FLOW_CLAIM_STALE_SECONDS": "30",
    }
    flows: list[FlowProcess] = []

    def make(entries: list[dict[str, Any]], *, start: bool = True, **extra: str) -> FlowProcess:
        log_dir = tmp_path / f"flow-{len(flows)}"
        log_dir.mkdir()
        flow = FlowProcess(stack, {**env, "MSTC_FLOW_REPLICA": f"flow-{len(flows)}", **extra},
                           entries, log_dir)  # fmt: skip
        flows.append(flow)
        if start:
            flow.start()
        return flow

    yield make
    for flow in flows:
        flow.stop()
    conn = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    channel = conn.channel()
    channel.queue_delete(env["MSTC_FLOW_INBOX_QUEUE"])
    channel.queue_delete(env["MSTC_FLOW_REPLY_QUEUE"])
    conn.close()


@pytest.fixture
def worker_env() -> dict[str, str]:
    return {"MSTC_JOB_TTL_SECONDS": "600"}  # the Jobs stay to be counted


def template(bucket: str, name: str) -> dict[str, Any]:  # noqa: F811
    return {"image": "example.invalid/job:1", "jobName": name, "inputBucket": bucket,
            "prefix": "run-1"}  # fmt: skip


def publish_amqp(stack: StackInfo, key: str, body: bytes, message_id: str | None = None) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    channel = conn.channel()
    channel.confirm_delivery()
    props = pika.BasicProperties(message_id=message_id, delivery_mode=2)
    channel.basic_publish("amq.topic", key, body, props, mandatory=True)
    conn.close()


def publish_mqtt(stack: StackInfo, topic: str, body: bytes) -> None:
    url = urlsplit(stack.amqp_url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
    client.username_pw_set(unquote(url.username or ""), unquote(url.password or ""))
    client.connect("127.0.0.1", int(stack.env["MSTC_MQTT_PORT"]))
    client.loop_start()
    client.publish(topic, body, qos=1).wait_for_publish(30)
    client.loop_stop()
    client.disconnect()


def job_env(job: k8s.V1Job) -> dict[str, str]:
    return {e.name: e.value for e in job.spec.template.spec.containers[0].env or []}


def wait_job(api_client: k8s.ApiClient, namespace: str, entry: str, **env: str) -> k8s.V1Job:
    """The first Job made for `entry` (and with `env`, if given)."""

    def wanted(_kind: str, job: k8s.V1Job) -> bool:
        values = job_env(job)
        return values.get("MSTC_FLOW_ENTRY") == entry and all(
            values.get(k) == v for k, v in env.items()
        )

    job: k8s.V1Job = watch_until(k8s.BatchV1Api(api_client).list_namespaced_job, wanted,
                                 timeout=120, namespace=namespace)  # fmt: skip
    return job


def jobs_of(api_client: k8s.ApiClient, namespace: str, entry: str) -> list[k8s.V1Job]:
    jobs = k8s.BatchV1Api(api_client).list_namespaced_job(namespace).items
    return [job for job in jobs if job_env(job).get("MSTC_FLOW_ENTRY") == entry]


def firings_of(store_url: str, entry: str) -> list[tuple[str, str]]:
    engine = sqlalchemy.create_engine(store_url)
    try:
        with engine.connect() as db:
            query = sqlalchemy.text("SELECT id, state FROM firings WHERE entry = :entry")
            return [(str(a), str(b)) for a, b in db.execute(query, {"entry": entry})]
    finally:
        engine.dispose()


def name() -> str:
    return f"e-{uuid.uuid4().hex[:8]}"


def test_an_amqp_publish_fires_its_entry_and_the_payload_reaches_the_job(
    make_worker: MakeWorker, make_flow: MakeFlow, stack: StackInfo, bucket: str,  # noqa: F811
    api_client: k8s.ApiClient, namespace: str, worker_env: dict[str, str],
) -> None:  # fmt: skip
    make_worker(**worker_env)
    a = name()
    flow = make_flow([entry_json(a, f"lab/{a}/start", template(bucket, a))])
    publish_amqp(stack, f"lab.{a}.start", b'{"sample": 7}', message_id="msg-1")
    env = job_env(wait_job(api_client, namespace, a))
    assert env["MSTC_TRIGGER_PAYLOAD"] == '{"sample": 7}'
    assert env["MSTC_TRIGGER_TOPIC"] == f"lab/{a}/start"
    assert len(env["MSTC_FLOW_FIRING"]) == 32
    # The flow's metrics say so too: the trigger message counted, its firing in the store.
    metrics = metric_values(flow.url)
    assert metrics['mstc_flow_inbox_messages_total{kind="other"}'] >= 1
    assert sum(v for k, v in metrics.items() if k.startswith("mstc_flow_firings{")) >= 1
    assert metrics["mstc_flow_catalog_entries"] == 1
    assert metrics["mstc_flow_inbox_connected"] == 1


def metric_values(url: str) -> dict[str, float]:
    """The flow's /metrics as {"name{labels}": value} (no token: probes and scrapers read it)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    pairs = (line.rsplit(" ", 1) for line in text.splitlines() if line and line[0] != "#")
    return {key: float(value) for key, value in pairs}


def test_an_mqtt_publish_fires_both_entries_on_its_topic(
    make_worker: MakeWorker, make_flow: MakeFlow, stack: StackInfo, bucket: str,  # noqa: F811
    api_client: k8s.ApiClient, namespace: str, worker_env: dict[str, str],
) -> None:  # fmt: skip
    make_worker(**worker_env)
    a, b = name(), name()
    topic = f"experiments/{a}/init"
    make_flow([entry_json(a, topic, template(bucket, a)),
               entry_json(b, "experiments/+/init", template(bucket, b))])  # fmt: skip
    publish_mqtt(stack, topic, b"hello from mqtt")
    for entry in (a, b):
        env = job_env(wait_job(api_client, namespace, entry))
        assert env["MSTC_TRIGGER_PAYLOAD"] == "hello from mqtt"
        assert env["MSTC_TRIGGER_TOPIC"] == topic


@pytest.mark.parametrize("chain_topic", [
    "mstc/job/final/succeeded/{a}",
    "services/mqtt_job_listener/job_complete/{a}",
])  # fmt: skip
def test_an_entry_chained_on_another_runs_after_it_with_its_final_event(
    make_worker: MakeWorker, make_flow: MakeFlow, stack: StackInfo, bucket: str,  # noqa: F811
    api_client: k8s.ApiClient, namespace: str, worker_env: dict[str, str], chain_topic: str,
) -> None:  # fmt: skip
    make_worker(MSTC_EVENTS_JOB_LISTENER_TOPIC="true", **worker_env)
    a, b = name(), name()
    make_flow([entry_json(a, f"lab/{a}/go", template(bucket, a)),
               entry_json(b, chain_topic.format(a=a), template(bucket, b))])  # fmt: skip
    publish_amqp(stack, f"lab.{a}.go", b"first", message_id=f"go-{a}")
    first = wait_job(api_client, namespace, a)
    payload = json.loads(job_env(wait_job(api_client, namespace, b))["MSTC_TRIGGER_PAYLOAD"])
    assert payload["event"] == "succeeded"
    assert payload["requestedName"] == a
    assert payload["jobName"] == first.metadata.name
    assert payload["correlationId"] == f"flow:{job_env(first)['MSTC_FLOW_FIRING']}"


def test_a_flow_killed_after_committing_before_acking_makes_no_second_job(
    make_worker: MakeWorker, make_flow: MakeFlow, stack: StackInfo, bucket: str,  # noqa: F811
    api_client: k8s.ApiClient, namespace: str, worker_env: dict[str, str], store_url: str,
) -> None:  # fmt: skip
    make_worker(**worker_env)
    a, marker = name(), name()
    flow = make_flow([entry_json(a, f"lab/{a}", template(bucket, a)),
                      entry_json(marker, f"lab/{marker}", template(bucket, marker))])  # fmt: skip
    assert flow.stop() == 0  # SIGTERM: a clean stop
    flow.start(MSTC_TEST_KILL_AFTER_KEY=f"lab.{a}")
    publish_amqp(stack, f"lab.{a}", b"once", message_id=f"once-{a}")
    assert flow.wait_killed() == -9
    assert len(firings_of(store_url, a)) == 1  # committed before the kill
    flow.start()  # the unacked message comes back to this life
    publish_amqp(stack, f"lab.{marker}", b"behind", message_id=f"marker-{marker}")
    wait_job(api_client, namespace, a)
    wait_job(api_client, namespace, marker)  # queued behind the redelivery: it was handled
    assert len(firings_of(store_url, a)) == 1
    assert len(jobs_of(api_client, namespace, a)) == 1


def test_two_flow_replicas_on_one_store_submit_each_firing_once(
    make_worker: MakeWorker, make_flow: MakeFlow, stack: StackInfo, bucket: str,  # noqa: F811
    api_client: k8s.ApiClient, namespace: str, worker_env: dict[str, str], store_url: str,
) -> None:  # fmt: skip
    """max_in_flight 1 keeps firings pending in the shared store; every final event frees the
    slot, and both replicas race to claim the next one (one by its inbox, one by its scan)."""
    make_worker(**worker_env)
    a = name()
    entries = [entry_json(a, f"lab/pair/{a}", template(bucket, a), max_in_flight=1)]
    # Several replicas are what PostgreSQL is for: the stack's own server, whatever store_url is.
    store_url = stack.env["MSTC_FLOW_TEST_PG_URL"]
    flows = [make_flow(entries, MSTC_FLOW_STORE_URL=store_url) for _ in range(2)]
    for n in range(4):
        publish_amqp(stack, f"lab.pair.{a}", str(n).encode(), message_id=f"pair-{a}-{n}")
    for n in range(4):
        wait_job(api_client, namespace, a, MSTC_TRIGGER_PAYLOAD=str(n))
    for flow in flows:
        flow.stop()
    firings = firings_of(store_url, a)
    assert len(firings) == 4
    logs = "".join(flow.log_text for flow in flows)
    for firing_id, _state in firings:
        assert logs.count(f"firing {firing_id} submitted") == 1, firing_id
    assert len(jobs_of(api_client, namespace, a)) == 4


def long_template(bucket: str, name: str) -> dict[str, Any]:  # noqa: F811
    return {**template(bucket, name), "annotations": {"mstc.test/run-for": "300s"}}


def test_replace_cancels_the_running_job_and_skip_leaves_it_alone(
    make_worker: MakeWorker, make_flow: MakeFlow, stack: StackInfo, bucket: str,  # noqa: F811
    api_client: k8s.ApiClient, namespace: str, worker_env: dict[str, str], store_url: str,
) -> None:  # fmt: skip
    make_worker(**worker_env)
    replaced, skipping, marker = name(), name(), name()
    cancelled = MqttEvents(stack, [f"mstc/job/final/cancelled/{replaced}"])
    try:
        make_flow([
            entry_json(replaced, f"lab/{replaced}", long_template(bucket, replaced),
                       concurrency="replace"),
            entry_json(skipping, f"lab/{skipping}", long_template(bucket, skipping),
                       concurrency="skip"),
            entry_json(marker, f"lab/{marker}", template(bucket, marker)),
        ])  # fmt: skip
        firsts = {}
        for entry in (replaced, skipping):
            publish_amqp(stack, f"lab.{entry}", b"1", message_id=f"{entry}-1")
            firsts[entry] = wait_job(api_client, namespace, entry, MSTC_TRIGGER_PAYLOAD="1")
            publish_amqp(stack, f"lab.{entry}", b"2", message_id=f"{entry}-2")
        wait_job(api_client, namespace, replaced, MSTC_TRIGGER_PAYLOAD="2")
        (_topic, event), *_ = cancelled.wait_for(lambda events: len(events) >= 1)
        assert event["jobName"] == firsts[replaced].metadata.name
        publish_amqp(stack, f"lab.{marker}", b"m", message_id=f"{marker}-m")
        wait_job(api_client, namespace, marker)  # submitted after the skip was decided
        assert len(jobs_of(api_client, namespace, skipping)) == 1
        assert sorted(state for _id, state in firings_of(store_url, skipping)) == [
            "skipped", "submitted",
        ]  # fmt: skip
    finally:
        cancelled.close()
