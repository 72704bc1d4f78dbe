"""tenants: orders and API tokens carry a tenant id

``work_orders.tenant_id`` (set at propose, inherited by the items, which already have the
column) and ``work_api_tokens.tenant_id`` (a token bound to a tenant acts within it only).
Existing rows have none: they belong to no tenant, visible to unbound tokens only.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 03:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("work_orders", sa.Column("tenant_id", sa.String(191), nullable=True))
    op.create_index("ix_work_orders_tenant_id", "work_orders", ["tenant_id"])
    op.add_column("work_api_tokens", sa.Column("tenant_id", sa.String(191), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("work_api_tokens") as batch:
        batch.drop_column("tenant_id")
    op.drop_index("ix_work_orders_tenant_id", table_name="work_orders")
    with op.batch_alter_table("work_orders") as batch:
        batch.drop_column("tenant_id")
