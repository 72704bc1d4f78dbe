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

# The SQL this migration runs, frozen here: a migration is a snapshot. What the code
# expects now is workmanager/db/sql/functions.sql (tests/integration/test_sql_files.py
# checks that the migrations, run in order, produce exactly that).
HOT_PATH_FUNCTIONS_V1 = """
CREATE OR REPLACE FUNCTION workmanager_start_order(
  p_order uuid, p_now timestamptz, p_actor_type text, p_actor_id text
) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  UPDATE work_orders SET state = 'in_progress', last_transitioned_at = p_now,
         updated_at = p_now
   WHERE id = p_order AND state = 'queued';
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  INSERT INTO work_events (order_id, item_id, event, actor_type, actor_id, payload, created_at)
  VALUES (p_order, NULL, 'in_progress', p_actor_type, p_actor_id, NULL, p_now);
  RETURN true;
END $$;

CREATE OR REPLACE FUNCTION workmanager_submit_order(
  p_order uuid, p_item uuid, p_now timestamptz, p_actor_type text, p_actor_id text,
  OUT order_state text, OUT became boolean
) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  became := false;
  SELECT o.state INTO order_state FROM work_orders o WHERE o.id = p_order
     FOR NO KEY UPDATE;
  IF NOT FOUND OR order_state <> 'in_progress' THEN
    RETURN;
  END IF;
  IF EXISTS (SELECT 1 FROM work_items s
              WHERE s.order_id = p_order AND s.id <> p_item
                AND s.state NOT IN ('accepted', 'completed', 'submitted')) THEN
    RETURN;
  END IF;
  UPDATE work_orders o SET state = 'submitted', last_transitioned_at = p_now,
         updated_at = p_now, submitted_at = p_now
   WHERE o.id = p_order;
  INSERT INTO work_events (order_id, item_id, event, actor_type, actor_id, payload, created_at)
  VALUES (p_order, NULL, 'submitted', p_actor_type, p_actor_id, NULL, p_now);
  order_state := 'submitted';
  became := true;
END $$;
"""
DROP_HOT_PATH_FUNCTIONS_V1 = "; ".join(
    (
        "DROP FUNCTION IF EXISTS workmanager_start_order(uuid, timestamptz, text, text)",
        "DROP FUNCTION IF EXISTS workmanager_submit_order(uuid, uuid, timestamptz, text, text)",
    )
)

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
