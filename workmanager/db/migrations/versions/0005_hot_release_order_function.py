"""the hot release's order step as a function (PostgreSQL)

A hot release becomes one statement, as checkout, heartbeat and submit did in 0004: its
item, event and provenance rows in a data-modifying CTE, and the order's step (back to
``queued`` when no other item is held) in a VOLATILE function called from it. On the
general path a release was six statements through the ORM (~2 ms; the bench's floor
for it is one ~0.3 ms transaction). SQLite has no hot path and gets nothing.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 07:40:00
"""

from __future__ import annotations

from alembic import op

from workmanager.db.ddl import DROP_HOT_PATH_FUNCTIONS_V2, HOT_PATH_FUNCTIONS_V2

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(HOT_PATH_FUNCTIONS_V2)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(DROP_HOT_PATH_FUNCTIONS_V2)
