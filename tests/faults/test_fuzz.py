"""Fuzzing whole messages against a real worker: bodies, headers and AMQP properties.

Hypothesis draws each message: random bytes, JSON of every shape, deep nesting, an oversized
body, requests that look valid but carry hostile values; headers of odd types; reply_to,
correlation_id, content_type and message_id present, absent or strange. One worker process
serves them all. Each message must get a reply (on its reply_to, or on the results queue when
it has none) or be dead-lettered, a rejected one must say why, and the worker must stay the
same healthy process throughout, still serving a good request at the end.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

import pika
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.faults.report import FaultRecord
from tests.support.worker import AmqpClient, WorkerProcess
from tests.worker.conftest import MakeWorker
from tests.worker.test_service import request

pytestmark = pytest.mark.stack

EXAMPLES = 150
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
request_like = st.fixed_dictionaries(
    {"image": st.just("example.invalid/job:1"), "inputBucket": st.just("fuzz-bucket")},
    optional={
        "jobName": st.text(max_size=40) | st.sampled_from(["fuzz", "a" * 70, "x\ny"]),
        "timeOut": st.integers(-5, 10**7) | st.text(max_size=5),
        "prefix": st.text(max_size=20),
        "env": st.dictionaries(st.text(max_size=10), json_values, max_size=3),
        "labels": st.dictionaries(st.text(max_size=10), json_values, max_size=3),
        "annotations": st.dictionaries(st.text(max_size=20), json_values, max_size=3),
        "command": json_values,
        "backoffLimit": json_values,
    },
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    request_like.map(lambda v: json.dumps(v).encode()),
    st.integers(50, 5000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.just(json.dumps({"image": "x" * 1_100_000, "jobName": "big"}).encode()),
    st.text(max_size=60).map(lambda t: t.encode("utf-8")),
)
header_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**31), 2**31 - 1), st.text(max_size=20),
    st.lists(st.text(max_size=5), max_size=3),
)  # fmt: skip
messages = st.fixed_dictionaries(
    {
        "body": bodies,
        "headers": st.none()
        | st.dictionaries(
            st.sampled_from(["x-mstc-progress", "x-death", "x-mstc-reason"]) | st.text(max_size=12),
            header_values,
            max_size=3,
        ),
        "reply": st.booleans(),
        # Mostly present (a reply can then be matched exactly), sometimes absent.
        "correlation": st.sampled_from([None, "", "", ""]).flatmap(
            lambda c: st.none() if c is None else st.text(max_size=20)
        ),
        "content_type": st.none() | st.sampled_from(["application/json", "text/plain", "\u00e9"]),
        "message_id": st.none() | st.text(max_size=20),
    }
)


def publish(client: AmqpClient, queue: str, message: dict[str, Any]) -> str | None:
    """Publish one drawn message; its correlation_id (made unique), or None if it has none."""
    cid = None
    if message["correlation"] is not None:
        cid = f"{uuid.uuid4()}{message['correlation']}"
    props = pika.BasicProperties(
        reply_to=client.reply_queue if message["reply"] else None,
        correlation_id=cid,
        content_type=message["content_type"],
        message_id=message["message_id"],
        headers=message["headers"],
        delivery_mode=2,
    )
    client.channel.basic_publish("", queue, message["body"], props)
    return cid


def test_fuzzed_messages_each_get_a_reply_and_the_worker_keeps_serving(
    make_worker: MakeWorker, client: AmqpClient, bucket: str, work_queue: str,
    fault: FaultRecord,
) -> None:  # fmt: skip
    fault.fault = (
        f"{EXAMPLES} fuzzed messages (hypothesis): random and oversized bodies, JSON of any "
        "shape, hostile request fields, odd headers and properties"
    )
    fault.expected = (
        "every message replied (or dead-lettered); rejections say why; the same worker "
        "process serves throughout and afterwards"
    )
    dead = f"{work_queue}.dead"
    worker: WorkerProcess = make_worker(MSTC_DEAD_LETTER_QUEUE=dead)
    # Replies to messages without reply_to go to the results queue: hear those too.
    client.channel.queue_declare(f"{work_queue}.results", durable=True)
    client.channel.basic_consume(f"{work_queue}.results", client._on_reply, auto_ack=True)
    pid = worker.proc.pid if worker.proc else None
    statuses: Counter[str] = Counter()
    anonymous = 0  # replies expected with no correlation_id to match them by

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(message=messages)
    def one_message(message: dict[str, Any]) -> None:
        nonlocal anonymous
        cid = publish(client, work_queue, message)
        if cid is None:
            anonymous += 1
            client.barrier()
            return
        reply = client.wait(cid, timeout=90)
        statuses[reply["status"]] += 1
        if reply["status"] == "rejected":
            assert reply.get("error"), reply
        assert len(client.replies[cid]) == 1

    # one_message's source is left as it is: derandomized hypothesis seeds from it, so an
    # edit there draws other messages.
    one_message()
    sent = sum(statuses.values()) + anonymous  # each message had a correlation_id or not
    # Messages with no correlation_id: their replies carry none; wait until all are in.
    for _ in range(60):
        if len(client.replies.get("", [])) >= anonymous:
            break
        client.conn.process_data_events(time_limit=1)
    dead_count = client.channel.queue_declare(dead, durable=True, passive=False).method
    assert len(client.replies.get("", [])) + dead_count.message_count >= anonymous
    for reply in client.replies.get("", []):
        statuses[reply["status"]] += 1
    assert worker.proc is not None
    assert worker.proc.poll() is None
    assert worker.proc.pid == pid
    crashes = worker.metric("mstc_worker_process_restarts_total")  # the service's own count
    assert crashes == 0
    assert worker.get("/healthz")[0] == 200
    after = client.wait(client.send(request(bucket), queue=work_queue))["status"]
    assert after == "succeeded"
    fault.saw(
        f"{sent} messages: replies by status {dict(statuses)}, "
        f"{dead_count.message_count} dead-lettered; same service process, {crashes:.0f} worker "
        f"process crashes; a good request afterwards {after}"
    )
