"""provenance by time, for the dashboard's agents

The console's dashboard lists the agents seen in the last hour from the provenance rows
written since: with no index on their time it read every provenance row (two million
after a few weeks of traffic) on each refresh. Rows are only ever appended, so the index
grows at its right edge.

On PostgreSQL the index is built inside the upgrade's transaction, which holds writes
to ``work_provenance`` while it builds (seconds per million rows).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 20:40:00
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_work_provenance_created", "work_provenance", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_work_provenance_created", table_name="work_provenance")
