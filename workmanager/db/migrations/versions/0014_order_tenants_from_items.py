"""orders from before 0009 take the tenant their items have

Before 0009 only items had a tenant (from the payload's ``tenant_id``); 0009 added the
order's column empty. Reads of an order go by the order's tenant, reads and leases of an
item by the item's: a tenant's token got 404 for such an order yet leased, read and
submitted its items (an isolation pass). An order whose items all name one tenant takes
it; one whose items name several keeps none (no such order is made since 0009).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 20:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

BACKFILL = sa.text(
    """
    UPDATE work_orders SET tenant_id = (
        SELECT min(i.tenant_id) FROM work_items i WHERE i.order_id = work_orders.id
    )
    WHERE tenant_id IS NULL
      AND (
        SELECT count(DISTINCT i.tenant_id) FROM work_items i
        WHERE i.order_id = work_orders.id
      ) = 1
      AND NOT EXISTS (
        SELECT 1 FROM work_items i
        WHERE i.order_id = work_orders.id AND i.tenant_id IS NULL
      )
    """
)


def upgrade() -> None:
    op.execute(BACKFILL)


def downgrade() -> None:
    pass  # the tenants stay: the code before reads them as its own
