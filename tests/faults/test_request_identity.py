"""Reused correlation ids: a request is its id, its reply queue and its body, never the id alone.

Clients number their requests, and two of them may well both start from "1" with the same
jobName; a message may carry no id at all; a client may send a request again after its Job
is long gone. Each is checked on the real stack: two clients' "1" get a Job and a reply
each; a message with no ids that is redelivered (its Job's create answered 503 although it
worked, so the worker requeues it) keeps its one Job; a request sent again after its Job
finished, was answered and was deleted by its TTL is answered again from the worker's
record, with no second Job.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pika
import pytest
from kubernetes import client as k8s

from mstc_worker.kube_errors import ATTEMPTS
from tests.faults.kube_proxy import KubeFaultProxy, Rule
from tests.faults.report import FaultRecord
from tests.faults.test_kube_faults import (  # noqa: F401  (fixtures, found by pytest by name)
    JOBS,
    ONE_REPLY_SETTLE_S,
    ProxiedWorker,
    jobs_created,
    kube_proxy,
    proxied_worker,
)
from tests.support.jobs_made import JobsMade
from tests.support.kube import wait_gone
from tests.support.stack import StackInfo
from tests.support.worker import AmqpClient
from tests.worker.conftest import MakeWorker
from tests.worker.test_service import pod_fate, request

pytestmark = pytest.mark.stack


def replies(client: AmqpClient, cid: str, count: int, timeout: float = 90) -> list[dict[str, Any]]:
    """The first `count` replies for `cid`, once they are all in."""
    deadline = time.monotonic() + timeout
    while len(client.replies.get(cid, [])) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(client.replies.get(cid, []))} of {count} replies for {cid}")
        client.conn.process_data_events(time_limit=0.5)
    return client.replies[cid][:count]


def test_two_clients_both_sending_correlation_id_1_get_a_job_and_a_reply_each(
    fault: FaultRecord, stack: StackInfo, make_worker: MakeWorker, client: AmqpClient,
    work_queue: str, bucket: str, jobs_made: JobsMade,
) -> None:  # fmt: skip
    fault.fault = (
        "reused correlation ids: two clients each send correlation id '1', the same jobName "
        "and the same body"
    )
    fault.expected = "two requests: a Job each, one reply each, to the client that sent it"
    make_worker()
    other = AmqpClient(stack)
    try:
        body = request(bucket, jobName="reused", **pod_fate(run_for="2s"))
        for sender in (client, other):
            sender.send(body, queue=work_queue, correlation_id="1")
        mine, theirs = (sender.wait("1", timeout=90) for sender in (client, other))
        for sender in (client, other):
            sender.settle(ONE_REPLY_SETTLE_S)
        counts = [len(sender.replies["1"]) for sender in (client, other)]
    finally:
        other.close()
    assert counts == [1, 1], counts
    assert [mine["status"], theirs["status"]] == ["succeeded"] * 2, (mine, theirs)
    names = [mine["jobName"], theirs["jobName"]]
    assert names[0] != names[1], names
    made = jobs_made.names()
    assert sorted(made) == sorted(names), made
    fault.saw(
        f"Jobs made: {len(made)} ({', '.join(names)}); replies per client: {counts}, "
        f"statuses: {mine['status']}, {theirs['status']}"
    )


def test_a_request_sent_again_after_its_job_is_gone_is_answered_from_its_record(
    fault: FaultRecord, make_worker: MakeWorker, client: AmqpClient, work_queue: str,
    bucket: str, api_client: k8s.ApiClient, namespace: str, jobs_made: JobsMade,
) -> None:  # fmt: skip
    fault.fault = (
        "reused correlation ids: a request published again, same id, queue and body, after "
        "its Job finished, was answered and was deleted by its 1 s TTL"
    )
    fault.expected = "answered again with the same reply, from the worker's record; no 2nd Job"
    worker = make_worker(MSTC_JOB_TTL_SECONDS="1")
    body = request(bucket, jobName="again", **pod_fate(run_for="1s"))
    cid = client.send(body, queue=work_queue, correlation_id="again-1")
    (first,) = replies(client, cid, 1)
    assert first["status"] == "succeeded", first
    started = time.monotonic()
    wait_gone(k8s.BatchV1Api(api_client).list_namespaced_job, namespace=namespace)
    gone_s = time.monotonic() - started

    client.send(body, queue=work_queue, correlation_id=cid)
    _, second = replies(client, cid, 2)
    client.settle(ONE_REPLY_SETTLE_S)
    assert len(client.replies[cid]) == 2, client.replies[cid]
    assert second == first  # the same answer, to the same start time: it did not run again
    made = jobs_made.count()
    assert made == 1, jobs_made.names()
    assert "answered again from its record" in worker.log_text
    left = len(k8s.BatchV1Api(api_client).list_namespaced_job(namespace).items)
    assert left == 0
    fault.saw(
        f"Job deleted {gone_s:.1f} s after the reply; sent again: the same reply "
        f"({second['status']}, started {second['startedAt']}), from the record; "
        f"Jobs made: {made}, left: {left}"
    )


def test_a_message_without_ids_redelivered_keeps_its_one_job(
    fault: FaultRecord, proxied_worker: ProxiedWorker, kube_proxy: KubeFaultProxy,  # noqa: F811
    client: AmqpClient, work_queue: str, bucket: str,
) -> None:  # fmt: skip
    fault.fault = (
        f"reused correlation ids: a message with no correlation_id and no message_id; its "
        f"Job's create worked but was answered 503 {ATTEMPTS} times, so it was requeued"
    )
    fault.expected = "the redelivery finds the Job the first delivery made: one Job, one reply"
    proxied_worker()
    lost = kube_proxy.add(Rule("POST", JOBS + "$", 503, times=ATTEMPTS, forward=True))
    # Long enough to be running still when the redelivery looks for it.
    body = request(bucket, jobName="no-ids", **pod_fate(run_for="8s"))
    props = pika.BasicProperties(reply_to=client.reply_queue, delivery_mode=2)
    client.channel.basic_publish("", work_queue, json.dumps(body).encode(), props)

    (reply,) = replies(client, "", 1)
    client.settle(ONE_REPLY_SETTLE_S)
    assert len(client.replies[""]) == 1, client.replies[""]
    assert reply["status"] == "succeeded", reply
    assert lost.hits == ATTEMPTS
    creates = kube_proxy.exchanges("POST", JOBS + "$")
    seen = [(e.upstream_status, e.status) for e in creates]
    assert jobs_created(kube_proxy) == 1, seen
    fault.saw(
        f"creates (server, worker saw): {seen}; the redelivery adopted the Job; Jobs made: "
        f"{jobs_created(kube_proxy)}, replies: {len(client.replies[''])} ({reply['status']})"
    )
