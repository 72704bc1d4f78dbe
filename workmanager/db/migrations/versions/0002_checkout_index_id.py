"""checkout index covers the id tie-breaker

The checkout orders by priority desc, created_at, id; without id in the index PostgreSQL
sorted every queued row to pick one (cost growing with the queue).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 00:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

QUEUED = sa.text("state = 'queued'")


def upgrade() -> None:
    op.drop_index("ix_work_items_checkout", table_name="work_items")
    op.create_index(
        "ix_work_items_checkout",
        "work_items",
        [sa.text("priority DESC"), "created_at", "id"],
        postgresql_where=QUEUED,
        sqlite_where=QUEUED,
    )


def downgrade() -> None:
    op.drop_index("ix_work_items_checkout", table_name="work_items")
    op.create_index(
        "ix_work_items_checkout",
        "work_items",
        [sa.text("priority DESC"), "created_at"],
        postgresql_where=QUEUED,
        sqlite_where=QUEUED,
    )
