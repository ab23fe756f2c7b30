"""Messages that used to stop the whole replica: each is answered, the worker process unmoved.

Each of these crashed the service's connection thread (an exception out of pika's consumer
callback ends `Broker.run`, so the main process exits; the unacked message is redelivered to
the next replica, which dies the same way): a 5000-digit number in the body (Python refuses to
convert it with a ValueError that is not a JSONDecodeError), a lone UTF-16 surrogate echoed
into a rejection (its reply had no UTF-8 form), and AMQP properties that are not UTF-8 (pika
hands them over as bytes, and uuid5 refuses bytes). The worker must answer all four and be
the same process afterwards.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pika
import pytest

from tests.faults.report import FaultRecord
from tests.support.worker import AmqpClient
from tests.worker.conftest import MakeWorker

pytestmark = pytest.mark.stack

GOOD = {"image": "mstc/tool:1", "jobName": "hostile", "inputBucket": "in-bucket"}


def test_messages_that_stopped_the_replica_are_answered(
    fault: FaultRecord, make_worker: MakeWorker, client: AmqpClient, work_queue: str
) -> None:
    fault.fault = (
        "a 5000-digit number, a lone surrogate echoed in a rejection, non-UTF-8 "
        "correlation_id and reply_to (each used to crash the service's connection thread)"
    )
    fault.expected = (
        "each answered (rejected with why, or run), the same service process serving, no "
        "worker process crash"
    )
    worker = make_worker(MSTC_PROCESSES="1")
    assert worker.proc is not None
    pid = worker.proc.pid
    results: list[tuple[str | None, dict[str, Any]]] = []
    results_queue = f"{work_queue}.results"
    client.channel.queue_declare(results_queue, durable=True)
    client.channel.basic_consume(
        results_queue,
        lambda _c, _m, props, body: results.append((props.correlation_id, json.loads(body))),
        auto_ack=True,
    )

    def send(body: bytes, cid: str | bytes, reply_to: str | bytes | None = None) -> None:
        props = pika.BasicProperties(
            reply_to=reply_to or client.reply_queue,
            correlation_id=cid,  # bytes: not UTF-8, on purpose
            delivery_mode=2,
        )
        client.channel.basic_publish("", work_queue, body, props)

    send(b'{"timeOut": ' + b"9" * 5000 + b"}", "digits")
    send(b'{"image": "a\\ud800 b", "jobName": "j", "inputBucket": "in-b"}', "surrogate")
    send(json.dumps(GOOD).encode(), b"cid-\xff\xfe")
    send(json.dumps(GOOD).encode(), "to-bytes", b"q-\xff")
    deadline = time.monotonic() + 90
    while sum(map(len, client.replies.values())) + len(results) < 4:
        assert time.monotonic() < deadline, (client.replies, results, worker.log_text[-2000:])
        client.conn.process_data_events(time_limit=0.2)
    direct = {cid: items[0] for cid, items in client.replies.items()}
    assert direct["digits"]["status"] == "rejected"
    assert "number too long" in direct["digits"]["error"]
    assert direct["surrogate"]["status"] == "rejected"
    assert "a? b" in direct["surrogate"]["error"]  # the surrogate, replaced
    assert direct["cid-\ufffd\ufffd"]["status"] == "succeeded"
    # Its reply queue cannot be named: the reply goes to the results queue.
    assert [(cid, reply["status"]) for cid, reply in results] == [("to-bytes", "succeeded")]
    assert worker.proc.poll() is None
    assert worker.proc.pid == pid
    crashes = worker.metric("mstc_worker_process_restarts_total")  # the service's own count
    assert crashes == 0
    answered = [r for items in client.replies.values() for r in items] + [r for _, r in results]
    by_status = Counter(r["status"] for r in answered)
    fault.saw(
        f"4 messages, {len(answered)} replies {dict(sorted(by_status.items()))}; the same "
        f"service process serving, {crashes:.0f} worker process crashes"
    )
