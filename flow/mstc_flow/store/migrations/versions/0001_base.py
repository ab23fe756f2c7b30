"""The base revision every concern's first revision builds on.

Revision ID: 0001_base
Revises:
"""

from __future__ import annotations

revision = "0001_base"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing: each concern (history, firings, ...) adds its tables in its own revision."""


def downgrade() -> None:
    """Nothing to undo."""
