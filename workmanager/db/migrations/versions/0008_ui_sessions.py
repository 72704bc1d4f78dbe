"""review console sessions: one row per signed-in browser

``work_ui_sessions``: the sha256 of the session cookie's secret, the API token the session
was opened with (read again on every request), the session's CSRF token and its expiry.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from workmanager.db.models import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "work_ui_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("token_id", sa.BigInteger(), nullable=True),
        sa.Column("principal", sa.String(191), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_work_ui_sessions_expires", "work_ui_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_work_ui_sessions_expires", table_name="work_ui_sessions")
    op.drop_table("work_ui_sessions")
