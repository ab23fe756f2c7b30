"""The firings table: one row per time a catalog entry fired (trigger, by hand, retry, chain).

Revision ID: 0003_firings
Revises: 0001_base
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_firings"
down_revision = "0001_base"
branch_labels = ("firings",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "firings",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("entry", sa.String(63), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("source_key", sa.String(200), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("request", sa.Text(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("retry_of", sa.String(64), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("job_name", sa.String(253), nullable=True),
        sa.Column("job_state", sa.String(16), nullable=True),
        sa.Column("claimed_by", sa.String(253), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("source_key", "entry", name="uq_firings_source_entry"),
    )
    op.create_index("ix_firings_state_created", "firings", ["state", "created_at"])
    op.create_index("ix_firings_entry_state", "firings", ["entry", "state"])
    op.create_index("ix_firings_request_id", "firings", ["request_id"])


def downgrade() -> None:
    op.drop_table("firings")
