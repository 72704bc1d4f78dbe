-- The statements the PostgreSQL store sends (workmanager/db/postgres/), by name: a whole
-- statement, or a part with {placeholder} markers that Python fills (str.format), which
-- parts a statement is made of staying in Python. Parameters are psycopg's %(name)s.
-- Read by workmanager/db/sql/__init__.py (queries); a unit test checks every name is used.

-- name: lock_item
-- An item locked by id (FOR UPDATE), every column ({item_columns}): what a lease check reads.
SELECT {item_columns} FROM work_items WHERE id = %(id)s FOR UPDATE

-- name: order_exists
-- Whether the order exists (no lock): a row or none.
SELECT 1 FROM work_orders WHERE id = %(order)s

-- name: eligible
-- The eligibility rules every checkout applies (leases/selection.py's eligible), on items
-- ``i``; {leasable}: the order states items are leased from; {filters}: the shape's filters.
i.state = 'queued' AND (i.available_at IS NULL OR i.available_at <= %(now)s) AND EXISTS (SELECT 1 FROM work_orders o WHERE o.id = i.order_id AND o.state IN ({leasable}))

-- name: filter_item
-- Checkout filter: this item only.
i.id = %(q_item)s

-- name: filter_order
-- Checkout filter: items of this order.
i.order_id = %(q_order)s

-- name: filter_type
-- Checkout filter: items of this order type.
i.order_type = %(q_type)s

-- name: filter_min_priority
-- Checkout filter: items of at least this priority.
i.priority >= %(q_min_priority)s

-- name: filter_tenant
-- Checkout filter: items of this tenant.
i.tenant_id = %(q_tenant)s

-- name: filter_blocked
-- Checkout filter: not of an order type at its lease limit (leases/limits.py).
i.order_type <> ALL(%(q_blocked)s::text[])

-- name: filter_exclude
-- Checkout filter: none of these items (the lock backend refused them).
i.id <> ALL(%(q_exclude)s::uuid[])

-- name: filter_known
-- Checkout filter: only order types this process knows (an item of another type would be
-- leased, then every submit of it refused).
i.order_type = ANY(%(q_known)s::text[])

-- name: filter_full_tenants
-- Checkout filter: tenants at their lease limit (leases/limits.py); items of no tenant are
-- not limited.
(i.tenant_id IS NULL OR i.tenant_id <> ALL(%(q_full_tenants)s::text[]))

-- name: checkout_order
-- The checkout's order: the first eligible item by priority, age and id, locked, skipping
-- rows another transaction holds.
ORDER BY i.priority DESC, i.created_at, i.id LIMIT 1 FOR UPDATE SKIP LOCKED

-- name: guard_columns
-- The columns a guarded write locks and tests (see locked).
id, order_id, state, lease_token, lease_secret_hash, leased_by_agent_id, lease_expires_at

-- name: locked
-- Guarded writes lock their row by primary key in a MATERIALIZED CTE (``c``) and test the
-- guard on its columns, so no generic plan reaches the row through a partial index.
SELECT {guard_columns} FROM work_items WHERE id = %(item)s FOR UPDATE

-- name: locked_with_view
-- locked, with what the guarded submit compares to the view it validated against.
SELECT {guard_columns}, input, attempts, progress, result, assembled_result, updated_at FROM work_items WHERE id = %(item)s FOR UPDATE

-- name: leased_payload
-- The ``leased`` event's payload: the agent and the attempt.
jsonb_build_object('agent_id', %(agent)s::text, 'attempt', attempts)

-- name: current
-- The guard: the lease presented is the row's current one (check_row's rules), on ``c``.
-- With a lock store the lock's TTL is the lease's expiry (the row's is refreshed lazily):
-- ``expiry_floor`` is then -infinity and the lock was checked before the statement.
c.lease_token = %(token)s AND c.lease_secret_hash = %(secret_hash)s
     AND c.leased_by_agent_id = %(agent)s
     AND c.state IN ('leased', 'in_progress')
     AND (c.lease_expires_at IS NULL OR c.lease_expires_at > %(expiry_floor)s)

-- name: audit
-- The ``events`` and ``provenance`` CTEs: one {event} event ({payload}) and one provenance
-- row per row of {source} ({where} narrows the events); returns the events written.
-- {mark}: claim_marked for a keyed statement, else nothing.
events AS (
  INSERT INTO work_events (order_id, item_id, event, actor_type, actor_id, payload, created_at)
  SELECT order_id, id, '{event}', %(actor_type)s::text, %(actor_id)s::text, {payload},
         %(now)s::timestamptz
    FROM {source}{where}
  RETURNING order_id, item_id, event, actor_type, actor_id, payload, created_at
), provenance AS (
  INSERT INTO work_provenance (order_id, item_id, {provenance_names})
  SELECT order_id, id, {provenance_values} FROM {source}
  RETURNING 1
){mark}

-- name: audit_first
-- Runs the audit CTEs (uncorrelated subqueries: evaluated once, before the first row) ahead
-- of the order function, so the events keep the order the ORM store writes.
(SELECT count(*) FROM events) >= 0 AND (SELECT count(*) FROM provenance) >= 0

-- name: written
-- The event rows the statement wrote, for the listeners (events.announce_rows).
(SELECT json_agg(events) FROM events) AS written_events

-- name: then_order
-- The final SELECT of a statement that ends a lease: the item as written (CTE ``item``),
-- with its order's step {function}(order, item, now, actor) run after the audit CTEs.
SELECT item.*, o.order_state, o.became AS order_became, {written}
  FROM item, LATERAL {function}(
         item.order_id, item.id, %(now)s::timestamptz, %(actor_type)s::text,
         %(actor_id)s::text) o
 WHERE {audit_first}

-- name: grant_pick
-- The item a checkout leases ({eligible}, then checkout_order), locked: its id.
SELECT i.id FROM work_items i WHERE {eligible} {checkout_order}

-- name: grant
-- Lease one item ({pick}: grant_pick) under the fence lease_token + 1 (the one source of
-- fences, whatever the lease backend: a lock store takes the lock under the row's), its
-- ``leased`` event and provenance row ({audit}), then workmanager_start_order; returns
-- the item, the events written and whether the order started. The pick locks the row and
-- checks it on its latest version; the UPDATE finds it by id alone, so no plan reaches it
-- through a partial index (see locked).
WITH picked AS (
  UPDATE work_items SET state = 'leased', leased_by_agent_id = %(agent)s,
         lease_token = lease_token + 1, lease_secret_hash = %(secret_hash)s,
         lease_expires_at = %(expires)s,
         attempts = attempts + 1, updated_at = %(now)s
   WHERE id = ({pick})
  RETURNING {item_columns}
), {audit}
SELECT picked.*, {written},
       workmanager_start_order(picked.order_id, %(now)s::timestamptz,
                               %(actor_type)s::text, %(actor_id)s::text) AS order_started
  FROM picked WHERE {audit_first}

-- name: submit_guard
-- A guarded submit's guard: the lease is current ({current}) and the row matches the view
-- the result was validated against.
AND c.order_id = %(order)s AND {current}
     AND c.input = %(v_input)s::jsonb
     AND c.state = %(v_state)s AND c.attempts = %(v_attempts)s
     AND c.progress IS NOT DISTINCT FROM %(v_progress)s::jsonb
     AND c.result IS NOT DISTINCT FROM %(v_result)s::jsonb
     AND c.assembled_result IS NOT DISTINCT FROM %(v_assembled)s::jsonb

-- name: submit
-- Item ``submitted`` (locked in ``c`` by {locked}; {guard}: submit_guard or none; {also}:
-- finalize's assembled result), its audit, then workmanager_submit_order ({then_order});
-- returns the item as written ({returned}, results NULL), or no row when the guard failed.
WITH c AS MATERIALIZED (
  {locked}
), item AS (
  UPDATE work_items w SET state = 'submitted', result = %(result)s{also},
         leased_by_agent_id = NULL, lease_expires_at = NULL, updated_at = %(now)s
    FROM c
   WHERE w.id = %(item)s{guard}
  RETURNING {returned}
), {audit}
{then_order}

-- name: submit_also_assembled
-- finalize's submit: the result is also the assembled result.
, assembled_result = %(result)s

-- name: heartbeat_progress
-- A heartbeat's progress, stamped with the attempt.
progress = %(progress)s::jsonb || jsonb_build_object('attempt', w.attempts),

-- name: heartbeat
-- Extend a current lease ({progress}: heartbeat_progress or none), leased -> in_progress
-- with its event on the first, the provenance row; returns the item and its state before
-- (``was``), or no row when the guard failed. Locks the item.
WITH c AS MATERIALIZED (
  {locked}
), item AS (
  UPDATE work_items w SET lease_expires_at = %(expires)s, last_heartbeat_at = %(now)s,
         {progress} state = 'in_progress', updated_at = %(now)s
    FROM c
   WHERE w.id = %(item)s AND {current}
  RETURNING {returned}, c.state AS was
), {audit}
SELECT item.*, {written} FROM item WHERE {audit_first}

-- name: release
-- Give a current lease's item back to the queue (its attempt given back), its ``released``
-- audit, then workmanager_release_order; returns the item as written, or no row when the
-- guard failed. Locks the item.
WITH c AS MATERIALIZED (
  {locked}
), item AS (
  UPDATE work_items w SET state = 'queued', leased_by_agent_id = NULL,
         lease_expires_at = NULL, attempts = GREATEST(w.attempts - 1, 0), updated_at = %(now)s
    FROM c
   WHERE w.id = %(item)s AND {current}
  RETURNING {returned}
), {audit}
{then_order}

-- name: fail
-- End a failed lease as decide_ending decided (state, available_at, error; the order failed
-- with it when fails_order), agent_failed (and failed) events, provenance; locks the item,
-- then the order FOR NO KEY UPDATE; returns the item and order_state, or no row. {mark}: as
-- in audit.
WITH c AS MATERIALIZED (
  SELECT {guard_columns}, attempts, max_attempts FROM work_items WHERE id = %(item)s
     FOR UPDATE
), item AS (
  UPDATE work_items w SET state = %(state)s, leased_by_agent_id = NULL,
         lease_expires_at = NULL,
         available_at = coalesce(%(available_at)s::timestamptz, w.available_at),
         error = coalesce(%(error)s::jsonb, w.error), updated_at = %(now)s
    FROM c
   WHERE w.id = %(item)s AND {current}
     AND c.attempts = %(v_attempts)s AND c.max_attempts = %(v_max_attempts)s
  RETURNING {returned}
), o AS MATERIALIZED (
  SELECT id, state FROM work_orders WHERE id = (SELECT order_id FROM item)
     FOR NO KEY UPDATE
), failed AS (
  UPDATE work_orders w SET state = 'failed', last_error = %(order_error)s::jsonb,
         last_transitioned_at = %(now)s, updated_at = %(now)s
    FROM o
   WHERE w.id = o.id AND %(fails_order)s AND o.state = ANY(%(fails_from)s::text[])
  RETURNING w.id, w.state
), events AS (
  INSERT INTO work_events (order_id, item_id, event, actor_type, actor_id, payload, created_at)
  SELECT order_id, id, 'agent_failed', %(actor_type)s::text, %(actor_id)s::text,
         %(payload)s::jsonb, %(now)s::timestamptz FROM item
  UNION ALL
  SELECT id, NULL, 'failed', %(actor_type)s::text, %(actor_id)s::text,
         %(order_payload)s::jsonb, %(now)s::timestamptz FROM failed
  RETURNING order_id, item_id, event, actor_type, actor_id, payload, created_at
), provenance AS (
  INSERT INTO work_provenance (order_id, item_id, {provenance_names})
  SELECT order_id, id, {provenance_values} FROM item
  RETURNING 1
){mark}
SELECT item.*, coalesce((SELECT state FROM failed), (SELECT state FROM o)) AS order_state,
       {written}
  FROM item WHERE {audit_first}

-- name: latest_parts
-- The latest validated part per key of item %(id)s (highest seq, then the most recent), as
-- a JSON array of {part_key, seq, payload} by key: what finalize assembles. The rule of
-- PostgreSQL; SQLite's is services/parts.py latest_of.
SELECT coalesce(json_agg(json_build_object('part_key', l.part_key, 'seq', l.seq, 'payload', l.payload) ORDER BY l.part_key), '[]'::json) AS parts FROM (SELECT DISTINCT ON (p.part_key) p.part_key, p.seq, p.payload FROM work_item_parts p WHERE p.item_id = %(id)s AND p.status = 'validated' ORDER BY p.part_key, p.seq_slot DESC, p.created_at DESC) l

-- name: finalize_read
-- finalize's read, without a lock: the item (every column, {item_columns}) and its latest
-- validated parts ({latest_parts}); the write is then guarded on the row being unchanged.
SELECT {item_columns}, ({latest_parts}) AS parts FROM work_items WHERE id = %(id)s

-- name: unchanged_guard
-- finalize's guard beside submit_guard: the row was not written since it was read.
AND c.updated_at = %(v_updated_at)s

-- name: part
-- Store a part on an item locked here (``c``) whose lease is current and whose row is as
-- the part was judged against ({guard}: submit_guard): workmanager_put_part (its slot, the
-- parts limit, the parts state, migration 0011), then the {audit} of its event and
-- provenance. One row while the item exists: ``current`` (the guard matched), the
-- function's answer (``part_id`` NULL and ``parts`` the count: no room, nothing written),
-- the events written.
WITH c AS MATERIALIZED (
  {locked}
), ok AS MATERIALIZED (
  SELECT c.id, c.order_id FROM c WHERE TRUE {guard}
), stored AS MATERIALIZED (
  SELECT f.* FROM ok, LATERAL workmanager_put_part(
         ok.id, %(part_id)s::uuid, %(part_key)s::text, %(part_seq)s::integer,
         %(part_status)s::text, %(part_payload)s::jsonb, %(part_evidence)s::jsonb,
         %(part_notes)s::text, %(part_errors)s::jsonb, %(part_checksum)s::text,
         %(part_agent)s::text, %(part_created_at)s::timestamptz, %(now)s::timestamptz,
         %(max_parts)s::integer) f
), item AS (
  SELECT ok.id, ok.order_id FROM ok, stored WHERE stored.part_id IS NOT NULL
), {audit}
SELECT EXISTS (SELECT 1 FROM ok) AS current, s.part_id, s.parts, s.parts_state,
       s.validated_keys, {written}
  FROM c LEFT JOIN stored s ON true WHERE {audit_first}

-- name: returned_events
-- What a control statement's ``events`` CTE returns of the events it inserted.
RETURNING id, order_id, item_id, event, actor_type, actor_id, payload, created_at

-- name: events_column
-- The events a control statement inserted, in the order written, as JSON text.
(SELECT json_agg(e ORDER BY e.id)::text FROM events AS e) AS events

-- name: create_order
-- propose: the order, its items (from %(items)s), the ``proposed`` and ``planned`` events
-- ({returned_events}) and {provenance} (create_provenance or none); returns {events_column}.
WITH o AS (
  INSERT INTO work_orders (id, type, state, priority, payload, meta, requested_by_type,
         requested_by_id, dedupe_key, tenant_id, apply_attempts, created_at, updated_at,
         last_transitioned_at)
  VALUES (%(o_id)s, %(o_type)s, %(o_state)s, %(o_priority)s, %(payload)s, %(meta)s,
          %(o_requested_by_type)s, %(o_requested_by_id)s, %(o_dedupe_key)s, %(o_tenant_id)s, 0,
          %(o_created_at)s, %(o_created_at)s, %(o_created_at)s)
  RETURNING id, type, state, priority, created_at
), items AS (
  INSERT INTO work_items (id, order_id, type, order_type, priority, tenant_id, state, input,
         max_attempts, parts_required, attempts, lease_token, created_at, updated_at)
  SELECT x.id, o.id, x.type, o.type, o.priority, x.tenant_id, 'queued', x.input,
         x.max_attempts, x.parts_required, 0, 0, x.created_at, x.created_at
    FROM o, jsonb_to_recordset(%(items)s::jsonb) AS x (id uuid, type text, tenant_id text,
         input jsonb, max_attempts int, parts_required jsonb, created_at timestamptz)
), events AS (
  INSERT INTO work_events (order_id, item_id, event, actor_type, actor_id, payload, created_at)
  SELECT id, NULL::uuid, e.event, %(actor_type)s, %(actor_id)s, e.payload, created_at
    FROM o, LATERAL (VALUES
      (1, 'proposed', jsonb_build_object('type', o.type, 'priority', o.priority)),
      (2, 'planned', jsonb_build_object('item_count', %(count)s::int))
    ) AS e (seq, event, payload)
   ORDER BY e.seq
  {returned_events}
){provenance}
SELECT {events_column}

-- name: create_provenance
-- The provenance row of the order ``o`` ({provenance_names}, {provenance_values}): of
-- create_order, approve, reject_order.
, provenance AS (
  INSERT INTO work_provenance (order_id, {provenance_names})
  SELECT id, {provenance_values} FROM o
)

-- name: approve
-- A submitted order of a ``plain`` type (%(types)s) approved, with its ``approved`` event
-- and {provenance} (create_provenance or none); returns the order ({order_columns}) and
-- {events_column}; no row when it was not.
WITH o AS (
  UPDATE work_orders SET state = 'approved', last_transitioned_at = %(now)s,
         updated_at = %(now)s
   WHERE id = %(order)s AND state = 'submitted' AND type = ANY(%(types)s::text[])
  RETURNING {order_columns}
), events AS (
  INSERT INTO work_events ({event_columns})
  SELECT id, NULL, 'approved', %(actor_type)s, %(actor_id)s, NULL, NULL, %(now)s FROM o
  {returned_events}
){provenance}
SELECT o.*, {events_column} FROM o

-- name: lock_order
-- The order locked FOR UPDATE (as lock_order locks it): every column.
SELECT {order_columns} FROM work_orders WHERE id = %(order)s FOR UPDATE

-- name: order_items
-- An order's items (every column), oldest first, as Order.items reads them.
SELECT {item_columns} FROM work_items WHERE order_id = %(order)s ORDER BY created_at

-- name: read_order
-- The order as it is now (no lock): every column.
SELECT {order_columns} FROM work_orders WHERE id = %(order)s

-- name: find_order
-- The order holding a proposal's id, else its dedupe key (as orm_orders.find_order).
SELECT {order_columns} FROM work_orders
 WHERE id = %(id)s OR dedupe_key = %(key)s::text
 ORDER BY id = %(id)s DESC
 LIMIT 1

-- name: start_apply
-- Claim an approved order for an apply run (its claim free or lapsed) and count the
-- attempt; returns the order with its items ({item_fields}), no row when not claimable
-- ({claimable}).
WITH o AS (
  UPDATE work_orders o SET apply_attempts = o.apply_attempts + 1, updated_at = %(now)s,
         apply_claim = %(claim)s, apply_claim_expires_at = %(claim_expires)s
   WHERE o.id = %(order)s AND {claimable}
  RETURNING o.id, o.type, o.state, o.priority, o.payload, o.meta, o.apply_attempts,
            o.last_error
)
SELECT o.*, {item_fields}
  FROM o LEFT JOIN work_items i ON i.order_id = o.id
 ORDER BY i.created_at

-- name: renew_apply
-- Push out a running apply's claim while its body runs (services/apply.py ClaimRenewer):
-- only its holder's, only while the order is approved. No row: the claim is not this
-- run's any more.
UPDATE work_orders SET apply_claim_expires_at = %(claim_expires)s
 WHERE id = %(order)s AND apply_claim = %(claim)s AND state = 'approved'
RETURNING id

-- name: record_apply
-- The claim holder's apply recorded: order and submitted items completed, claim cleared;
-- events applied, then per item accepted and completed, then completed. Returns the order
-- and {events_column}; no row when the claim is not held.
WITH o AS (
  UPDATE work_orders SET state = 'completed', diff = %(diff)s, applied_at = %(now)s,
         completed_at = %(now)s, last_error = NULL, last_transitioned_at = %(now)s,
         updated_at = %(now)s, apply_claim = NULL, apply_claim_expires_at = NULL
   WHERE id = %(order)s AND state = 'approved' AND apply_claim = %(claim)s
  RETURNING {order_columns}
), items AS (
  UPDATE work_items SET state = 'completed', accepted_at = %(now)s, updated_at = %(now)s
   WHERE order_id = %(order)s AND state = 'submitted' AND EXISTS (SELECT 1 FROM o)
  RETURNING id
), events AS (
  INSERT INTO work_events ({event_columns})
  SELECT order_id, item_id, event, %(actor_type)s, %(actor_id)s, payload, diff, %(now)s
    FROM (
      SELECT 0 AS seq, o.id AS order_id, NULL::uuid AS item_id, 'applied' AS event,
             jsonb_build_object('summary', %(summary)s::text, 'attempt', o.apply_attempts)
               AS payload,
             %(diff)s::jsonb AS diff
        FROM o
      UNION ALL
      SELECT 1 + k.k * 2 + x.n, %(order)s::uuid, k.id, x.event, NULL::jsonb, NULL::jsonb
        FROM (SELECT id, row_number() OVER (ORDER BY id) AS k FROM items) AS k
       CROSS JOIN (VALUES (0, 'accepted'), (1, 'completed')) AS x (n, event)
      UNION ALL
      SELECT 1000000000, o.id, NULL, 'completed', NULL, NULL FROM o
    ) AS ordered
   ORDER BY seq
  {returned_events}
)
SELECT o.*, {events_column} FROM o

-- name: claim_row
-- The request's idempotency key row, still its claim: in flight, not taken over (what
-- mark_claim and claim_held pick).
id = %(claim_id)s AND key_hash = %(claim_hash)s AND created_at = %(claim_at)s AND status = 'in_flight'

-- name: claim_committed
-- What marking a key committed sets besides the refs it names (mark_claim, claim_marked).
-- Its in-flight lock stays until the answer is stored: a request with the key meanwhile
-- is told the first is still running (services/idempotency.py _still_locked).
status = 'committed'

-- name: mark_claim
-- The idempotency key marked committed in the operation's own transaction (before its
-- COMMIT), as claims._before_commit does for the ORM; no row updated: taken over.
UPDATE work_idempotency_keys SET {committed}, response_body = %(claim_refs)s WHERE {claim_row}

-- name: claim_held
-- A keyed statement's guard beside the lease's (appended to current): the request's
-- idempotency key is still its own ({claim_row}), and locked until the statement commits,
-- so the mark below cannot miss it. No row: the lease was refused or the key taken over,
-- and the locked path says which.
AND EXISTS (SELECT 1 FROM work_idempotency_keys WHERE {claim_row} FOR UPDATE)

-- name: claim_marked
-- A keyed statement's mark, after its audit: the key committed ({committed}) with the
-- item's write in the same statement, naming the order and item written; nothing when the
-- write did not happen.
, marked AS (
  UPDATE work_idempotency_keys k SET {committed},
         response_body = jsonb_build_object('order_id', item.order_id::text,
                                            'item_id', item.id::text)
    FROM item
   WHERE k.id = %(claim_id)s
  RETURNING 1
)

-- name: advisory_lock
-- The transaction-scoped advisory lock of a limit's key (leases/limits.py): waits for it.
SELECT pg_advisory_xact_lock(hashtextextended(%(k)s, 0))

-- name: limits_lock_timeout
-- How long a checkout transaction waits for a lock (a lease limit's key, its order's row)
-- before it stops with 55P03, 503 try again (leases/limits.py): a holder stalled past it
-- (a frozen process, a half-open connection) no longer holds the others for good.
SET LOCAL lock_timeout = '2s'

-- name: event_columns
-- The columns a control statement inserts into work_events, in its SELECT's order.
order_id, item_id, event, actor_type, actor_id, payload, diff, created_at

-- ---------------------------------------------------------------------------------------
-- The control plane's admin changes (db/postgres/order_admin.py): reject and rework,
-- requeue's unblock, retry (an order, an item), a failed apply, dead-lettering, pruning,
-- maintenance's touches, a refused proposal's record (insert, drop), an event alone. Each
-- is one statement; its guard is the UPDATE's WHERE, and a guard that matched nothing
-- returns no row (the order is then read as it is now and the service names the error).
-- The retries and the drop first lock and read what their rule decides from. Events are
-- inserted in the order the ORM store writes them (items by id).

-- name: reject_order
-- reject (%(reject)s: the order and its submitted items rejected, their parts too) and/or
-- rework (%(rework)s: those items back to queued with results, attempts, backoff and parts
-- state cleared, the order queued), guarded on the order's state %(from)s and taking its
-- items in state %(item_from)s; events rejected, per item rejected, per item rework, then
-- rework; {provenance}. Returns the order, the items' ids and {events_column}, or no row.
WITH o AS (
  UPDATE work_orders SET state = %(to)s, last_error = %(error)s::jsonb,
         last_transitioned_at = %(now)s, updated_at = %(now)s
   WHERE id = %(order)s AND state = %(from)s
  RETURNING {order_columns}
), items AS (
  UPDATE work_items SET state = %(item_to)s, updated_at = %(now)s,
         result = CASE WHEN %(rework)s::boolean THEN NULL ELSE result END,
         assembled_result = CASE WHEN %(rework)s::boolean THEN NULL ELSE assembled_result END,
         attempts = CASE WHEN %(rework)s::boolean THEN 0 ELSE attempts END,
         available_at = CASE WHEN %(rework)s::boolean THEN NULL ELSE available_at END,
         parts_state = CASE WHEN %(rework)s::boolean THEN NULL ELSE parts_state END
   WHERE order_id = %(order)s AND state = %(item_from)s AND EXISTS (SELECT 1 FROM o)
  RETURNING id
), parts AS (
  UPDATE work_item_parts SET status = 'rejected'
   WHERE %(reject)s::boolean AND item_id IN (SELECT id FROM items)
), events AS (
  INSERT INTO work_events ({event_columns})
  SELECT order_id, item_id, event, %(actor_type)s, %(actor_id)s, payload, NULL, %(now)s
    FROM (
      SELECT 0 AS phase, 0::bigint AS k, o.id AS order_id, NULL::uuid AS item_id,
             'rejected' AS event, %(payload)s::jsonb AS payload
        FROM o WHERE %(reject)s::boolean
      UNION ALL
      SELECT x.phase, k.k, %(order)s::uuid, k.id, x.event, NULL::jsonb
        FROM (SELECT id, row_number() OVER (ORDER BY id) AS k FROM items) AS k
       CROSS JOIN (VALUES (1, 'rejected'), (2, 'rework')) AS x (phase, event)
       WHERE (x.phase = 1 AND %(reject)s::boolean) OR (x.phase = 2 AND %(rework)s::boolean)
      UNION ALL
      SELECT 3, 0, o.id, NULL, 'rework', NULL FROM o WHERE %(rework)s::boolean
    ) AS ordered
   ORDER BY phase, k
  {returned_events}
){provenance}
SELECT o.*, ARRAY(SELECT id FROM items ORDER BY id) AS item_ids, {events_column} FROM o

-- name: unblock_order
-- requeue's last step: the order locked and, while it is still queued or in progress, its
-- queued items' backoff cleared; returns the order, whether it was (done) and those items'
-- ids, or no row when there is no such order.
WITH o AS (
  SELECT {order_columns} FROM work_orders WHERE id = %(order)s FOR UPDATE
), items AS (
  UPDATE work_items SET available_at = NULL, updated_at = %(now)s
   WHERE order_id = %(order)s AND state = 'queued'
     AND EXISTS (SELECT 1 FROM o WHERE o.state IN ('queued', 'in_progress'))
  RETURNING id
)
SELECT o.*, o.state IN ('queued', 'in_progress') AS done,
       ARRAY(SELECT id FROM items ORDER BY id) AS item_ids
  FROM o

-- name: retry_order
-- A failed order back to %(to)s (retry_target's decision, on the order this transaction
-- locked): last_error cleared (resubmitted: apply_attempts 0 too), its ``retried`` event;
-- going to queued, its failed items (by id) queued with error, attempts and backoff
-- cleared, each with a ``retried`` event, and when %(then)s is in_progress (an item is
-- still held) the order on to it, event ``in_progress``. Returns the order, the items'
-- ids and {events_column}.
WITH o AS (
  UPDATE work_orders SET state = %(then)s::text, last_error = NULL,
         apply_attempts = CASE WHEN %(to)s::text = 'submitted' THEN 0 ELSE apply_attempts END,
         last_transitioned_at = %(now)s, updated_at = %(now)s
   WHERE id = %(order)s AND state = 'failed'
  RETURNING {order_columns}
), items AS (
  UPDATE work_items SET state = 'queued', error = NULL, attempts = 0, available_at = NULL,
         updated_at = %(now)s
   WHERE order_id = %(order)s AND state = 'failed' AND %(to)s::text = 'queued'
         AND EXISTS (SELECT 1 FROM o)
  RETURNING id
), events AS (
  INSERT INTO work_events ({event_columns})
  SELECT order_id, item_id, event, %(actor_type)s, %(actor_id)s, NULL, NULL, %(now)s
    FROM (
      SELECT 0 AS n, 0::bigint AS k, o.id AS order_id, NULL::uuid AS item_id,
             'retried' AS event FROM o
      UNION ALL
      SELECT 1, row_number() OVER (ORDER BY id), %(order)s::uuid, id, 'retried' FROM items
      UNION ALL
      SELECT 2, 0, o.id, NULL, 'in_progress' FROM o WHERE %(then)s::text <> %(to)s::text
    ) AS ordered
   ORDER BY n, k
  {returned_events}
)
SELECT o.*, ARRAY(SELECT id FROM items ORDER BY id) AS item_ids, {events_column} FROM o

-- name: lock_item_order
-- retry_item's first step: the item's order locked FOR UPDATE (admin paths lock the order
-- first), every column; no row when there is no such item.
SELECT {order_columns} FROM work_orders
 WHERE id = (SELECT order_id FROM work_items WHERE id = %(item)s) FOR UPDATE

-- name: other_items
-- The ids and states of the items of %(item)s's order other than it, by id.
SELECT id, state FROM work_items
 WHERE order_id = (SELECT order_id FROM work_items WHERE id = %(item)s)
   AND id <> %(item)s
 ORDER BY id

-- name: retry_item
-- A failed item back to queued (error, attempts and backoff cleared), its ``retried``
-- event, then its order's when the order was failed (to %(then)s: queued, or in_progress
-- with an event of its own when another item is still held; last_error cleared); on an
-- order and item this transaction locked. Returns the item ({item_columns}) and
-- {events_column}.
WITH i AS (
  UPDATE work_items SET state = 'queued', error = NULL, attempts = 0, available_at = NULL,
         updated_at = %(now)s
   WHERE id = %(item)s AND state = 'failed'
  RETURNING {item_columns}
), o AS (
  UPDATE work_orders SET state = %(then)s::text, last_error = NULL,
         last_transitioned_at = %(now)s, updated_at = %(now)s
   WHERE id = (SELECT order_id FROM i) AND state = 'failed'
  RETURNING id
), events AS (
  INSERT INTO work_events ({event_columns})
  SELECT order_id, item_id, event, %(actor_type)s, %(actor_id)s, NULL, NULL, %(now)s
    FROM (
      SELECT 0 AS n, order_id, id AS item_id, 'retried' AS event FROM i
      UNION ALL
      SELECT 1, id, NULL, 'retried' FROM o
      UNION ALL
      SELECT 2, id, NULL, 'in_progress' FROM o WHERE %(then)s::text = 'in_progress'
    ) AS ordered
   ORDER BY n
  {returned_events}
)
SELECT i.*, {events_column} FROM i

-- name: fail_apply
-- The claim holder's failed apply recorded: the claim released, last_error %(error)s, and
-- (%(final)s) approved -> failed with an ``apply_failed`` event, else an ``apply_retrying``
-- event (payload %(info)s). Returns the order and {events_column}; no row when the claim
-- is not held.
WITH o AS (
  UPDATE work_orders SET apply_claim = NULL, apply_claim_expires_at = NULL,
         last_error = %(error)s::jsonb, updated_at = %(now)s,
         state = CASE WHEN %(final)s::boolean THEN 'failed' ELSE state END,
         last_transitioned_at = CASE WHEN %(final)s::boolean THEN %(now)s
                                     ELSE last_transitioned_at END
   WHERE id = %(order)s AND state = 'approved' AND apply_claim = %(claim)s
  RETURNING {order_columns}
), events AS (
  INSERT INTO work_events ({event_columns})
  SELECT id, NULL,
         CASE WHEN %(final)s::boolean THEN 'apply_failed' ELSE 'apply_retrying' END,
         %(actor_type)s, %(actor_id)s, %(info)s::jsonb, NULL, %(now)s
    FROM o
  {returned_events}
)
SELECT o.*, {events_column} FROM o

-- name: dead_letter
-- Failed orders last moved at or before %(cutoff)s to dead_lettered, and with them every
-- item not done: failed, queued and held ones to dead_lettered, a held one's lease ended
-- first (event lease_released: a submit into a dead order would go nowhere). A queued
-- item left behind would stay in the checkout's index, walked by every checkout until
-- the order is pruned. The failed and held items of orders dead-lettered before, which a
-- row held then kept back, come now. Rows another transaction holds are skipped (a failed order being
-- retried is left whole). Each change with its event: orders, then items, each by id (a
-- held one's lease_released before its dead_lettered). Returns how many orders and items were dead-lettered, the leases ended (ended: their
-- holders, for the lock store) and {events_column}.
WITH o AS (
  UPDATE work_orders SET state = 'dead_lettered', last_transitioned_at = %(now)s,
         updated_at = %(now)s
   WHERE id IN (SELECT id FROM work_orders
                 WHERE state = 'failed' AND last_transitioned_at <= %(cutoff)s
                   FOR UPDATE SKIP LOCKED)
  RETURNING id
), now_dead AS (
  -- the items of the orders dead from now: one index probe per order (order_id, state)
  SELECT id, state, leased_by_agent_id FROM work_items
   WHERE order_id IN (SELECT id FROM o) AND state IN ('failed', 'queued', 'leased', 'in_progress')
     FOR UPDATE SKIP LOCKED
), held_back AS (
  -- those of orders dead before, held back then (locked): the small failed and held sets
  -- (their state indexes), never a walk of the queued ones; the statement's snapshot does
  -- not see o's orders dead yet, so the two are apart
  SELECT id, state, leased_by_agent_id FROM work_items
   WHERE state IN ('failed', 'leased', 'in_progress')
     AND order_id IN (SELECT id FROM work_orders WHERE state = 'dead_lettered')
     FOR UPDATE SKIP LOCKED
), queued_since AS (
  -- and the queued ones of orders dead since %(recent)s: a held item a lock kept back
  -- that was released or reclaimed since (queued) comes at the next run. The orders as
  -- an array, probed by (order_id, state): as an IN list the planner hashed them and read
  -- every queued item (85 ms a run over 300,000, against 14)
  SELECT id, state, leased_by_agent_id FROM work_items
   WHERE state = 'queued'
     AND order_id = ANY(ARRAY(SELECT id FROM work_orders WHERE state = 'dead_lettered'
                                                        AND last_transitioned_at >= %(recent)s))
     FOR UPDATE SKIP LOCKED
), i AS (
  UPDATE work_items w SET state = 'dead_lettered', leased_by_agent_id = NULL,
         lease_expires_at = NULL, updated_at = %(now)s
    FROM (SELECT * FROM now_dead UNION ALL SELECT * FROM held_back
          UNION ALL SELECT * FROM queued_since) AS was
   WHERE w.id = was.id
  RETURNING w.id, w.order_id, w.order_type, w.lease_token, w.lease_secret_hash,
            was.state IN ('leased', 'in_progress') AS held, was.leased_by_agent_id AS agent_id
), h AS (
  SELECT * FROM i WHERE held
), events AS (
  INSERT INTO work_events ({event_columns})
  SELECT order_id, item_id, event, %(actor_type)s, %(actor_id)s, payload, NULL, %(now)s
    FROM (
      SELECT 0 AS n, id AS k, id AS order_id, NULL::uuid AS item_id,
             'dead_lettered' AS event, NULL::jsonb AS payload FROM o
      UNION ALL
      SELECT 1, id, order_id, id, 'lease_released',
             jsonb_build_object('agent_id', agent_id, 'lease_token', lease_token,
                                'reason', 'order_dead_lettered')
        FROM h
      UNION ALL
      SELECT 2, id, order_id, id, 'dead_lettered', NULL FROM i
    ) AS ordered
   ORDER BY n = 0 DESC, k, n
  {returned_events}
)
SELECT (SELECT count(*) FROM o) AS orders, (SELECT count(*) FROM i) AS items,
       (SELECT coalesce(json_agg(json_build_object(
                 'id', id, 'type', order_type, 'agent', agent_id, 'token', lease_token,
                 'secret', lease_secret_hash)), '[]'::json)
          FROM h) AS ended,
       {events_column}

-- name: prune_orders
-- Those of %(ids)s still in a prunable state (%(states)s) deleted, their items, parts and
-- audit rows with them (foreign keys, the audit trigger); returns how many orders were
-- deleted (another prune may have taken some) and how many items they held (the main
-- SELECT sees the rows as they were before the delete).
WITH gone AS (
  DELETE FROM work_orders WHERE id = ANY(%(ids)s::uuid[]) AND state = ANY(%(states)s::text[])
  RETURNING id
)
SELECT (SELECT count(*) FROM gone) AS orders,
       (SELECT count(*) FROM work_items WHERE order_id IN (SELECT id FROM gone)) AS items

-- name: prune_audit
-- One batch of at most %(limit)s rows of {table} (work_events, work_provenance) created
-- before %(cutoff)s deleted, but not those of an order still under way (its state one of
-- %(open)s: a reviewer reads its evidence in its events); after id %(after)s, in id
-- order, so that no batch walks again past the rows the ones before kept (each did: a
-- prune of 2M rows took minutes). Returns how many, and the last id deleted.
WITH gone AS (
  DELETE FROM {table}
   WHERE id IN (SELECT a.id FROM {table} a
                 WHERE a.id > %(after)s AND a.created_at < %(cutoff)s
                   AND NOT EXISTS (SELECT 1 FROM work_orders o
                                    WHERE o.id = a.order_id AND o.state = ANY(%(open)s))
                 ORDER BY a.id LIMIT %(limit)s)
  RETURNING id
)
SELECT count(*) AS deleted, coalesce(max(id), 0) AS last FROM gone

-- name: touch_queued
-- Queued, due items of leasable orders ({eligible}: the checkout's rules, with the order's
-- filter or ``i.updated_at <= %(before)s``), oldest touch first, at most %(limit)s,
-- touched now, so each is announced again at most once per window; their ids and types.
WITH picked AS (
  SELECT i.id FROM work_items i WHERE {eligible} ORDER BY i.updated_at LIMIT %(limit)s
)
UPDATE work_items w SET updated_at = %(now)s FROM picked WHERE w.id = picked.id
RETURNING w.id, w.order_type

-- name: untouched_since
-- touch_queued's filter without an order: items untouched since %(before)s.
i.updated_at <= %(before)s

-- name: claim_stale
-- Up to 1,000 orders matching {stale} untouched since %(cutoff)s, oldest touch first,
-- locked (skipping those another run holds) and touched now; returns their ids.
WITH picked AS (
  SELECT o.id FROM work_orders o WHERE {stale} AND o.updated_at <= %(cutoff)s
   ORDER BY o.updated_at LIMIT 1000 FOR UPDATE SKIP LOCKED
)
UPDATE work_orders w SET updated_at = %(now)s FROM picked WHERE w.id = picked.id
RETURNING w.id

-- name: apply_claimable
-- An order an apply run may claim: approved, its apply claim free or lapsed (the rule of
-- services/apply.py, PostgreSQL's one copy): start_apply's guard, and claim_stale's
-- stuck applies.
o.state = 'approved' AND (o.apply_claim IS NULL OR o.apply_claim_expires_at <= %(now)s)

-- name: stale_auto_approvals
-- claim_stale's lost auto-approvals: submitted, of an auto-approving type (%(types)s), no
-- ``auto_approval_refused`` event since the order's last transition.
o.state = 'submitted' AND o.type = ANY(%(types)s::text[]) AND NOT EXISTS (SELECT 1 FROM work_events e WHERE e.order_id = o.id AND e.event = 'auto_approval_refused' AND e.created_at >= o.last_transitioned_at)

-- name: refuse_order
-- A refused proposal's record: a failed order with no items under the id its producer got
-- (%(o_*)s), and its ``proposal_refused`` event (payload, message) ({returned_events});
-- returns the order ({order_columns}) and {events_column}. A known id: unique_violation.
WITH o AS (
  INSERT INTO work_orders (id, type, state, priority, payload, meta, requested_by_type,
         requested_by_id, tenant_id, last_error, apply_attempts, created_at, updated_at,
         last_transitioned_at)
  VALUES (%(o_id)s, %(o_type)s, 'failed', %(o_priority)s, %(o_payload)s, %(o_meta)s,
          %(o_requested_by_type)s, %(o_requested_by_id)s, %(o_tenant_id)s, %(o_last_error)s,
          0, %(now)s, %(now)s, %(now)s)
  RETURNING {order_columns}
), events AS (
  INSERT INTO work_events (order_id, item_id, event, actor_type, actor_id, payload, message,
         created_at)
  SELECT id, NULL, 'proposal_refused', %(actor_type)s, %(actor_id)s, %(payload)s::jsonb,
         %(message)s, %(now)s
    FROM o
  {returned_events}
)
SELECT o.*, {events_column} FROM o

-- name: drop_order
-- A refused proposal's record deleted (on an order this transaction locked and judged).
DELETE FROM work_orders WHERE id = %(order)s RETURNING id

-- name: record_event
-- One event of an order (%(event)s, payload %(payload)s), no state change; returns
-- {events_column}.
WITH events AS (
  INSERT INTO work_events ({event_columns})
  VALUES (%(order)s, NULL, %(event)s, %(actor_type)s, %(actor_id)s, %(payload)s::jsonb, NULL,
          %(now)s)
  {returned_events}
)
SELECT {events_column}

-- The request path (workmanager/db/request_store.py, postgres/requests.py): what an API
-- request reads and writes besides its operation, each one statement in autocommit; and
-- rate limiting's bucket (workmanager/ratelimit/database.py).

-- name: token_by_digest
-- A token by its digest and, when it is bound to no agent, the name of the token bound to
-- the agent id it acts as (%(claimed)s, else its own name): ``owner``, which it may not use.
SELECT t.name, t.agent_id, t.tenant_id, t.scopes, t.token_hash, t.revoked_at,
       t.last_used_at,
       CASE WHEN t.agent_id IS NULL THEN (SELECT o.name FROM work_api_tokens o
             WHERE o.agent_id = COALESCE(%(claimed)s, t.name) LIMIT 1) END AS owner
  FROM work_api_tokens t WHERE t.token_hash = %(digest)s

-- name: token_reading
-- A lease call's first statement: token_by_digest ({token}) beside the lease_row of the
-- item the call presents (one round trip): the token's columns, named token_<column>
-- (all NULL when no token has the digest), and the item's (all NULL when there is no such
-- item, or no unrevoked token has the digest: a request that can only be refused reads no
-- item). The item is read before the rest of the token's checks: a refused request
-- discards it.
WITH token AS ({token})
SELECT {token_columns}, {item_columns}
  FROM (SELECT 1 AS one) AS one
  LEFT JOIN token ON true
  LEFT JOIN work_items ON work_items.id = %(item_id)s
        AND token.token_hash IS NOT NULL AND token.revoked_at IS NULL

-- name: touch_token
-- A token's last use (services/tokens.py writes it at most once a minute per token).
UPDATE work_api_tokens SET last_used_at = %(now)s WHERE token_hash = %(digest)s

-- name: claim_key
-- An idempotency key's in-flight row inserted: its id; no row when the key has one.
INSERT INTO work_idempotency_keys (key_hash, endpoint, request_fingerprint, status,
       locked_until, created_at, expires_at)
VALUES (%(key_hash)s, %(endpoint)s, %(request_fingerprint)s, %(status)s, %(locked_until)s,
        %(created_at)s, %(expires_at)s)
ON CONFLICT (key_hash) DO NOTHING RETURNING id

-- name: existing_key
-- A key's row, locked; deleted and not returned when it expired or is an in-flight marker
-- whose lock ran out. A committed row is kept until it expires; a row whose lock is on
-- (its request still running) is kept past its expiry.
WITH k AS (
  SELECT id, request_fingerprint, status, response_status, response_body, locked_until,
         (locked_until IS NULL OR locked_until <= %(now)s)
           AND (expires_at <= %(now)s OR status = 'in_flight') AS stale
    FROM work_idempotency_keys WHERE key_hash = %(key_hash)s
     FOR UPDATE
), cleared AS (
  DELETE FROM work_idempotency_keys d USING k WHERE d.id = k.id AND k.stale
)
SELECT request_fingerprint, status, response_status, response_body, locked_until
  FROM k WHERE NOT k.stale

-- name: complete_key
-- A claim's response stored to replay: its row (no later one of the key) done, unlocked,
-- kept for the TTL from now (a request that ran longer than the TTL is still replayed).
UPDATE work_idempotency_keys
   SET status = 'done', response_status = %(status)s, response_body = %(body)s,
       locked_until = NULL, expires_at = %(expires_at)s
 WHERE id = %(id)s AND key_hash = %(key_hash)s AND created_at = %(created_at)s

-- name: abandon_key
-- A claim given up: its row deleted while still in flight (its operation did not commit);
-- a committed one (its answer will not be stored) unlocked, so the key answers as
-- recovered at once, for the TTL from now.
WITH gone AS (
  DELETE FROM work_idempotency_keys
   WHERE id = %(id)s AND key_hash = %(key_hash)s AND created_at = %(created_at)s
     AND status = 'in_flight'
)
UPDATE work_idempotency_keys SET locked_until = NULL, expires_at = %(expires_at)s
 WHERE id = %(id)s AND key_hash = %(key_hash)s AND created_at = %(created_at)s
   AND status = 'committed'

-- name: lease_row
-- What a presented lease is rebuilt from: its item, every column ({item_columns}), no lock
-- (the view the lease carries; the store's guarded write checks the row is unchanged).
SELECT {item_columns} FROM work_items WHERE id = %(id)s

-- name: claim_key_reading
-- A keyed lease call's first statement: claim_key ({claim_key}) and the lease_row of the
-- item the call presents, in one statement (one round trip, one transaction): the claim's
-- id (NULL when the key has a row) and the item's columns (all NULL when there is no such
-- item). The read locks nothing and sees the item as committed before the statement.
WITH claimed AS ({claim_key})
SELECT (SELECT id FROM claimed) AS claim_id, {item_columns}
  FROM (SELECT 1 AS one) AS one LEFT JOIN work_items ON work_items.id = %(item_id)s

-- name: rate_take
-- One token taken from a bucket refilled at %(rate)s a second up to %(capacity)s, created
-- full: the tokens left (below zero: there was none). {now}: the clock in epoch seconds;
-- {least}, {greatest}: the dialect's functions (SQLite composes its own from this).
INSERT INTO work_rate_buckets AS b (key, tokens, updated_at)
VALUES (%(key)s, CAST(%(capacity)s AS DOUBLE PRECISION) - 1, {now})
ON CONFLICT (key) DO UPDATE SET
  tokens = {least}(CAST(%(capacity)s AS DOUBLE PRECISION),
                   b.tokens + {greatest}(0, excluded.updated_at - b.updated_at) * %(rate)s) - 1,
  updated_at = {greatest}(b.updated_at, excluded.updated_at)
RETURNING tokens

-- === Lease administration and the sweep (workmanager/db/postgres/admin.py) ==============
-- The operator's reclaim, release and extend and the sweep's reclaim, on a batch of held
-- leases each as it was picked (its fence): the rows locked by id (held_locked), what to
-- write decided in Python from the locked rows, then one statement for the batch. Release
-- runs the holder's own ``release`` statement (above) per lease, pipelined, with the
-- parts below: the release rule (item, attempt, workmanager_release_order) has one home.

-- name: held_locked
-- The items of a batch still held under the lease picked (%(ids)s, with their fences
-- %(fences)s), locked by id in id order ({skip}: SKIP LOCKED, or nothing to wait): every
-- column ({item_columns}).
SELECT {item_columns} FROM work_items w
  JOIN unnest(%(ids)s::uuid[], %(fences)s::bigint[]) AS p (pid, fence) ON p.pid = w.id
 WHERE w.lease_token = p.fence AND w.state IN ('leased', 'in_progress')
 ORDER BY w.id FOR UPDATE OF w {skip}

-- name: held_refresh
-- A lock store's live leases whose recorded expiry had passed get the lock's (%(ids)s,
-- %(expires)s), on rows this transaction locked: the sweep looks at them again only then.
UPDATE work_items w SET lease_expires_at = x.expires
  FROM unnest(%(ids)s::uuid[], %(expires)s::timestamptz[]) AS x (pid, expires)
 WHERE w.id = x.pid

-- name: held_reclaim
-- End locked leases as decide_ending decided (%(rows)s: per item its seq, state,
-- available_at, error and event payload; when it fails its order, the order's error and
-- event payload): %(event)s per item, the order's ``failed`` after its first failing
-- item's (from %(fails_from)s), orders locked FOR NO KEY UPDATE after the items, by id.
-- Returns the events written ({written}).
WITH d AS (
  SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb) AS d (id uuid, seq int, state text,
         available_at timestamptz, error jsonb, payload jsonb, order_error jsonb,
         order_payload jsonb)
), item AS (
  UPDATE work_items w SET state = d.state, leased_by_agent_id = NULL,
         lease_expires_at = NULL, available_at = coalesce(d.available_at, w.available_at),
         error = coalesce(d.error, w.error), updated_at = %(now)s
    FROM d
   WHERE w.id = d.id
  RETURNING w.id, w.order_id, d.seq, d.payload, d.order_error, d.order_payload
), first AS (
  SELECT DISTINCT ON (order_id) order_id, seq, order_error, order_payload
    FROM item WHERE order_error IS NOT NULL ORDER BY order_id, seq
), o AS MATERIALIZED (
  SELECT id, state FROM work_orders WHERE id IN (SELECT order_id FROM first)
   ORDER BY id FOR NO KEY UPDATE
), failed AS (
  UPDATE work_orders w SET state = 'failed', last_error = f.order_error,
         last_transitioned_at = %(now)s, updated_at = %(now)s
    FROM o JOIN first f ON f.order_id = o.id
   WHERE w.id = o.id AND o.state = ANY(%(fails_from)s::text[])
  RETURNING w.id, f.seq, f.order_payload
), events AS (
  INSERT INTO work_events (order_id, item_id, event, actor_type, actor_id, payload, created_at)
  SELECT order_id, item_id, event, %(actor_type)s::text, %(actor_id)s::text, payload,
         %(now)s::timestamptz
    FROM (SELECT order_id, id AS item_id, %(event)s::text AS event, payload, seq, 0 AS n
            FROM item
          UNION ALL
          SELECT id, NULL::uuid, 'failed', order_payload, seq, 1 FROM failed) AS e
   ORDER BY seq, n
  RETURNING order_id, item_id, event, actor_type, actor_id, payload, created_at
)
SELECT {written}

-- name: held_current
-- release's guard for an operator's release: the row (locked by held_locked) is still
-- held under the lease picked.
c.lease_token = %(token)s AND c.state IN ('leased', 'in_progress')

-- name: held_returned
-- What release's item CTE returns for an operator's release: the holder, for the event.
w.id, w.order_id, w.lease_token, c.leased_by_agent_id AS agent_id

-- name: held_released_events
-- The ``events`` CTE of an operator's release (no provenance row: no agent acted).
events AS (
  INSERT INTO work_events (order_id, item_id, event, actor_type, actor_id, payload, created_at)
  SELECT order_id, id, 'lease_released', %(actor_type)s::text, %(actor_id)s::text,
         jsonb_build_object('agent_id', agent_id, 'lease_token', lease_token),
         %(now)s::timestamptz
    FROM item
  RETURNING order_id, item_id, event, actor_type, actor_id, payload, created_at
)

-- name: held_events_first
-- Runs the events CTE ahead of the order's step (as audit_first, without provenance).
(SELECT count(*) FROM events) >= 0

-- name: held_extend
-- Push locked leases' expiry out (%(rows)s: per item its seq, new expiry and event
-- payload), a ``lease_extended`` event each. Returns the events written ({written}).
WITH x AS (
  SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb) AS x (id uuid, seq int,
         expires timestamptz, payload jsonb)
), item AS (
  UPDATE work_items w SET lease_expires_at = x.expires, updated_at = %(now)s
    FROM x
   WHERE w.id = x.id
  RETURNING w.id, w.order_id, x.seq, x.payload
), events AS (
  INSERT INTO work_events (order_id, item_id, event, actor_type, actor_id, payload, created_at)
  SELECT order_id, id, 'lease_extended', %(actor_type)s::text, %(actor_id)s::text, payload,
         %(now)s::timestamptz
    FROM item ORDER BY seq
  RETURNING order_id, item_id, event, actor_type, actor_id, payload, created_at
)
SELECT {written}
