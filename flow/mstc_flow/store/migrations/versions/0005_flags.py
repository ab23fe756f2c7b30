"""The stalled flags: one row per stall of a Job or a worker replica (see `store.flags`).

Revision ID: 0005_flags
Revises: 0001_base

Its own branch off the base, as the firings' and the pipelines' are (`upgrade heads` applies
every branch). A snapshot of `flags.FlagRow` as first released.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_flags"
down_revision = "0001_base"
branch_labels = ("flags",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "flags",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("subject", sa.String(1000), primary_key=True),
        sa.Column("since", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_flags_subject", "flags", ["subject", "cleared_at"])
    op.create_index("ix_flags_open", "flags", ["cleared_at", "kind"])


def downgrade() -> None:
    op.drop_table("flags")
