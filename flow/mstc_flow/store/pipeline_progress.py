"""How a pipeline moves: Job events on its attempts, skips, its end, retries and cancels.

Each method is one transaction that locks the pipeline's row first (`lock_pipeline`), so a
pipeline's changes happen one after the other whatever replica makes them, and returns the
`Change`s it made, for the runner to publish once they are committed.

* `on_event`: a Job event of attempt `a` moves `a` forward only (claimed < submitted <
  running < final); a repeat or a late event changes nothing. Only the task's current
  attempt moves the task; an older attempt's events are recorded on that attempt alone.
* A task that failed or was cancelled skips every waiting task downstream of it (reason
  "task X failed"); `settle` does that and ends the pipeline once no task is waiting,
  queued or running: `succeeded` when every task succeeded, else `failed` naming the tasks
  that did not (a cancelled pipeline stays `cancelled` and gets its end time).
* `retry`: failed, skipped and cancelled tasks (or one of them and its skipped dependants)
  wait again; the next claim gives each a new attempt. `cancel`: waiting tasks cancelled,
  the running ones' Jobs listed for the runner to cancel (`cancels_due`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from mstc_client.pipeline import downstream
from mstc_flow.errors import PermanentError
from mstc_flow.store.pipeline_tables import (
    ATTEMPT_RANK,
    RETRYABLE_TASK_STATES,
    AttemptRow,
    EdgeRow,
    PipelineRow,
    TaskRow,
)
from mstc_flow.store.pipelines import Pipelines, lock_pipeline, now

__all__ = ["Change", "JobEvent", "PipelineProgress", "task_state_of"]

_FAILED = frozenset({"failed", "timeout", "error", "rejected"})
_UNDONE = frozenset({"waiting", "queued", "running"})


def task_state_of(event: str) -> str | None:
    """The attempt/task state a worker event means (None: not one that moves anything)."""
    if event in ("accepted", "running"):
        return "running"
    if event in ("succeeded", "cancelled"):
        return event
    return "failed" if event in _FAILED else None


@dataclass(frozen=True)
class JobEvent:
    attempt_id: str
    event: str  # the worker's state: accepted, running, succeeded, failed, timeout, ...
    job_name: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    at: datetime | None = None


@dataclass(frozen=True)
class Change:
    """One thing that happened: a task's new state, or the pipeline's (task None)."""

    pipeline_id: str
    pipeline: str
    state: str
    task: str | None = None
    attempt: str | None = None
    job_name: str | None = None
    failed_tasks: tuple[str, ...] = field(default=())


class PipelineProgress:
    """The state changes of pipelines, over the same store as `Pipelines`."""

    def __init__(self, pipelines: Pipelines) -> None:
        self._db = pipelines.db

    def on_event(self, event: JobEvent) -> list[Change]:
        state = task_state_of(event.event)
        if state is None:
            return []
        with self._db.session() as session:
            attempt = session.get(AttemptRow, event.attempt_id)
            if attempt is None:
                return []
            pipeline = lock_pipeline(session, attempt.pipeline_id)
            if not _advance(session, attempt.id, state, event):
                return []  # a repeat, or older than what is recorded
            at = event.at or now()
            task = session.get(TaskRow, (attempt.pipeline_id, attempt.task),
                               populate_existing=True)  # fmt: skip
            if task is None or task.attempt_id != attempt.id:
                return []  # an older attempt: recorded on it alone
            if state == "running" and task.state == "queued":
                task.state, task.started_at = "running", at
            elif state != "running" and task.state in ("queued", "running"):
                task.state, task.finished_at = state, at
                task.started_at = task.started_at or at
                task.reason = _reason(event) if state != "succeeded" else None
            else:
                return []
            task.job_name = event.job_name or task.job_name
            changes = [Change(pipeline.id, pipeline.name, task.state, task.name, attempt.id,
                              task.job_name)]  # fmt: skip
            session.flush()
            return changes + settle(session, pipeline)

    def retry(self, pipeline_id: str, task_name: str | None) -> list[Change]:
        with self._db.session() as session:
            pipeline = lock_pipeline(session, pipeline_id)
            tasks = _tasks(session, pipeline_id)
            if task_name is None:
                again = [t for t in tasks.values() if t.state in RETRYABLE_TASK_STATES]
                if not again:
                    raise PermanentError(f"Pipeline {pipeline_id} has no failed, skipped or "
                                         "cancelled task to retry.")  # fmt: skip
            else:
                again = [_retryable(tasks, task_name, pipeline_id)]
                downstream_tasks = downstream(_needs(session, pipeline_id), task_name)
                again += [tasks[n] for n in sorted(downstream_tasks) if tasks[n].state == "skipped"]
            for task in again:
                task.state, task.reason, task.attempt_id = "waiting", None, None
                task.job_name = task.started_at = task.finished_at = None
            pipeline.state, pipeline.reason, pipeline.finished_at = "running", None, None
            changes = [Change(pipeline.id, pipeline.name, "waiting", t.name) for t in again]
            session.flush()
            return changes + settle(session, pipeline)

    def cancel(self, pipeline_id: str) -> list[Change]:
        with self._db.session() as session:
            pipeline = lock_pipeline(session, pipeline_id)
            if pipeline.state != "running":
                raise PermanentError(f"Pipeline {pipeline_id} is already {pipeline.state}.")
            changes: list[Change] = []
            for task in _tasks(session, pipeline_id).values():
                if task.state == "waiting":
                    task.state, task.reason = "cancelled", "the pipeline was cancelled"
                    changes.append(Change(pipeline.id, pipeline.name, "cancelled", task.name))
            pipeline.state, pipeline.reason = "cancelled", "cancelled through the API"
            session.flush()
            return changes + settle(session, pipeline)

    def cancels_due(self) -> list[tuple[str, str]]:
        """(attempt id, Job name) of current attempts of cancelled pipelines still to cancel."""
        with self._db.session() as session:
            query = (
                select(AttemptRow.id, AttemptRow.job_name)
                .join(PipelineRow, PipelineRow.id == AttemptRow.pipeline_id)
                .join(TaskRow, and_(TaskRow.pipeline_id == AttemptRow.pipeline_id,
                                    TaskRow.attempt_id == AttemptRow.id))
                .where(PipelineRow.state == "cancelled",
                       AttemptRow.state.in_(("submitted", "running")),
                       AttemptRow.job_name.is_not(None), AttemptRow.cancel_sent_at.is_(None))
            )  # fmt: skip
            return [(str(a), str(j)) for a, j in session.execute(query)]

    def mark_cancel_sent(self, attempt_id: str) -> None:
        with self._db.session() as session:
            session.execute(
                update(AttemptRow).where(AttemptRow.id == attempt_id).values(cancel_sent_at=now())
            )

    def settle_all(self, pipeline_ids: list[str]) -> list[Change]:
        """Settle each pipeline (a safety net for ends no event brought about)."""
        changes: list[Change] = []
        for pipeline_id in pipeline_ids:
            with self._db.session() as session:
                changes += settle(session, lock_pipeline(session, pipeline_id))
        return changes


def _advance(session: Session, attempt_id: str, state: str, event: JobEvent) -> bool:
    """Move the attempt forward to `state`; False when it is there or past it already."""
    earlier = [name for name, rank in ATTEMPT_RANK.items() if rank < ATTEMPT_RANK[state]]
    values: dict[str, object] = {"state": state}
    if event.job_name:
        values["job_name"] = event.job_name
    at = event.at or now()
    if state == "running":
        values["started_at"] = at
    else:
        values.update(finished_at=at, result=event.event, exit_code=event.exit_code,
                      reason=_reason(event))  # fmt: skip
    result = session.execute(
        update(AttemptRow)
        .where(AttemptRow.id == attempt_id, AttemptRow.state.in_(earlier))
        .values(**values)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def _reason(event: JobEvent) -> str:
    why = event.reason or event.event
    return f"{why} (exit code {event.exit_code})" if event.exit_code is not None else why


def _tasks(session: Session, pipeline_id: str) -> dict[str, TaskRow]:
    query = select(TaskRow).where(TaskRow.pipeline_id == pipeline_id).order_by(TaskRow.position)
    return {task.name: task for task in session.scalars(query.execution_options(
        populate_existing=True))}  # fmt: skip


def _needs(session: Session, pipeline_id: str) -> dict[str, list[str]]:
    needs: dict[str, list[str]] = {}
    for edge in session.scalars(select(EdgeRow).where(EdgeRow.pipeline_id == pipeline_id)):
        needs.setdefault(edge.task, []).append(edge.needs)
    return needs


def _retryable(tasks: dict[str, TaskRow], name: str, pipeline_id: str) -> TaskRow:
    task = tasks.get(name)
    if task is None:
        raise PermanentError(f"Pipeline {pipeline_id} has no task {name!r}.")
    if task.state not in RETRYABLE_TASK_STATES:
        raise PermanentError(f"Task {name} is {task.state}; only a failed, skipped or "
                             "cancelled task can be retried.")  # fmt: skip
    return task


def settle(session: Session, pipeline: PipelineRow) -> list[Change]:
    """Skip what can no longer run; end the pipeline when nothing is left to run."""
    tasks = _tasks(session, pipeline.id)
    needs = _needs(session, pipeline.id)
    changes: list[Change] = []
    moved = True
    while moved:  # a skip may block tasks further down: go round until nothing moves
        moved = False
        for task in tasks.values():
            if task.state != "waiting":
                continue
            blocker = next((tasks[n] for n in needs.get(task.name, ())
                            if tasks[n].state in RETRYABLE_TASK_STATES), None)  # fmt: skip
            if blocker is None:
                continue
            task.state, moved = "skipped", True
            task.reason = (blocker.reason if blocker.state == "skipped" and blocker.reason
                           else f"task {blocker.name} {blocker.state}")  # fmt: skip
            changes.append(Change(pipeline.id, pipeline.name, "skipped", task.name))
    if any(task.state in _UNDONE for task in tasks.values()) or pipeline.finished_at:
        return changes
    failed = tuple(t.name for t in tasks.values() if t.state in ("failed", "cancelled"))
    skipped = sum(1 for task in tasks.values() if task.state == "skipped")
    if pipeline.state == "running":
        pipeline.state = "failed" if failed or skipped else "succeeded"
        pipeline.reason = (f"failed: {', '.join(failed)} ({skipped} skipped)"
                           if pipeline.state == "failed" else None)  # fmt: skip
    pipeline.finished_at = now()
    return [*changes, Change(pipeline.id, pipeline.name, pipeline.state, failed_tasks=failed)]
