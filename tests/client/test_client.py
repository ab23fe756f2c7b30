"""The `Client` library against the real stack: many threads, a broker restart, a Java reply.

A real worker process serves the requests, except where the test plays a Java-era worker itself
to send the reply form that worker sent (only `result`).
"""

from __future__ import annotations

import io
import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pika
import pytest
from kubernetes import client as k8s
from minio import Minio

import localstack
from mstc_client import Client, JobRequest, Reply, Status
from tests.support.kube import watch_until
from tests.support.stack import StackInfo
from tests.support.worker import WorkerProcess
from tests.worker.conftest import MakeWorker

pytestmark = pytest.mark.stack

IMAGE = "example.invalid/job:1"


def request(bucket: str, job_name: str = "lib", **annotations: str) -> JobRequest:
    return JobRequest(
        image=IMAGE,
        job_name=job_name,
        input_bucket=bucket,
        prefix=f"run-{uuid.uuid4().hex[:8]}",
        annotations={f"mstc.test/{k.replace('_', '-')}": v for k, v in annotations.items()},
    )


def test_fifty_threads_submitting_over_one_client_each_get_their_own_reply(
    make_worker: MakeWorker, mstc_client: Client, data_bucket: str
) -> None:
    make_worker(MSTC_CONCURRENCY="50")
    count = 50
    start = threading.Barrier(count)

    def submit_and_wait(index: int) -> tuple[str, Reply]:
        start.wait()  # all threads call submit() at the same moment
        handle = mstc_client.submit(request(data_bucket, f"conc-{index}"))
        return handle.correlation_id, handle.wait(timeout=240)

    with ThreadPoolExecutor(count) as pool:
        results = list(pool.map(submit_and_wait, range(count)))
    assert len({cid for cid, _reply in results}) == count
    for index, (_cid, reply) in enumerate(results):
        assert reply.status is Status.SUCCEEDED, reply
        assert reply.job_name is not None
        assert reply.job_name.startswith(f"conc-{index}-")
    assert len({reply.job_name for _cid, reply in results}) == count


def test_broker_restart_while_waiting_still_ends_with_the_reply(
    stack: StackInfo, worker: WorkerProcess, mstc_client: Client, data_bucket: str,
    api_client: k8s.ApiClient, namespace: str,
) -> None:  # fmt: skip
    if stack.kind != "local":
        pytest.skip("restarts RabbitMQ of the local stack; this stack's broker is not ours")
    handle = mstc_client.submit(request(data_bucket, "restart", run_for="20s"))
    assert handle.wait_sent(timeout=30)
    watch_until(
        k8s.BatchV1Api(api_client).list_namespaced_job, lambda _k, _j: True, namespace=namespace
    )
    cfg = localstack.Config.from_env()
    localstack.stop(cfg, "rabbitmq")
    localstack.up_rabbitmq(cfg)
    reply = handle.wait(timeout=180)
    assert reply.status is Status.SUCCEEDED
    assert reply.job_name is not None
    assert reply.job_name.startswith("restart-")
    assert mstc_client.reconnects >= 1
    # The re-sent request adopted the running Job: there is exactly one.
    jobs = k8s.BatchV1Api(api_client).list_namespaced_job(namespace).items
    assert [job.metadata.name for job in jobs] in ([], [reply.job_name])


def test_the_handle_follows_the_jobs_state_until_the_reply(
    worker: WorkerProcess, mstc_client: Client, data_bucket: str
) -> None:
    handle = mstc_client.submit(request(data_bucket, "states", run_for="5s"))
    reply = handle.wait(timeout=120)
    assert reply.status is Status.SUCCEEDED
    assert handle.job_states == ["accepted", "running"]
    assert handle.job_name == reply.job_name
    assert handle.state == "done"


def test_a_java_worker_reply_with_only_result_is_understood(
    stack: StackInfo, mstc_client: Client, work_queue: str, minio: Minio, tmp_path: Path
) -> None:
    """The test plays the Java worker: consume the request, store the log, reply `result` only."""
    served = threading.Event()
    conn = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    channel = conn.channel()
    channel.queue_declare(work_queue, durable=True)

    def java_worker() -> None:
        for method, props, body in channel.consume(work_queue, inactivity_timeout=60):
            if method is None:
                return
            req = json.loads(body)
            job = f"{req['jobName']}-{uuid.uuid4()}"
            log = b"Java job log\nSUCCESS\n"
            name = f"{req['prefix']}-{job}.log"
            minio.put_object(req["outputBucket"], name, io.BytesIO(log), len(log))
            reply = json.dumps({"result": f"Job {job} complete."}).encode()
            for _ in range(2):  # a duplicate reply must not confuse the client
                props_out = pika.BasicProperties(correlation_id=props.correlation_id)
                channel.basic_publish("", props.reply_to, reply, props_out)
            channel.basic_ack(method.delivery_tag)
            served.set()
            return

    thread = threading.Thread(target=java_worker)
    thread.start()
    try:
        result = mstc_client.run(IMAGE, "java-job", [], tmp_path / "out", wait_timeout=60)
    finally:
        thread.join()
        conn.close()
    assert served.is_set()
    assert result.status is Status.UNKNOWN
    assert not result.ok
    assert result.reply.java_form
    assert result.job_name is not None
    assert result.job_name.startswith("java-job-")
    assert result.raise_for_status() is result  # unknown is not an error: read the log
    assert result.log_path is not None
    assert result.log_path.read_bytes() == b"Java job log\nSUCCESS\n"
