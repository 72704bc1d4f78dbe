"""deployment record: the settings every process of a deployment must share

``work_deployment(key, value, recorded_at, recorded_by)``: one row, key ``settings``, the
lease backend, TTL, Redis key prefix and cluster flag, and queue names
(:mod:`workmanager.deployment`). Processes compare their own at start-up and the sweep
before it reclaims: a process configured otherwise (a lease backend forgotten on one
host) reclaimed live leases or announced to queues nobody reads.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from workmanager.db.models import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "work_deployment",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column(
            "value",
            sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql"),
            nullable=False,
        ),
        sa.Column("recorded_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("recorded_by", sa.String(255), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("work_deployment")
