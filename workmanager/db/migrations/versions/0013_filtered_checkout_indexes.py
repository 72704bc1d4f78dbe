"""indexes for checkouts by type or tenant, and for events by time

A checkout filtered by order type or tenant walked the checkout index (priority, age)
past every queued item of other types: 0.8 s a call over a million queued items, for an
agent whose type had none (a volume pass). The same order under each type and tenant
finds the first eligible item at once. The console's dashboard read the last hour's
events by scanning every event.

On PostgreSQL the indexes are built inside the upgrade's transaction, which holds writes
to ``work_items`` and ``work_events`` while they build (seconds per million rows).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

QUEUED = sa.text("state = 'queued'")
ORDER: list[str | sa.TextClause] = [sa.text("priority DESC"), "created_at", "id"]


def upgrade() -> None:
    for name, column in (("type", "order_type"), ("tenant", "tenant_id")):
        op.create_index(
            f"ix_work_items_checkout_{name}",
            "work_items",
            [column, *ORDER],
            postgresql_where=QUEUED,
            sqlite_where=QUEUED,
        )
    op.create_index("ix_work_events_created", "work_events", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_work_events_created", table_name="work_events")
    for name in ("tenant", "type"):
        op.drop_index(f"ix_work_items_checkout_{name}", table_name="work_items")
