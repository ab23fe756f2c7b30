"""Progress messages: a client that asks (header x-mstc-progress) hears where its Job stands.

A Java-era client takes the first message on its callback queue as the reply, so a request
without the header must get exactly one message, the reply, as before.
"""

from __future__ import annotations

import pytest
from kubernetes import client as k8s

from tests.support.worker import AmqpClient, WorkerProcess
from tests.worker.test_service import pod_fate, request, wait_released

pytestmark = pytest.mark.stack


def test_a_client_that_asks_hears_accepted_then_running_then_the_reply(
    worker: WorkerProcess, client: AmqpClient, bucket: str, work_queue: str,
    api_client: k8s.ApiClient, namespace: str,
) -> None:  # fmt: skip
    cid = client.send(
        request(bucket, **pod_fate(run_for="5s")),
        queue=work_queue,
        headers={"x-mstc-progress": "1"},
    )
    reply = client.wait(cid, timeout=120)
    wait_released(api_client, namespace, reply["jobName"])
    client.barrier()
    assert reply["status"] == "succeeded"
    assert [kind for c, kind in client.arrivals if c == cid] == [
        "mstc.progress",
        "mstc.progress",
        None,  # the reply itself carries no type, as the Java worker's did not
    ]
    progress = client.progress[cid]
    assert [p["state"] for p in progress] == ["accepted", "running"]
    assert {p["jobName"] for p in progress} == {reply["jobName"]}
    assert len(client.replies[cid]) == 1


def test_a_request_without_the_header_gets_only_the_reply(
    worker: WorkerProcess, client: AmqpClient, bucket: str, work_queue: str,
    api_client: k8s.ApiClient, namespace: str,
) -> None:  # fmt: skip
    cid = client.send(request(bucket, **pod_fate(run_for="5s")), queue=work_queue)
    reply = client.wait(cid, timeout=120)
    wait_released(api_client, namespace, reply["jobName"])
    client.barrier()
    assert [c for c, _kind in client.arrivals] == [cid]
    assert cid not in client.progress


def test_progress_asked_for_with_a_false_value_is_not_sent(
    worker: WorkerProcess, client: AmqpClient, bucket: str, work_queue: str,
    api_client: k8s.ApiClient, namespace: str,
) -> None:  # fmt: skip
    cid = client.send(request(bucket), queue=work_queue, headers={"x-mstc-progress": "false"})
    reply = client.wait(cid, timeout=120)
    wait_released(api_client, namespace, reply["jobName"])
    client.barrier()
    assert cid not in client.progress
