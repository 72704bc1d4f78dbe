"""The SQL of the PostgreSQL hot path (:mod:`.hotpath`), built once per shape, and the
two helpers that turn values into its parameters and its rows back into items.

Eligibility and checkout order repeat :func:`workmanager.leases.selection.eligible` in
SQL; the contract suite runs every backend through both, so they cannot drift unseen.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from functools import lru_cache
from types import SimpleNamespace
from typing import Any, cast

from ... import events
from ...errors import NotFound
from ...leases.base import CheckoutQuery
from ...leases.selection import Shape
from ...provenance.default import DefaultEnricher
from ...services.inputs import as_presented
from ...states import LEASABLE_ORDER_STATES
from ...types import AgentInfo, Lease
from .. import claims
from ..models import PROVENANCE_TABLE, Item, utcnow
from ..raw import AuditColumns, Conn, utc_row

ITEM_COLUMNS = [c.name for c in Item.__table__.columns]
ITEM_DATETIME_COLUMNS = [c for c in ITEM_COLUMNS if c.endswith("_at")]
PROVENANCE = AuditColumns(PROVENANCE_TABLE)


def _literals(states: Any) -> str:
    return ", ".join(f"'{s.value}'" for s in sorted(states, key=lambda s: s.value))


_LEASABLE = _literals(LEASABLE_ORDER_STATES)


ITEM_COLUMNS_SQL = ", ".join(ITEM_COLUMNS)
LOCK_ITEM = f"SELECT {ITEM_COLUMNS_SQL} FROM work_items WHERE id = %(id)s FOR UPDATE"
ORDER_EXISTS = "SELECT 1 FROM work_orders WHERE id = %(order)s"

#: The optional filters of a checkout shape, as SQL.
_FILTERS = (
    ("item", "i.id = %(q_item)s"),
    ("order", "i.order_id = %(q_order)s"),
    ("type", "i.order_type = %(q_type)s"),
    ("min_priority", "i.priority >= %(q_min_priority)s"),
    ("tenant", "i.tenant_id = %(q_tenant)s"),
    ("blocked", "i.order_type <> ALL(%(q_blocked)s::text[])"),
    ("exclude", "i.id <> ALL(%(q_exclude)s::uuid[])"),
    # tenants at their lease limit (leases/limits.py); items of no tenant are not limited
    ("full_tenants", "(i.tenant_id IS NULL OR i.tenant_id <> ALL(%(q_full_tenants)s::text[]))"),
)


def eligible_where(shape: Shape) -> str:
    """The eligibility rules of :func:`workmanager.leases.selection.eligible`, as SQL."""
    where = [
        "i.state = 'queued'",
        "(i.available_at IS NULL OR i.available_at <= %(now)s)",
        "EXISTS (SELECT 1 FROM work_orders o WHERE o.id = i.order_id"
        f" AND o.state IN ({_LEASABLE}))",
    ]
    where += [sql for flag, sql in _FILTERS if getattr(shape, flag)]
    return " AND ".join(where)


def query_params(query: CheckoutQuery) -> dict[str, Any]:
    """The values of the filters' placeholders."""
    return {
        "q_item": query.item_id,
        "q_order": query.order_id,
        "q_type": query.type,
        "q_min_priority": query.min_priority,
        "q_tenant": query.tenant_id,
    }


CHECKOUT_ORDER = "ORDER BY i.priority DESC, i.created_at, i.id LIMIT 1 FOR UPDATE SKIP LOCKED"


@lru_cache(maxsize=256)
def candidate_sql(shape: Shape) -> str:
    cols = ", ".join(f"i.{c}" for c in ("id", "order_type", "lease_token"))
    return f"SELECT {cols} FROM work_items i WHERE {eligible_where(shape)} {CHECKOUT_ORDER}"


#: Guarded writes lock their row by primary key in a MATERIALIZED CTE and test the guard
#: on that CTE's columns, so the row is always found by ``id``. With the guard in the
#: UPDATE's own WHERE (``state IN ('leased', 'in_progress')`` matches the predicate of
#: the partial indexes on held items), a generic plan built on statistics from before the
#: leases existed chose such an index and scanned every held lease to find one row.
_GUARD_COLUMNS = (
    "id, order_id, state, lease_token, lease_secret_hash, leased_by_agent_id, lease_expires_at"
)
_LOCKED = f"SELECT {_GUARD_COLUMNS} FROM work_items WHERE id = %(item)s FOR UPDATE"
#: The same, with what the guarded submit compares to the view it validated against.
_LOCKED_WITH_VIEW = (
    f"SELECT {_GUARD_COLUMNS}, input, attempts, progress, result, assembled_result"
    " FROM work_items WHERE id = %(item)s FOR UPDATE"
)


_LEASED_PAYLOAD = "jsonb_build_object('agent_id', %(agent)s::text, 'attempt', attempts)"

#: The lease presented is the row's current one (``check_row``'s rules), on ``c``.
_CURRENT = """c.lease_token = %(token)s AND c.lease_secret_hash = %(secret_hash)s
     AND c.leased_by_agent_id = %(agent)s
     AND c.state IN ('leased', 'in_progress')
     AND (c.lease_expires_at IS NULL OR c.lease_expires_at > %(now)s)"""


def _audit(source: str, event: str, payload: str = "NULL", where: str = "") -> str:
    """The ``events`` and ``provenance`` CTEs: one event and one provenance row per row
    of ``source`` (``where`` narrows the events)."""
    return f"""events AS (
  INSERT INTO work_events (order_id, item_id, event, actor_type, actor_id, payload, created_at)
  SELECT order_id, id, '{event}', %(actor_type)s::text, %(actor_id)s::text, {payload},
         %(now)s::timestamptz
    FROM {source}{where}
  RETURNING order_id, item_id, event, actor_type, actor_id, payload, created_at
), provenance AS (
  INSERT INTO work_provenance (order_id, item_id, {PROVENANCE.sql_names})
  SELECT order_id, id, {PROVENANCE.sql_values} FROM {source}
  RETURNING 1
)"""


#: Runs the audit CTEs (uncorrelated subqueries: evaluated once, before the first row)
#: ahead of the order function, so the events keep the order the general path writes.
_AUDIT_FIRST = "(SELECT count(*) FROM events) >= 0 AND (SELECT count(*) FROM provenance) >= 0"
#: The event rows the statement wrote, for the listeners (``events.announce_rows``).
WRITTEN = "(SELECT json_agg(events) FROM events) AS written_events"


def _then_order(function: str) -> str:
    """The final ``SELECT`` of a statement that ends an item's lease: the item as written
    (the ``item`` CTE), with its order's step ``function(order, item, now, actor type,
    actor id)`` (``OUT order_state, OUT became``) run after the audit CTEs."""
    return f"""SELECT item.*, o.order_state, o.became AS order_became, {WRITTEN}
  FROM item, LATERAL {function}(
         item.order_id, item.id, %(now)s::timestamptz, %(actor_type)s::text,
         %(actor_id)s::text) o
 WHERE {_AUDIT_FIRST}"""


@lru_cache(maxsize=256)
def grant_sql(shape: Shape, store: bool) -> str:
    """Lease one item, write its ``leased`` event and the provenance row, then start its
    order (``workmanager_start_order``, migration 0004): one statement. The function's
    queries take their own snapshot once the item is locked, so a sibling's release that
    requeued the order and committed while this statement ran is seen — within the
    statement's own snapshot, the order would still look ``in_progress``."""
    if store:  # the candidate is locked by this transaction; the store chose the token
        token, target = "%(token)s", "id = %(item_id)s"
    else:
        pick = f"SELECT i.id FROM work_items i WHERE {eligible_where(shape)} {CHECKOUT_ORDER}"
        # The pick locks the row and checks it on its latest version; the UPDATE finds
        # it by id alone, so no plan reaches it through a partial index (see _LOCKED).
        token, target = "lease_token + 1", f"id = ({pick})"
    return f"""
WITH picked AS (
  UPDATE work_items SET state = 'leased', leased_by_agent_id = %(agent)s,
         lease_token = {token}, lease_secret_hash = %(secret_hash)s,
         lease_expires_at = %(expires)s,
         attempts = attempts + 1, updated_at = %(now)s
   WHERE {target}
  RETURNING {ITEM_COLUMNS_SQL}
), {_audit("picked", "leased", _LEASED_PAYLOAD)}
SELECT picked.*, {WRITTEN},
       workmanager_start_order(picked.order_id, %(now)s::timestamptz,
                               %(actor_type)s::text, %(actor_id)s::text) AS order_started
  FROM picked WHERE {_AUDIT_FIRST}"""


def submit_sql(guarded: bool, assembled: bool = False) -> str:
    """Item ``submitted`` with its event and provenance row, then its order
    (``workmanager_submit_order``, migration 0004: locks the order, and moves it to
    ``submitted`` with its event when this was its last open item): one statement.
    ``guarded``: only if the lease is still current and the row still matches the view
    the result was validated against (every part hangs on the item's UPDATE having
    matched). ``assembled``: finalize's, the result is also the assembled result. Returns
    the item as written (its results ``NULL``: the caller has them), with ``order_state``
    and ``order_became``; no row when the guard did not match."""
    guard = ""
    if guarded:
        guard = f"""
     AND c.order_id = %(order)s AND {_CURRENT}
     AND c.input = %(v_input)s::jsonb
     AND c.state = %(v_state)s AND c.attempts = %(v_attempts)s
     AND c.progress IS NOT DISTINCT FROM %(v_progress)s::jsonb
     AND c.result IS NOT DISTINCT FROM %(v_result)s::jsonb
     AND c.assembled_result IS NOT DISTINCT FROM %(v_assembled)s::jsonb"""
    results = ("result", "assembled_result") if assembled else ("result",)
    returned = ", ".join(f"w.{c}" for c in ITEM_COLUMNS if c not in results)
    returned += "".join(f", NULL::jsonb AS {c}" for c in results)
    also = ", assembled_result = %(result)s" if assembled else ""
    return f"""
WITH c AS MATERIALIZED (
  {_LOCKED_WITH_VIEW if guarded else _LOCKED}
), item AS (
  UPDATE work_items w SET state = 'submitted', result = %(result)s{also},
         leased_by_agent_id = NULL, lease_expires_at = NULL, updated_at = %(now)s
    FROM c
   WHERE w.id = %(item)s{guard}
  RETURNING {returned}
), {_audit("item", "submitted", "%(payload)s::jsonb")}
{_then_order("workmanager_submit_order")}"""


SUBMIT_SQL = submit_sql(guarded=False)
SUBMIT_GUARDED_SQL = submit_sql(guarded=True)
#: finalize: the assembled result submitted (the item locked and checked first)
FINALIZE_SQL = submit_sql(guarded=False, assembled=True)


@lru_cache(maxsize=2)
def heartbeat_sql(with_progress: bool) -> str:
    """Extend a lease (and record progress), guarded on the lease being current; the
    first heartbeat also moves the item ``leased → in_progress`` with its event; the
    provenance row: one statement. ``c`` locks the row and reads its state before the
    update (PostgreSQL 15's RETURNING has no OLD). No row: the guard did not match."""
    progress = (
        "progress = %(progress)s::jsonb || jsonb_build_object('attempt', w.attempts),"
        if with_progress
        else ""
    )
    returned = ", ".join(f"w.{c}" for c in ITEM_COLUMNS)
    return f"""
WITH c AS MATERIALIZED (
  {_LOCKED}
), item AS (
  UPDATE work_items w SET lease_expires_at = %(expires)s, last_heartbeat_at = %(now)s,
         {progress} state = 'in_progress', updated_at = %(now)s
    FROM c
   WHERE w.id = %(item)s AND {_CURRENT}
  RETURNING {returned}, c.state AS was
), {_audit("item", "in_progress", where=" WHERE was = 'leased'")}
SELECT item.*, {WRITTEN} FROM item WHERE {_AUDIT_FIRST}"""


def provenance_params(ctx: Any, action: str, agent: AgentInfo) -> dict[str, Any]:
    """The provenance row of ``action`` by ``agent``, as the statements' parameters.

    With the default enricher, a row is a function of the action, the agent's fields and
    the anonymising switch, bar its ``created_at``: an agent making thousands of calls
    under one identity (a consumer, a script) gets the row built once per action and
    copied with a fresh ``created_at`` (~16 µs a call inside a cycle, measured). An agent
    with ``extra`` fields, a custom enricher (it may add anything), or a new request id
    each call (HTTP) is built every time."""
    enricher = ctx.provenance.enricher
    if type(enricher) is not DefaultEnricher or agent.extra:
        return PROVENANCE.params(ctx.provenance.row(action, agent))
    key = (enricher.anonymize, action, *(getattr(agent, f) for f in _AGENT_FIELDS))
    try:
        params = _ROWS.get(key)
    except TypeError:  # a Python caller's field that is not hashable (nor a string)
        return PROVENANCE.params(ctx.provenance.row(action, agent))
    if params is None:
        params = PROVENANCE.params(ctx.provenance.row(action, agent))
        if len(_ROWS) >= _ROWS_KEPT:
            _ROWS.clear()
        _ROWS[key] = params
    return {**params, "p_created_at": utcnow()}


def lease_params(ctx: Any, lease: Lease, agent: AgentInfo, now: Any, action: str) -> dict[str, Any]:
    """What every statement on a presented lease takes (heartbeat, submit, release): the
    row (``item``), the guard's ``token`` and ``agent`` (the lease as ``agent``
    presents it), the clock, the actor, and the provenance row of ``action``."""
    presented = as_presented(lease, agent)
    return {
        "item": lease.item_id,
        "token": presented.fence,
        "secret_hash": presented.secret_hash,
        "agent": presented.agent_id,
        "now": now,
        "actor_type": agent.actor.type,
        "actor_id": agent.actor.id,
        **provenance_params(ctx, action, agent),
    }


def order_step(row: dict[str, Any]) -> tuple[str, bool]:
    """Take the order's step out of a row a lease-ending statement returned
    (:func:`_then_order`): its state after the step, and whether it moved."""
    order_state, became = row.pop("order_state"), bool(row.pop("order_became"))
    if order_state is None:  # items go with their order (a cascade): not seen in practice
        order_id = str(row["order_id"])
        raise NotFound(f"order {order_id} not found", details={"order_id": order_id})
    return order_state, became


#: Every field of :class:`AgentInfo` but ``extra`` (a row is only reused without it).
_AGENT_FIELDS = tuple(f.name for f in dataclasses.fields(AgentInfo) if f.name != "extra")
#: Provenance parameters built with the default enricher, by what they are made of.
_ROWS: dict[tuple[Any, ...], dict[str, Any]] = {}
_ROWS_KEPT = 1024


def item_of_row(row: dict[str, Any]) -> Item:
    """An item row as the read-only helpers see it (``check_row``, ``item_view`` and
    ``item_dict`` only read attributes), datetimes in UTC as the ORM gives them. Not an
    ORM instance: building one costs more than this whole call's Python, and nothing here
    is flushed through a session."""
    return cast(Item, SimpleNamespace(**utc_row(row)))


def _release_sql() -> str:
    """Give a current lease's item back to the queue (lease cleared, its attempt given
    back), with its ``released`` event and the provenance row, then its order
    (``workmanager_release_order``, migration 0005: ``in_progress → queued`` when no other
    item is held): one statement, guarded on the lease being current. Returns the item as
    written, with ``order_state`` and ``order_became``; no row when the guard did not
    match (the general path then reads the row and says why)."""
    returned = ", ".join(f"w.{c}" for c in ITEM_COLUMNS)
    return f"""
WITH c AS MATERIALIZED (
  {_LOCKED}
), item AS (
  UPDATE work_items w SET state = 'queued', leased_by_agent_id = NULL,
         lease_expires_at = NULL, attempts = GREATEST(w.attempts - 1, 0), updated_at = %(now)s
    FROM c
   WHERE w.id = %(item)s AND {_CURRENT}
  RETURNING {returned}
), {_audit("item", "released", "jsonb_build_object('agent_id', %(agent)s::text)")}
{_then_order("workmanager_release_order")}"""


RELEASE_SQL = _release_sql()


def announce_written(row: dict[str, Any]) -> None:
    """Take a committed statement's event rows (:data:`WRITTEN`) out of ``row`` and
    announce them to the listeners (:mod:`workmanager.events`), typed as the ORM reads
    them."""
    written = row.pop("written_events", None)
    if not written or not events.listening():
        return
    typed = []
    for event in written:
        event = dict(event)
        for key in ("order_id", "item_id"):
            if event.get(key) is not None:
                event[key] = uuid.UUID(event[key])
        if event.get("created_at") is not None:
            event["created_at"] = datetime.fromisoformat(event["created_at"])
        typed.append(event)
    events.announce_rows(typed)


def _fail_sql() -> str:
    """End a failed lease as ``lifecycle.decide_ending`` decided in Python (``state``,
    ``available_at``, ``error``, the event's ``payload``; the order's ``failed`` event,
    ``order_error`` and the states it fails from when ``fails_order``), with the
    ``agent_failed`` event and the provenance row: one statement, guarded on the lease
    being current and on the attempts it was decided from. The order is locked after the
    item (``FOR NO KEY UPDATE``, as ``lifecycle.lock_order_ref``) and failed with the
    item when it is in one of those states; its event follows the item's, as the ORM
    writes them. Returns the item as written with ``order_state``; no row when the guard
    did not match."""
    returned = ", ".join(f"w.{c}" for c in ITEM_COLUMNS)
    return f"""
WITH c AS MATERIALIZED (
  SELECT {_GUARD_COLUMNS}, attempts, max_attempts FROM work_items WHERE id = %(item)s
     FOR UPDATE
), item AS (
  UPDATE work_items w SET state = %(state)s, leased_by_agent_id = NULL,
         lease_expires_at = NULL,
         available_at = coalesce(%(available_at)s::timestamptz, w.available_at),
         error = coalesce(%(error)s::jsonb, w.error), updated_at = %(now)s
    FROM c
   WHERE w.id = %(item)s AND {_CURRENT}
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
  INSERT INTO work_provenance (order_id, item_id, {PROVENANCE.sql_names})
  SELECT order_id, id, {PROVENANCE.sql_values} FROM item
  RETURNING 1
)
SELECT item.*, coalesce((SELECT state FROM failed), (SELECT state FROM o)) AS order_state,
       {WRITTEN}
  FROM item WHERE {_AUDIT_FIRST}"""


FAIL_SQL = _fail_sql()

_PART_COLUMNS = (
    "id, item_id, part_key, seq, seq_slot, status, payload, evidence, notes, errors,"
    " checksum, submitted_by_agent_id, created_at"
)
#: An item's parts (the item locked first), without their payloads: what a new part's
#: slot, the parts limit and the parts state are decided from.
PARTS_OF = (
    "SELECT id, item_id, part_key, seq, seq_slot, status, checksum, created_at"
    " FROM work_item_parts WHERE item_id = %(id)s"
)
#: An item's validated parts with their payloads: what finalize assembles.
VALIDATED_PARTS_OF = (
    f"SELECT {_PART_COLUMNS} FROM work_item_parts WHERE item_id = %(id)s AND status = 'validated'"
)


@lru_cache(maxsize=2)
def part_sql(event: str) -> str:
    """Store a part in its slot (replacing what it held; its columns as Python decided
    them, ``parts.part_fields``, in ``part_<column>``), the item's new parts state, the
    ``event`` (``part_submitted`` / ``part_rejected``) and the provenance row: one
    statement, on an item this transaction locked and whose lease it checked."""
    kept = ("id", "item_id", "part_key", "seq", "seq_slot")
    replaced = ", ".join(
        f"{c} = EXCLUDED.{c}" for c in _PART_COLUMNS.split(", ") if c.strip() not in kept
    )
    values = ", ".join(f"%(part_{c.strip()})s" for c in _PART_COLUMNS.split(","))
    return f"""
WITH part AS (
  INSERT INTO work_item_parts ({_PART_COLUMNS}) VALUES ({values})
  ON CONFLICT (item_id, part_key, seq_slot) DO UPDATE SET {replaced}
  RETURNING id
), item AS (
  UPDATE work_items w SET parts_state = %(parts_state)s::jsonb, updated_at = %(now)s
   WHERE w.id = %(item)s AND (SELECT count(*) FROM part) = 1
  RETURNING w.id, w.order_id
), {_audit("item", event, "%(payload)s::jsonb")}
SELECT (SELECT id FROM part) AS part_id, {WRITTEN} FROM item WHERE {_AUDIT_FIRST}"""


def mark(
    conn: Conn, claim: claims.ActiveClaim | None, order_id: uuid.UUID, item_id: uuid.UUID
) -> None:
    """Mark the active idempotency key ``committed`` in this transaction (before its
    COMMIT), as the ORM path's transactions do; a key taken over meanwhile rolls back."""
    if claim is None:
        return
    refs = {"order_id": str(order_id), "item_id": str(item_id)}
    done = conn.execute(claims.RAW_MARK, claims.raw_mark_params(claim, refs))
    if done.rowcount != 1:
        conn.execute("ROLLBACK")
        raise claims.taken_over()


def marked(claim: claims.ActiveClaim | None) -> None:
    """The key ``mark`` marked is committed now."""
    if claim is not None:
        claim.marked = True
