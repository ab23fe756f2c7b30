"""Cancel end to end: a control message stops a running Job and answers its request `cancelled`.

Real worker processes, RabbitMQ, MinIO and the Kubernetes API server (KWOK): the control
message goes to the worker's control queue, the answer comes back on the sender's reply queue,
and the Job's request gets its reply through the ordinary finish.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from kubernetes import client as k8s

from mstc_worker.names import CANCEL_AT_ANNOTATION, CANCEL_BY_ANNOTATION
from tests.support.kube import wait_gone
from tests.support.worker import AmqpClient, WorkerProcess
from tests.worker.conftest import MakeWorker
from tests.worker.test_service import pod_fate, request, wait_released

pytestmark = pytest.mark.stack

PROGRESS = {"x-mstc-progress": "1"}


@pytest.fixture
def control_queue(work_queue: str) -> str:
    return f"{work_queue}.control"


def start_worker(make_worker: MakeWorker, **env: str) -> WorkerProcess:
    """A worker, given up to 180 s to be ready: the machine these run on is shared and busy."""
    worker = make_worker(start=False, **env)
    worker.start(wait_ready=False)
    worker.wait_ready(timeout=180)
    return worker


@pytest.fixture
def cancel_worker(make_worker: MakeWorker, control_queue: str) -> WorkerProcess:
    return start_worker(make_worker, MSTC_CONTROL_QUEUE=control_queue)


def cancel(client: AmqpClient, queue: str, job_name: str, **extra: Any) -> str:
    body = {"format": 1, "action": "cancel", "jobName": job_name, **extra}
    return client.send(json.dumps(body).encode(), queue=queue)


def wait_running(client: AmqpClient, cid: str, timeout: float = 120) -> str:
    """Until the progress message "running" for request `cid` came; the Job's name."""
    deadline = time.monotonic() + timeout
    while True:
        states = {p["state"]: p["jobName"] for p in client.progress.get(cid, [])}
        if "running" in states:
            return str(states["running"])
        if time.monotonic() > deadline:
            raise TimeoutError(f"request {cid} not running within {timeout} s")
        client.conn.process_data_events(time_limit=0.5)


def assert_stopped(api_client: k8s.ApiClient, namespace: str, job_name: str) -> None:
    """The Job is let go and gone, and no pod of it is left."""
    wait_released(api_client, namespace, job_name)
    core = k8s.CoreV1Api(api_client)
    wait_gone(core.list_namespaced_pod, namespace=namespace, label_selector=f"job-name={job_name}")
    batch = k8s.BatchV1Api(api_client)
    wait_gone(batch.list_namespaced_job, namespace=namespace,
              field_selector=f"metadata.name={job_name}")  # fmt: skip


def test_cancel_of_a_running_job_answers_it_cancelled_within_seconds(
    cancel_worker: WorkerProcess, client: AmqpClient, bucket: str, work_queue: str,
    control_queue: str, api_client: k8s.ApiClient, namespace: str,
) -> None:  # fmt: skip
    cid = client.send(request(bucket, **pod_fate(run_for="60s")), queue=work_queue,
                      headers=PROGRESS)  # fmt: skip
    name = wait_running(client, cid)
    sent = time.monotonic()
    control = cancel(client, control_queue, name, by="test-suite", reason="not needed")
    answer = client.wait(control, timeout=30)
    reply = client.wait(cid, timeout=30)
    took = time.monotonic() - sent
    print(f"\ncancel of a running 60 s Job: answer then 'cancelled' reply in {took:.2f} s")
    assert answer["status"] == "cancelling", answer
    assert answer["jobName"] == name
    assert reply["status"] == "cancelled", reply
    assert reply["result"] == f"Job {name} complete."  # Java-era clients still find the name
    assert reply["jobName"] == name
    assert reply["reason"] == "Cancelled"
    assert reply["message"].startswith("Cancelled by test-suite at ")
    assert reply["message"].endswith(": not needed")
    assert took < 20
    assert_stopped(api_client, namespace, name)
    client.barrier()
    assert len(client.replies[cid]) == 1
    assert cancel_worker.metric('mstc_requests_total{outcome="cancelled"}') == 1


def test_cancel_by_requested_name_and_of_a_finished_job(
    cancel_worker: WorkerProcess, client: AmqpClient, bucket: str, work_queue: str,
    control_queue: str, api_client: k8s.ApiClient, namespace: str,
) -> None:  # fmt: skip
    requested = f"cancel-me-{uuid.uuid4().hex[:6]}"
    cid = client.send(request(bucket, jobName=requested, **pod_fate(run_for="60s")),
                      queue=work_queue, headers=PROGRESS)  # fmt: skip
    name = wait_running(client, cid)
    answer = client.wait(cancel(client, control_queue, requested), timeout=30)
    assert (answer["status"], answer["jobName"], answer["requestedName"]) == (
        "cancelling", name, requested)  # fmt: skip
    assert client.wait(cid, timeout=30)["status"] == "cancelled"
    wait_released(api_client, namespace, name)
    # The same Job again: finished, with its status from its reply record (or gone: unknown).
    again = client.wait(cancel(client, control_queue, name), timeout=30)
    assert again["status"] in ("finished", "unknown"), again
    if again["status"] == "finished":
        assert again["jobStatus"] == "cancelled"
        said = f"Job {name} has finished already (cancelled); there is nothing to cancel."
        assert again["message"] == said

    done = client.send(request(bucket, **pod_fate(run_for="1s")), queue=work_queue)
    finished = client.wait(done, timeout=120)["jobName"]
    wait_released(api_client, namespace, finished)
    answer = client.wait(cancel(client, control_queue, finished), timeout=30)
    assert answer["status"] == "finished", answer
    assert answer["jobStatus"] == "succeeded"


def test_cancel_of_an_unknown_job_and_bad_control_messages_get_clear_answers(
    cancel_worker: WorkerProcess, client: AmqpClient, control_queue: str
) -> None:
    unknown = client.wait(cancel(client, control_queue, "no-such-job-anywhere"), timeout=30)
    assert unknown == {
        "format": 1,
        "action": "cancel",
        "status": "unknown",
        "requestedName": "no-such-job-anywhere",
        "message": "No Job 'no-such-job-anywhere' is known to this worker: it is neither the "
        "name of a Job nor the jobName of a request whose Job still exists.",
    }
    for body in (
        b"not json",
        b"[]",
        b'{"action": "stop", "jobName": "x"}',
        b'{"action": "cancel"}',
    ):
        answer = client.wait(client.send(body, queue=control_queue), timeout=30)
        assert answer["status"] == "invalid", (body, answer)
        assert answer["message"]
    # The consumer is still there and nothing was requeued.
    again = client.wait(cancel(client, control_queue, "Still/Unknown"), timeout=30)
    assert again["status"] == "unknown"
    assert "Traceback" not in cancel_worker.log_text


def test_the_cancel_is_carried_out_when_another_replica_receives_it(
    make_worker: MakeWorker, client: AmqpClient, bucket: str, work_queue: str,
    api_client: k8s.ApiClient, namespace: str,
) -> None:  # fmt: skip
    """Replica A made the Job; only replica B consumes the control queue the cancel goes to."""
    holder = start_worker(make_worker, MSTC_CONTROL_QUEUE=f"{work_queue}.control-a")
    cid = client.send(request(bucket, **pod_fate(run_for="60s")), queue=work_queue,
                      headers=PROGRESS)  # fmt: skip
    name = wait_running(client, cid)
    receiver = start_worker(make_worker, MSTC_CONTROL_QUEUE=f"{work_queue}.control-b",
                           MSTC_WORK_QUEUE=f"{work_queue}.b")  # fmt: skip
    sent = time.monotonic()
    answer = client.wait(cancel(client, f"{work_queue}.control-b", name), timeout=30)
    reply = client.wait(cid, timeout=30)
    took = time.monotonic() - sent
    stopped_by = [who for w, who in ((holder, "A"), (receiver, "B"))
                  if f"job {name} ended: cancelled" in w.log_text]  # fmt: skip
    print(f"\ncancel received by replica B: reply in {took:.2f} s; "
          f"stopped by replica {stopped_by}")  # fmt: skip
    assert answer["status"] == "cancelling"
    assert reply["status"] == "cancelled"
    assert "cancel asked by" in receiver.log_text
    assert "cancel asked by" not in holder.log_text
    assert len(stopped_by) == 1
    assert_stopped(api_client, namespace, name)
    client.barrier()
    assert len(client.replies[cid]) == 1


def test_a_worker_started_after_the_cancel_was_marked_carries_it_out(
    make_worker: MakeWorker, client: AmqpClient, bucket: str, work_queue: str,
    api_client: k8s.ApiClient, namespace: str,
) -> None:  # fmt: skip
    """The replica that marked the Job and the one that held it are gone; the next one acts."""
    first = start_worker(make_worker)
    cid = client.send(request(bucket, **pod_fate(run_for="60s")), queue=work_queue,
                      headers=PROGRESS)  # fmt: skip
    name = wait_running(client, cid)
    first.stop()
    marked = {CANCEL_AT_ANNOTATION: "2026-11-30T10:00:00.000Z", CANCEL_BY_ANNOTATION: "by-hand"}
    k8s.BatchV1Api(api_client).patch_namespaced_job(
        name, namespace, {"metadata": {"annotations": marked}}
    )
    start_worker(make_worker)
    reply = client.wait(cid, timeout=60)
    assert reply["status"] == "cancelled", reply
    assert reply["message"] == "Cancelled by by-hand at 2026-11-30T10:00:00.000Z."
    assert_stopped(api_client, namespace, name)
