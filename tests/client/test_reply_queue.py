"""A fixed, durable reply queue on the real broker: it outlives the client, and the next client
on it drops the replies it has no handle for (the flow service's restart, in small)."""

from __future__ import annotations

import uuid

import pika
import pytest

from mstc_client import Client, ClientConfig, JobRequest, Status
from tests.support.stack import StackInfo
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.stack


def _request(bucket: str, name: str) -> JobRequest:
    return JobRequest(image="example.invalid/job:1", job_name=name, input_bucket=bucket,
                      prefix=f"run-{uuid.uuid4().hex[:8]}")  # fmt: skip


def _wait_for_a_reply_in(stack: StackInfo, queue: str) -> str:
    """Await one message in `queue`, put it back, and return its correlation id."""
    conn = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    try:
        channel = conn.channel()
        for method, props, _body in channel.consume(queue, inactivity_timeout=120):
            assert method is not None, "no reply reached the fixed queue"
            channel.basic_nack(method.delivery_tag, requeue=True)
            channel.cancel()
            return str(props.correlation_id)
        raise AssertionError("unreachable")
    finally:
        conn.close()


def _message_count(stack: StackInfo, queue: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    try:
        declared = conn.channel().queue_declare(queue, passive=True)
        return int(declared.method.message_count)
    finally:
        conn.close()


def test_a_fixed_reply_queue_outlives_its_client_and_the_next_one_drops_strangers(
    worker: WorkerProcess, client_env: dict[str, str], stack: StackInfo, data_bucket: str
) -> None:
    queue = f"test.replies.{uuid.uuid4().hex[:8]}"
    config = ClientConfig.from_env(client_env)
    config = ClientConfig(**{**config.__dict__, "reply_queue_name": queue})
    first = Client(config)
    first.storage.ensure_bucket(data_bucket)
    handle = first.submit(_request(data_bucket, "fixed-a"), correlation_id="first-life")
    assert handle.wait_sent(30)
    first.close()  # before the reply: it must wait in the queue, which must still exist
    assert _wait_for_a_reply_in(stack, queue) == "first-life"

    with Client(config) as second:
        reply = second.submit(_request(data_bucket, "fixed-b")).wait(120)
        assert reply.status is Status.SUCCEEDED
    assert _message_count(stack, queue) == 0  # the stranger was acked, and the queue kept
