"""lease tokens prove possession: the hash of each lease's secret on the item

A lease token is ``<fence>.<secret>``: the fence is ``lease_token`` (strictly increasing
per item, as before), the secret a random string whose sha256 is stored here. Leases
granted before this revision have no secret and are refused (409 ``lease_conflict``);
they expire and are swept as usual.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 02:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("work_items", sa.Column("lease_secret_hash", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("work_items") as batch:
        batch.drop_column("lease_secret_hash")
