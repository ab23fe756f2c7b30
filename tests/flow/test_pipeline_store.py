"""The pipelines' store on SQLite and PostgreSQL: claims, forward-only state, skips, retries,
ends and cancels, through `Pipelines` and `PipelineProgress` as the runner uses them.

The graph of most tests: `make` feeds `left` and `right`, both feed `merge`; `other` stands
alone. Parallelism 2 unless a test says otherwise.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import pytest

from mstc_flow.errors import NotFound, PermanentError
from mstc_flow.store.db import Database
from mstc_flow.store.pipeline_progress import JobEvent, PipelineProgress
from mstc_flow.store.pipeline_tables import AttemptRow
from mstc_flow.store.pipelines import Claim, NewTask, Pipelines, attempt_id_of, new_pipeline_id

GRAPH = {"make": (), "left": ("make",), "right": ("make",), "merge": ("left", "right"),
         "other": ()}  # fmt: skip


def record(pipelines: Pipelines, parallelism: int = 2, graph: Mapping[str, tuple[str, ...]] = GRAPH
           ) -> str:  # fmt: skip
    pipeline_id = new_pipeline_id()
    tasks = [NewTask(name, name, {"image": "busybox:1", "jobName": name}, frozenset(needs))
             for name, needs in graph.items()]  # fmt: skip
    pipelines.create(pipeline_id=pipeline_id, name="demo", digest="0" * 64, document="{}",
                     parallelism=parallelism, bucket="data", prefix="demo", replica="r1",
                     tasks=tasks)  # fmt: skip
    return pipeline_id


def claim_all(pipelines: Pipelines, pipeline_id: str) -> list[Claim]:
    claims = []
    while (claim := pipelines.claim_next(pipeline_id, "r1")) is not None:
        pipelines.mark_submitted(claim.attempt_id)
        claims.append(claim)
    return claims


def finish(progress: PipelineProgress, claim: Claim, event: str = "succeeded") -> list[str]:
    progress.on_event(JobEvent(claim.attempt_id, "running", job_name=f"{claim.task}-x"))
    return [f"{c.task}:{c.state}" for c in progress.on_event(JobEvent(claim.attempt_id, event))]


def states(pipelines: Pipelines, pipeline_id: str) -> dict[str, str]:
    return {task["name"]: task["state"] for task in pipelines.get(pipeline_id)["tasks"]}


@pytest.fixture
def pipelines(database: Database) -> Pipelines:
    return Pipelines(database)


@pytest.fixture
def progress(pipelines: Pipelines) -> PipelineProgress:
    return PipelineProgress(pipelines)


def test_ready_tasks_are_claimed_in_file_order_up_to_the_parallelism(pipelines: Pipelines,
                                                                    progress: PipelineProgress
                                                                    ) -> None:  # fmt: skip
    pipeline_id = record(pipelines)
    first = claim_all(pipelines, pipeline_id)
    assert [c.task for c in first] == ["make", "other"]  # `left` waits for `make`
    assert attempt_id_of(first[0].correlation_id) == first[0].attempt_id
    assert first[0].request == {"image": "busybox:1", "jobName": "make"}
    finish(progress, first[0])
    assert [c.task for c in claim_all(pipelines, pipeline_id)] == ["left"]  # one slot free
    shown = pipelines.get(pipeline_id)
    assert shown["counts"] == {"waiting": 2, "queued": 2, "running": 0, "succeeded": 1,
                               "failed": 0, "skipped": 0, "cancelled": 0}  # fmt: skip


def test_two_claimers_never_take_one_task(pipelines: Pipelines) -> None:
    graph = {f"t{i}": () for i in range(30)}
    pipeline_id = record(pipelines, parallelism=30, graph=graph)
    taken: list[str] = []
    lock = threading.Lock()

    def claimer(replica: str) -> None:
        while (claim := pipelines.claim_next(pipeline_id, replica)) is not None:
            with lock:
                taken.append(claim.task)

    threads = [threading.Thread(target=claimer, args=(f"r{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken) == sorted(graph)


def test_events_move_an_attempt_forward_only(pipelines: Pipelines,
                                             progress: PipelineProgress) -> None:  # fmt: skip
    pipeline_id = record(pipelines, graph={"only": ()})
    (claim,) = claim_all(pipelines, pipeline_id)
    moved = progress.on_event(JobEvent(claim.attempt_id, "accepted", job_name="only-abc"))
    assert [(c.task, c.state, c.job_name) for c in moved] == [("only", "running", "only-abc")]
    assert progress.on_event(JobEvent(claim.attempt_id, "running")) == []  # no news
    assert [c.state for c in progress.on_event(JobEvent(claim.attempt_id, "succeeded"))] == [
        "succeeded", "succeeded"]  # the task, then the pipeline  # fmt: skip
    assert progress.on_event(JobEvent(claim.attempt_id, "succeeded")) == []  # a repeat
    assert progress.on_event(JobEvent(claim.attempt_id, "failed")) == []  # too late
    assert progress.on_event(JobEvent(claim.attempt_id, "running")) == []  # backwards
    with pipelines.db.session() as session:  # the attempt itself kept its end
        attempt = session.get(AttemptRow, claim.attempt_id)
        assert attempt is not None
        assert (attempt.state, attempt.result, attempt.job_name) == (
            "succeeded", "succeeded", "only-abc")  # fmt: skip
    shown = pipelines.get(pipeline_id)
    assert (shown["state"], shown["tasks"][0]["state"]) == ("succeeded", "succeeded")
    assert shown["tasks"][0]["jobName"] == "only-abc"
    assert shown["finishedAt"] is not None


def test_a_failure_skips_exactly_its_dependants_and_the_rest_goes_on(
    pipelines: Pipelines, progress: PipelineProgress
) -> None:
    pipeline_id = record(pipelines, parallelism=5)
    make, other = claim_all(pipelines, pipeline_id)
    finish(progress, make)
    left, right = claim_all(pipelines, pipeline_id)
    assert finish(progress, left, "timeout") == ["left:failed", "merge:skipped"]
    assert states(pipelines, pipeline_id)["right"] == "queued"  # goes on
    finish(progress, right)
    assert pipelines.get(pipeline_id)["state"] == "running"  # `other` still runs
    changes = progress.on_event(JobEvent(other.attempt_id, "succeeded"))
    assert changes[-1].state == "failed"
    assert changes[-1].failed_tasks == ("left",)
    shown = pipelines.get(pipeline_id)
    assert shown["state"] == "failed"
    assert "left" in shown["reason"]
    merge = next(task for task in shown["tasks"] if task["name"] == "merge")
    assert merge["reason"] == "task left failed"
    assert states(pipelines, pipeline_id) == {"make": "succeeded", "left": "failed",
        "right": "succeeded", "merge": "skipped", "other": "succeeded"}  # fmt: skip


def test_retry_reruns_failed_and_skipped_tasks_as_new_attempts(
    pipelines: Pipelines, progress: PipelineProgress
) -> None:
    pipeline_id = record(pipelines, parallelism=5)
    make, other = claim_all(pipelines, pipeline_id)
    finish(progress, other)
    finish(progress, make, "failed")  # skips left, right, merge: the pipeline failed
    assert pipelines.get(pipeline_id)["state"] == "failed"
    with pytest.raises(PermanentError, match="Task other is succeeded"):
        progress.retry(pipeline_id, "other")
    with pytest.raises(NotFound):
        progress.retry("p-000000000000", None)
    retried = progress.retry(pipeline_id, None)
    assert sorted(c.task or "" for c in retried) == ["left", "make", "merge", "right"]
    assert pipelines.get(pipeline_id)["state"] == "running"
    (again,) = claim_all(pipelines, pipeline_id)
    assert (again.task, again.number) == ("make", 2)
    assert again.attempt_id != make.attempt_id
    # The first attempt's late events are kept on it alone; the task follows its new attempt.
    assert progress.on_event(JobEvent(make.attempt_id, "succeeded")) == []
    assert states(pipelines, pipeline_id)["make"] == "queued"
    finish(progress, again)
    for claim in claim_all(pipelines, pipeline_id):
        finish(progress, claim)
    (merge,) = claim_all(pipelines, pipeline_id)
    finish(progress, merge)
    shown = pipelines.get(pipeline_id)
    assert shown["state"] == "succeeded"
    attempts = {task["name"]: task["attempts"] for task in shown["tasks"]}
    assert attempts == {"make": 2, "left": 1, "right": 1, "merge": 1, "other": 1}


def test_retry_of_one_task_takes_its_skipped_dependants_only(
    pipelines: Pipelines, progress: PipelineProgress
) -> None:
    graph = {"a": (), "b": (), "after_a": ("a",), "after_b": ("b",)}
    pipeline_id = record(pipelines, parallelism=5, graph=graph)
    a, b = claim_all(pipelines, pipeline_id)
    finish(progress, a, "failed")
    finish(progress, b, "error")
    retried = progress.retry(pipeline_id, "a")
    assert sorted(c.task or "" for c in retried) == ["a", "after_a"]
    expected = {"a": "waiting", "b": "failed", "after_a": "waiting", "after_b": "skipped"}
    assert states(pipelines, pipeline_id) == expected


def test_cancel_ends_waiting_tasks_and_lists_running_jobs_to_cancel(
    pipelines: Pipelines, progress: PipelineProgress
) -> None:
    pipeline_id = record(pipelines)
    make, other = claim_all(pipelines, pipeline_id)
    progress.on_event(JobEvent(make.attempt_id, "accepted", job_name="make-x"))
    progress.cancel(pipeline_id)
    with pytest.raises(PermanentError, match="already cancelled"):
        progress.cancel(pipeline_id)
    assert pipelines.claim_next(pipeline_id, "r1") is None
    assert progress.cancels_due() == [(make.attempt_id, "make-x")]  # `other` has no Job yet
    progress.mark_cancel_sent(make.attempt_id)
    assert progress.cancels_due() == []
    progress.on_event(JobEvent(make.attempt_id, "cancelled"))
    progress.on_event(JobEvent(other.attempt_id, "succeeded"))
    shown = pipelines.get(pipeline_id)
    assert (shown["state"], shown["finishedAt"] is not None) == ("cancelled", True)
    assert states(pipelines, pipeline_id) == {"make": "cancelled", "left": "cancelled",
        "right": "cancelled", "merge": "cancelled", "other": "succeeded"}  # fmt: skip


def test_each_task_shows_the_tasks_it_needs_from_the_edges(pipelines: Pipelines) -> None:
    pipeline_id = record(pipelines)
    needs = {task["name"]: task["needs"] for task in pipelines.get(pipeline_id)["tasks"]}
    assert needs == {"make": [], "left": ["make"], "right": ["make"],
                     "merge": ["left", "right"], "other": []}  # fmt: skip
