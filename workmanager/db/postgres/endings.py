"""PostgreSQL's release and fail (for :class:`.leases.PostgresStore`).

The rule is the services' (one home): what a failed lease becomes is
:func:`workmanager.services.transitions.decide_ending`. Python decides from the item row; the
statements of :mod:`.sql` only write what was decided. The guarded statement and the
locked read are :mod:`.guarded`'s; submit_part and finalize are :mod:`.parts`'.

* **release** — with a store, its lock checked first; then one statement in autocommit
  (:func:`.sql.release_sql`), guarded on the lease being current (see :mod:`.leases`);
  with an idempotency key, the same statement marks it.
* **fail** — decided from the item view the lease carries (the attempts it was granted
  with), then one statement in autocommit (:func:`.sql.fail_sql`, marking the key when
  there is one), guarded on the lease being current and on those attempts. When the
  guard does not match (a refused lease, a row that moved on, a key taken over), or with
  a lock the store no longer holds: the
  item is locked and read first (``BEGIN`` and the lock in one round trip), the lease
  checked from the row (``check_row``, then the store's check), the ending decided from
  the row, and the same statement run with ``COMMIT`` (and the mark) in a second.
Event listeners get each statement's event rows after its commit; with a lock store, its
hold is dropped after the commit of a release or a fail.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

from ...errors import ValidationFailed
from ...lease_tokens import Holder
from ...services.inputs import as_presented
from ...services.transitions import ORDER_FAILS_FROM, Ending, decide_ending
from ...services.views import ItemOutcome, item_dict
from ...types import JSON, AgentInfo, Lease
from .. import claims
from ..raw import Conn
from ..store import end_hold
from .guarded import guarded, lock_item, one, refuse, store_holds, write
from .sql import fail_sql, release_sql
from .values import (
    announce_written,
    item_of_row,
    jsonb_or_none,
    lease_params,
    marked,
    order_step,
)

if TYPE_CHECKING:
    from .leases import PostgresStore


class PostgresEndings:
    """release and fail of a :class:`.leases.PostgresStore` (its pool, lock
    store, submit and refusals)."""

    def __init__(self, store: PostgresStore) -> None:
        self.pg = store
        self.ctx = store.ctx

    # --- release ----------------------------------------------------------------------
    def release(self, lease: Lease, agent: AgentInfo) -> ItemOutcome:
        """Give a current lease's item back in one statement, as ``orm_store.release_tx``
        does on SQLite (the order's step is ``workmanager_release_order``). With a store,
        its lock is checked first (a lease the store lost is expired, SPEC §4.5), and
        dropped after the commit."""
        now = self.ctx.clock()
        values = lease_params(self.ctx, lease, agent, now, "release")
        presented = as_presented(lease, agent)
        claim = claims.unmarked_claim()
        values |= claims.claim_params(claim)
        row = self.pg.raw.run(lambda conn: self._release(conn, values, presented, now, claim))
        order_state, _ = order_step(row)
        announce_written(row)
        outcome = ItemOutcome(item_dict(item_of_row(row)), order_state)
        return end_hold(self.pg.store, lease, outcome)  # the lock store's hold, after the commit

    def _release(
        self,
        conn: Conn,
        values: dict[str, Any],
        lease: Holder,
        now: datetime,
        claim: claims.ActiveClaim | None,
    ) -> dict[str, Any]:
        item_id = values["item"]
        if self.pg.store is not None and not self.pg.store.holds(item_id, lease):
            refuse(conn, self.pg.store, item_id, lease, now)  # the row, then the store, says how
        sql = release_sql(claim is not None)
        return guarded(conn, self.pg.store, sql, values, lease, now, claim=claim)

    # --- fail -------------------------------------------------------------------------
    def fail(self, lease: Lease, agent: AgentInfo, error: JSON, retryable: bool) -> ItemOutcome:
        """Requeue (with backoff) or fail the item, as ``orm_store.fail_tx`` does on SQLite."""
        reported = {"code": error["code"], "message": error["message"]}
        now = self.ctx.clock()
        base = lease_params(self.ctx, lease, agent, now, "fail")
        presented = as_presented(lease, agent)

        def values(attempts: int, max_attempts: int) -> dict[str, Any]:
            end = decide_ending(
                self.ctx.settings, attempts, max_attempts, now, error=reported, retryable=retryable
            )
            return _fail_values(base, end, lease.item_id, attempts, max_attempts)

        view = lease.item
        row: dict[str, Any] | None = None
        claim = claims.unmarked_claim()
        if (
            view is not None
            and view.id == lease.item_id
            and store_holds(self.pg.store, lease.item_id, presented)
        ):
            guessed = values(view.attempts, view.max_attempts) | claims.claim_params(claim)
            try:
                row = self.pg.raw.run(lambda conn: one(conn, fail_sql(claim is not None), guessed))
            except ValidationFailed:
                row = None  # unstorable: but a refused lease is said first, below
            if row is not None:
                marked(claim)
        if row is None:  # refused, moved on since the view, a key taken over, a lost lock:

            def locked(conn: Conn) -> dict[str, Any]:
                item = lock_item(conn, self.pg.store, lease.item_id, presented, now)
                decided = values(item.attempts, item.max_attempts)
                return write(conn, fail_sql(False), decided, claim, item)

            row = self.pg.raw.run(locked)
        order_state = row.pop("order_state")
        announce_written(row)
        outcome = ItemOutcome(item_dict(item_of_row(row)), order_state)
        return end_hold(self.pg.store, lease, outcome)  # the lock store's hold, after the commit


def _fail_values(
    base: dict[str, Any], end: Ending, item_id: uuid.UUID, attempts: int, max_attempts: int
) -> dict[str, Any]:
    """:func:`.sql.fail_sql`'s parameters: what ``decide_ending`` decided from
    ``attempts`` and ``max_attempts`` (the guard's)."""
    fails_order = not end.requeued
    return {
        **base,
        "state": end.state,
        "available_at": end.available_at,
        "error": jsonb_or_none(end.error),
        "payload": Jsonb(end.payload),
        "v_attempts": attempts,
        "v_max_attempts": max_attempts,
        "fails_order": fails_order,
        "fails_from": list(ORDER_FAILS_FROM),
        "order_error": Jsonb(end.order_error(item_id)) if fails_order else None,
        "order_payload": Jsonb(end.order_payload(item_id)) if fails_order else None,
    }
