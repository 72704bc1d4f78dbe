"""a part in one statement: the parts rules of PostgreSQL as a function

``workmanager_put_part``: a part stored in its (key, seq) slot, the parts limit, the
item's parts state (latest part per key) and the keys with a validated part, called from
the one statement a ``submit_part`` is on PostgreSQL (``db/sql/queries.sql`` ``part``)
after it locked the item. Before, the parts were read in one round trip and the part
judged and placed in Python, then written in a second. SQLite keeps those rules in
``services/parts.py``; the contract suite runs both.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 08:10:00
"""

from __future__ import annotations

from alembic import op

# The SQL this migration runs, frozen here: a migration is a snapshot. What the code
# expects now is workmanager/db/sql/functions.sql (tests/integration/test_sql_files.py
# checks that the migrations, run in order, produce exactly that).
PUT_PART_FUNCTION_V1 = """
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
"""
DROP_PUT_PART_FUNCTION_V1 = (
    "DROP FUNCTION IF EXISTS workmanager_put_part(uuid, uuid, text, integer, text, jsonb,"
    " jsonb, text, jsonb, text, text, timestamptz, timestamptz, integer)"
)

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PUT_PART_FUNCTION_V1)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(DROP_PUT_PART_FUNCTION_V1)
