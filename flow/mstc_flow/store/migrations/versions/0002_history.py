"""The history's tables: jobs, their labels and events, and worker replicas.

Revision ID: 0002_history
Revises: 0001_base

A snapshot of `history_tables` as first released: later changes to those tables come as
new revisions, never as edits here. JSON is stored as text (see `history_tables.JsonText`).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002_history"
down_revision = "0001_base"
branch_labels = None
depends_on = None

_KEY, _TEXT = 200, 1000


def _time(name: str, *, nullable: bool = True) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _text(name: str) -> sa.Column[Any]:
    return sa.Column(name, sa.String(_TEXT), nullable=True)


def upgrade() -> None:
    op.create_table(
        "history_jobs",
        sa.Column("request_id", sa.String(_KEY), primary_key=True),
        _text("requested_name"),
        _text("job_name"),
        _text("namespace"),
        _text("image"),
        sa.Column("state", sa.String(16), nullable=False),
        _time("state_at", nullable=False),
        sa.Column("request", sa.Text, nullable=True),
        sa.Column("labels", sa.Text, nullable=False),
        _text("correlation_id"),
        _text("replica"),
        sa.Column("replica_accepted", sa.Boolean, nullable=False),
        _time("seen_at", nullable=False),
        _time("accepted_at"),
        _time("running_at"),
        _time("finished_at"),
        sa.Column("exit_code", sa.BigInteger, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("message", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        _text("log_bucket"),
        _text("log_object"),
        _text("output_bucket"),
        sa.Column("pods_succeeded", sa.BigInteger, nullable=True),
        sa.Column("pods_failed", sa.BigInteger, nullable=True),
        sa.Column("duration_ms", sa.BigInteger, nullable=True),
        _time("updated_at", nullable=False),
    )
    for name, columns in (
        ("ix_history_jobs_seen", ["seen_at", "request_id"]),
        ("ix_history_jobs_state_seen", ["state", "seen_at", "request_id"]),
        ("ix_history_jobs_requested_seen", ["requested_name", "seen_at", "request_id"]),
        ("ix_history_jobs_made_seen", ["job_name", "seen_at", "request_id"]),
        ("ix_history_jobs_image_seen", ["image", "seen_at", "request_id"]),
        ("ix_history_jobs_finished", ["finished_at"]),
    ):
        op.create_index(name, "history_jobs", columns)
    op.create_index(
        "ix_history_jobs_correlation",
        "history_jobs",
        ["correlation_id"],
        postgresql_ops={"correlation_id": "text_pattern_ops"},
    )
    op.create_table(
        "history_labels",
        sa.Column(
            "request_id",
            sa.String(_KEY),
            sa.ForeignKey("history_jobs.request_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("key", sa.String(_TEXT), primary_key=True),
        sa.Column("value", sa.String(_TEXT), nullable=False),
        _time("seen_at", nullable=False),
    )
    op.create_index(
        "ix_history_labels_pair_seen", "history_labels", ["key", "value", "seen_at", "request_id"]
    )
    op.create_table(
        "history_events",
        sa.Column("event_id", sa.String(_KEY), primary_key=True),
        sa.Column(
            "request_id",
            sa.String(_KEY),
            sa.ForeignKey("history_jobs.request_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("event", sa.String(16), nullable=False),
        _time("at", nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        _time("recorded_at", nullable=False),
    )
    op.create_index("ix_history_events_request", "history_events", ["request_id", "at"])
    op.create_table(
        "history_replicas",
        sa.Column("replica", sa.String(_TEXT), primary_key=True),
        _text("version"),
        sa.Column("in_flight", sa.Integer, nullable=True),
        sa.Column("capacity", sa.Integer, nullable=True),
        _time("started_at"),
        _time("last_seen", nullable=False),
        sa.Column("stopping", sa.Boolean, nullable=False),
        sa.Column("interval_seconds", sa.Float, nullable=True),
    )


def downgrade() -> None:
    for table in ("history_replicas", "history_events", "history_labels", "history_jobs"):
        op.drop_table(table)
