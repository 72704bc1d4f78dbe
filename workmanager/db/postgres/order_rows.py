"""What PostgreSQL's order store (:mod:`.control`, :mod:`.order_admin`) shares: running a
control statement (:func:`write`, with an idempotency key's mark), reading and locking an
order (:func:`read`, :func:`locked`), announcing the events a statement returned
(:func:`announce`), and turning rows into the values the port returns (:func:`order`,
:func:`order_view`, :func:`item_view`); the statements are composed from
``db/sql/queries.sql`` by :func:`statement`.

Each writing statement returns the ``work_events`` rows it inserted (``json_agg`` in id
order, as text, parsed only while a listener is registered); after the commit they are
announced to :mod:`workmanager.events` as :mod:`workmanager.db.pending` announces the
ORM's, so listeners hear the same events in the same order on both databases. While an
idempotency claim is unmarked (:mod:`workmanager.db.claims`), the write runs in a
transaction that also marks the key (``claims.RAW_MARK``), as the hot submit does.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from psycopg.rows import dict_row

from ... import events
from ...errors import NotFound
from ...types import ItemView, OrderView
from .. import claims
from ..models import PROVENANCE_TABLE
from ..order_store import ORDER_ROW_FIELDS, OrderRow
from ..raw import AuditColumns, Conn, utc_row
from ..sql import queries
from .guarded import one
from .sql import ITEM_COLUMNS_SQL
from .values import check_mark


def write(
    conn: Conn, sql: str, values: dict[str, Any], refs: dict[str, str], *, begun: bool = False
) -> list[dict[str, Any]]:
    """Run one writing statement and commit it: in autocommit (one round trip), or to end
    the transaction ``begun`` on ``conn``. While an idempotency claim is unmarked, the
    key is marked ``committed`` (with ``refs``) in the same transaction when the statement
    wrote (returned a row; a refused guard rolls the mark back, as the ORM's commit marks
    nothing for a transaction that wrote nothing), and a key taken over meanwhile rolls it
    all back (:func:`claims.taken_over`), as the ORM's commit
    does (:mod:`workmanager.db.claims`)."""
    cur = conn.cursor(row_factory=dict_row)
    claim = claims.unmarked_claim()
    if claim is None and not begun:
        cur.execute(sql, values, prepare=True)
        return cur.fetchall()
    mark = conn.cursor()
    with conn.pipeline():
        if not begun:
            conn.execute("BEGIN")
        cur.execute(sql, values, prepare=True)
        if claim is None:
            conn.execute("COMMIT")
        else:
            params = claims.raw_mark_params(claim, refs)
            if not refs:  # as the ORM's mark stores it: no refs, no body
                params["claim_refs"] = None
            mark.execute(claims.RAW_MARK, params)
    rows = cur.fetchall()
    if claim is not None:
        if not rows:  # the guard refused: nothing written, so the key is not marked
            conn.execute("ROLLBACK")
            return rows
        check_mark(conn, mark)
        conn.execute("COMMIT")
        claim.marked = True
    return rows


def claim_refs(provenance: dict[str, Any] | None) -> dict[str, str]:
    """What the key's mark stores: the order and item a keyed caller's provenance row
    names, as ``claims._refs`` reads them from the ORM's queued rows."""
    if not provenance or not provenance.get("idempotency_key_hash"):
        return {}
    return {k: str(provenance[k]) for k in ("order_id", "item_id") if provenance.get(k)}


def read(conn: Conn, order_id: uuid.UUID) -> OrderRow:
    """The order as it is now (a statement of its own: it sees what the guard's statement
    waited for); :class:`NotFound` when there is none."""
    row = one(conn, READ_ORDER, {"order": order_id})
    if row is None:
        raise not_found(order_id)
    return order(row)


def locked(conn: Conn, order_id: uuid.UUID) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``BEGIN``, the order locked ``FOR UPDATE`` (as ``lock_order``) and its items read
    (as ``Order.items``), in one round trip; the transaction is left open for the write
    (:func:`write` with ``begun``). A missing order rolls back and raises
    :class:`NotFound`."""
    cur = conn.cursor(row_factory=dict_row)
    items = conn.cursor(row_factory=dict_row)
    values = {"order": order_id}
    with conn.pipeline():
        conn.execute("BEGIN")
        cur.execute(LOCK_ORDER, values, prepare=True)
        items.execute(ORDER_ITEMS, values, prepare=True)
    row = cur.fetchone()
    if row is None:
        conn.execute("ROLLBACK")
        raise not_found(order_id)
    return row, items.fetchall()


def not_found(order_id: uuid.UUID) -> NotFound:
    return NotFound(f"order {order_id} not found", details={"order_id": str(order_id)})


def announce(row: dict[str, Any]) -> None:
    """After the commit: the listeners hear the events the statement inserted (its
    ``events`` column), as :mod:`workmanager.db.pending` announces the ORM's."""
    text = row.pop("events", None)
    if text is not None and events.listening():
        events.announce_rows(event_rows(text))


def event_rows(text: str) -> list[dict[str, Any]]:
    """The ``work_events`` rows of a statement's ``events`` column, typed as the ORM
    queues them (UUIDs, ``created_at`` an aware datetime in UTC)."""
    rows: list[dict[str, Any]] = json.loads(text)
    for row in rows:
        row["order_id"] = uuid.UUID(row["order_id"])
        row["item_id"] = uuid.UUID(row["item_id"]) if row["item_id"] else None
        row["created_at"] = datetime.fromisoformat(row["created_at"]).astimezone(UTC)
    return rows


def order(row: dict[str, Any]) -> OrderRow:
    """An order row (every column of :class:`OrderRow`), datetimes in UTC."""
    return OrderRow(**utc_row(row))


def order_view(row: dict[str, Any], items: list[ItemView]) -> OrderView:
    """The hooks' view of an order row, with its items' views."""
    return OrderView(
        id=row["id"],
        type=row["type"],
        state=row["state"],
        priority=row["priority"],
        payload=dict(row["payload"] or {}),
        meta=dict(row["meta"] or {}),
        items=tuple(items),
    )


def item_view(r: dict[str, Any], prefix: str = "", order_id: uuid.UUID | None = None) -> ItemView:
    """The hooks' view of an item row: its columns named ``<prefix><column>`` (the order's
    id given when the row has no ``order_id`` of its own)."""
    return ItemView(
        id=r[f"{prefix}id"],
        order_id=r[f"{prefix}order_id"] if order_id is None else order_id,
        type=r[f"{prefix}type"],
        order_type=r[f"{prefix}order_type"],
        state=r[f"{prefix}state"],
        input=dict(r[f"{prefix}input"] or {}),
        result=r[f"{prefix}result"],
        assembled_result=r[f"{prefix}assembled_result"],
        attempts=r[f"{prefix}attempts"],
        max_attempts=r[f"{prefix}max_attempts"],
        parts_required=tuple(r[f"{prefix}parts_required"] or ()),
        progress=r[f"{prefix}progress"],
        tenant_id=r[f"{prefix}tenant_id"],
    )


#: The columns an :class:`OrderRow` holds (every column of ``work_orders``).
ORDER_COLUMNS = ", ".join(ORDER_ROW_FIELDS)
PROVENANCE = AuditColumns(PROVENANCE_TABLE)

#: What each writing statement returns of the events it inserted, in the order written.
RETURNED_EVENTS = queries.text("returned_events")
EVENTS_COLUMN = queries.text("events_column")
EVENT_COLUMNS = queries.text("event_columns")
#: The order's provenance row in a statement whose CTE ``o`` is the order.
ORDER_PROVENANCE = queries.template(
    "create_provenance",
    provenance_names=PROVENANCE.sql_names,
    provenance_values=PROVENANCE.sql_values,
)


def statement(name: str, provenance: bool | None = None) -> str:
    """Control statement ``name`` with the markers they share filled: the order's and
    the events' columns, and (``provenance`` not ``None``) the order's provenance row
    or none."""
    extra = {} if provenance is None else {"provenance": ORDER_PROVENANCE if provenance else ""}
    return "\n" + queries.template(
        name,
        order_columns=ORDER_COLUMNS,
        event_columns=EVENT_COLUMNS,
        returned_events=RETURNED_EVENTS,
        events_column=EVENTS_COLUMN,
        **extra,
    )


#: The order locked as ``lock_order`` locks it, then its items as ``Order.items`` reads them.
LOCK_ORDER = queries.template("lock_order", order_columns=ORDER_COLUMNS)
ORDER_ITEMS = queries.template("order_items", item_columns=ITEM_COLUMNS_SQL)
READ_ORDER = queries.template("read_order", order_columns=ORDER_COLUMNS)
