"""`mstc-worker release` on the real stack: the way out of the reply-pending finalizer.

A worker is killed while it holds two Jobs: one that then ends (its reply owed) and one still
running. `mstc-worker release` must leave no Job holding the finalizer, answer the ended Job
exactly once, answer the running one `error` (its Job deleted), and let the namespace go.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.support.kube import job_condition, simulated_job, wait_gone, wait_job, watch_until
from tests.support.stack import StackInfo
from tests.support.worker import AmqpClient, WorkerProcess
from tests.worker.conftest import MakeWorker
from tests.worker.test_service import pod_fate, request

pytestmark = pytest.mark.stack

FINALIZER = "mstc.io/reply-pending"
CORRELATION = "mstc.io/correlation-id"


@pytest.fixture
def namespace(api_client: k8s.ApiClient) -> Iterator[str]:
    """A fresh namespace that the test itself deletes (a 404 afterwards is the good case)."""
    core = k8s.CoreV1Api(api_client)
    name = f"t-{uuid.uuid4().hex[:10]}"
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    yield name
    try:
        core.delete_namespace(name, propagation_policy="Background")
    except ApiException as exc:
        if exc.status != 404:
            raise


def held_jobs(api_client: k8s.ApiClient, namespace: str) -> list[k8s.V1Job]:
    items = k8s.BatchV1Api(api_client).list_namespaced_job(namespace).items
    return [job for job in items if FINALIZER in (job.metadata.finalizers or [])]


def release(worker: WorkerProcess, *extra_env: tuple[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mstc_worker", "release", "--timeout", "20"],
        env={**worker.env, **dict(extra_env)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def held_by_a_dead_worker(
    make_worker: MakeWorker, client: AmqpClient, bucket: str, work_queue: str,
    api_client: k8s.ApiClient, namespace: str,
) -> tuple[WorkerProcess, str, str]:  # fmt: skip
    """A worker killed holding two Jobs: `ended` (ended since, reply owed) and `running`."""
    worker = make_worker()
    ended = client.send(request(bucket, jobName="ends", **pod_fate(run_for="3s")), queue=work_queue)
    running = client.send(
        request(bucket, jobName="runs", **pod_fate(run_for="1h")), queue=work_queue
    )
    batch = k8s.BatchV1Api(api_client)
    watch_until(
        batch.list_namespaced_job,
        lambda _kind, _job: len(held_jobs(api_client, namespace)) == 2,
        namespace=namespace,
    )
    worker.signal(signal.SIGKILL)  # no hand-over, no reply: the Jobs keep the finalizer
    worker.wait()
    watch_until(
        batch.list_namespaced_job,
        lambda _kind, job: (
            job.metadata.annotations.get(CORRELATION) == ended
            and job_condition(job, "Complete") is not None
        ),
        namespace=namespace,
    )
    return worker, ended, running


def test_release_answers_what_is_owed_lets_go_of_every_job_and_the_namespace_goes(
    make_worker: MakeWorker, client: AmqpClient, bucket: str, work_queue: str,
    api_client: k8s.ApiClient, namespace: str,
) -> None:  # fmt: skip
    worker, ended, running = held_by_a_dead_worker(
        make_worker, client, bucket, work_queue, api_client, namespace
    )

    done = release(worker)

    assert done.returncode == 0, done.stdout + done.stderr
    assert held_jobs(api_client, namespace) == []
    client.barrier()
    assert [r["status"] for r in client.replies[ended]] == ["succeeded"]
    [cancelled] = client.replies[running]
    assert (cancelled["status"], cancelled["reason"]) == ("error", "WorkerReleased")
    wait_gone(
        k8s.BatchV1Api(api_client).list_namespaced_job,
        namespace=namespace,
        field_selector=f"metadata.name={cancelled['jobName']}",
    )
    core = k8s.CoreV1Api(api_client)
    core.delete_namespace(namespace)
    wait_gone(core.list_namespace, field_selector=f"metadata.name={namespace}", timeout=90)


def test_release_lets_go_even_when_the_broker_is_unreachable(
    make_worker: MakeWorker, client: AmqpClient, bucket: str, work_queue: str,
    api_client: k8s.ApiClient, namespace: str,
) -> None:  # fmt: skip
    worker, ended, running = held_by_a_dead_worker(
        make_worker, client, bucket, work_queue, api_client, namespace
    )
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]

    done = release(worker, ("MSTC_AMQP_URL", f"amqp://mstc:unreachable@127.0.0.1:{port}/"))

    assert done.returncode == 0, done.stdout + done.stderr
    assert held_jobs(api_client, namespace) == []
    assert "reply not sent, the broker is unreachable" in done.stdout + done.stderr
    client.barrier()
    assert ended not in client.replies
    assert running not in client.replies


def test_release_leaves_a_live_workers_claim_alone_but_only_for_its_timeout(
    stack: StackInfo, client: AmqpClient, api_client: k8s.ApiClient, namespace: str
) -> None:
    """A Job another worker is finishing is left to it, unanswered; after the timeout it is
    let go all the same, so that nothing can hang on the finalizer."""
    batch = k8s.BatchV1Api(api_client)
    correlation_id = str(uuid.uuid4())
    job = simulated_job(f"claimed-{uuid.uuid4().hex[:8]}", run_for="1s")
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    job.metadata.labels = {"app.kubernetes.io/created-by": "mstc-cloud-worker"}
    job.metadata.finalizers = [FINALIZER]
    job.metadata.annotations = {
        "mstc.io/claimed-by": "another-worker/1",  # fresh: stale only after 60 s
        "mstc.io/claimed-at": now,
        "mstc.io/reply-to": client.reply_queue,
        CORRELATION: correlation_id,
    }
    name = batch.create_namespaced_job(namespace, job).metadata.name
    wait_job(batch, namespace, name, "Complete")
    env = {**os.environ, **stack.env, "MSTC_NAMESPACE": namespace}
    started = time.monotonic()

    done = subprocess.run(
        [sys.executable, "-m", "mstc_worker", "release", "--timeout", "3"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    assert time.monotonic() - started < 30  # bounded: the timeout, plus start-up
    assert held_jobs(api_client, namespace) == []
    assert "still claimed by another-worker/1" in done.stdout + done.stderr
    client.barrier()
    assert correlation_id not in client.replies
