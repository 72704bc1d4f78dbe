"""The PostgreSQL :class:`~workmanager.db.store.Store`: the agent API's calls on one path.

On PostgreSQL these calls have one implementation, this package's: hand-written SQL (named
in ``db/sql/queries.sql``) on a raw psycopg connection (:mod:`workmanager.db.raw`). The
ORM implementation (:mod:`workmanager.db.orm_store`) serves SQLite only; it is never a
fallback here. Each call lives with its concept:

* **checkout** — :mod:`.checkout`;
* **heartbeat** — here: one statement in autocommit: the row locked by id in a CTE, the
  guard (current token, this holder, held, unexpired) tested on it, the lease extended,
  the progress recorded, the first heartbeat's ``leased → in_progress`` and its event,
  the provenance row. With a store or a key to mark: that statement in a transaction, the
  store's extend, the mark, ``COMMIT``. On a store, a beat without progress or checkpoint
  touches the lock store only (:func:`~workmanager.db.store.lock_only_beat`);
* **submit** — :mod:`.submit`; **release** and **fail** — :mod:`.endings`;
  **submit_part** and **finalize** — :mod:`.parts`; reclaim, release_held and extend —
  :mod:`.admin`.

A guard that matches nothing means the lease was refused: the row is read and
``check_row`` (and the store's check) says why (:mod:`.guarded`, the one rule). A value
PostgreSQL cannot store is refused after the lease was checked, as everywhere. Event
listeners (:mod:`workmanager.events`) get the event rows each statement returns, after
its commit.
"""

from __future__ import annotations

import copy
import logging
from datetime import datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from ...lease_tokens import Holder
from ...leases import limits
from ...leases.base import CheckoutQuery, LeaseLock
from ...services.context import ServiceContext
from ...services.inputs import as_presented
from ...services.views import ItemOutcome, PartOutcome, iso, item_view
from ...types import JSON, AgentInfo, Lease
from .. import claims
from ..raw import Conn
from ..store import ItemRow, Validate, beat_the_lock, lock_only_beat
from .admin import PostgresAdmin
from .checkout import PostgresCheckout
from .endings import PostgresEndings
from .guarded import guarded, one
from .parts import PostgresParts
from .sql import LOCK_ITEM, heartbeat_sql
from .submit import PostgresSubmit
from .values import announce_written, item_of_row, lease_params, mark, marked

log = logging.getLogger("workmanager.agent")


def postgres_store(ctx: ServiceContext) -> PostgresStore:
    """PostgreSQL's store, composing the lease backend's lock (``None``: the row is the
    lock) and the limits it counts on the rows: any backend, no second path."""
    backend = ctx.leases
    return PostgresStore(ctx, lock=backend.lock, counted=backend.limits)


class PostgresStore(PostgresAdmin):
    """The :class:`~workmanager.db.store.Store` of PostgreSQL (see the module's
    docstring); fail, parts and finalize are :mod:`.endings`', reclaim, release_held and
    extend :mod:`.admin`'s (:class:`.admin.PostgresAdmin`). A lease it ends has its lock
    store's hold dropped after the commit (:func:`~workmanager.db.store.drop_holds`)."""

    def __init__(
        self,
        ctx: ServiceContext,
        lock: LeaseLock | None,
        counted: limits.Limits,
    ) -> None:
        self.ctx = ctx
        self.raw = ctx.db.raw
        self.store = lock
        #: the limits counted on the rows (the lock store counts its own atomically)
        self.limits = counted
        #: submit (:mod:`.submit`), on the same pool and lock store
        self.submitter = PostgresSubmit(ctx, self.raw, lock)
        #: checkout (:mod:`.checkout`)
        self.checkout = PostgresCheckout(ctx, self.raw, lock, counted)
        #: release and fail (:mod:`.endings`)
        self.endings = PostgresEndings(self)
        #: submit_part and finalize (:mod:`.parts`)
        self.parts = PostgresParts(self)

    def submit(
        self,
        lease: Lease,
        agent: AgentInfo,
        result: JSON,
        payload: dict[str, Any],
        validate: Validate,
    ) -> ItemOutcome:
        return self.submitter.submit(lease, agent, result, payload, validate)

    def submit_part(
        self,
        lease: Lease,
        agent: AgentInfo,
        part_key: str,
        payload: JSON,
        seq: int | None,
        evidence: Any,
        notes: str | None,
    ) -> PartOutcome:
        return self.parts.submit_part(lease, agent, part_key, payload, seq, evidence, notes)

    def finalize(self, lease: Lease, agent: AgentInfo, mode: str) -> ItemOutcome:
        return self.parts.finalize(lease, agent, mode)

    def fail(self, lease: Lease, agent: AgentInfo, error: JSON, retryable: bool) -> ItemOutcome:
        return self.endings.fail(lease, agent, error, retryable)

    def release(self, lease: Lease, agent: AgentInfo) -> ItemOutcome:
        return self.endings.release(lease, agent)

    def grant(self, agent: AgentInfo, query: CheckoutQuery) -> Lease | None:
        return self.checkout.grant(agent, query)

    # --- heartbeat --------------------------------------------------------------------
    def heartbeat(
        self, lease: Lease, agent: AgentInfo, progress: float | None, checkpoint: JSON | None
    ) -> Lease:
        """Extend a current lease in one statement (database leases) or around the
        store's extend (store leases), as ``AgentAPI._heartbeat_tx`` does on SQLite."""
        now = self.ctx.clock()
        presented = as_presented(lease, agent)
        expires = now + timedelta(seconds=self.ctx.settings.lease_ttl_seconds)
        if self.store is not None and lock_only_beat(lease, self.store, progress, checkpoint):
            ttl_ms = self.ctx.settings.lease_ttl_seconds * 1000
            beat_the_lock(self.store, lease, presented, ttl_ms, now, lambda: self._row(lease))
            return lease.renewed(expires)
        recorded = progress is not None or checkpoint is not None
        values = {
            **lease_params(self.ctx, lease, agent, now, "heartbeat"),
            "expires": expires,
            # as the ORM path writes it; the attempt is the row's, added in SQL
            "progress": Jsonb({"progress": progress, "checkpoint": checkpoint, "at": iso(now)}),
        }
        claim = claims.unmarked_claim()
        keyed = claim is not None and self.store is None  # the statement marks the key
        values |= claims.claim_params(claim if keyed else None)
        sql = heartbeat_sql(recorded, keyed)
        row = self.raw.run(lambda conn: self._beat(conn, sql, values, presented, now, claim))
        row.pop("was")
        announce_written(row)
        if recorded:  # what the caller sent, as the ORM path returns it (a copy)
            row["progress"] = {
                "progress": progress,
                "checkpoint": copy.deepcopy(checkpoint),
                "at": iso(now),
                "attempt": row["attempts"],
            }
        item = item_of_row(row)
        return lease.renewed(expires, item_view(item))

    def _row(self, lease: Lease) -> ItemRow | None:
        """The item's row as it is now (no lock): what a refused lock-only beat is named by."""
        found = self.raw.run(lambda conn: one(conn, LOCK_ITEM, {"id": lease.item_id}))
        return None if found is None else item_of_row(found)

    def _beat(
        self,
        conn: Conn,
        sql: str,
        values: dict[str, Any],
        lease: Holder,
        now: datetime,
        claim: claims.ActiveClaim | None,
    ) -> dict[str, Any]:
        """The statement alone (autocommit; keyed: marking the key too), or with a store:
        the row first (its guard, as ``check_row`` comes first everywhere), then the
        store's extend, the key's mark and the commit; a refused extend rolls the row
        back."""
        if self.store is None:
            return guarded(conn, self.store, sql, values, lease, now, claim=claim)
        row = guarded(conn, self.store, sql, values, lease, now, begin=True)
        ttl_ms = self.ctx.settings.lease_ttl_seconds * 1000
        # raises (and the connection rolls back) when refused
        self.store.extend_lock(values["item"], lease, ttl_ms, row["order_type"])
        mark(conn, claim, row["order_id"], row["id"])
        conn.execute("COMMIT")
        marked(claim)
        return row
