"""The records of answered requests (`replies`) and the storage calls under them, on the real MinIO.

A record comes back as the outcome it was written with, for the keeping time and not after;
the bucket is made on first use with a lifecycle rule that expires what readers ignore; a
record that is missing, unreadable or from a MinIO that is down reads as "no record", so a
request is run rather than left without an answer.
"""

from __future__ import annotations

import io
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from minio import Minio

from mstc_worker.manifest import request_identity
from mstc_worker.protocol import Outcome, Status
from mstc_worker.replies import ReplyRecords
from mstc_worker.settings import Settings, load_settings
from mstc_worker.storage import Storage
from tests.support.stack import StackInfo

pytestmark = pytest.mark.stack

WHEN = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)


@pytest.fixture
def settings(stack: StackInfo) -> Settings:
    bucket = f"replies-{uuid.uuid4().hex[:12]}"
    return load_settings({**stack.env, "MSTC_REPLY_RECORDS_BUCKET": bucket})


@pytest.fixture
def minio(stack: StackInfo) -> Minio:
    user, password = stack.s3_keys
    return Minio(stack.s3_host, access_key=user, secret_key=password, secure=False)


def outcome() -> Outcome:
    return Outcome(
        status=Status.SUCCEEDED, job_name="j-1", namespace="ns", exit_code=0,
        started_at=WHEN, finished_at=WHEN + timedelta(seconds=3),
        log_bucket="out", log_object="run-1-j-1.log", output_bucket="out",
    )  # fmt: skip


def test_a_record_reads_back_as_its_outcome_within_the_keeping_time_only(
    settings: Settings, minio: Minio
) -> None:
    records = ReplyRecords(settings, Storage(settings))
    request_id = request_identity("1", "amq.gen-a", b"{}")
    assert not minio.bucket_exists(settings.reply_records_bucket)
    assert records.find(request_id) is None  # no bucket yet: no record

    assert records.save(request_id, outcome(), now=WHEN)

    assert records.find(request_id, now=WHEN + timedelta(hours=1)) == outcome()
    kept = timedelta(seconds=settings.reply_record_seconds)
    assert kept >= timedelta(hours=24)
    assert records.find(request_id, now=WHEN + kept - timedelta(seconds=1)) == outcome()
    assert records.find(request_id, now=WHEN + kept + timedelta(seconds=1)) is None
    # Another request's id (another client's "1") finds nothing.
    assert records.find(request_identity("1", "amq.gen-b", b"{}"), now=WHEN) is None


def test_the_bucket_is_made_with_a_rule_that_expires_records(
    settings: Settings, minio: Minio
) -> None:
    records = ReplyRecords(settings, Storage(settings))
    assert records.save(request_identity(None, "", b"{}"), outcome())
    config = minio.get_bucket_lifecycle(settings.reply_records_bucket)
    assert config is not None
    [rule] = config.rules
    assert rule.expiration is not None
    days = rule.expiration.days
    assert days is not None
    assert days * 86_400 > settings.reply_record_seconds


def test_an_unreadable_record_or_an_id_not_made_here_reads_as_none(
    settings: Settings, minio: Minio
) -> None:
    records = ReplyRecords(settings, Storage(settings))
    request_id = request_identity("7", "q", b"{}")
    assert records.save(request_id, outcome())
    junk = b"not json"
    minio.put_object(settings.reply_records_bucket, f"replies/{request_id}.json",
                     io.BytesIO(junk), len(junk))  # fmt: skip
    assert records.find(request_id) is None
    # A bare correlation id (an older Job's) is neither written nor read.
    assert not records.save("1", outcome())
    assert records.find("1") is None


def test_a_minio_that_is_down_reads_as_no_record_at_once(stack: StackInfo) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = load_settings({**stack.env, "MSTC_S3_ENDPOINT": f"http://127.0.0.1:{port}"})
    records = ReplyRecords(settings, Storage(settings))
    started = time.monotonic()
    assert records.find(request_identity("1", "q", b"{}")) is None
    assert time.monotonic() - started < 2, "a read of the records must not be retried"
