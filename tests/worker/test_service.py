"""The worker end to end: a real worker process, real RabbitMQ, MinIO and Kubernetes API server.

Requests carry KWOK annotations (see stack/kwok/stages.yaml) to choose how their pod behaves.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from minio import Minio

from tests.support.kube import wait_gone, watch_until
from tests.support.s3 import read_object
from tests.support.stack import StackInfo
from tests.support.worker import AmqpClient, WorkerProcess, queue_message_stats
from tests.worker.conftest import MakeWorker

pytestmark = pytest.mark.stack


def request(bucket: str, **extra: Any) -> dict[str, Any]:
    return {
        "image": "example.invalid/job:1",
        "jobName": "test-job",
        "inputBucket": bucket,
        "prefix": "run-1",
        **extra,
    }


def pod_fate(**annotations: str) -> dict[str, Any]:
    return {"annotations": {f"mstc.test/{k.replace('_', '-')}": v for k, v in annotations.items()}}


def jobs(api_client: k8s.ApiClient, namespace: str) -> list[k8s.V1Job]:
    return list(k8s.BatchV1Api(api_client).list_namespaced_job(namespace).items)


def wait_released(api_client: k8s.ApiClient, namespace: str, name: str) -> None:
    """Until the worker let the Job go: its reply is confirmed, nothing more will be sent."""
    watch_until(
        k8s.BatchV1Api(api_client).list_namespaced_job,
        lambda kind, job: kind == "DELETED" or not job.metadata.finalizers,
        done_if_empty=True,  # let go and deleted by its TTL already
        namespace=namespace,
        field_selector=f"metadata.name={name}",
    )


# --- the Java contract ------------------------------------------------------------------------


def test_java_era_client_round_trip(
    make_worker: MakeWorker,
    client: AmqpClient,
    bucket: str,
    minio: Minio,
    api_client: k8s.ApiClient,
    namespace: str,
) -> None:
    """Written the way the Java project's Python test client is, against the contract's names."""
    client.channel.queue_declare("mstc.queue.work", durable=True)  # no arguments, as they do
    client.channel.queue_purge("mstc.queue.work")
    make_worker(MSTC_WORK_QUEUE="mstc.queue.work", MSTC_RESULTS_QUEUE="mstc.queue.results")
    client.channel.queue_declare("mstc.queue.work", durable=True)  # and again, after the worker
    body = {
        "image": "mstc/python-test:latest",
        "jobName": "test-job",
        "inputBucketUrl": f"http://127.0.0.1:9000/{bucket}",
        "prefix": "run-1",
    }
    cid = client.send(body, exchange="mstc.exchange")
    reply = client.wait(cid)
    job_name = reply["result"].split(" ")[1]
    assert reply["result"] == f"Job {job_name} complete."
    assert job_name.startswith("test-job-")
    logs = [o.object_name for o in minio.list_objects(bucket, prefix=f"run-1-{job_name}")]
    assert logs == [f"run-1-{job_name}.log"]
    assert "SUCCESS" in read_object(minio, bucket, logs[0]).decode()
    # ... and the truth beside the Java text.
    assert reply["status"] == "succeeded"
    assert reply["exitCode"] == 0
    assert reply["jobName"] == job_name
    assert reply["namespace"] == namespace
    assert reply["logBucket"] == bucket
    assert reply["logObject"] == f"run-1-{job_name}.log"
    assert reply["durationMs"] >= 0


def test_job_follows_the_contract(
    worker: WorkerProcess, client: AmqpClient, bucket: str, api_client: k8s.ApiClient,
    namespace: str, work_queue: str,
) -> None:  # fmt: skip
    cid = client.send(request(bucket, timeOut=2, **pod_fate(run_for="2s")), queue=work_queue)
    job = watch_until(
        k8s.BatchV1Api(api_client).list_namespaced_job,
        lambda _kind, _job: True,
        namespace=namespace,
    )
    assert job.metadata.labels["app.kubernetes.io/part-of"] == "MSTC"
    assert job.metadata.labels["app.kubernetes.io/created-by"] == "mstc-cloud-worker"
    assert job.spec.active_deadline_seconds == 120
    assert job.spec.ttl_seconds_after_finished == 30
    assert job.spec.template.spec.restart_policy == "Never"
    env = {e.name: e.value for e in job.spec.template.spec.containers[0].env}
    assert env["INPUT_BUCKET"] == bucket
    assert env["FILE_PREFIX"] == "run-1"
    assert client.wait(cid)["status"] == "succeeded"


# --- outcomes --------------------------------------------------------------------------------


def test_failed_job_reply_carries_exit_code(
    worker: WorkerProcess, client: AmqpClient, bucket: str, work_queue: str
) -> None:
    cid = client.send(request(bucket, **pod_fate(exit_code="3")), queue=work_queue)
    reply = client.wait(cid)
    assert reply["status"] == "failed"
    assert reply["exitCode"] == 3
    assert reply["reason"] == "Error"  # the container's reason, not the Job's BackoffLimitExceeded
    assert reply["result"] == f"Job {reply['jobName']} complete."


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff"])
def test_stuck_pod_fails_fast_and_the_job_is_deleted(
    worker: WorkerProcess, client: AmqpClient, bucket: str, work_queue: str,
    api_client: k8s.ApiClient, namespace: str, reason: str,
) -> None:  # fmt: skip
    cid = client.send(request(bucket, **pod_fate(waiting_reason=reason)), queue=work_queue)
    reply = client.wait(cid)
    assert reply["status"] == "failed"
    assert reply["reason"] == reason
    wait_gone(
        k8s.BatchV1Api(api_client).list_namespaced_job,
        namespace=namespace,
        field_selector=f"metadata.name={reply['jobName']}",
    )


def test_timeout_is_enforced_by_the_cluster(
    worker: WorkerProcess, client: AmqpClient, bucket: str, work_queue: str
) -> None:
    cid = client.send(request(bucket, timeOut=1, **pod_fate(run_for="1h")), queue=work_queue)
    reply = client.wait(cid, timeout=150)
    assert reply["status"] == "timeout"
    assert reply["reason"] == "DeadlineExceeded"


def test_request_without_reply_to_is_answered_on_the_results_queue(
    worker: WorkerProcess, client: AmqpClient, bucket: str, work_queue: str
) -> None:
    results = f"{work_queue}.results"
    cid = client.send(request(bucket), queue=work_queue, reply=False)
    method, props, body = None, None, b""
    deadline_events = 0
    while method is None:
        client.conn.process_data_events(time_limit=0.5)
        method, props, body = client.channel.basic_get(results, auto_ack=True)
        deadline_events += 1
        assert deadline_events < 180, "no reply on the results queue"
    assert props is not None
    assert props.correlation_id == cid
    assert json.loads(body)["status"] == "succeeded"


# --- bad input --------------------------------------------------------------------------------

BAD_BODIES = {
    "not json": (b"{nope", "MalformedRequest"),
    "not an object": (b"[1, 2]", "MalformedRequest"),
    "no image": (json.dumps({"jobName": "j", "inputBucket": "abc"}).encode(), "InvalidRequest"),
    "negative timeout": (
        json.dumps({"image": "i", "jobName": "j", "inputBucket": "abc", "timeOut": -5}).encode(),
        "RequestRejected",
    ),
    "too big": (
        json.dumps({"image": "i", "jobName": "j", "x": "y" * 1_100_000}).encode(),
        "MalformedRequest",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_request_is_rejected_and_the_worker_keeps_serving(
    worker: WorkerProcess, client: AmqpClient, bucket: str, work_queue: str,
    api_client: k8s.ApiClient, namespace: str, case: str,
) -> None:  # fmt: skip
    body, reason = BAD_BODIES[case]
    reply = client.wait(client.send(body, queue=work_queue))
    assert reply["status"] == "rejected"
    assert reply["reason"] == reason
    assert reply["error"]
    if reason == "InvalidRequest":
        assert reply["result"] == "Invalid request No image: " + body.decode()
    else:
        assert reply["result"].startswith(f"{reason}: ")
    assert jobs(api_client, namespace) == []
    # Not requeued: the queue is empty, and a good request still gets served.
    assert client.channel.queue_declare(work_queue, passive=True).method.message_count == 0
    assert client.wait(client.send(request(bucket), queue=work_queue))["status"] == "succeeded"


def test_bad_configuration_exits_with_the_variable_named(stack: StackInfo) -> None:
    env = {"PATH": "/usr/bin:/bin", **stack.env, "MSTC_CONCURRENCY": "zero"}
    out = subprocess.run(
        [sys.executable, "-m", "mstc_worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "MSTC_CONCURRENCY" in out.stderr


# --- nothing lost, nothing twice --------------------------------------------------------------


def test_same_request_twice_makes_one_job(
    worker: WorkerProcess, client: AmqpClient, bucket: str, work_queue: str,
    api_client: k8s.ApiClient, namespace: str,
) -> None:  # fmt: skip
    cid = str(uuid.uuid4())
    body = request(bucket, **pod_fate(run_for="3s"))
    client.send(body, queue=work_queue, correlation_id=cid)
    client.send(body, queue=work_queue, correlation_id=cid)  # a redelivery, as the broker may do
    reply = client.wait(cid)
    wait_released(api_client, namespace, reply["jobName"])
    assert len(jobs(api_client, namespace)) <= 1
    client.conn.process_data_events(time_limit=0)
    assert len(client.replies[cid]) == 1


def test_parallel_jobs_run_at_the_same_time(
    make_worker: MakeWorker, client: AmqpClient, bucket: str, work_queue: str
) -> None:
    make_worker(MSTC_CONCURRENCY="8")
    cids = [
        client.send(request(bucket, **pod_fate(run_for="5s")), queue=work_queue) for _ in range(8)
    ]
    replies = [client.wait(cid) for cid in cids]
    assert {r["status"] for r in replies} == {"succeeded"}
    # All eight ran at once: every one started before any one finished.
    assert max(r["startedAt"] for r in replies) < min(r["finishedAt"] for r in replies)


def test_heartbeats_survive_a_long_job(
    make_worker: MakeWorker, client: AmqpClient, bucket: str, work_queue: str
) -> None:
    worker = make_worker(MSTC_HEARTBEAT_SECONDS="2")
    cid = client.send(request(bucket, **pod_fate(run_for="30s")), queue=work_queue)
    assert client.wait(cid, timeout=120)["status"] == "succeeded"
    assert worker.metric("mstc_broker_reconnects_total") == 0


# --- HTTP -------------------------------------------------------------------------------------


def test_java_rest_endpoints(make_worker: MakeWorker, bucket: str, tmp_path: Path) -> None:
    token_file = tmp_path / "http-token"
    token_file.write_text("a-token-for-the-rest-port")
    worker = make_worker(MSTC_HTTP_TOKEN_FILE=str(token_file))
    assert worker.get("/mstc/worker") == (200, "hello")
    req = urllib.request.Request(
        worker.url + "/mstc/worker/execute",
        data=json.dumps(request(bucket)).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": "Bearer a-token-for-the-rest-port",
        },
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=120) as resp:
        text = resp.read().decode()
    assert text.startswith("Job test-job-")
    assert text.endswith(" complete.")
    assert worker.metric('mstc_requests_total{outcome="succeeded"}') == 1


# --- capacity and the broker's consumer timeout -------------------------------------------------


def test_in_flight_jobs_are_capped_and_the_rest_waits_in_the_queue(
    make_worker: MakeWorker, client: AmqpClient, bucket: str, work_queue: str,
    api_client: k8s.ApiClient, namespace: str,
) -> None:  # fmt: skip
    make_worker(MSTC_CONCURRENCY="2")
    cids = [
        client.send(request(bucket, **pod_fate(run_for="3s")), queue=work_queue) for _ in range(5)
    ]
    running: set[str] = set()
    most = 0
    seen: set[str] = set()

    def track(kind: str, job: k8s.V1Job) -> bool:
        nonlocal most
        ended = bool(job.status and (job.status.succeeded or job.status.failed))
        if kind == "DELETED" or ended or not job.metadata.finalizers:
            running.discard(job.metadata.name)
        else:
            running.add(job.metadata.name)
            seen.add(job.metadata.name)
        most = max(most, len(running))
        return len(seen) == 5 and not running

    watch_until(
        k8s.BatchV1Api(api_client).list_namespaced_job, track, namespace=namespace, timeout=120
    )
    assert most == 2
    assert {client.wait(cid)["status"] for cid in cids} == {"succeeded"}


def test_at_the_cap_queued_requests_are_never_redelivered(
    stack: StackInfo, make_worker: MakeWorker, client: AmqpClient, bucket: str, work_queue: str
) -> None:
    client.channel.queue_declare(work_queue, durable=True)  # as the worker declares it
    cids = [
        client.send(request(bucket, jobName=f"q{n}", **pod_fate(run_for="1s")), queue=work_queue)
        for n in range(20)
    ]
    make_worker(MSTC_CONCURRENCY="2")  # 20 waiting: the worker is at its cap at once
    statuses = [client.wait(cid, timeout=300)["status"] for cid in cids]
    assert statuses == ["succeeded"] * 20
    # The broker's own count, not the worker's view: each request delivered once, none
    # handed back (a consumer cancelled at the cap returns what it has buffered, redelivered).
    stats = queue_message_stats(stack, work_queue, until=lambda s: s.get("ack", 0) >= 20)
    assert (stats.get("redeliver", 0), stats.get("deliver_get")) == (0, 20)
    client.barrier()
    assert sorted(len(client.replies[cid]) for cid in cids) == [1] * 20


def test_sigterm_at_the_cap_hands_held_requests_back_and_loses_nothing(
    stack: StackInfo, make_worker: MakeWorker, client: AmqpClient, bucket: str,
    work_queue: str, api_client: k8s.ApiClient, namespace: str,
) -> None:  # fmt: skip
    client.channel.queue_declare(work_queue, durable=True)  # as the worker declares it
    cids = [
        client.send(request(bucket, jobName=f"d{n}", **pod_fate(run_for="10s")), queue=work_queue)
        for n in range(6)
    ]
    worker = make_worker(MSTC_CONCURRENCY="2", MSTC_SHUTDOWN_GRACE_SECONDS="60")
    # Two Jobs run and two more requests are held by the worker (delivered, not acked).
    queue_message_stats(stack, work_queue, until=lambda s: s.get("deliver_get", 0) >= 4)
    assert len(jobs(api_client, namespace)) == 2

    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=90) == 0
    client.barrier()
    assert sorted(len(client.replies.get(cid, [])) for cid in cids) == [0] * 4 + [1] * 2
    assert client.channel.queue_declare(work_queue, passive=True).method.message_count == 4

    worker.start()  # the next worker takes what was handed back
    assert {client.wait(cid, timeout=120)["status"] for cid in cids} == {"succeeded"}
    client.barrier()
    assert sorted(len(client.replies[cid]) for cid in cids) == [1] * 6


def test_watches_do_not_grow_with_jobs_in_flight(
    stack: StackInfo, make_worker: MakeWorker, client: AmqpClient, bucket: str,
    work_queue: str, api_client: k8s.ApiClient, namespace: str,
) -> None:  # fmt: skip
    def watches() -> dict[str, float]:
        metrics = stack.run(stack.env["KUBECTL_BIN"], "get", "--raw", "/metrics").stdout
        counts = {"jobs": 0.0, "pods": 0.0}
        for line in metrics.splitlines():
            if line.startswith("apiserver_longrunning_requests{") and 'verb="WATCH"' in line:
                for resource in counts:
                    if f'resource="{resource}"' in line and 'scope="namespace"' in line:
                        counts[resource] += float(line.split()[-1])
        return counts

    before = watches()
    make_worker(MSTC_PROCESSES="2", MSTC_CONCURRENCY="30")
    # Ready means the first lists are done; the watch requests follow them at once.
    deadline = time.monotonic() + 30
    idle = watches()
    while idle["pods"] - before["pods"] < 2 or idle["jobs"] - before["jobs"] < 2:
        assert time.monotonic() < deadline, f"watches never opened: {before} -> {idle}"
        idle = watches()
    cids = [
        client.send(request(bucket, **pod_fate(run_for="20s")), queue=work_queue) for _ in range(30)
    ]
    watch_until(
        k8s.BatchV1Api(api_client).list_namespaced_job,
        lambda _k, _j: len(jobs(api_client, namespace)) == 30,
        namespace=namespace,
    )
    during = watches()
    # One Job watch and one Pod watch per worker process, whatever the number of Jobs.
    # (The API server counts every namespaced watch: run alone, as `make test` does.)
    assert idle["jobs"] - before["jobs"] == 2
    assert idle["pods"] - before["pods"] == 2
    assert during == idle
    assert {client.wait(cid)["status"] for cid in cids} == {"succeeded"}


def test_json_log_lines_name_the_job(
    make_worker: MakeWorker, client: AmqpClient, bucket: str, work_queue: str,
    api_client: k8s.ApiClient, namespace: str,
) -> None:  # fmt: skip
    worker = make_worker(MSTC_LOG_FORMAT="json")
    name = client.wait(client.send(request(bucket), queue=work_queue))["jobName"]
    # The reply can arrive before the worker logs having sent it; the release comes after.
    wait_released(api_client, namespace, name)
    lines = [json.loads(line) for line in worker.log_text.splitlines() if line.strip()]
    steps = [line["message"] for line in lines if name in line["message"]]
    assert any("created" in step for step in steps)
    assert any("ended: succeeded" in step for step in steps)
    assert any("replied" in step for step in steps)


def test_job_the_api_server_refuses_is_reported_not_retried(
    worker: WorkerProcess, client: AmqpClient, bucket: str, work_queue: str,
    api_client: k8s.ApiClient, namespace: str,
) -> None:  # fmt: skip
    # Valid to the worker's parser, invalid to Kubernetes: a request above its limit.
    resources = {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}
    reply = client.wait(client.send(request(bucket, resources=resources), queue=work_queue))
    assert reply["status"] == "error"
    assert reply["reason"] == "KubeRejected"
    assert reply["result"].startswith("KubeRejected: ")
    assert "must be less than or equal to cpu limit" in reply["error"]
    assert jobs(api_client, namespace) == []
    assert worker.metric('mstc_kube_api_errors_total{kind="rejected"}') == 1
    assert client.channel.queue_declare(work_queue, passive=True).method.message_count == 0
