"""Issue 18's runner against the real stack: `mstc-flow` as users run it, a real worker making
Jobs on the KWOK cluster, the pipelines API over HTTP.

The pods' fate comes from KWOK annotations (`mstc.test/run-for`); a task is made to fail by the
worker itself: it asks for more pods at once than the worker's MSTC_MAX_PARALLELISM allows
(rejected, no Job), and succeeds once the worker is restarted with a higher bound, as an
operator would fix it before `retry`. Task times come from the API (the Jobs' own event
times). Jobs are counted from the API server (kept by MSTC_JOB_TTL_SECONDS). The API cannot
be awaited, so it is polled (0.2 s); the flow scans every second and takes over unsubmitted
claims after 2 s, to keep the waits short.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import datetime
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.flow.flow_process import (  # noqa: F401  (fixtures, found by pytest by name)
    MakeRealFlow,
    RealFlow,
    flow_queues,
    make_real_flow,
    start_with_worker,
)
from tests.support.events import MqttEvents
from tests.support.kube import RUN_FOR
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

WORKER_ENV = {"MSTC_JOB_TTL_SECONDS": "600", "MSTC_CONCURRENCY": "20"}
FLOW_ENV = {"MSTC_FLOW_PENDING_SCAN_SECONDS": "1", "MSTC_FLOW_CLAIM_STALE_SECONDS": "2"}
ENDED = ("succeeded", "failed", "cancelled")


def pipeline_name() -> str:
    return f"p{uuid.uuid4().hex[:8]}"


def shards(name: str, count: int, parallelism: int, run_for: str = "2s") -> dict[str, Any]:
    """The 3-stage example's shape: make N shards, square each, merge the results."""
    last = count - 1
    return {
        "name": name, "parallelism": parallelism,
        "defaults": {"image": "example.invalid/job:1", "timeOut": 2,
                     "annotations": {RUN_FOR: "1s"}},
        "tasks": [
            {"name": "make", "foreach": {"start": 0, "end": last, "count": count},
             "outputs": {"shard": "shards/shard-{{ index }}.json"}},
            {"name": "square", "foreach": {"start": 0, "end": last, "count": count},
             "inputs": {"shard": "shards/shard-{{ index }}.json"},
             "outputs": {"result": "results/result-{{ index }}.json"},
             "annotations": {RUN_FOR: run_for}},
            {"name": "merge", "inputs": {"results": {"task": "square", "output": "result"}},
             "outputs": {"summary": "summary.json"}},
        ],
    }  # fmt: skip


def submit(flow: RealFlow, document: dict[str, Any]) -> dict[str, Any]:
    status, answer = flow.request("POST", "/api/v1/pipelines", body=json.dumps(document).encode())
    assert status == 201, answer
    return dict(answer)


def wait_ended(flow: RealFlow, pipeline_id: str, timeout: float = 120) -> dict[str, Any]:
    answer: dict[str, Any] = flow.poll(f"/api/v1/pipelines/{pipeline_id}",
                                       lambda p: p["state"] in ENDED, timeout)  # fmt: skip
    return answer


def jobs_per_task(api_client: k8s.ApiClient, namespace: str, pipeline: str) -> Counter[str]:
    """How many Jobs the API server holds for each task of `pipeline`."""
    counted: Counter[str] = Counter()
    for job in k8s.BatchV1Api(api_client).list_namespaced_job(namespace).items:
        env = {e.name: e.value for e in job.spec.template.spec.containers[0].env or []}
        if env.get("MSTC_FLOW_PIPELINE") == pipeline:
            counted[env["MSTC_FLOW_TASK"]] += 1
    return counted


def most_at_once(tasks: list[dict[str, Any]]) -> int:
    """The most of `tasks` running at one moment, from their start and end times."""
    moments = []
    for task in tasks:
        moments += [(datetime.fromisoformat(task["startedAt"]), 1),
                    (datetime.fromisoformat(task["finishedAt"]), -1)]  # fmt: skip
    running = most = 0
    for _when, step in sorted(moments):  # an end before a start at the same instant
        running += step
        most = max(most, running)
    return most


def test_the_three_stage_example_runs_its_middle_stage_in_parallel_within_its_bound(
    make_worker: MakeWorker, make_real_flow: MakeRealFlow, stack: StackInfo,  # noqa: F811
    bucket: str, api_client: k8s.ApiClient, namespace: str,  # noqa: F811
) -> None:  # fmt: skip
    flow = start_with_worker(make_worker, make_real_flow, WORKER_ENV, MSTC_BUCKET=bucket,
                             **FLOW_ENV)  # fmt: skip
    name = pipeline_name()
    events = MqttEvents(stack, [f"mstc/pipeline/+/{name}", f"mstc/pipeline/task/+/{name}"])
    try:
        created = submit(flow, shards(name, count=4, parallelism=3))
        assert (created["name"], created["tasks"], created["stages"]) == (name, 9, 3)
        assert created["id"].startswith("p-")
        assert len(created["id"]) == 14
        done = wait_ended(flow, created["id"])
        seen = events.wait_for(lambda got: any(t.startswith("mstc/pipeline/finished/")
                                               for t, _ in got), timeout=30)  # fmt: skip
    finally:
        events.close()
    assert done["state"] == "succeeded", done
    assert done["counts"]["succeeded"] == 9
    tasks = {task["name"]: task for task in done["tasks"]}
    assert list(tasks)[:5] == [f"make-{i}" for i in range(4)] + ["square-0"]  # file order
    squares = [tasks[f"square-{i}"] for i in range(4)]
    assert 2 <= most_at_once(squares) <= 3  # in parallel, within the pipeline's parallelism
    assert most_at_once(done["tasks"]) <= 3
    assert all(task["attempts"] == 1 and task["jobName"] for task in done["tasks"])
    last_square = max(datetime.fromisoformat(t["finishedAt"]) for t in squares)
    assert datetime.fromisoformat(tasks["merge"]["startedAt"]) >= last_square
    assert jobs_per_task(api_client, namespace, name) == Counter(dict.fromkeys(tasks, 1))
    bodies = [body for _topic, body in seen]
    assert bodies[0]["event"] == "started"
    assert bodies[0]["pipelineId"] == created["id"]
    assert bodies[-1] == {**bodies[-1], "event": "finished", "state": "succeeded",
                          "failedTasks": []}  # fmt: skip
    succeeded = {b["task"] for b in bodies if b["event"] == "task" and b["state"] == "succeeded"}
    assert succeeded == set(tasks)
