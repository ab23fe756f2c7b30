"""The REST execute call end to end: a real worker process, RabbitMQ and Kubernetes API server.

POST /mstc/worker/execute needs the bearer token from MSTC_HTTP_TOKEN_FILE, and a request it
lets in goes through the work queue: refused, it makes no Job; let in, it is answered with the
Java text; at the cap it waits in the queue like any other request.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.support.stack import StackInfo
from tests.support.worker import AmqpClient, WorkerProcess
from tests.worker.conftest import MakeWorker
from tests.worker.test_service import jobs, pod_fate, request

pytestmark = pytest.mark.stack


@pytest.fixture
def token() -> str:
    return secrets.token_urlsafe(32)


@pytest.fixture
def token_file(tmp_path: Path, token: str) -> str:
    path = tmp_path / "http-token"
    path.write_text(token + "\n")  # as a Secret's file may end
    return str(path)


def post(worker: WorkerProcess, body: dict[str, Any], token: str | None) -> tuple[int, str, Any]:
    """POST a request to execute; (status, text, headers)."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(
        worker.url + "/mstc/worker/execute",
        data=json.dumps(body).encode(),
        headers=headers,
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=180) as resp:
            return resp.status, resp.read().decode(), resp.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), exc.headers


def test_execute_without_the_token_is_refused_and_with_it_runs_a_job(
    make_worker: MakeWorker, token: str, token_file: str, bucket: str,
    api_client: k8s.ApiClient, namespace: str,
) -> None:  # fmt: skip
    worker = make_worker(MSTC_HTTP_TOKEN_FILE=token_file)

    for given in (None, "not-the-token", token[:-1]):
        status, text, headers = post(worker, request(bucket), given)
        assert status == 401, text
        assert headers["WWW-Authenticate"].startswith("Bearer")
    assert jobs(api_client, namespace) == []
    assert worker.metric('mstc_requests_total{outcome="succeeded"}') == 0

    status, text, _ = post(worker, request(bucket), token)

    assert status == 200, text
    assert text.startswith("Job test-job-")
    assert text.endswith(" complete.")
    assert [job.metadata.name for job in jobs(api_client, namespace)] == [
        text.removeprefix("Job ").removesuffix(" complete.")
    ]
    assert worker.get("/mstc/worker") == (200, "hello")  # hello, probes: no token needed
    assert worker.get("/readyz")[0] == 200


def test_execute_is_off_without_a_token(
    make_worker: MakeWorker, bucket: str, api_client: k8s.ApiClient, namespace: str
) -> None:
    worker = make_worker()
    status, text, _ = post(worker, request(bucket), "anything-at-all")
    assert status == 403
    assert "MSTC_HTTP_TOKEN_FILE" in text
    assert jobs(api_client, namespace) == []


def queued(stack: StackInfo, queue: str) -> int:
    """Messages in `queue` not acked yet: ready, or held by a consumer (the worker holds
    what arrives at its cap, unacked, until a slot frees). RabbitMQ's own sampled count."""
    user, password = stack.env["WORK_QUEUE_USER"], stack.env["WORK_QUEUE_PASS"]
    url = f"{stack.env['MSTC_RABBITMQ_MANAGEMENT_URL']}/api/queues/%2F/{urllib.parse.quote(queue)}"
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    req = urllib.request.Request(url, headers={"Authorization": f"Basic {auth}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return int(json.loads(resp.read()).get("messages", 0))


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    """Poll `check` (a queue depth, a Job list: nothing to subscribe to) until it holds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not within {timeout} s"
        time.sleep(0.1)


def test_a_rest_request_waits_its_turn_at_the_cap(
    stack: StackInfo, make_worker: MakeWorker, client: AmqpClient, token: str, token_file: str,
    bucket: str, work_queue: str, api_client: k8s.ApiClient, namespace: str,
) -> None:  # fmt: skip
    worker = make_worker(MSTC_CONCURRENCY="1", MSTC_HTTP_TOKEN_FILE=token_file)
    cid = client.send(request(bucket, **pod_fate(run_for="8s")), queue=work_queue)
    wait_for("the first request's Job", lambda: len(jobs(api_client, namespace)) == 1)
    answers: list[tuple[int, str, Any]] = []
    caller = threading.Thread(
        target=lambda: answers.append(post(worker, request(bucket, jobName="rest-job"), token))
    )
    caller.start()

    # The REST request waits, unacked, while the first one holds the only slot.
    wait_for("the REST request waiting in the work queue", lambda: queued(stack, work_queue) == 1)
    assert len(jobs(api_client, namespace)) == 1
    first = client.wait(cid, timeout=120)
    caller.join(120)

    [(status, text, _)] = answers
    assert first["status"] == "succeeded"
    assert status == 200, text
    assert text.startswith("Job rest-job-")
    [rest_job] = [j for j in jobs(api_client, namespace) if j.metadata.name.startswith("rest-job")]
    # Made only after the first Job had finished (creation times have whole seconds).
    created = rest_job.metadata.creation_timestamp.timestamp()
    assert created >= int(datetime.fromisoformat(first["finishedAt"]).timestamp())
