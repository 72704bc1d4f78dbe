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

# The SQL this migration runs, frozen here: a migration is a snapshot. What the code
# expects now is workmanager/db/sql/functions.sql (tests/integration/test_sql_files.py
# checks that the migrations, run in order, produce exactly that).
HOT_PATH_FUNCTIONS_V2 = """
CREATE OR REPLACE FUNCTION workmanager_release_order(
  p_order uuid, p_item uuid, p_now timestamptz, p_actor_type text, p_actor_id text,
  OUT order_state text, OUT became boolean
) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  any_held boolean;
  queued_ids uuid[];
BEGIN
  became := false;
  SELECT o.state INTO order_state FROM work_orders o WHERE o.id = p_order
     FOR NO KEY UPDATE;
  IF NOT FOUND OR order_state <> 'in_progress' THEN
    RETURN;
  END IF;
  SELECT coalesce(bool_or(s.state IN ('leased', 'in_progress')), false),
         coalesce(array_agg(s.id) FILTER (WHERE s.state = 'queued'), '{}')
    INTO any_held, queued_ids
    FROM work_items s WHERE s.order_id = p_order AND s.id <> p_item;
  IF any_held THEN
    RETURN;
  END IF;
  PERFORM 1 FROM work_items s WHERE s.id = ANY(queued_ids) FOR SHARE;
  IF EXISTS (SELECT 1 FROM work_items s
              WHERE s.id = ANY(queued_ids) AND s.state IN ('leased', 'in_progress')) THEN
    RETURN;
  END IF;
  UPDATE work_orders o SET state = 'queued', last_transitioned_at = p_now,
         updated_at = p_now
   WHERE o.id = p_order;
  INSERT INTO work_events (order_id, item_id, event, actor_type, actor_id, payload, created_at)
  VALUES (p_order, NULL, 'requeued', p_actor_type, p_actor_id, NULL, p_now);
  order_state := 'queued';
  became := true;
END $$;
"""
DROP_HOT_PATH_FUNCTIONS_V2 = (
    "DROP FUNCTION IF EXISTS workmanager_release_order(uuid, uuid, timestamptz, text, text)"
)

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
