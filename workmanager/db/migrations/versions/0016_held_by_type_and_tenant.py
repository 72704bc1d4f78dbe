"""held items by type and by tenant, for the lease limits' counts

A checkout under a per-type or per-tenant lease limit counts, after its grant, the held
items of the type and of the tenant it leased (``leases/limits.py``); these partial
indexes hold only held items, so a count reads the held rows of one key. The tenant's
holds only items that have a tenant.

On PostgreSQL the indexes are built inside the upgrade's transaction, which holds writes
to ``work_items`` while they build (quick: only the held items are indexed).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

HELD = "state IN ('leased', 'in_progress')"


def upgrade() -> None:
    for name, column, where in (
        ("ix_work_items_type_held", "order_type", HELD),
        ("ix_work_items_tenant_held", "tenant_id", f"{HELD} AND tenant_id IS NOT NULL"),
    ):
        op.create_index(
            name,
            "work_items",
            [column],
            postgresql_where=sa.text(where),
            sqlite_where=sa.text(where),
        )


def downgrade() -> None:
    op.drop_index("ix_work_items_tenant_held", table_name="work_items")
    op.drop_index("ix_work_items_type_held", table_name="work_items")
