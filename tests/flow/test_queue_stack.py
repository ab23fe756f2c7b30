"""`mstc queue status|purge` against the real stack: the installed `mstc-flow` and `mstc`
scripts, RabbitMQ, a real worker on the KWOK cluster, clients waiting for their replies.

One scenario, in the order an operator meets it: requests wait with no worker consuming and
`status` counts them; a purge is refused without a terminal and `--yes`, declined at the
prompt, and refused to the read token, and nothing is dropped by any of those; a worker with
concurrency 1 then takes the oldest request (a long KWOK Job; the worker acks a request once
its Job is made) and the next one, which it holds unacked at its cap; the purge drops exactly
the others: each waiting client gets the `RequestPurged` failure reply and the firing
finishes as purged in the store, while the request the worker holds stays with it (no reply)
and the first one's Job runs on. A pipeline task's request purged (no worker at all) fails the
task with the reason, skips its dependant, and `mstc pipeline retry` queues a new attempt.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from kubernetes import client as k8s

from mstc_client import Client, ClientConfig
from mstc_client.handle import JobHandle
from mstc_client.protocol import Status
from tests.flow.flow_process import (  # noqa: F401  (fixtures, found by pytest by name)
    ADMIN_TOKEN,
    MSTC,
    READ_TOKEN,
    MakeRealFlow,
    RealFlow,
    flow_queues,
    make_real_flow,
)
from tests.flow.test_flow_done_when_ops import write_catalog
from tests.support.kube import RUN_FOR, watch_until
from tests.support.stack import StackInfo
from tests.worker.conftest import (  # noqa: F401  (fixtures, found by pytest by name)
    MakeWorker,
    bucket,
    make_worker,
    minio,
    minio_secret,
    work_queue,
)

pytestmark = pytest.mark.stack


def purge(flow: RealFlow, *args: str, stdin: Any = subprocess.DEVNULL,
          token: str = ADMIN_TOKEN) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """`mstc queue purge` as a user runs it; stdin is no terminal unless one is given."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MSTC_FLOW_URL": flow.url,
           "MSTC_FLOW_TOKEN": token,
           **{k: v for k, v in os.environ.items() if k.startswith("COVERAGE_")}}  # fmt: skip
    return subprocess.run([str(MSTC), "queue", "purge", *args], env=env, stdin=stdin,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def purge_at_a_terminal(flow: RealFlow, answer: bytes) -> subprocess.CompletedProcess[str]:
    """`mstc queue purge` with a pseudo-terminal as stdin, answering the question."""
    primary, secondary = os.openpty()
    try:
        os.write(primary, answer)  # the terminal holds the line until the command reads it
        return purge(flow, stdin=secondary)
    finally:
        os.close(secondary)
        os.close(primary)


def status(flow: RealFlow) -> dict[str, Any]:
    done = flow.mstc("queue", "status", "--json", token=READ_TOKEN)
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def firing_row(store_url: str, firing_id: str) -> tuple[str, str | None, str | None]:
    engine = sqlalchemy.create_engine(store_url)
    try:
        with engine.connect() as db:
            query = sqlalchemy.text(
                "SELECT state, job_state, last_error FROM firings WHERE id = :id"
            )
            state, job_state, error = db.execute(query, {"id": firing_id}).one()
            return str(state), job_state, error
    finally:
        engine.dispose()


def request(bucket: str, job_name: str, **extra: Any) -> dict[str, Any]:  # noqa: F811
    return {"image": "example.invalid/job:1", "jobName": job_name, "inputBucket": bucket,
            "prefix": "run-1", **extra}  # fmt: skip


def test_purge_drops_only_the_waiting_requests_and_tells_their_clients(
    stack: StackInfo, make_worker: MakeWorker, make_real_flow: MakeRealFlow,  # noqa: F811
    work_queue: str, bucket: str, api_client: k8s.ApiClient, namespace: str,  # noqa: F811
    tmp_path: Path,
) -> None:  # fmt: skip
    entry = f"e-{uuid.uuid4().hex[:8]}"
    store = f"sqlite:///{tmp_path / 'queue-flow.sqlite3'}"
    catalog = write_catalog(tmp_path / "catalog.yaml", bucket, [(entry, f"lab/{entry}", {})])
    flow = make_real_flow(MSTC_FLOW_CATALOG=catalog, MSTC_FLOW_STORE_URL=store)
    config = ClientConfig.from_env({**stack.env, "MSTC_WORK_QUEUE": work_queue})
    with Client(config) as client:
        running = client.submit(request(bucket, "q-running", annotations={RUN_FOR: "300s"}))
        held = client.submit(request(bucket, "q-held"))
        assert running.wait_sent(15)
        assert held.wait_sent(15)
        fired = flow.mstc("catalog", "fire", entry, "--json")
        assert fired.returncode == 0, fired.stderr
        firing_id = json.loads(fired.stdout)["firingId"]
        flow.poll("/api/v1/queue", lambda answer: answer["ready"] == 3)  # the firing is in
        waiting: list[JobHandle] = [client.submit(request(bucket, f"q-{n}")) for n in range(3)]
        assert all(handle.wait_sent(15) for handle in waiting)

        before = status(flow)
        assert (before["workQueue"], before["ready"], before["consumers"]) == (work_queue, 6, 0)

        refused = purge(flow)
        assert refused.returncode == 5, refused.stderr
        assert "give --yes" in refused.stderr
        declined = purge_at_a_terminal(flow, b"n\n")
        assert declined.returncode == 3, declined.stderr
        assert "Purge 6 waiting requests? [y/N]" in declined.stderr
        assert "Not purged." in declined.stderr
        read_only = purge(flow, "--yes", token=READ_TOKEN)
        assert read_only.returncode == 10, read_only.stderr
        assert status(flow)["ready"] == 6

        make_worker(MSTC_CONCURRENCY="1", MSTC_JOB_TTL_SECONDS="600")
        job = watch_until(k8s.BatchV1Api(api_client).list_namespaced_job,
                          lambda _kind, job: job.metadata.name.startswith("q-running-"),
                          timeout=120, namespace=namespace)  # fmt: skip
        # q-running's Job is made (its request acked), q-held waits at the cap, unacked
        flow.poll("/api/v1/queue", lambda answer: (answer["consumers"], answer["ready"]) == (1, 4))

        done = purge(flow, "--yes", "--json")
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert answer == {"purged": 4, "firings": [firing_id], "pipelineTasks": [], "others": 3,
                          "replied": 3, "kept": 0}  # fmt: skip
        for handle in waiting:
            reply = handle.wait(30)
            assert (reply.status, reply.reason) == (Status.ERROR, "RequestPurged"), reply
            assert reply.result.startswith("RequestPurged: The request was purged")
        assert firing_row(store, firing_id) == ("finished", "purged", "purged from the work queue")

        after = status(flow)
        assert (after["ready"], after["consumers"]) == (0, 1)
        assert not held.done()  # the request the worker holds was not dropped, nor answered
        assert not running.done()
        still = k8s.BatchV1Api(api_client).read_namespaced_job(job.metadata.name, namespace)
        assert not still.status.succeeded
        assert not still.status.failed


def test_a_purged_pipeline_task_fails_skips_its_dependant_and_retry_brings_it_back(
    make_real_flow: MakeRealFlow, work_queue: str, bucket: str,  # noqa: F811
) -> None:  # fmt: skip
    flow = make_real_flow(MSTC_BUCKET=bucket, MSTC_FLOW_PENDING_SCAN_SECONDS="1")
    document = {"name": f"p{uuid.uuid4().hex[:8]}", "defaults": {"image": "example.invalid/job:1"},
                "tasks": [{"name": "first"}, {"name": "second", "after": ["first"]}]}  # fmt: skip
    code, created = flow.request("POST", "/api/v1/pipelines", body=json.dumps(document).encode())
    assert code == 201, created
    path = f"/api/v1/pipelines/{created['id']}"
    flow.poll("/api/v1/queue", lambda answer: answer["ready"] == 1)  # no worker: it waits
    assert status(flow)["pipelineTasks"] == {"waiting": 1, "queued": 1}

    done = purge(flow, "--yes", "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert (answer["purged"], answer["others"], answer["firings"]) == (1, 0, [])
    [task] = answer["pipelineTasks"]
    assert (task["pipelineId"], task["task"]) == (created["id"], "first")
    shown = flow.poll(path, lambda p: p["state"] == "failed")
    states = {t["name"]: (t["state"], t["reason"]) for t in shown["tasks"]}
    assert states == {"first": ("failed", "purged from the work queue"),
                      "second": ("skipped", "task first failed")}  # fmt: skip

    retried = flow.mstc("pipeline", "retry", created["id"])
    assert retried.returncode == 0, retried.stderr
    flow.poll("/api/v1/queue", lambda answer: answer["ready"] == 1)  # a new attempt waits
    again = flow.poll(path, lambda p: p["tasks"][0]["state"] == "queued")
    assert again["tasks"][0]["attempts"] == 2
