"""Triggers and functions that live in the database, as SQL text.

Both the migrations and ``create_all`` (the DDL listeners in :mod:`.models`) run these
same strings. **Each constant is frozen once a migration uses it**: a migration is a
snapshot, so a change is a new constant (``..._V2``) and a new migration, never an edit
(``tests/unit/test_ddl.py`` pins their hashes). A function whose arguments or result
columns change gets a new name: running processes hold prepared statements that name the
old one, and ``CREATE OR REPLACE`` cannot change a result type.
"""

from __future__ import annotations

# --- migration 0003: audit rows without foreign keys -----------------------------------
#: Deleting an order deletes its events and provenance (SPEC §3), as ON DELETE CASCADE
#: did before the audit tables lost their foreign keys.
AUDIT_CASCADE_PG = """
CREATE OR REPLACE FUNCTION work_orders_delete_audit() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM work_events WHERE order_id = OLD.id;
  DELETE FROM work_provenance WHERE order_id = OLD.id;
  RETURN OLD;
END $$;
CREATE TRIGGER work_orders_delete_audit AFTER DELETE ON work_orders
  FOR EACH ROW EXECUTE FUNCTION work_orders_delete_audit();
"""
AUDIT_CASCADE_SQLITE = """
CREATE TRIGGER work_orders_delete_audit AFTER DELETE ON work_orders FOR EACH ROW BEGIN
  DELETE FROM work_events WHERE order_id = OLD.id;
  DELETE FROM work_provenance WHERE order_id = OLD.id;
END
"""
DROP_AUDIT_CASCADE_PG = (
    "DROP TRIGGER IF EXISTS work_orders_delete_audit ON work_orders;"
    " DROP FUNCTION IF EXISTS work_orders_delete_audit()"
)
DROP_AUDIT_CASCADE_SQLITE = "DROP TRIGGER IF EXISTS work_orders_delete_audit"

# --- migration 0004: the order steps of the hot path (PostgreSQL only) -----------------
#: The order-level half of a hot checkout and a hot submit, called from inside their one
#: statement (:mod:`workmanager.services.hotsql`). Being VOLATILE, each query in them
#: takes a fresh snapshot once the statement has locked its item, so they see a sibling's
#: change that committed while the statement ran, as a statement of their own would.
#:
#: ``workmanager_start_order``: ``queued → in_progress`` on an order's first lease, with
#: its event; true when it moved.
#:
#: ``workmanager_submit_order``: locks the order, then (a fresh snapshot, after any
#: sibling submit holding that lock has committed) moves it ``in_progress → submitted``
#: with its event when no other item is still open. Returns the order's state after it
#: (NULL when there is no such order) and whether it moved. The open states are the
#: complement of ``SUBMITTED_ITEM_STATES`` (a unit test holds them together).
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
DROP_HOT_PATH_FUNCTIONS_V1 = (
    "DROP FUNCTION IF EXISTS workmanager_start_order(uuid, timestamptz, text, text);"
    " DROP FUNCTION IF EXISTS"
    " workmanager_submit_order(uuid, uuid, timestamptz, text, text)"
)
#: Their signatures, to ask the catalog whether they exist (``to_regprocedure``).
HOT_PATH_SIGNATURES_V1 = (
    "workmanager_start_order(uuid,timestamptz,text,text)",
    "workmanager_submit_order(uuid,uuid,timestamptz,text,text)",
)
#: The item states the submit function counts as done, as written in it.
HOT_PATH_DONE_ITEM_STATES_V1 = ("accepted", "completed", "submitted")

# --- migration 0005: the order step of a hot release (PostgreSQL only) -----------------
#: ``workmanager_release_order``: locks the order, then moves it ``in_progress → queued``
#: with its ``requeued`` event when none of its other items is held — as
#: ``lifecycle.maybe_requeue_order`` does. Checkout does not lock the order, so a sibling
#: may be between ``queued`` and ``leased`` right now. So: the held siblings and the
#: queued ones are read in **one** query (one snapshot: a grant committing between two
#: queries would be in neither set); the queued ones are then locked ``FOR SHARE`` by id,
#: which waits for a grant in flight to commit (a later checkout skips them, ``SKIP
#: LOCKED``), and read again in a fresh snapshot. The lock and the state test are two
#: queries: with the test in the locking query, PostgreSQL filters rows on the snapshot's
#: version before locking them, and a grant in flight is never waited for
#: (``test_the_order_step_waits_for_a_sibling_grant_in_flight``). Returns the order's
#: state after it (NULL when there is no such order) and whether it moved.
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
HOT_PATH_SIGNATURES_V2 = ("workmanager_release_order(uuid,uuid,timestamptz,text,text)",)
#: The item states the release function counts as held, as written in it.
HOT_PATH_HELD_ITEM_STATES_V2 = ("leased", "in_progress")
