"""`mstc pipeline run|status|ls|retry|cancel` as a user runs them: the installed `mstc` script
on a real `mstc-flow` (its pipeline runner), a real worker making Jobs on the KWOK cluster.

A task is made to fail by its pod (KWOK's `mstc.test/exit-code`), so `run --wait` exits 1 with
the failed task and its skipped dependant shown; `status` counts them, `ls` lists the
pipeline, `retry --task` sends the failed task and its skipped dependant again (new attempts)
and refuses a task that succeeded; a pipeline of good tasks makes `run --wait` exit 0; a long
one is cancelled with `cancel`. Refusals: a file with a cycle is refused before anything is
sent (exit 5), the read token may not run (10), an unknown id is 8. The API cannot be awaited,
so the flow is polled (0.2 s; `--wait` asks every second); the flow scans every second.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.flow.flow_process import (  # noqa: F401  (fixtures, found by pytest by name)
    READ_TOKEN,
    MakeRealFlow,
    RealFlow,
    flow_queues,
    make_real_flow,
    start_with_worker,
)
from tests.support.kube import EXIT_CODE, RUN_FOR
from tests.worker.conftest import (  # noqa: F401  (fixtures, found by pytest by name)
    MakeWorker,
    bucket,
    make_worker,
    minio,
    minio_secret,
    work_queue,
)

pytestmark = pytest.mark.stack

WORKER_ENV = {"MSTC_JOB_TTL_SECONDS": "600", "MSTC_CONCURRENCY": "10"}
FLOW_ENV = {"MSTC_FLOW_PENDING_SCAN_SECONDS": "1", "MSTC_FLOW_CLAIM_STALE_SECONDS": "5"}
COUNTS = ("Waiting", "Queued", "Running", "Done", "Failed", "Skipped", "Cancelled")


def write(path: Path, name: str, tasks: list[dict[str, Any]]) -> str:
    path.write_text(json.dumps({
        "name": name, "parallelism": 2,
        "defaults": {"image": "example.invalid/job:1", "timeOut": 2,
                     "annotations": {RUN_FOR: "1s"}},
        "tasks": tasks,
    }))  # fmt: skip
    return str(path)


def counts_line(**counts: int) -> str:
    return "  ".join(f"{label} {counts.get(label, 0)}" for label in COUNTS)


def test_a_failed_task_fails_the_run_and_retry_sends_it_again(
    make_worker: MakeWorker, make_real_flow: MakeRealFlow, bucket: str,  # noqa: F811
    tmp_path: Path,
) -> None:  # fmt: skip
    name = f"p{uuid.uuid4().hex[:8]}"
    path = write(tmp_path / "failing.json", name, [
        {"name": "good"},
        {"name": "bad", "annotations": {RUN_FOR: "1s", EXIT_CODE: "3"}},
        {"name": "after-bad", "after": ["bad"]},
    ])  # fmt: skip
    cycle = write(tmp_path / "cycle.json", name, [{"name": "a", "after": ["b"]},
                                                  {"name": "b", "after": ["a"]}])  # fmt: skip
    flow = start_with_worker(make_worker, make_real_flow, WORKER_ENV, MSTC_BUCKET=bucket,
                             **FLOW_ENV)  # fmt: skip

    refused = flow.mstc("pipeline", "run", cycle)
    assert refused.returncode == 5, refused.stderr
    assert "cycle" in refused.stderr
    assert flow.mstc("pipeline", "run", path, token=READ_TOKEN).returncode == 10
    assert json.loads(flow.mstc("pipeline", "ls", "--json").stdout) == {"items": []}

    run = flow.mstc("pipeline", "run", path, "--wait")
    assert run.returncode == 1, run.stderr
    pipeline_id, *progress = run.stdout.splitlines()
    assert pipeline_id.startswith("p-")
    assert f"pipeline {name}: 3 tasks in 2 stages, submitted as {pipeline_id}" in run.stderr
    changes = [line.split()[1:3] for line in progress[:-1]]
    assert ["good", "succeeded"] in changes
    assert ["bad", "failed"] in changes
    assert ["after-bad", "skipped"] in changes
    assert progress[-1] == f"pipeline {pipeline_id} failed: " + counts_line(
        Done=1, Failed=1, Skipped=1
    )

    status = flow.mstc("pipeline", "status", pipeline_id, token=READ_TOKEN)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].startswith(f"pipeline {pipeline_id} {name}: failed, created ")
    assert counts_line(Done=1, Failed=1, Skipped=1) in lines
    table = lines[lines.index(counts_line(Done=1, Failed=1, Skipped=1)) + 1 :]
    assert table[0].split()[:3] == ["TASK", "STATE", "ATTEMPTS"]
    assert [row.split()[:3] for row in table[1:]] == [
        ["good", "succeeded", "1"], ["bad", "failed", "1"], ["after-bad", "skipped", "0"],
    ]  # fmt: skip
    listed = flow.mstc("pipeline", "ls", token=READ_TOKEN).stdout.splitlines()
    assert listed[1].split()[:4] == [pipeline_id, name, "failed", "1/3"]

    kept = flow.mstc("pipeline", "retry", pipeline_id, "--task", "good")
    assert kept.returncode == 3, kept.stderr
    retried = flow.mstc("pipeline", "retry", pipeline_id, "--task", "bad")
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout == f"pipeline {pipeline_id}: 2 tasks to run again: bad, after-bad\n"
    again = flow.poll(
        f"/api/v1/pipelines/{pipeline_id}",
        lambda p: p["state"] != "running" and p["tasks"][1]["attempts"] == 2,
    )
    attempts = {task["name"]: (task["state"], task["attempts"]) for task in again["tasks"]}
    assert attempts == {"good": ("succeeded", 1), "bad": ("failed", 2),
                        "after-bad": ("skipped", 0)}  # fmt: skip

    unknown = flow.mstc("pipeline", "status", "p-000000000000")
    assert unknown.returncode == 8, unknown.stderr


def test_run_wait_exits_0_on_success_and_cancel_stops_a_running_pipeline(
    make_worker: MakeWorker, make_real_flow: MakeRealFlow, bucket: str,  # noqa: F811
    tmp_path: Path,
) -> None:  # fmt: skip
    good = write(tmp_path / "good.json", f"p{uuid.uuid4().hex[:8]}",
                 [{"name": "one"}, {"name": "two", "after": ["one"]}])  # fmt: skip
    slow_name = f"p{uuid.uuid4().hex[:8]}"
    slow = write(tmp_path / "slow.json", slow_name, [
        {"name": "long", "annotations": {RUN_FOR: "300s"}},
        {"name": "next", "after": ["long"]},
    ])  # fmt: skip
    flow = start_with_worker(make_worker, make_real_flow, WORKER_ENV, MSTC_BUCKET=bucket,
                             **FLOW_ENV)  # fmt: skip

    run = flow.mstc("pipeline", "run", good, "--wait")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1].endswith(": " + counts_line(Done=2))

    submitted = flow.mstc("pipeline", "run", slow, "--json")
    assert submitted.returncode == 0, submitted.stderr
    pipeline_id = json.loads(submitted.stdout)["id"]
    flow.poll(f"/api/v1/pipelines/{pipeline_id}", lambda p: p["counts"].get("running") == 1)
    cancel = flow.mstc("pipeline", "cancel", pipeline_id)
    assert cancel.returncode == 0, cancel.stderr
    assert cancel.stdout.startswith(f"pipeline {pipeline_id} cancelled: ")
    ended = flow.poll(f"/api/v1/pipelines/{pipeline_id}",
                      lambda p: not p["counts"].get("running"))  # fmt: skip
    assert {task["name"]: task["state"] for task in ended["tasks"]} == {
        "long": "cancelled", "next": "cancelled",
    }  # fmt: skip
    status = flow.mstc("pipeline", "status", pipeline_id).stdout.splitlines()
    assert counts_line(Cancelled=2) in status
    listed = flow.mstc("pipeline", "ls", "--state", "cancelled").stdout.splitlines()
    assert [line.split()[0] for line in listed[1:]] == [pipeline_id]
