"""the apply claim: at most one apply body runs per order at a time

``apply_claim`` (a random id) and ``apply_claim_expires_at`` on the order: a run of apply
claims the order before its body runs; other runs back off while the claim is live, and only
the holder records success or failure. A claim lapses at its expiry (its worker died), and
maintenance then sends the apply again. Orders approved before this revision have no claim.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 03:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from workmanager.db.models import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("work_orders", sa.Column("apply_claim", sa.String(36), nullable=True))
    op.add_column(
        "work_orders",
        sa.Column("apply_claim_expires_at", UTCDateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    with op.batch_alter_table("work_orders") as batch:
        batch.drop_column("apply_claim_expires_at")
        batch.drop_column("apply_claim")
