"""The SQL of the PostgreSQL store, composed once per shape from the named parts of
``db/sql/queries.sql`` (:data:`workmanager.db.sql.queries`). Every SQL text is in that
file; this module only says which parts a statement is made of. The parameters the
statements take and what their rows become are :mod:`.values`'.

Eligibility and checkout order repeat :func:`workmanager.leases.selection.eligible` in
SQL; the contract suite runs every backend through both, so they cannot drift unseen.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from typing import Any

from ...leases.selection import Shape
from ...states import LEASABLE_ORDER_STATES
from .. import claims
from ..models import PROVENANCE_TABLE, Item
from ..raw import AuditColumns
from ..sql import queries

ITEM_COLUMNS = [c.name for c in Item.__table__.columns]
PROVENANCE = AuditColumns(PROVENANCE_TABLE)


def _literals(states: Any) -> str:
    return ", ".join(f"'{s.value}'" for s in sorted(states, key=lambda s: s.value))


_LEASABLE = _literals(LEASABLE_ORDER_STATES)


ITEM_COLUMNS_SQL = ", ".join(ITEM_COLUMNS)
LOCK_ITEM = queries.template("lock_item", item_columns=ITEM_COLUMNS_SQL)
ORDER_EXISTS = queries.text("order_exists")

#: The optional filters of a checkout shape (:class:`Shape`'s fields), each a query
#: ``filter_<field>``.
_FILTERS = tuple(f.name for f in dataclasses.fields(Shape))


def eligible_where(shape: Shape) -> str:
    """The eligibility rules of :func:`workmanager.leases.selection.eligible`, as SQL."""
    where = [queries.template("eligible", leasable=_LEASABLE)]
    where += [queries.text(f"filter_{flag}") for flag in _FILTERS if getattr(shape, flag)]
    return " AND ".join(where)


CHECKOUT_ORDER = queries.text("checkout_order")


#: Guarded writes lock their row by primary key in a MATERIALIZED CTE and test the guard
#: on that CTE's columns, so the row is always found by ``id``. With the guard in the
#: UPDATE's own WHERE (``state IN ('leased', 'in_progress')`` matches the predicate of
#: the partial indexes on held items), a generic plan built on statistics from before the
#: leases existed chose such an index and scanned every held lease to find one row.
_GUARD_COLUMNS = queries.text("guard_columns")
_LOCKED = queries.template("locked", guard_columns=_GUARD_COLUMNS)
#: The same, with what the guarded submit compares to the view it validated against.
_LOCKED_WITH_VIEW = queries.template("locked_with_view", guard_columns=_GUARD_COLUMNS)


_LEASED_PAYLOAD = queries.text("leased_payload")

#: The lease presented is the row's current one (``check_row``'s rules), on ``c``.
_CURRENT = queries.text("current")
#: A keyed statement's guard and mark: the request's idempotency key is marked committed
#: by the statement that writes, in the same round trip (:func:`current`, :func:`marks`).
_CLAIM_HELD = queries.template("claim_held", claim_row=claims.CLAIM_ROW)
_CLAIM_MARKED = queries.template("claim_marked", committed=claims.COMMITTED_SQL)


def current(keyed: bool) -> str:
    """The lease's guard; ``keyed``: and the request's key still its own, locked."""
    return f"{_CURRENT}\n     {_CLAIM_HELD}" if keyed else _CURRENT


def marks(keyed: bool) -> str:
    """The key's mark after the audit CTEs of a ``keyed`` statement (else nothing)."""
    return _CLAIM_MARKED if keyed else ""


def _audit(
    source: str, event: str, payload: str = "NULL", where: str = "", keyed: bool = False
) -> str:
    """The ``events`` and ``provenance`` CTEs: one event and one provenance row per row
    of ``source`` (``where`` narrows the events); ``keyed``: then the key's mark."""
    return queries.template(
        "audit",
        event=event,
        payload=payload,
        source=source,
        where=where,
        provenance_names=PROVENANCE.sql_names,
        provenance_values=PROVENANCE.sql_values,
        mark=marks(keyed),
    )


#: Runs the audit CTEs (uncorrelated subqueries: evaluated once, before the first row)
#: ahead of the order function, so the events keep the order the ORM store writes.
_AUDIT_FIRST = queries.text("audit_first")
#: The event rows the statement wrote, for the listeners (``events.announce_rows``).
WRITTEN = queries.text("written")


def _then_order(function: str) -> str:
    """The final ``SELECT`` of a statement that ends an item's lease: the item as written
    (the ``item`` CTE), with its order's step ``function(order, item, now, actor type,
    actor id)`` (``OUT order_state, OUT became``) run after the audit CTEs."""
    return queries.template(
        "then_order", written=WRITTEN, function=function, audit_first=_AUDIT_FIRST
    )


@lru_cache(maxsize=256)
def grant_sql(shape: Shape) -> str:
    """Lease the next eligible item of ``shape`` under the fence ``lease_token + 1``,
    write its ``leased`` event and the provenance row, then start its order
    (``workmanager_start_order``, migration 0004): one statement, for every lease backend
    (a lock store then takes its lock under the row's fence, before the commit). The
    function's queries take their own snapshot once the item is locked, so a sibling's
    release that requeued the order and committed while this statement ran is seen —
    within the statement's own snapshot, the order would still look ``in_progress``."""
    pick = queries.template(
        "grant_pick", eligible=eligible_where(shape), checkout_order=CHECKOUT_ORDER
    )
    return "\n" + queries.template(
        "grant",
        pick=pick,
        item_columns=ITEM_COLUMNS_SQL,
        audit=_audit("picked", "leased", _LEASED_PAYLOAD),
        written=WRITTEN,
        audit_first=_AUDIT_FIRST,
    )


@lru_cache(maxsize=8)
def submit_sql(
    guarded: bool, assembled: bool = False, unchanged: bool = False, keyed: bool = False
) -> str:
    """Item ``submitted`` with its event and provenance row, then its order
    (``workmanager_submit_order``, migration 0004: locks the order, and moves it to
    ``submitted`` with its event when this was its last open item): one statement.
    ``guarded``: only if the lease is still current and the row still matches the view
    the result was validated against (every part hangs on the item's UPDATE having
    matched). ``assembled``: finalize's, the result is also the assembled result. Returns
    the item as written (its results ``NULL``: the caller has them), with ``order_state``
    and ``order_became``; no row when the guard did not match. ``keyed`` (with
    ``guarded``): the request's idempotency key is marked in the same statement."""
    guard = ""
    if guarded:
        guard = "\n     " + queries.template("submit_guard", current=current(keyed))
        if unchanged:
            guard += "\n     " + queries.text("unchanged_guard")
    results = ("result", "assembled_result") if assembled else ("result",)
    returned = ", ".join(f"w.{c}" for c in ITEM_COLUMNS if c not in results)
    returned += "".join(f", NULL::jsonb AS {c}" for c in results)
    also = queries.text("submit_also_assembled") if assembled else ""
    return "\n" + queries.template(
        "submit",
        locked=_LOCKED_WITH_VIEW if guarded else _LOCKED,
        also=also,
        guard=guard,
        returned=returned,
        audit=_audit("item", "submitted", "%(payload)s::jsonb", keyed=guarded and keyed),
        then_order=_then_order("workmanager_submit_order"),
    )


SUBMIT_SQL = submit_sql(guarded=False)
#: finalize: the assembled result submitted (the item locked and checked first)
FINALIZE_SQL = submit_sql(guarded=False, assembled=True)


def finalize_sql(keyed: bool) -> str:
    """finalize in one statement: guarded on the lease and on the row as finalize read
    it; ``keyed``: marking the request's idempotency key."""
    return submit_sql(guarded=True, assembled=True, unchanged=True, keyed=keyed)


@lru_cache(maxsize=4)
def heartbeat_sql(with_progress: bool, keyed: bool = False) -> str:
    """Extend a lease (and record progress), guarded on the lease being current; the
    first heartbeat also moves the item ``leased → in_progress`` with its event; the
    provenance row: one statement. ``c`` locks the row and reads its state before the
    update (PostgreSQL 15's RETURNING has no OLD). No row: the guard did not match.
    ``keyed``: the request's idempotency key is marked in the same statement."""
    progress = queries.text("heartbeat_progress") if with_progress else ""
    return "\n" + queries.template(
        "heartbeat",
        locked=_LOCKED,
        progress=progress,
        current=current(keyed),
        returned=", ".join(f"w.{c}" for c in ITEM_COLUMNS),
        audit=_audit("item", "in_progress", where=" WHERE was = 'leased'", keyed=keyed),
        written=WRITTEN,
        audit_first=_AUDIT_FIRST,
    )


@lru_cache(maxsize=2)
def release_sql(keyed: bool) -> str:
    """Give a current lease's item back to the queue (lease cleared, its attempt given
    back), with its ``released`` event and the provenance row, then its order
    (``workmanager_release_order``, migration 0005: ``in_progress → queued`` when no other
    item is held): one statement, guarded on the lease being current. Returns the item as
    written, with ``order_state`` and ``order_became``; no row when the guard did not
    match (``refuse`` then reads the locked row and says why). ``keyed``: the request's
    idempotency key is marked in the same statement."""
    return "\n" + queries.template(
        "release",
        locked=_LOCKED,
        current=current(keyed),
        returned=", ".join(f"w.{c}" for c in ITEM_COLUMNS),
        audit=_audit(
            "item", "released", "jsonb_build_object('agent_id', %(agent)s::text)", keyed=keyed
        ),
        then_order=_then_order("workmanager_release_order"),
    )


@lru_cache(maxsize=2)
def fail_sql(keyed: bool) -> str:
    """End a failed lease as ``retries.decide_ending`` decided in Python (``state``,
    ``available_at``, ``error``, the event's ``payload``; the order's ``failed`` event,
    ``order_error`` and the states it fails from when ``fails_order``), with the
    ``agent_failed`` event and the provenance row: one statement, guarded on the lease
    being current and on the attempts it was decided from. The order is locked after the
    item (``FOR NO KEY UPDATE``, as ``orm_steps.lock_order_ref``) and failed with the
    item when it is in one of those states; its event follows the item's, as the ORM
    writes them. Returns the item as written with ``order_state``; no row when the guard
    did not match. ``keyed``: the request's idempotency key is marked in the same
    statement."""
    return "\n" + queries.template(
        "fail",
        guard_columns=_GUARD_COLUMNS,
        current=current(keyed),
        mark=marks(keyed),
        returned=", ".join(f"w.{c}" for c in ITEM_COLUMNS),
        provenance_names=PROVENANCE.sql_names,
        provenance_values=PROVENANCE.sql_values,
        written=WRITTEN,
        audit_first=_AUDIT_FIRST,
    )


#: The latest validated part per key of an item, as JSON (finalize assembles them).
LATEST_PARTS = queries.text("latest_parts")
#: finalize's read: the item and :data:`LATEST_PARTS`, no lock.
FINALIZE_READ = queries.template(
    "finalize_read", item_columns=ITEM_COLUMNS_SQL, latest_parts=LATEST_PARTS
)


@lru_cache(maxsize=4)
def part_sql(event: str, keyed: bool = False) -> str:
    """Store a part, in one statement: the item locked, the guard (the lease current, the
    row as the part was judged against: ``submit_guard``), ``workmanager_put_part`` (the
    slot, the parts limit and the parts state, decided in PostgreSQL: migration 0011),
    the ``event`` (``part_submitted`` / ``part_rejected``) and the provenance row. One
    row while the item exists: ``current``, ``part_id`` (``NULL``: no room, ``parts`` the
    count), ``parts_state``, ``validated_keys`` and the events written. ``keyed``: the
    request's idempotency key is marked in the same statement when the part is stored
    (``current`` false also when the key was taken over)."""
    return "\n" + queries.template(
        "part",
        locked=_LOCKED_WITH_VIEW,
        guard=queries.template("submit_guard", current=current(keyed)),
        audit=_audit("item", event, "%(payload)s::jsonb", keyed=keyed),
        written=WRITTEN,
        audit_first=_AUDIT_FIRST,
    )
