"""Outages of the servers around the worker: RabbitMQ restarted, MinIO down at the wrong time.

These tests stop and start parts of the local stack itself, so they run only against the
project's own stack (the kind mode's servers are not ours to restart).
"""

from __future__ import annotations

import time

import pytest
from kubernetes import client as k8s

import localstack
from tests.faults.report import FaultRecord
from tests.support.jobs_made import JobsMade
from tests.support.kube import watch_until
from tests.support.worker import AmqpClient
from tests.worker.conftest import MakeWorker
from tests.worker.test_service import pod_fate, request, wait_released

pytestmark = pytest.mark.stack


def test_rabbitmq_restart_with_jobs_in_flight_and_requests_queued(
    local_cfg: localstack.Config, make_worker: MakeWorker, durable_client: AmqpClient,
    bucket: str, work_queue: str, api_client: k8s.ApiClient, namespace: str,
    jobs_made: JobsMade, fault: FaultRecord,
) -> None:  # fmt: skip
    fault.fault = "RabbitMQ restarted with 2 Jobs in flight and 4 requests still queued"
    fault.expected = (
        "all 6 replied at least once (a request whose ack the restart lost is redelivered and "
        "answered again from the worker's record: at most two replies, identical), exactly "
        "one Job made each; the worker reconnects by itself"
    )
    worker = make_worker(MSTC_CONCURRENCY="2")
    cids = [
        durable_client.send(request(bucket, **pod_fate(run_for="4s")), queue=work_queue)
        for _ in range(6)
    ]
    seen: set[str] = set()

    def two_jobs(_kind: str, job: k8s.V1Job) -> bool:
        seen.add(job.metadata.name)
        return len(seen) >= 2

    watch_until(k8s.BatchV1Api(api_client).list_namespaced_job, two_jobs, namespace=namespace)
    queued = durable_client.channel.queue_declare(work_queue, passive=True).method.message_count
    localstack.stop(local_cfg, "rabbitmq")
    localstack.up_rabbitmq(local_cfg)
    durable_client.reconnect()
    replies = {cid: durable_client.wait(cid, timeout=180) for cid in cids}
    for reply in replies.values():
        wait_released(api_client, namespace, reply["jobName"])
    durable_client.barrier()
    counts = [len(durable_client.replies[cid]) for cid in cids]
    statuses = {r["status"] for r in replies.values()}
    assert statuses == {"succeeded"}
    assert all(1 <= count <= 2 for count in counts), counts
    for cid in cids:  # a second reply is the first one again, never a second run
        assert all(r == replies[cid] for r in durable_client.replies[cid]), cid
    assert len({r["jobName"] for r in replies.values()}) == 6
    made = jobs_made.count()
    assert made == 6
    reconnects = worker.metric("mstc_broker_reconnects_total")
    assert reconnects >= 1
    fault.saw(
        f"{queued} requests were queued at the restart; {sum(counts)} replies, per request "
        f"{counts} (repeats identical), statuses {sorted(statuses)}; Jobs made: {made}; worker "
        f"reconnected {reconnects:.0f} time(s)"
    )


def test_minio_down_when_the_log_is_stored(
    local_cfg: localstack.Config, make_worker: MakeWorker, client: AmqpClient, bucket: str,
    work_queue: str, api_client: k8s.ApiClient, namespace: str, fault: FaultRecord,
) -> None:  # fmt: skip
    fault.fault = "MinIO down when the Job ends and its log is stored"
    fault.expected = (
        "bounded retries, then exactly one reply, with the Job's status, that says the log "
        "could not be stored; no hang; served normally once MinIO is back"
    )
    make_worker()
    cid = client.send(request(bucket, **pod_fate(run_for="3s")), queue=work_queue)
    # A Job is made suspended and resumed once its MinIO credentials are in its Secret: MinIO
    # goes down only after that, when the row's fault (the log's store) is what is left.
    watch_until(
        k8s.BatchV1Api(api_client).list_namespaced_job,
        lambda _k, job: not job.spec.suspend,
        namespace=namespace,
    )
    localstack.stop(local_cfg, "minio")
    try:
        down_at = time.monotonic()
        reply = client.wait(cid, timeout=120)
        took = time.monotonic() - down_at
    finally:
        localstack.up_minio(local_cfg)
    assert reply["status"] == "succeeded", reply  # the Job's outcome is still the truth
    assert "log could not be stored" in reply["error"], reply
    assert reply.get("logObject") is None
    wait_released(api_client, namespace, reply["jobName"])
    client.barrier()
    replies = len(client.replies[cid])
    assert replies == 1
    after = client.wait(client.send(request(bucket), queue=work_queue))
    assert after["status"] == "succeeded"
    assert after["logObject"]
    fault.saw(
        f"{replies} reply {took:.0f} s after MinIO stopped (the Job ran 3 s): status "
        f"{reply['status']}, error: {reply['error'][:90]}...; once MinIO was back the next "
        f"request {after['status']}, its log stored as {after['logObject']!r}"
    )
