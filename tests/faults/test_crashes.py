"""Crashes inside the worker, and the broker's own limits on it.

A worker process killed under the service, a message that crashes every process that
handles it (a poison message), and a Job that outlives RabbitMQ's consumer timeout.
"""

from __future__ import annotations

import json
import os
import select
import signal
import time
from pathlib import Path

import pytest
from kubernetes import client as k8s

import localstack
from tests.faults.report import FaultRecord
from tests.support.faultinject import fault_env
from tests.support.jobs_made import JobsMade
from tests.support.kube import watch_until
from tests.support.stack import StackInfo
from tests.support.worker import AmqpClient, WorkerProcess
from tests.worker.conftest import MakeWorker
from tests.worker.test_service import pod_fate, request, wait_released

pytestmark = pytest.mark.stack

# The supervisor's own record of crashes: one per worker process it saw die and restarted.
RESTARTS = "mstc_worker_process_restarts_total"


def worker_children(worker: WorkerProcess) -> list[int]:
    """PIDs of the service's spawned worker processes (not multiprocessing's helpers)."""
    assert worker.proc is not None
    # A process is listed under the thread that started it: a restarted one under the
    # service's pool thread, not its main thread.
    tasks = Path(f"/proc/{worker.proc.pid}/task").glob("*/children")
    children = sorted({int(child) for task in tasks for child in task.read_text().split()})
    return [
        child for child in children if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]


def test_killed_worker_process_is_replaced_and_the_request_still_replied(
    make_worker: MakeWorker, client: AmqpClient, bucket: str, work_queue: str,
    api_client: k8s.ApiClient, namespace: str, jobs_made: JobsMade, fault: FaultRecord,
) -> None:  # fmt: skip
    fault.fault = "one worker process killed (-9) under a running service while its Job runs"
    fault.expected = (
        "the process started again (one restart); the request replied exactly once; "
        "exactly one Job made"
    )
    worker = make_worker(MSTC_PROCESSES="1")
    cid = client.send(request(bucket, **pod_fate(run_for="6s")), queue=work_queue)
    watch_until(
        k8s.BatchV1Api(api_client).list_namespaced_job, lambda _k, _j: True, namespace=namespace
    )
    (child,) = worker_children(worker)
    os.kill(child, signal.SIGKILL)
    reply = client.wait(cid, timeout=120)
    assert reply["status"] == "succeeded"
    restarts = worker.metric(RESTARTS)
    assert restarts == 1
    health, _ = worker.get("/healthz")
    assert health == 200
    (replacement,) = worker_children(worker)
    assert replacement != child
    wait_released(api_client, namespace, reply["jobName"])
    client.barrier()
    replies = client.replies[cid]
    assert len(replies) == 1
    made = jobs_made.count()
    assert made == 1
    fault.saw(
        f"process restarts (the service's {RESTARTS}): {restarts:.0f}; {len(replies)} "
        f"repl{'y' if len(replies) == 1 else 'ies'} ({reply['status']}); Jobs made: {made}; "
        f"/healthz {health}"
    )


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
    jobs_made: JobsMade, fault: FaultRecord,
) -> None:  # fmt: skip
    fault.fault = "a poison message: its handler crashes the worker process every time"
    fault.expected = (
        "exactly two attempts (two process crashes), then: dead-lettered with the reason in "
        "its headers, one error reply, no Job made; the worker keeps serving"
    )
    dead = f"{work_queue}.dead"
    worker = make_worker(
        **fault_env(crash_on_image="example.invalid/poison:1"), MSTC_DEAD_LETTER_QUEUE=dead
    )
    poison = request(bucket, image="example.invalid/poison:1")
    cid = client.send(poison, queue=work_queue)
    reply = client.wait(cid, timeout=120)
    assert reply["status"] == "error"
    assert reply["reason"] == "WorkerCrashed"
    assert "twice" in reply["error"]
    method, props, body = client.channel.basic_get(dead, auto_ack=True)
    assert method is not None
    assert json.loads(body) == poison
    assert props.headers is not None
    assert "died" in props.headers["x-mstc-reason"]
    made = jobs_made.count()
    assert made == 0
    assert client.channel.queue_declare(work_queue, passive=True).method.message_count == 0
    client.barrier()
    replies = len(client.replies[cid])
    assert replies == 1
    # The worker is still serving.
    after = client.wait(client.send(request(bucket), queue=work_queue))["status"]
    assert after == "succeeded"
    crashes = worker.metric(RESTARTS)
    assert crashes == 2  # the first try and the one more try; none after the dead letter
    fault.saw(
        f"{crashes:.0f} process crashes (the service's {RESTARTS}), then dead-lettered with "
        f"x-mstc-reason {props.headers['x-mstc-reason']!r}; {replies} reply, status "
        f"{reply['status']}; Jobs made: {made}; next request {after}"
    )


def test_jobs_longer_than_the_broker_consumer_timeout_still_reply(
    stack: StackInfo, make_worker: MakeWorker, client: AmqpClient, bucket: str,
    work_queue: str, api_client: k8s.ApiClient, namespace: str, fault: FaultRecord,
) -> None:  # fmt: skip
    if stack.kind != "local":
        pytest.skip("tunes the local broker's consumer timeout with rabbitmqctl")
    fault.fault = "RabbitMQ's consumer timeout (2 s here) shorter than the Job (10 s)"
    fault.expected = (
        "the reply still comes, exactly once; the channel is never closed by the broker "
        "(no reconnect)"
    )
    cfg = localstack.Config.from_env()
    # RabbitMQ closes the channel of a delivery left unacked this long (30 min by default).
    localstack.rabbit_eval(cfg, "application:set_env(rabbit, consumer_timeout, 2000).")
    localstack.rabbit_eval(cfg, "application:set_env(rabbit, channel_tick_interval, 500).")
    try:
        worker = make_worker()  # its channel opens with the short timeout
        sent = time.monotonic()
        cid = client.send(request(bucket, **pod_fate(run_for="10s")), queue=work_queue)
        # The broker checks the timeout only on a channel that is awake, as a busy worker's
        # is: keep it busy with requests it rejects at once while the long Job runs.
        while not client.replies.get(cid):
            client.send(b"not json", queue=work_queue)
            client.conn.process_data_events(time_limit=0.5)
        reply = client.wait(cid)
        took = time.monotonic() - sent
        assert reply["status"] == "succeeded"
        reconnects = worker.metric("mstc_broker_reconnects_total")
        assert reconnects == 0
        wait_released(api_client, namespace, reply["jobName"])
        client.barrier()
        replies = len(client.replies[cid])
        assert replies == 1
    finally:
        localstack.rabbit_eval(cfg, "application:set_env(rabbit, consumer_timeout, 1800000).")
        localstack.rabbit_eval(cfg, "application:set_env(rabbit, channel_tick_interval, 60000).")
    fault.saw(
        f"{replies} reply ({reply['status']}) {took:.0f} s after the request; "
        f"{reconnects:.0f} broker reconnects"
    )
