-- The PostgreSQL objects the schema carries besides tables: the order steps the
-- PostgreSQL store calls from inside its statements, and the audit cascade trigger.
--
-- This file is what the code expects NOW. `create_all` runs it; the migrations that
-- created each object (named in its section) hold their own frozen copy, and
-- tests/integration/test_sql_files.py checks that a database built by the migrations has
-- exactly these definitions. A change here is a new migration with the new text (and,
-- when arguments or results change, a new function name: running processes hold
-- prepared statements naming the old one).
--
-- Each section starts with `-- name: <object> (migration NNNN)`; see
-- workmanager/db/sql/__init__.py for how it is read.

-- name: work_orders_delete_audit (migration 0003)
CREATE OR REPLACE FUNCTION work_orders_delete_audit() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM work_events WHERE order_id = OLD.id;
  DELETE FROM work_provenance WHERE order_id = OLD.id;
  RETURN OLD;
END $$;
CREATE TRIGGER work_orders_delete_audit AFTER DELETE ON work_orders
  FOR EACH ROW EXECUTE FUNCTION work_orders_delete_audit();

-- name: workmanager_start_order (migration 0004)
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

-- name: workmanager_submit_order (migration 0004)
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

-- name: workmanager_release_order (migration 0005)
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

-- name: workmanager_put_part (migration 0011)
CREATE OR REPLACE FUNCTION workmanager_put_part(
  p_item uuid, p_id uuid, p_part_key text, p_seq integer, p_status text, p_payload jsonb,
  p_evidence jsonb, p_notes text, p_errors jsonb, p_checksum text, p_agent text,
  p_created_at timestamptz, p_now timestamptz, p_max_parts integer,
  OUT part_id uuid, OUT parts bigint, OUT parts_state jsonb, OUT validated_keys text[]
) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  v_slot integer := coalesce(p_seq, -1);
BEGIN
  -- The parts rules of PostgreSQL (SQLite's are services/parts.py): a part takes its
  -- (key, seq) slot, replacing what the slot held; a new slot only while the item has
  -- fewer than p_max_parts parts (else part_id is NULL and parts the count, nothing
  -- written); the item's parts state is, per key, the latest part submitted under it.
  -- The caller locked the item; each query here takes its own snapshot after that lock.
  SELECT p.id INTO part_id FROM work_item_parts p
   WHERE p.item_id = p_item AND p.part_key = p_part_key AND p.seq_slot = v_slot;
  IF part_id IS NULL THEN
    SELECT count(*) INTO parts FROM work_item_parts p WHERE p.item_id = p_item;
    IF parts >= p_max_parts THEN
      RETURN;
    END IF;
    part_id := p_id;
    INSERT INTO work_item_parts (id, item_id, part_key, seq, seq_slot, status, payload,
           evidence, notes, errors, checksum, submitted_by_agent_id, created_at)
    VALUES (p_id, p_item, p_part_key, p_seq, v_slot, p_status, p_payload, p_evidence,
            p_notes, p_errors, p_checksum, p_agent, p_created_at);
  ELSE
    UPDATE work_item_parts p SET status = p_status, payload = p_payload,
           evidence = p_evidence, notes = p_notes, errors = p_errors,
           checksum = p_checksum, submitted_by_agent_id = p_agent, created_at = p_created_at
     WHERE p.id = part_id;
  END IF;
  SELECT jsonb_object_agg(l.part_key, jsonb_build_object(
           'status', l.status, 'seq', l.seq, 'checksum', l.checksum,
           'submitted_at', to_char(l.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
             || CASE WHEN mod(date_part('microseconds', l.created_at)::bigint, 1000000) = 0
                     THEN '' ELSE to_char(l.created_at AT TIME ZONE 'UTC', '.US') END
             || 'Z'))
    INTO parts_state
    FROM (SELECT DISTINCT ON (p.part_key) p.part_key, p.status, p.seq, p.checksum,
                 p.created_at
            FROM work_item_parts p WHERE p.item_id = p_item
           ORDER BY p.part_key, p.created_at DESC, p.id = part_id DESC) l;
  SELECT coalesce(array_agg(DISTINCT p.part_key), '{}') INTO validated_keys
    FROM work_item_parts p WHERE p.item_id = p_item AND p.status = 'validated';
  UPDATE work_items w SET parts_state = workmanager_put_part.parts_state, updated_at = p_now
   WHERE w.id = p_item;
END $$;
