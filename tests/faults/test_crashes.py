"""Crashes inside the worker, and the broker's own limits on it.

A worker process killed under the service, a message that crashes every process that
handles it (a poison message), and a Job that outlives RabbitMQ's consumer timeout.
"""

from __future__ import annotations

import json
import os
import select
import signal
from pathlib import Path

import pytest
from kubernetes import client as k8s

import localstack
from tests.faults.report import FaultRecord
from tests.support.faultinject import fault_env
from tests.support.kube import watch_until
from tests.support.stack import StackInfo
from tests.support.worker import AmqpClient, WorkerProcess
from tests.worker.conftest import MakeWorker
from tests.worker.test_service import jobs, pod_fate, request, wait_released

pytestmark = pytest.mark.stack


def worker_children(worker: WorkerProcess) -> list[int]:
    """PIDs of the service's spawned worker processes (not multiprocessing's helpers)."""
    assert worker.proc is not None
    pid = worker.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [
        int(child)
        for child in children
        if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]


def test_killed_worker_process_is_replaced_and_the_request_still_replied(
    make_worker: MakeWorker, client: AmqpClient, bucket: str, work_queue: str,
    api_client: k8s.ApiClient, namespace: str, fault: FaultRecord,
) -> None:  # fmt: skip
    fault.fault = "one worker process killed (-9) under a running service while its Job runs"
    fault.expected = "the process is started again and the request still replied, once"
    worker = make_worker(MSTC_PROCESSES="1")
    cid = client.send(request(bucket, **pod_fate(run_for="6s")), queue=work_queue)
    watch_until(
        k8s.BatchV1Api(api_client).list_namespaced_job, lambda _k, _j: True, namespace=namespace
    )
    (child,) = worker_children(worker)
    os.kill(child, signal.SIGKILL)
    reply = client.wait(cid, timeout=120)
    assert reply["status"] == "succeeded"
    assert "worker-0 died" in worker.log_text
    assert worker.get("/healthz")[0] == 200
    assert worker_children(worker) != [child]
    wait_released(api_client, namespace, reply["jobName"])
    client.barrier()
    assert len(client.replies[cid]) == 1
    fault.saw("process restarted; 1 reply (succeeded); /healthz 200")


def test_children_exit_when_the_service_process_is_killed(
    make_worker: MakeWorker, fault: FaultRecord
) -> None:
    fault.fault = "the service's main process killed (-9)"
    fault.expected = "its worker processes exit too (no orphan keeps claiming Jobs)"
    worker = make_worker()
    children = worker_children(worker)
    assert len(children) == 2
    worker.signal(signal.SIGKILL)
    worker.wait()
    for child in children:
        # waitpid is not ours to call (not our child); the pidfd says when it is gone.
        fd = os.pidfd_open(child)
        try:
            assert select.select([fd], [], [], 30)[0], f"worker process {child} still alive"
        finally:
            os.close(fd)
    fault.saw(f"{len(children)} worker processes gone after the kill")


def test_poison_message_ends_in_the_dead_letter_queue_with_its_reason(
    make_worker: MakeWorker, client: AmqpClient, bucket: str, work_queue: str,
    api_client: k8s.ApiClient, namespace: str, fault: FaultRecord,
) -> None:  # fmt: skip
    fault.fault = "a poison message: its handler crashes the worker process every time"
    fault.expected = (
        "after a bounded number of attempts: dead-lettered with the reason in its headers, "
        "an error reply, no Job; the worker keeps serving"
    )
    dead = f"{work_queue}.dead"
    worker = make_worker(
        **fault_env(crash_on_image="example.invalid/poison:1"), MSTC_DEAD_LETTER_QUEUE=dead
    )
    poison = request(bucket, image="example.invalid/poison:1")
    reply = client.wait(client.send(poison, queue=work_queue), timeout=120)
    assert reply["status"] == "error"
    assert reply["reason"] == "WorkerCrashed"
    assert "twice" in reply["error"]
    method, props, body = client.channel.basic_get(dead, auto_ack=True)
    assert method is not None
    assert json.loads(body) == poison
    assert props.headers is not None
    assert "died" in props.headers["x-mstc-reason"]
    assert jobs(api_client, namespace) == []
    assert client.channel.queue_declare(work_queue, passive=True).method.message_count == 0
    # The worker is still serving.
    assert client.wait(client.send(request(bucket), queue=work_queue))["status"] == "succeeded"
    crashes = worker.log_text.count("died (exit code")
    fault.saw(
        f"{crashes} process crashes, then dead-lettered with x-mstc-reason "
        f"{props.headers['x-mstc-reason']!r}; reply status error; next request succeeded"
    )


def test_jobs_longer_than_the_broker_consumer_timeout_still_reply(
    stack: StackInfo, make_worker: MakeWorker, client: AmqpClient, bucket: str,
    work_queue: str, api_client: k8s.ApiClient, namespace: str, fault: FaultRecord,
) -> None:  # fmt: skip
    if stack.kind != "local":
        pytest.skip("tunes the local broker's consumer timeout with rabbitmqctl")
    fault.fault = "RabbitMQ's consumer timeout (2 s here) shorter than the Job (10 s)"
    fault.expected = "the reply still comes, once; the channel is never closed by the broker"
    cfg = localstack.Config.from_env()
    # RabbitMQ closes the channel of a delivery left unacked this long (30 min by default).
    localstack.rabbit_eval(cfg, "application:set_env(rabbit, consumer_timeout, 2000).")
    localstack.rabbit_eval(cfg, "application:set_env(rabbit, channel_tick_interval, 500).")
    try:
        worker = make_worker()  # its channel opens with the short timeout
        cid = client.send(request(bucket, **pod_fate(run_for="10s")), queue=work_queue)
        # The broker checks the timeout only on a channel that is awake, as a busy worker's
        # is: keep it busy with requests it rejects at once while the long Job runs.
        while not client.replies.get(cid):
            client.send(b"not json", queue=work_queue)
            client.conn.process_data_events(time_limit=0.5)
        reply = client.wait(cid)
        assert reply["status"] == "succeeded"
        reconnects = worker.metric("mstc_broker_reconnects_total")
        assert reconnects == 0
        wait_released(api_client, namespace, reply["jobName"])
        client.barrier()
        assert len(client.replies[cid]) == 1
    finally:
        localstack.rabbit_eval(cfg, "application:set_env(rabbit, consumer_timeout, 1800000).")
        localstack.rabbit_eval(cfg, "application:set_env(rabbit, channel_tick_interval, 60000).")
    fault.saw("1 reply (succeeded) after 10 s; 0 broker reconnects")
