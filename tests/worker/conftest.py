"""Fixtures for tests of the whole worker: a real worker process on the real stack.

Each test gets its own namespace and its own work queue, so tests cannot see each other's
Jobs or messages; the Java-compatibility test uses the contract's queue names on purpose.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s
from minio import Minio

from tests.support.stack import StackInfo
from tests.support.worker import AmqpClient, WorkerProcess

MakeWorker = Callable[..., WorkerProcess]


@pytest.fixture
def minio(stack: StackInfo) -> Minio:
    user, password = stack.s3_keys
    return Minio(stack.s3_host, access_key=user, secret_key=password, secure=False)


@pytest.fixture
def bucket(minio: Minio) -> str:
    """A bucket holding one input file, as a client would have uploaded it."""
    name = f"in-{uuid.uuid4().hex[:12]}"
    minio.make_bucket(name)
    data = b"3 1 2\n"
    minio.put_object(name, "run-1-input.txt", io.BytesIO(data), len(data))
    return name


@pytest.fixture
def minio_secret(api_client: k8s.ApiClient, namespace: str, stack: StackInfo) -> None:
    """The Secret the Jobs' MINIO_ROOT_USER/PASSWORD come from (the chart creates it)."""
    user, password = stack.s3_keys
    k8s.CoreV1Api(api_client).create_namespaced_secret(
        namespace,
        k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name="mstc-minio"),
            string_data={"rootUser": user, "rootPassword": password},
        ),
    )


@pytest.fixture
def work_queue() -> str:
    return f"mstc.queue.work.test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_worker(
    stack: StackInfo,
    api_client: k8s.ApiClient,
    namespace: str,
    work_queue: str,
    minio_secret: None,
    tmp_path: Path,
) -> Iterator[MakeWorker]:
    """Start worker processes for this test's namespace and queue; all stopped afterwards."""
    workers: list[WorkerProcess] = []

    def make(*, start: bool = True, **env: str) -> WorkerProcess:
        settings = {
            "MSTC_NAMESPACE": namespace,
            "MSTC_WORK_QUEUE": work_queue,
            "MSTC_RESULTS_QUEUE": f"{work_queue}.results",
            "MSTC_CLAIM_STALE_SECONDS": "5",
            "MSTC_RESYNC_SECONDS": "2",
            "MSTC_SHUTDOWN_GRACE_SECONDS": "5",
            **env,
        }
        log_dir = tmp_path / f"worker-{len(workers)}"
        log_dir.mkdir()
        worker = WorkerProcess(stack, settings, log_dir)
        workers.append(worker)
        if start:
            worker.start()
        return worker

    yield make
    for worker in workers:
        worker.stop()
    # A test that ends mid-request leaves Jobs held by the worker's finalizer; let them go so
    # the namespace can be deleted.
    batch = k8s.BatchV1Api(api_client)
    for job in batch.list_namespaced_job(namespace).items:
        if not job.metadata.finalizers:
            continue
        try:
            batch.patch_namespaced_job(
                job.metadata.name, namespace, {"metadata": {"finalizers": None}}
            )
        except k8s.ApiException as exc:
            # Let go and deleted (its TTL) between the list and the patch: nothing to do.
            if exc.status != 404:
                raise


@pytest.fixture
def worker(make_worker: MakeWorker) -> WorkerProcess:
    return make_worker()


@pytest.fixture
def client(stack: StackInfo) -> Iterator[AmqpClient]:
    amqp = AmqpClient(stack)
    yield amqp
    amqp.close()
