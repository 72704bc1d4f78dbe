"""rate buckets: the token buckets of the rate limits on the database

``work_rate_buckets(key, tokens, updated_at)``: one row per bucket in use (per agent or per
tenant, for checkout or for API requests), ``updated_at`` in seconds since the epoch. Only
used when a ``WORK_MANAGER_RATE_LIMIT_*`` is set and the lease backend is not Redis.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 04:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "work_rate_buckets",
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("tokens", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("work_rate_buckets")
