"""an index for checkouts by tenant and type together

A token bound to a tenant that checks out by type asked for both; the indexes of 0013
serve one each, so the checkout walked one of them past every queued item of the other
tenants or types: 0.2-0.3 s a call when the tenant's 480,000 queued items were of another
type (a scale pass). Tenant, then type, then the checkout's order finds the first
eligible item at once.

On PostgreSQL the index is built inside the upgrade's transaction, which holds writes to
``work_items`` while it builds (seconds per million queued rows).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

QUEUED = sa.text("state = 'queued'")


def upgrade() -> None:
    op.create_index(
        "ix_work_items_checkout_tenant_type",
        "work_items",
        ["tenant_id", "order_type", sa.text("priority DESC"), "created_at", "id"],
        postgresql_where=QUEUED,
        sqlite_where=QUEUED,
    )


def downgrade() -> None:
    op.drop_index("ix_work_items_checkout_tenant_type", table_name="work_items")
