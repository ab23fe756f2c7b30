"""The pipelines' tables: pipelines, their tasks, the edges between tasks, and attempts.

Revision ID: 0004_pipelines
Revises: 0001_base

A snapshot of `pipeline_tables` as first released: later changes come as new revisions.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0004_pipelines"
down_revision = "0001_base"
branch_labels = ("pipelines",)
depends_on = None


def _when(name: str, *, nullable: bool = True) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _pipeline_key() -> sa.Column[str]:
    fk = sa.ForeignKey("pipelines.id", ondelete="CASCADE")
    return sa.Column("pipeline_id", sa.String(16), fk, nullable=False)


def upgrade() -> None:
    op.create_table(
        "pipelines",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("parallelism", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.String(63), nullable=False),
        sa.Column("prefix", sa.String(512), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("replica", sa.String(253), nullable=False),
        _when("created_at", nullable=False),
        _when("finished_at"),
    )
    op.create_index("ix_pipelines_state_created", "pipelines", ["state", "created_at"])
    op.create_table(
        "pipeline_tasks",
        _pipeline_key(),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("source", sa.String(63), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("request", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("attempt_id", sa.String(18), nullable=True),
        sa.Column("job_name", sa.String(253), nullable=True),
        _when("started_at"),
        _when("finished_at"),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("pipeline_id", "name"),
    )
    op.create_index("ix_pipeline_tasks_state", "pipeline_tasks", ["pipeline_id", "state"])
    op.create_table(
        "pipeline_edges",
        _pipeline_key(),
        sa.Column("task", sa.String(253), nullable=False),
        sa.Column("needs", sa.String(253), nullable=False),
        sa.PrimaryKeyConstraint("pipeline_id", "task", "needs"),
    )
    op.create_table(
        "pipeline_attempts",
        sa.Column("id", sa.String(18), primary_key=True),
        _pipeline_key(),
        sa.Column("task", sa.String(253), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("claimed_by", sa.String(253), nullable=True),
        _when("claimed_at"),
        _when("submitted_at"),
        sa.Column("job_name", sa.String(253), nullable=True),
        _when("started_at"),
        _when("finished_at"),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("result", sa.String(16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        _when("cancel_sent_at"),
    )
    op.create_index("ix_pipeline_attempts_task", "pipeline_attempts", ["pipeline_id", "task"])
    op.create_index("ix_pipeline_attempts_state", "pipeline_attempts", ["state", "claimed_at"])


def downgrade() -> None:
    for table in ("pipeline_attempts", "pipeline_edges", "pipeline_tasks", "pipelines"):
        op.drop_table(table)
