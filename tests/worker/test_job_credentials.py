"""A Job's own MinIO credentials, against the real MinIO and API server of the local stack.

With the key the worker makes for a request (STS AssumeRole, `job_access.session_policy`),
the request's inputs read and its outputs write; another bucket, another prefix (in either
bucket), a delete and an admin call are refused by MinIO itself. The worker delivers the key
in a Secret owned by the Job, which Kubernetes deletes with the Job.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from minio import Minio
from minio.credentials.providers import StaticProvider
from minio.error import MinioAdminException, S3Error
from minio.minioadmin import MinioAdmin

from mstc_worker.job_access import credential_seconds, session_policy
from mstc_worker.settings import load_settings
from mstc_worker.storage import Storage, TemporaryCredentials
from tests.support.s3 import read_object
from tests.support.stack import StackInfo
from tests.support.worker import AmqpClient
from tests.worker.conftest import MakeWorker
from tests.worker.test_service import request

pytestmark = pytest.mark.stack


@pytest.fixture
def root(stack: StackInfo) -> Minio:
    user, password = stack.s3_keys
    return Minio(stack.s3_host, access_key=user, secret_key=password, secure=False)


def put(s3: Minio, bucket: str, name: str, data: bytes = b"data\n") -> None:
    s3.put_object(bucket, name, io.BytesIO(data), len(data))


@pytest.fixture
def buckets(root: Minio) -> Iterator[dict[str, str]]:
    """An input, an output and an unrelated bucket, each with run-1 and run-2 objects."""
    names = {role: f"{role}-{uuid.uuid4().hex[:12]}" for role in ("in", "out", "other")}
    for name in names.values():
        root.make_bucket(name)
        put(root, name, "run-1-a.txt")
        put(root, name, "run-2-a.txt")
    yield names
    for name in names.values():
        for obj in root.list_objects(name, recursive=True):
            root.remove_object(name, obj.object_name)
        root.remove_bucket(name)


def job_key(
    stack: StackInfo, inputs: str, outputs: str, prefix: str | None
) -> TemporaryCredentials:
    """The key the worker makes for a request with these buckets and prefix."""
    storage = Storage(load_settings(stack.env))
    return storage.job_credentials(session_policy(inputs, outputs, prefix), credential_seconds(900))


def as_job(stack: StackInfo, key: TemporaryCredentials) -> Minio:
    return Minio(
        stack.s3_host,
        access_key=key.access_key,
        secret_key=key.secret_key,
        session_token=key.session_token,
        secure=False,
    )


def refused(call: Callable[[], Any]) -> str:
    """The S3 error code of a call that MinIO must refuse."""
    with pytest.raises(S3Error) as caught:
        call()
    return str(caught.value.code)


def test_the_jobs_key_reads_its_inputs_and_writes_its_outputs(
    stack: StackInfo, root: Minio, buckets: dict[str, str]
) -> None:
    job = as_job(stack, job_key(stack, buckets["in"], buckets["out"], "run-1"))
    assert read_object(job, buckets["in"], "run-1-a.txt") == b"data\n"
    listed = [obj.object_name for obj in job.list_objects(buckets["in"], prefix="run-1")]
    assert listed == ["run-1-a.txt"]
    put(job, buckets["out"], "run-1-a.txt.sorted", b"sorted\n")
    assert read_object(root, buckets["out"], "run-1-a.txt.sorted") == b"sorted\n"


def test_the_jobs_key_is_refused_outside_its_buckets_and_prefix(
    stack: StackInfo, buckets: dict[str, str]
) -> None:
    inputs, outputs, other = buckets["in"], buckets["out"], buckets["other"]
    job = as_job(stack, job_key(stack, inputs, outputs, "run-1"))
    denied = "AccessDenied"
    # Another prefix, in the input bucket and in the output bucket.
    assert refused(lambda: read_object(job, inputs, "run-2-a.txt")) == denied
    assert refused(lambda: list(job.list_objects(inputs, prefix="run-2"))) == denied
    assert refused(lambda: list(job.list_objects(inputs))) == denied
    assert refused(lambda: read_object(job, outputs, "run-2-a.txt")) == denied
    assert refused(lambda: put(job, outputs, "run-2-b.txt")) == denied
    # Another bucket, for reading and for writing.
    assert refused(lambda: read_object(job, other, "run-1-a.txt")) == denied
    assert refused(lambda: put(job, other, "run-1-b.txt")) == denied
    assert refused(lambda: job.make_bucket(f"new-{uuid.uuid4().hex[:12]}")) == denied
    # The input bucket is read-only, and nothing may be deleted.
    assert refused(lambda: put(job, inputs, "run-1-b.txt")) == denied
    assert refused(lambda: job.remove_object(outputs, "run-1-a.txt")) == denied


def test_the_jobs_key_makes_no_admin_call(stack: StackInfo, buckets: dict[str, str]) -> None:
    key = job_key(stack, buckets["in"], buckets["out"], None)
    admin = MinioAdmin(
        endpoint=stack.s3_host,
        credentials=StaticProvider(key.access_key, key.secret_key, key.session_token),
        secure=False,
    )
    for call in (admin.info, lambda: admin.user_add("intruder", "intruder-secret-1")):
        with pytest.raises(MinioAdminException) as caught:
            call()
        assert caught.value._code == "403"


def test_a_key_without_its_session_token_is_refused(
    stack: StackInfo, buckets: dict[str, str]
) -> None:
    key = job_key(stack, buckets["in"], buckets["out"], None)
    bare = Minio(stack.s3_host, access_key=key.access_key, secret_key=key.secret_key, secure=False)
    assert refused(lambda: read_object(bare, buckets["in"], "run-1-a.txt")) == "InvalidTokenId"


# --- the worker: a Secret owned by the Job, and no root key in it ---------------------------


def _secret_gone(core: k8s.CoreV1Api, namespace: str, name: str) -> bool:
    """Wait (up to 60 s) for the garbage collector to delete the Secret `name`."""
    watch = k8s_watch.Watch()
    listed = core.list_namespaced_secret(namespace, field_selector=f"metadata.name={name}")
    if not listed.items:
        return True
    for event in watch.stream(
        core.list_namespaced_secret,
        namespace,
        field_selector=f"metadata.name={name}",
        resource_version=listed.metadata.resource_version,
        timeout_seconds=60,
    ):
        if event["type"] == "DELETED":
            watch.stop()
            return True
    return False


def test_the_worker_gives_each_job_its_own_secret_which_goes_with_the_job(
    make_worker: MakeWorker, client: AmqpClient, bucket: str, work_queue: str,
    api_client: k8s.ApiClient, namespace: str,
) -> None:  # fmt: skip
    make_worker()
    reply = client.wait(client.send(request(bucket), queue=work_queue))
    assert reply["status"] == "succeeded", reply
    batch, core = k8s.BatchV1Api(api_client), k8s.CoreV1Api(api_client)
    (job,) = batch.list_namespaced_job(namespace).items
    secret = core.read_namespaced_secret(f"{job.metadata.name}-storage", namespace)
    (owner,) = secret.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid) == ("Job", job.metadata.name, job.metadata.uid)
    assert set(secret.data) == {"accessKey", "secretKey", "sessionToken"}
    env = job.spec.template.spec.containers[0].env
    sources = {var.value_from.secret_key_ref.name for var in env if var.value_from}
    assert sources == {secret.metadata.name}  # not the shared root Secret (mstc-minio)
    assert not job.spec.suspend
    batch.delete_namespaced_job(job.metadata.name, namespace, propagation_policy="Background")
    assert _secret_gone(core, namespace, secret.metadata.name)
