"""Pipelines in the store: recording one, reading its state, and choosing what runs next.

Every change is one short transaction that first locks the pipeline's row (an UPDATE of it:
a row lock on PostgreSQL, the write lock on SQLite), so replicas acting on one pipeline at
once queue up behind each other and each sees what the one before committed. Two replicas
therefore never claim one task nor push the pipeline past its parallelism.

Claims: a task moves `waiting -> queued` by a conditional UPDATE and gets a new attempt
(`a-` + 16 hex, correlation id `pipe:<attempt id>`) in the same transaction. A claim older
than the stale time that was never marked submitted is taken over (same attempt, same
correlation id: the worker adopts the Job a first send made). Events, retries and cancels
are in `pipeline_progress`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session

from mstc_flow.errors import NotFound
from mstc_flow.store.db import Database
from mstc_flow.store.firings import canonical_json
from mstc_flow.store.pipeline_tables import (
    ACTIVE_TASK_STATES,
    TASK_STATES,
    AttemptRow,
    EdgeRow,
    PipelineRow,
    TaskRow,
)

__all__ = ["CORRELATION_PREFIX", "Claim", "NewTask", "Pipelines", "attempt_id_of",
           "lock_pipeline", "new_pipeline_id"]  # fmt: skip

CORRELATION_PREFIX = "pipe:"
_HEX = frozenset("0123456789abcdef")


def new_pipeline_id() -> str:
    return "p-" + secrets.token_hex(6)


def new_attempt_id() -> str:
    return "a-" + secrets.token_hex(8)


def attempt_id_of(correlation_id: object) -> str | None:
    """The attempt id in `pipe:a-<16 hex>`, else None (not a pipeline's request)."""
    if not isinstance(correlation_id, str) or not correlation_id.startswith(CORRELATION_PREFIX):
        return None
    tail = correlation_id[len(CORRELATION_PREFIX) :]
    ok = len(tail) == 18 and tail.startswith("a-") and set(tail[2:]) <= _HEX
    return tail if ok else None


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


@dataclass(frozen=True)
class NewTask:
    """A task as the pipeline is recorded: its request and the tasks it needs."""

    name: str
    source: str
    request: Mapping[str, Any]
    needs: frozenset[str]


@dataclass(frozen=True)
class Claim:
    """One attempt to send: the task's stored request under the attempt's correlation id."""

    attempt_id: str
    pipeline_id: str
    pipeline: str
    task: str
    number: int
    request: dict[str, Any]

    @property
    def correlation_id(self) -> str:
        return f"{CORRELATION_PREFIX}{self.attempt_id}"


def lock_pipeline(session: Session, pipeline_id: str) -> PipelineRow:
    """Lock the pipeline's row for this transaction and return it; NotFound if none."""
    session.execute(
        update(PipelineRow).where(PipelineRow.id == pipeline_id).values(state=PipelineRow.state)
    )
    row = session.get(PipelineRow, pipeline_id, populate_existing=True)
    if row is None:
        raise NotFound(f"There is no pipeline {pipeline_id}.")
    return row


class Pipelines:
    """The pipelines' queries: record, read, claim, mark submitted."""

    def __init__(self, database: Database) -> None:
        self.db = database

    def create(
        self, *, pipeline_id: str, name: str, digest: str, document: str, parallelism: int,
        bucket: str, prefix: str, replica: str, tasks: Sequence[NewTask],
    ) -> None:  # fmt: skip
        """The pipeline, its tasks (all waiting) and its edges, in one transaction."""
        with self.db.session() as session:
            session.add(PipelineRow(
                id=pipeline_id, name=name, digest=digest, document=document,
                parallelism=parallelism, bucket=bucket, prefix=prefix, state="running",
                replica=replica, created_at=now(),
            ))  # fmt: skip
            session.flush()
            rows = [TaskRow(pipeline_id=pipeline_id, name=task.name, source=task.source,
                            position=position, request=canonical_json(task.request),
                            state="waiting", attempts=0)
                    for position, task in enumerate(tasks)]  # fmt: skip
            session.add_all(rows)
            session.add_all(
                EdgeRow(pipeline_id=pipeline_id, task=task.name, needs=needs)
                for task in tasks
                for needs in sorted(task.needs)
            )

    # --- reading -------------------------------------------------------------------------------

    def get(self, pipeline_id: str) -> dict[str, Any]:
        """The pipeline as the API shows it, tasks in file order, each with the names of the
        tasks it needs (`needs`, from the edges: the dashboard draws them); NotFound if unknown."""
        with self.db.session() as session:
            row = session.get(PipelineRow, pipeline_id)
            if row is None:
                raise NotFound(f"There is no pipeline {pipeline_id}.")
            query = select(TaskRow).where(TaskRow.pipeline_id == pipeline_id)
            tasks = list(session.scalars(query.order_by(TaskRow.position)))
            counts = dict.fromkeys(TASK_STATES, 0)
            for task in tasks:
                counts[task.state] += 1
            needs: dict[str, list[str]] = {task.name: [] for task in tasks}
            edges = select(EdgeRow.task, EdgeRow.needs).where(EdgeRow.pipeline_id == pipeline_id)
            for task_name, needed in session.execute(edges.order_by(EdgeRow.task, EdgeRow.needs)):
                needs.setdefault(task_name, []).append(needed)
            listed = [{**_task_json(task), "needs": needs[task.name]} for task in tasks]
            return {**_summary(row, counts), "tasks": listed}

    def list_pipelines(self, state: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Summaries, most recent first."""
        with self.db.session() as session:
            query = select(PipelineRow)
            if state is not None:
                query = query.where(PipelineRow.state == state)
            rows = list(session.scalars(query.order_by(PipelineRow.created_at.desc()).limit(limit)))
            ids = [row.id for row in rows]
            counts: dict[str, dict[str, int]] = {i: dict.fromkeys(TASK_STATES, 0) for i in ids}
            grouped = (
                select(TaskRow.pipeline_id, TaskRow.state, func.count())
                .where(TaskRow.pipeline_id.in_(ids))
                .group_by(TaskRow.pipeline_id, TaskRow.state)
            )
            for pipeline_id, task_state, count in session.execute(grouped):
                counts[pipeline_id][task_state] = int(count)
            return [_summary(row, counts[row.id]) for row in rows]

    def running(self) -> list[str]:
        """Ids of the running pipelines, oldest first."""
        with self.db.session() as session:
            query = select(PipelineRow.id).where(PipelineRow.state == "running")
            return list(session.scalars(query.order_by(PipelineRow.created_at)))

    def task_counts(self) -> dict[str, int]:
        """Tasks of running pipelines by state (the work the flow holds)."""
        with self.db.session() as session:
            query = (
                select(TaskRow.state, func.count())
                .join(PipelineRow, PipelineRow.id == TaskRow.pipeline_id)
                .where(PipelineRow.state == "running")
                .group_by(TaskRow.state)
            )
            return {str(state): int(count) for state, count in session.execute(query)}

    # --- claiming ------------------------------------------------------------------------------

    def claim_next(self, pipeline_id: str, replica: str) -> Claim | None:
        """Claim the first ready task (file order) if the pipeline has a free slot, else None."""
        with self.db.session() as session:
            pipeline = lock_pipeline(session, pipeline_id)
            if pipeline.state != "running":
                return None
            active = session.scalar(
                select(func.count()).select_from(TaskRow).where(
                    TaskRow.pipeline_id == pipeline_id, TaskRow.state.in_(ACTIVE_TASK_STATES)
                )
            )  # fmt: skip
            if int(active or 0) >= pipeline.parallelism:
                return None
            task = session.scalars(_ready(pipeline_id).limit(1)).first()
            if task is None:
                return None
            attempt_id, number, request = new_attempt_id(), task.attempts + 1, task.request
            fresh = dict(reason=None, job_name=None, started_at=None, finished_at=None)
            claimed = session.execute(
                update(TaskRow)
                .where(TaskRow.pipeline_id == pipeline_id, TaskRow.name == task.name)
                .where(TaskRow.state == "waiting")
                .values(state="queued", attempts=number, attempt_id=attempt_id, **fresh)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return None
            session.add(AttemptRow(id=attempt_id, pipeline_id=pipeline_id, task=task.name,
                                   number=number, state="claimed", claimed_by=replica,
                                   claimed_at=now()))  # fmt: skip
            return Claim(attempt_id, pipeline_id, pipeline.name, task.name, number,
                         json.loads(request))  # fmt: skip

    def stale_claims(self, replica: str, stale: timedelta) -> list[Claim]:
        """Take over the claims older than `stale` never marked submitted (their replica died)."""
        cutoff = now() - stale
        taken: list[Claim] = []
        with self.db.session() as session:
            query = (
                select(AttemptRow, TaskRow, PipelineRow.name)
                .join(
                    TaskRow,
                    and_(
                        TaskRow.pipeline_id == AttemptRow.pipeline_id,
                        TaskRow.name == AttemptRow.task,
                    ),
                )
                .join(PipelineRow, PipelineRow.id == AttemptRow.pipeline_id)
                .where(
                    AttemptRow.state == "claimed",
                    AttemptRow.claimed_at < cutoff,
                    TaskRow.attempt_id == AttemptRow.id,
                )
                .limit(100)
            )
            found = list(session.execute(query).tuples())
        for attempt, task, pipeline_name in found:
            with self.db.session() as session:
                result = session.execute(
                    update(AttemptRow)
                    .where(
                        AttemptRow.id == attempt.id,
                        AttemptRow.state == "claimed",
                        AttemptRow.claimed_at == attempt.claimed_at,
                    )
                    .values(claimed_by=replica, claimed_at=now())
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    taken.append(Claim(attempt.id, attempt.pipeline_id, pipeline_name, task.name,
                                       attempt.number, json.loads(task.request)))  # fmt: skip
        return taken

    def mark_submitted(self, attempt_id: str) -> bool:
        with self.db.session() as session:
            result = session.execute(
                update(AttemptRow)
                .where(AttemptRow.id == attempt_id, AttemptRow.state == "claimed")
                .values(state="submitted", submitted_at=now())
            )
            return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def _ready(pipeline_id: str) -> Any:
    """Waiting tasks of the pipeline none of whose needs is anything but succeeded."""
    need = TaskRow.__table__.alias("need")
    blocked = (
        select(EdgeRow.task)
        .join(need, and_(need.c.pipeline_id == EdgeRow.pipeline_id, need.c.name == EdgeRow.needs))
        .where(EdgeRow.pipeline_id == pipeline_id, need.c.state != "succeeded")
    )
    return (
        select(TaskRow)
        .where(TaskRow.pipeline_id == pipeline_id, TaskRow.state == "waiting")
        .where(TaskRow.name.not_in(blocked))
        .order_by(TaskRow.position)
    )


def _summary(row: PipelineRow, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "id": row.id, "name": row.name, "state": row.state, "reason": row.reason,
        "createdAt": iso(row.created_at), "finishedAt": iso(row.finished_at),
        "parallelism": row.parallelism, "bucket": row.bucket, "prefix": row.prefix,
        "counts": counts,
    }  # fmt: skip


def _task_json(task: TaskRow) -> dict[str, Any]:
    return {
        "name": task.name, "state": task.state, "attempts": task.attempts,
        "jobName": task.job_name, "startedAt": iso(task.started_at),
        "finishedAt": iso(task.finished_at), "reason": task.reason,
    }  # fmt: skip
