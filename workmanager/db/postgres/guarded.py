"""A lease's guarded statement on PostgreSQL, and the refusal read from the row.

Every lease operation of :mod:`workmanager.db.postgres` writes through one of two shapes:

* **guarded** — one statement whose ``WHERE`` is the lease being current (the guard); a
  guard that matches nothing means the lease was refused, and :func:`refuse` reads the row
  to say why (``check_row``, then the lock store's check): the one rule, no second path.
* **locked** — ``BEGIN`` and the item locked in one round trip (:func:`lock_item`), the
  lease checked from the row (:func:`checked`), then the write and ``COMMIT`` (with the
  idempotency key's mark when there is one) in a second (:func:`write`).

``lock`` is the lease backend's lock store (``None``: the row is the lock); a lease the
store lost is expired (SPEC §4.5), whatever the row says.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from psycopg import errors as pgerrors
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from ...errors import LeaseConflict, NotFound
from ...lease_tokens import Holder
from ...leases.base import LeaseLock, check_row
from .. import claims
from ..raw import Conn
from ..store import ItemRow
from .sql import LOCK_ITEM
from .values import check_mark, item_of_row, marked, send_mark


def one(conn: Conn, sql: str, values: dict[str, Any]) -> dict[str, Any] | None:
    """One guarded statement in autocommit (its own transaction, one round trip): its
    row, or ``None`` when the guard matched nothing (and nothing was written)."""
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(sql, values, prepare=True)
    row: dict[str, Any] | None = cur.fetchone()
    return row


def guarded(
    conn: Conn,
    lock: LeaseLock | None,
    sql: str,
    values: dict[str, Any],
    lease: Holder,
    now: datetime,
    *,
    begin: bool = False,
    claim: claims.ActiveClaim | None = None,
) -> dict[str, Any]:
    """Run a statement guarded on ``lease`` being current (``begin``: in a transaction
    it opens, in the same round trip; else alone in autocommit, outside a pipeline, whose
    Python costs more than a lone statement's round trip); its row, or the refusal
    :func:`refuse` reads from the row. A value PostgreSQL cannot store is refused only
    after the lease was found current.

    ``claim``: ``sql`` is the keyed statement (``sql.current(True)``, ``sql.marks(True)``)
    that marks the request's idempotency key as it writes, in autocommit; no row with the
    lease current means another request took the key over."""
    assert claim is None or not begin, "a keyed statement commits alone"
    cur = conn.cursor(row_factory=dict_row)
    try:
        if begin:
            with conn.pipeline():
                conn.execute("BEGIN")
                cur.execute(sql, values, prepare=True)
        else:
            cur.execute(sql, values, prepare=True)
        row: dict[str, Any] | None = cur.fetchone()
    except pgerrors.DataError:
        if conn.info.transaction_status != TransactionStatus.IDLE:
            conn.execute("ROLLBACK")
        refuse(conn, lock, values["item"], lease, now, check_only=True)
        raise  # the lease is current: the value is what is wrong (422)
    if row is None:
        refuse(conn, lock, values["item"], lease, now, check_only=claim is not None)
        raise claims.taken_over()  # the lease is current: the key's guard did not match
    marked(claim)
    return row


def refuse(
    conn: Conn,
    lock: LeaseLock | None,
    item_id: uuid.UUID,
    lease: Holder,
    now: datetime,
    *,
    check_only: bool = False,
) -> None:
    """Say why a guard refused ``lease``, from the row (``check_row``, then the store's
    check): raises. ``check_only``: return when the lease is current."""
    found = conn.cursor(row_factory=dict_row).execute(LOCK_ITEM, {"id": item_id}).fetchone()
    checked(lock, found, item_id, lease, now)
    if not check_only:  # the guard and check_row are one rule: not seen in practice
        raise LeaseConflict(
            "the lease changed while it was checked; try again",
            details={"item_id": str(item_id)},
        )


def checked(
    lock: LeaseLock | None,
    found: dict[str, Any] | None,
    item_id: uuid.UUID,
    lease: Holder,
    now: datetime,
) -> ItemRow:
    """The item of ``found`` with ``lease`` checked on it (the row, then the store's
    lock: a lease the store lost is expired): raises when refused or missing."""
    if found is None:
        raise NotFound(f"item {item_id} not found", details={"item_id": str(item_id)})
    item = item_of_row(found)
    if lock is None:
        check_row(item, lease, now)
    else:
        lock.check(item, lease, now)
    return item


def lock_item(
    conn: Conn, lock: LeaseLock | None, item_id: uuid.UUID, lease: Holder, now: datetime
) -> ItemRow:
    """``BEGIN`` and the item locked (one round trip); the lease checked from the row:
    raises when refused."""
    cur = conn.cursor(row_factory=dict_row)
    with conn.pipeline():
        conn.execute("BEGIN")
        cur.execute(LOCK_ITEM, {"id": item_id}, prepare=True)
    return checked(lock, cur.fetchone(), item_id, lease, now)


def lock_item_with(
    conn: Conn,
    lock: LeaseLock | None,
    item_id: uuid.UUID,
    lease: Holder,
    now: datetime,
    sql: str,
) -> tuple[ItemRow, list[dict[str, Any]]]:
    """:func:`lock_item`, and ``sql``'s rows read after the lock, in the same round trip."""
    cur = conn.cursor(row_factory=dict_row)
    rows = conn.cursor(row_factory=dict_row)
    with conn.pipeline():
        conn.execute("BEGIN")
        cur.execute(LOCK_ITEM, {"id": item_id}, prepare=True)
        rows.execute(sql, {"id": item_id}, prepare=True)
    item = checked(lock, cur.fetchone(), item_id, lease, now)
    return item, rows.fetchall()


def write(
    conn: Conn,
    sql: str,
    values: dict[str, Any],
    claim: claims.ActiveClaim | None,
    item: ItemRow,
) -> dict[str, Any]:
    """Run ``sql`` in the transaction :func:`lock_item` opened (its item locked and
    checked) and commit, in one round trip; with an idempotency key, its mark goes in the
    same pipeline as the statement (one round trip), then ``COMMIT``. The statement's row."""
    cur = conn.cursor(row_factory=dict_row)
    if claim is None:
        with conn.pipeline():
            cur.execute(sql, values, prepare=True)
            conn.execute("COMMIT")
        row = cur.fetchone()
    else:  # the key is marked committed in this same transaction
        with conn.pipeline():
            cur.execute(sql, values, prepare=True)
            done = send_mark(conn, claim, item.order_id, item.id)
        row = cur.fetchone()
        check_mark(conn, done)
        conn.execute("COMMIT")
        marked(claim)
    assert row is not None  # the item is locked by this transaction, its lease checked
    return row


def store_holds(lock: LeaseLock | None, item_id: uuid.UUID, lease: Holder) -> bool:
    """Whether the lock store still holds the lease (always, without a store)."""
    return lock is None or lock.holds(item_id, lease)
