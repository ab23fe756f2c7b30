"""The example job's script (examples/job/job.py) against the stack's real MinIO.

It runs as a subprocess with only the environment a Job gets from the worker, so what is
tested here is what runs in the example image.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from minio import Minio

from mstc_worker.job_access import credential_seconds, session_policy
from mstc_worker.settings import load_settings
from mstc_worker.storage import Storage
from tests.deploy.conftest import ROOT
from tests.support.s3 import read_object
from tests.support.stack import StackInfo

pytestmark = pytest.mark.stack

JOB = ROOT / "examples" / "job" / "job.py"


@pytest.fixture
def s3(stack: StackInfo) -> Minio:
    user, password = stack.s3_keys
    return Minio(stack.s3_host, access_key=user, secret_key=password, secure=False)


@pytest.fixture
def buckets(s3: Minio) -> Iterator[list[str]]:
    """Unique bucket names; whatever was made of them is removed afterwards."""
    names = [f"job-{uuid.uuid4().hex[:12]}" for _ in range(2)]
    yield names
    for name in names:
        if s3.bucket_exists(name):
            for obj in s3.list_objects(name, recursive=True):
                s3.remove_object(name, obj.object_name)
            s3.remove_bucket(name)


def put(s3: Minio, bucket: str, name: str, data: bytes) -> None:
    s3.put_object(bucket, name, io.BytesIO(data), len(data))


def run_job(stack: StackInfo, **env: str) -> subprocess.CompletedProcess[str]:
    """The script with a Job's environment (and nothing of the test's own)."""
    job_env = {
        "PATH": "/usr/bin:/bin",
        "MSTC_JOB": "true",
        "MINIO_SERVICE_HOST": stack.env["MINIO_SERVICE_HOST"],
        "MINIO_SERVICE_PORT": stack.env["MINIO_SERVICE_PORT"],
        "MINIO_ROOT_USER": stack.env["MINIO_ROOT_USER"],
        "MINIO_ROOT_PASSWORD": stack.env["MINIO_ROOT_PASSWORD"],
        **env,
    }
    return subprocess.run(
        [sys.executable, str(JOB)],
        check=False,
        env=job_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_sorts_the_runs_inputs_into_the_output_bucket(
    stack: StackInfo, s3: Minio, buckets: list[str]
) -> None:
    source, target = buckets
    s3.make_bucket(source)
    put(s3, source, "run-1-a.txt", b"pear\napple\nfig\n")
    put(s3, source, "run-1/nested/b.txt", "zebra\nÄpfel\nant".encode())
    put(s3, source, "run-1-image.bin", b"\x00\xff\xfe binary")
    put(s3, source, "run-2-other.txt", b"not mine\n")
    put(s3, source, "run-1-old-job.log", b"a log the worker uploaded\n")

    out = run_job(stack, INPUT_BUCKET=source, OUTPUT_BUCKET=target, FILE_PREFIX="run-1")

    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[-1] == "SUCCESS"
    assert read_object(s3, target, "run-1-a.txt.sorted") == b"apple\nfig\npear\n"
    assert read_object(s3, target, "run-1/nested/b.txt.sorted") == "ant\nzebra\nÄpfel\n".encode()
    summary = json.loads(read_object(s3, target, "run-1-summary.json"))
    assert [entry["input"] for entry in summary["sorted"]] == ["run-1-a.txt", "run-1/nested/b.txt"]
    assert summary["skipped"] == ["run-1-image.bin"]
    outputs = {obj.object_name for obj in s3.list_objects(target, recursive=True)}
    assert outputs == {"run-1-a.txt.sorted", "run-1/nested/b.txt.sorted", "run-1-summary.json"}


def test_runs_with_the_jobs_own_key_scoped_to_its_buckets_and_prefix(
    stack: StackInfo, s3: Minio, buckets: list[str]
) -> None:
    """What the worker gives a Job by default: a temporary key plus its session token."""
    source, target = buckets
    s3.make_bucket(source)
    put(s3, source, "run-1-a.txt", b"pear\napple\n")
    put(s3, source, "run-2-other.txt", b"not mine\n")
    policy = session_policy(source, target, "run-1")
    key = Storage(load_settings(stack.env)).job_credentials(policy, credential_seconds(900))

    out = run_job(
        stack,
        INPUT_BUCKET=source,
        OUTPUT_BUCKET=target,
        FILE_PREFIX="run-1",
        MINIO_ROOT_USER=key.access_key,
        MINIO_ROOT_PASSWORD=key.secret_key,
        AWS_SESSION_TOKEN=key.session_token,
    )

    assert out.returncode == 0, out.stdout + out.stderr
    assert read_object(s3, target, "run-1-a.txt.sorted") == b"apple\npear\n"
    outputs = {obj.object_name for obj in s3.list_objects(target, recursive=True)}
    assert outputs == {"run-1-a.txt.sorted", "run-1-summary.json"}


def test_seed_001_url_form_writes_beside_the_inputs_and_reruns_cleanly(
    stack: StackInfo, s3: Minio, buckets: list[str]
) -> None:
    bucket = buckets[0]
    s3.make_bucket(bucket)
    put(s3, bucket, "input.txt", b"3\n1\n2\n")
    url = f"http://minio:9000/{bucket}"

    for _ in range(2):  # a second run must not take the first run's outputs as inputs
        out = run_job(stack, INPUT_BUCKET_URL=url, OUTPUT_BUCKET_URL=url)
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.splitlines()[-1] == "SUCCESS"

    assert read_object(s3, bucket, "input.txt.sorted") == b"1\n2\n3\n"
    summary = json.loads(read_object(s3, bucket, "summary.json"))
    assert [entry["input"] for entry in summary["sorted"]] == ["input.txt"]


def test_no_inputs_is_a_failure(stack: StackInfo, s3: Minio, buckets: list[str]) -> None:
    s3.make_bucket(buckets[0])
    out = run_job(stack, INPUT_BUCKET=buckets[0], FILE_PREFIX="missing")
    assert out.returncode == 1
    assert out.stdout.splitlines()[-1].startswith("FAILURE: no input objects under prefix")


def test_missing_bucket_or_settings_is_a_failure(stack: StackInfo, buckets: list[str]) -> None:
    out = run_job(stack, INPUT_BUCKET=buckets[0])
    assert out.returncode == 1
    assert "does not exist" in out.stdout.splitlines()[-1]
    out = run_job(stack)
    assert out.returncode == 1
    assert (
        out.stdout.splitlines()[-1] == "FAILURE: neither INPUT_BUCKET nor INPUT_BUCKET_URL is set"
    )
