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


def test_a_failed_task_skips_exactly_its_dependants_and_retry_reruns_only_those(
    make_worker: MakeWorker, make_real_flow: MakeRealFlow, bucket: str,  # noqa: F811
    api_client: k8s.ApiClient, namespace: str,
) -> None:  # fmt: skip
    worker = make_worker(start=False, **WORKER_ENV)
    worker.start(wait_ready=False)
    flow = make_real_flow(MSTC_BUCKET=bucket, **FLOW_ENV)
    worker.wait_ready()
    name = pipeline_name()
    # `wide` asks for 12 pods at once: over this worker's MSTC_MAX_PARALLELISM (10), rejected.
    document = {
        "name": name, "parallelism": 4,
        "defaults": {"image": "example.invalid/job:1", "timeOut": 2},
        "tasks": [
            {"name": "first"},
            {"name": "wide", "after": ["first"], "parallelism": 12, "completions": 12},
            {"name": "after-wide", "after": ["wide"]},
            {"name": "last", "after": ["after-wide"]},
            {"name": "beside", "after": ["first"]},
        ],
    }  # fmt: skip
    pipeline_id = submit(flow, document)["id"]
    failed = wait_ended(flow, pipeline_id)
    states = {task["name"]: task["state"] for task in failed["tasks"]}
    assert states == {"first": "succeeded", "wide": "failed", "after-wide": "skipped",
                      "last": "skipped", "beside": "succeeded"}, failed  # fmt: skip
    assert failed["state"] == "failed"
    assert "wide" in failed["reason"]
    reasons = {task["name"]: task["reason"] for task in failed["tasks"]}
    assert "MSTC_MAX_PARALLELISM" in reasons["wide"]
    assert reasons["after-wide"] == reasons["last"] == "task wide failed"

    status, refused = flow.request("POST", f"/api/v1/pipelines/{pipeline_id}/retry",
                                   body=b'{"task": "first"}')  # fmt: skip
    assert status == 409
    assert "Task first is succeeded" in refused["error"]
    # The operator raises the bound (a new worker; the old one goes), then retries.
    raised = make_worker(start=False, MSTC_MAX_PARALLELISM="20", **WORKER_ENV)
    raised.start(wait_ready=False)
    worker.stop()
    raised.wait_ready()
    status, retried = flow.request("POST", f"/api/v1/pipelines/{pipeline_id}/retry",
                                   body=b'{"task": null}')  # fmt: skip
    assert status == 200, retried
    assert sorted(retried["retried"]) == ["after-wide", "last", "wide"]
    done = wait_ended(flow, pipeline_id)
    assert done["state"] == "succeeded", done
    attempts = {task["name"]: task["attempts"] for task in done["tasks"]}
    assert attempts == {"first": 1, "wide": 2, "after-wide": 1, "last": 1, "beside": 1}
    # The rejected attempt made no Job; every other attempt made exactly one.
    assert jobs_per_task(api_client, namespace, name) == Counter(dict.fromkeys(attempts, 1))


def test_a_flow_killed_mid_pipeline_and_restarted_finishes_it_running_each_task_once(
    make_worker: MakeWorker, make_real_flow: MakeRealFlow, bucket: str,  # noqa: F811
    api_client: k8s.ApiClient, namespace: str,
) -> None:  # fmt: skip
    flow = start_with_worker(make_worker, make_real_flow, WORKER_ENV, MSTC_BUCKET=bucket,
                             **FLOW_ENV)  # fmt: skip
    name = pipeline_name()
    pipeline_id = submit(flow, shards(name, count=3, parallelism=2))["id"]
    path = f"/api/v1/pipelines/{pipeline_id}"
    flow.poll(path, lambda p: p["counts"]["succeeded"] >= 1 and p["counts"]["running"] >= 1)
    assert flow.kill() == -9  # SIGKILL: nothing finished or acked on the way out
    flow.start()
    done = wait_ended(flow, pipeline_id)
    assert done["state"] == "succeeded", done
    assert all(task["attempts"] == 1 for task in done["tasks"]), done
    tasks = [task["name"] for task in done["tasks"]]
    assert jobs_per_task(api_client, namespace, name) == Counter(dict.fromkeys(tasks, 1))


def test_cancel_cancels_the_waiting_tasks_and_the_running_job(
    make_worker: MakeWorker, make_real_flow: MakeRealFlow, bucket: str,  # noqa: F811
) -> None:  # fmt: skip
    flow = start_with_worker(make_worker, make_real_flow, WORKER_ENV, MSTC_BUCKET=bucket,
                             **FLOW_ENV)  # fmt: skip
    document = {
        "name": pipeline_name(), "parallelism": 1,
        "defaults": {"image": "example.invalid/job:1", "timeOut": 2,
                     "annotations": {RUN_FOR: "90s"}},
        "tasks": [{"name": "long"}, {"name": "next", "after": ["long"]}],
    }  # fmt: skip
    pipeline_id = submit(flow, document)["id"]
    path = f"/api/v1/pipelines/{pipeline_id}"
    flow.poll(path, lambda p: p["counts"]["running"] == 1)
    status, answer = flow.post(f"{path}/cancel")
    assert status == 200, answer
    assert answer["state"] == "cancelled"
    done = flow.poll(path, lambda p: p["finishedAt"] is not None, timeout=60)
    assert {task["name"]: task["state"] for task in done["tasks"]} == {
        "long": "cancelled", "next": "cancelled"}  # fmt: skip
    assert flow.post(f"{path}/cancel")[0] == 409


def _refusal(flow: RealFlow, document: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    status, answer = flow.request("POST", "/api/v1/pipelines", body=json.dumps(document).encode())
    return status, answer


def test_bad_documents_are_refused_naming_the_task_and_field(
    make_real_flow: MakeRealFlow, bucket: str,  # noqa: F811
) -> None:  # fmt: skip
    flow = make_real_flow(MSTC_BUCKET=bucket, **FLOW_ENV)
    image = {"image": "example.invalid/job:1"}

    def doc(*tasks: dict[str, Any]) -> dict[str, Any]:
        return {"name": pipeline_name(), "defaults": image, "tasks": list(tasks)}

    cycle = doc({"name": "a", "inputs": {"x": "b.txt"}, "outputs": {"y": "a.txt"}},
                {"name": "b", "inputs": {"x": "a.txt"}, "outputs": {"y": "b.txt"}})  # fmt: skip
    double = doc({"name": "a", "outputs": {"y": "same.txt"}},
                 {"name": "b", "outputs": {"y": "same.txt"}})  # fmt: skip
    missing = doc({"name": "a", "inputs": {"data": "nowhere.txt"}})
    unknown = doc({"name": "a", "after": ["ghost"]})
    cases = [(cycle, "a", "inputs.x", "a cycle: a -> b -> a"),
             (double, "b", "outputs.y", "already written by task a"),
             (missing, "a", "inputs.data", "not in the bucket"),
             (unknown, "a", "after", "ghost")]  # fmt: skip
    for document, task, field, words in cases:
        status, answer = _refusal(flow, document)
        assert status == 422, answer
        assert (answer["task"], answer["field"]) == (task, field), answer
        assert words in answer["error"], answer
        assert f"task {task}: {field}" in answer["error"]
    oversized = doc({"name": "a", "env": {"BIG": "x" * (2 * 1024 * 1024)}})
    status, answer = _refusal(flow, oversized)
    assert status == 413
    assert "over the limit" in answer["error"]
    assert flow.get("/api/v1/pipelines")[1]["items"] == []  # nothing was stored
