"""The MinIO adapter against the real MinIO server of the local stack."""

from __future__ import annotations

import logging
import socket
import threading
import uuid

import pytest
from minio import Minio

from mstc_worker.settings import Settings, load_settings
from mstc_worker.storage import Storage, StorageRejected, StorageUnavailable
from tests.support.stack import StackInfo

pytestmark = pytest.mark.stack

# Not ASCII on purpose: the object must come back byte for byte as UTF-8.
LOG_TEXT = "mstc job log\nrésultat: 42 ✓\n\tend\n"


@pytest.fixture
def settings(stack: StackInfo) -> Settings:
    return load_settings(stack.env)


@pytest.fixture
def minio(stack: StackInfo) -> Minio:
    user, password = stack.s3_keys
    return Minio(stack.s3_host, access_key=user, secret_key=password, secure=False)


def new_bucket() -> str:
    return f"logs-{uuid.uuid4().hex[:12]}"


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_back(minio: Minio, bucket: str, name: str) -> tuple[bytes, str | None]:
    response = minio.get_object(bucket, name)
    try:
        return response.read(), response.headers.get("Content-Type")
    finally:
        response.close()
        response.release_conn()


def test_put_text_creates_the_bucket_and_the_object_reads_back_byte_for_byte(
    settings: Settings, minio: Minio
) -> None:
    bucket = new_bucket()
    assert not minio.bucket_exists(bucket)
    Storage(settings).put_text(bucket, "run-7-job-abc.log", LOG_TEXT)
    data, content_type = read_back(minio, bucket, "run-7-job-abc.log")
    assert data == LOG_TEXT.encode("utf-8")
    assert content_type == "text/plain; charset=utf-8"


def test_put_text_overwrites_in_an_existing_bucket(settings: Settings, minio: Minio) -> None:
    bucket = new_bucket()
    minio.make_bucket(bucket)
    storage = Storage(settings)
    storage.put_text(bucket, "job.log", "first\n")
    storage.put_text(bucket, "job.log", "")  # an empty log is still a log
    assert read_back(minio, bucket, "job.log")[0] == b""


def test_two_workers_creating_the_same_bucket_at_once_both_succeed(
    settings: Settings, minio: Minio
) -> None:
    bucket = new_bucket()
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def store(index: int) -> None:
        start.wait()
        try:
            Storage(settings).put_text(bucket, f"job-{index}.log", f"log {index}\n")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=store, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(o.object_name or "" for o in minio.list_objects(bucket)) == [
        f"job-{i}.log" for i in range(4)
    ]


def test_an_invalid_bucket_name_is_rejected_without_retrying(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="mstc_worker.storage"),
        pytest.raises(StorageRejected) as caught,
    ):
        Storage(settings).put_text("Not_A_Bucket", "job.log", LOG_TEXT)
    assert "Not_A_Bucket" in str(caught.value)
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]


def test_wrong_credentials_are_rejected_without_retrying(
    stack: StackInfo, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings({**stack.env, "MINIO_ROOT_PASSWORD": "not-the-password"})
    with (
        caplog.at_level(logging.WARNING, logger="mstc_worker.storage"),
        pytest.raises(StorageRejected) as caught,
    ):
        Storage(settings).put_text(new_bucket(), "job.log", LOG_TEXT)
    assert "SignatureDoesNotMatch" in str(caught.value)
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]


def test_a_minio_that_is_down_is_unavailable_after_bounded_retries(
    stack: StackInfo, caplog: pytest.LogCaptureFixture
) -> None:
    env = {**stack.env, "MSTC_S3_ENDPOINT": f"http://127.0.0.1:{unused_port()}"}
    with (
        caplog.at_level(logging.WARNING, logger="mstc_worker.storage"),
        pytest.raises(StorageUnavailable) as caught,
    ):
        Storage(load_settings(env)).put_text(new_bucket(), "job.log", LOG_TEXT)
    assert "cannot reach MinIO" in str(caught.value)
    assert isinstance(caught.value.__cause__, Exception)
    # Four attempts: three retries logged, then the error goes to the caller.
    assert len([r for r in caplog.records if "retrying" in r.getMessage()]) == 3
