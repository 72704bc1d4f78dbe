"""the hot path's order steps as functions (PostgreSQL)

A hot checkout or submit becomes one statement: its item, event and provenance rows in a
data-modifying CTE, and the order's step (start on the first lease; submitted on the last
submit) in a VOLATILE function called from it, whose queries take their own snapshot as a
statement of their own did. One statement in autocommit is one round trip with no BEGIN
or COMMIT to send; the client-side cost of the pipelined statements was ~40 % of a cycle.
SQLite has no hot path and gets nothing.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 05:40:00
"""

from __future__ import annotations

from alembic import op

from workmanager.db.ddl import DROP_HOT_PATH_FUNCTIONS_V1, HOT_PATH_FUNCTIONS_V1

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(HOT_PATH_FUNCTIONS_V1)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(DROP_HOT_PATH_FUNCTIONS_V1)
