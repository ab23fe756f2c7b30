"""Cancel from the client against the real stack: Client.cancel, JobHandle.cancel, mstc cancel."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from mstc_client import Client, ClientConfig, JobHandle, JobRequest, Status
from tests.client.conftest import run_mstc
from tests.worker.conftest import MakeWorker
from tests.worker.test_cancel import start_worker

pytestmark = pytest.mark.stack

IMAGE = "example.invalid/job:1"


@pytest.fixture
def control_queue(work_queue: str) -> str:
    return f"{work_queue}.control"


@pytest.fixture
def cancel_env(client_env: dict[str, str], control_queue: str) -> dict[str, str]:
    return {**client_env, "MSTC_CONTROL_QUEUE": control_queue}


def long_request(bucket: str, job_name: str) -> JobRequest:
    return JobRequest(
        image=IMAGE, job_name=job_name, input_bucket=bucket, prefix=f"run-{uuid.uuid4().hex[:8]}",
        annotations={"mstc.test/run-for": "60s"},
    )  # fmt: skip


def wait_accepted(handle: JobHandle, timeout: float = 120) -> str:
    """The Job's name, once the worker said it exists (progress `accepted`)."""
    deadline = time.monotonic() + timeout
    while handle.job_name is None:  # the handle offers no event for progress: poll it
        assert time.monotonic() < deadline, f"{handle} not accepted within {timeout} s"
        time.sleep(0.1)
    return handle.job_name


def test_handle_cancel_and_client_cancel(
    make_worker: MakeWorker, cancel_env: dict[str, str], control_queue: str, data_bucket: str
) -> None:
    start_worker(make_worker, MSTC_CONTROL_QUEUE=control_queue)
    with Client(ClientConfig.from_env(cancel_env)) as client:
        handle = client.submit(long_request(data_bucket, "lib-cancel"))
        name = wait_accepted(handle)
        sent = time.monotonic()
        answer = handle.cancel(timeout=30, reason="changed my mind")
        reply = handle.wait(timeout=30)
        print(f"\nJobHandle.cancel: reply in {time.monotonic() - sent:.2f} s")
        assert (answer.status, answer.job_name) == ("cancelling", name)
        assert reply.status is Status.CANCELLED
        assert reply.job_name == name
        assert reply.message is not None
        assert reply.message.endswith(": changed my mind")
        unknown = client.cancel("no-such-job-at-all", timeout=30)
        assert unknown.status == "unknown"
        assert "No Job 'no-such-job-at-all'" in unknown.message


def test_mstc_cancel_running_unknown_and_finished(
    make_worker: MakeWorker, cancel_env: dict[str, str], control_queue: str, data_bucket: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    start_worker(make_worker, MSTC_CONTROL_QUEUE=control_queue)
    with Client(ClientConfig.from_env(cancel_env)) as client:
        handle = client.submit(long_request(data_bucket, "cli-cancel"))
        name = wait_accepted(handle)
        out = run_mstc("cancel", name, "--json", env=cancel_env, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["status"] == "cancelling"
        assert handle.wait(timeout=30).status is Status.CANCELLED
    finished = run_mstc("cancel", name, env=cancel_env, cwd=tmp_path)
    assert finished.returncode in (8, 9), finished.stdout  # finished, or already deleted
    assert name in finished.stdout or "No Job" in finished.stdout
    unknown = run_mstc("cancel", "never-made", env=cancel_env, cwd=tmp_path)
    assert unknown.returncode == 8
    assert unknown.stdout.startswith("No Job 'never-made' is known to this worker")
