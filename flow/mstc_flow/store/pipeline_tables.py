"""The pipelines' tables: a pipeline, its tasks, the edges between them, and each attempt.

Declared here (the ORM rows) and created by migration 0004_pipelines. A pipeline row keeps
the document it came from and where its objects live; a task row keeps its request as the
canonical JSON it is sent as, its state and its current attempt; an edge row says a task
needs another; an attempt row is one submission of a task (correlation id
`pipe:<attempt id>`), from its claim to its Job's final event. States are short strings,
listed here so the store, the runner and the API speak of the same ones.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mstc_flow.store.db import Base

__all__ = [
    "ACTIVE_TASK_STATES",
    "ATTEMPT_RANK",
    "PIPELINE_STATES",
    "RETRYABLE_TASK_STATES",
    "TASK_STATES",
    "AttemptRow",
    "EdgeRow",
    "PipelineRow",
    "TaskRow",
]

PIPELINE_STATES = ("running", "succeeded", "failed", "cancelled")
TASK_STATES = ("waiting", "queued", "running", "succeeded", "failed", "skipped", "cancelled")
ACTIVE_TASK_STATES = ("queued", "running")
RETRYABLE_TASK_STATES = ("failed", "skipped", "cancelled")
# An attempt only moves forward: claimed -> submitted -> running -> one final state.
ATTEMPT_RANK = {"claimed": 0, "submitted": 1, "running": 2,
                "succeeded": 3, "failed": 3, "cancelled": 3}  # fmt: skip


class PipelineRow(Base):
    __tablename__ = "pipelines"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(63))
    digest: Mapped[str] = mapped_column(String(64))
    document: Mapped[str] = mapped_column(Text)
    parallelism: Mapped[int] = mapped_column(Integer)
    bucket: Mapped[str] = mapped_column(String(63))
    prefix: Mapped[str] = mapped_column(String(512))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    replica: Mapped[str] = mapped_column(String(253))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class TaskRow(Base):
    __tablename__ = "pipeline_tasks"
    __table_args__ = (Index("ix_pipeline_tasks_state", "pipeline_id", "state"),)

    pipeline_id: Mapped[str] = mapped_column(
        String(16), ForeignKey("pipelines.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(253), primary_key=True)
    source: Mapped[str] = mapped_column(String(63))
    position: Mapped[int] = mapped_column(Integer)
    request: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    attempt_id: Mapped[str | None] = mapped_column(String(18), nullable=True)
    job_name: Mapped[str | None] = mapped_column(String(253), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class EdgeRow(Base):
    __tablename__ = "pipeline_edges"

    pipeline_id: Mapped[str] = mapped_column(
        String(16), ForeignKey("pipelines.id", ondelete="CASCADE"), primary_key=True
    )
    task: Mapped[str] = mapped_column(String(253), primary_key=True)
    needs: Mapped[str] = mapped_column(String(253), primary_key=True)


class AttemptRow(Base):
    __tablename__ = "pipeline_attempts"
    __table_args__ = (
        Index("ix_pipeline_attempts_task", "pipeline_id", "task"),
        Index("ix_pipeline_attempts_state", "state", "claimed_at"),
    )

    id: Mapped[str] = mapped_column(String(18), primary_key=True)
    pipeline_id: Mapped[str] = mapped_column(
        String(16), ForeignKey("pipelines.id", ondelete="CASCADE")
    )
    task: Mapped[str] = mapped_column(String(253))
    number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    claimed_by: Mapped[str | None] = mapped_column(String(253), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    job_name: Mapped[str | None] = mapped_column(String(253), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    result: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
