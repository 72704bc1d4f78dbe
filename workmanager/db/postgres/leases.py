"""The PostgreSQL path of the agent API's busiest calls: checkout, heartbeat, submit, release
(and fail, submit_part and finalize through :mod:`.endings`).

On PostgreSQL these calls have one implementation, this one: hand-written SQL on a raw
psycopg connection (:mod:`workmanager.db.raw`). The ORM implementation
(:mod:`workmanager.db.orm_store`) serves SQLite only; it is never a fallback here. A
refused call is explained from the row the statement locked
(:func:`workmanager.leases.base.check_row`, the one rule), in the same connection.

* **checkout, database leases** — one statement in autocommit (one round trip, its own
  transaction): a data-modifying CTE picks and leases the next eligible item (``FOR
  UPDATE SKIP LOCKED``) and writes the ``leased`` event and the provenance row; its final
  ``SELECT`` then calls ``workmanager_start_order`` (``queued → in_progress`` and its
  event, on the order's first lease), a VOLATILE SQL function whose queries take their
  own snapshot, so it sees the order as committed after the grant (``db/sql/functions.sql``).
  With lease limits (:mod:`workmanager.leases.limits`) or an idempotency key to mark,
  the same statement runs inside ``BEGIN`` … ``COMMIT`` after the counts, and the mark.
* **checkout, store leases** (Redis, memory) — ``BEGIN`` + candidate row locked ``SKIP
  LOCKED`` in one round trip, the store's atomic acquire, then the same grant (with the
  store's token) and ``COMMIT`` in a second.
* **heartbeat** — one statement in autocommit: the row locked by id in a CTE, the guard
  (current token, this holder, held, unexpired) tested on it, the lease extended, the
  progress recorded, the first heartbeat's ``leased → in_progress`` and its event, the
  provenance row. With a store or a key to mark: that statement in a transaction, the
  store's extend, the mark, ``COMMIT``.
* **submit** (:mod:`.submit`) — one guarded statement when the lease carries the
  item it validated against; otherwise the item locked and checked first.
* **release** — with a store, its lock checked first; then one statement in autocommit,
  guarded on the lease being current: the item back to ``queued`` (lease cleared, its
  attempt given back) with its event and provenance, then ``workmanager_release_order``
  (locks the order; requeues it when no other item is held). With a key to mark: inside a
  transaction with the mark.

A guard that matches nothing means the lease was refused: the row is read and
``check_row`` (and the store's check) says why, as the ORM path would. A value PostgreSQL
cannot store is refused after the lease was checked, as everywhere. Event listeners
(:mod:`workmanager.events`) get the event rows each statement returns, after its commit.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from psycopg import errors as pgerrors
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ...errors import LeaseConflict, NotFound
from ...lease_tokens import Holder, compose, new_secret
from ...leases import limits
from ...leases.base import CheckoutQuery, LeaseLock, check_row
from ...leases.selection import Shape, shape_of
from ...services.context import ServiceContext
from ...services.inputs import as_presented
from ...services.outcomes import ItemOutcome, PartOutcome
from ...services.views import item_view
from ...types import JSON, AgentInfo, Lease
from .. import claims
from ..raw import Conn
from ..store import Validate, lock_only_beat
from .admin import PostgresAdmin
from .endings import PostgresEndings
from .sql import (
    LOCK_ITEM,
    ORDER_EXISTS,
    announce_written,
    candidate_sql,
    grant_sql,
    heartbeat_sql,
    item_of_row,
    lease_params,
    provenance_params,
    query_params,
)
from .sql import mark as _mark
from .sql import marked as _marked
from .submit import PostgresSubmit

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
        #: fail, submit_part and finalize (:mod:`.endings`)
        self.endings = PostgresEndings(self)

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
        return self.endings.submit_part(lease, agent, part_key, payload, seq, evidence, notes)

    def finalize(self, lease: Lease, agent: AgentInfo, mode: str) -> ItemOutcome:
        return self.endings.finalize(lease, agent, mode)

    def fail(self, lease: Lease, agent: AgentInfo, error: JSON, retryable: bool) -> ItemOutcome:
        return self.endings.fail(lease, agent, error, retryable)

    def release(self, lease: Lease, agent: AgentInfo) -> ItemOutcome:
        return self.endings.release(lease, agent)

    # --- checkout ---------------------------------------------------------------------
    def grant(self, agent: AgentInfo, query: CheckoutQuery) -> Lease | None:
        values = self.checkout_values(agent, query)
        expires = values["expires"]
        claim = claims.unmarked_claim()
        if self.store is None:
            row = self.raw.run(lambda conn: self._grant(conn, agent, query, values, claim))
        else:
            row = self.raw.run(
                lambda conn: self._grant_with_store(conn, agent, query, values, claim)
            )
        if row is None:
            return None
        row.pop("order_started")  # the order's step, already done
        announce_written(row)
        item = item_of_row(row)
        return Lease(
            item.id,
            item.order_id,
            agent.id,
            compose(item.lease_token, values["secret"]),
            expires,
            self.ctx.settings.heartbeat_every_seconds,
            item_view(item),
        )

    def checkout_values(self, agent: AgentInfo, query: CheckoutQuery) -> dict[str, Any]:
        """The parameters of the checkout statements."""
        now = self.ctx.clock()
        secret, secret_hash = new_secret()
        return {
            **query_params(query),
            "now": now,
            "agent": agent.id,
            "secret": secret,
            "secret_hash": secret_hash,
            "expires": now + timedelta(seconds=self.ctx.settings.lease_ttl_seconds),
            "actor_type": agent.actor.type,
            "actor_id": agent.actor.id,
            **provenance_params(self.ctx, "checkout", agent),
        }

    def _grant(
        self,
        conn: Conn,
        agent: AgentInfo,
        query: CheckoutQuery,
        values: dict[str, Any],
        claim: claims.ActiveClaim | None,
    ) -> dict[str, Any] | None:
        """Database leases: one statement in autocommit; in a transaction when limits
        are counted first or a key is marked after."""
        cur = conn.cursor(row_factory=dict_row)
        if not self.limits and claim is None:  # the common case: one round trip
            cur.execute(grant_sql(shape_of(query, (), ()), store=False), values, prepare=True)
            row: dict[str, Any] | None = cur.fetchone()
            if row is None:
                _order_must_exist(conn, query)
            return row
        conn.execute("BEGIN")
        blocked = self._count(conn, agent)
        if blocked is None:  # the agent is at its limit
            conn.execute("ROLLBACK")
            return None
        shape = shape_of(query, blocked.types, (), blocked.tenants)
        cur.execute(grant_sql(shape, store=False), {**values, **_blocked_params(blocked)})
        row = cur.fetchone()
        if row is None:
            conn.execute("ROLLBACK")
            _order_must_exist(conn, query)
            return None
        _mark(conn, claim, row["order_id"], row["id"])
        conn.execute("COMMIT")
        _marked(claim)
        return row

    def _count(self, conn: Conn, agent: AgentInfo) -> limits.Blocked | None:
        """The limits' counts (:func:`workmanager.leases.limits.blocked`) on this
        connection's transaction."""
        if not self.limits:
            return limits.NOTHING_BLOCKED

        def lock(key: str) -> None:
            conn.execute(limits.ADVISORY_SQL, {"k": key})

        def rows(stmt: limits.Count, values: dict[str, Any]) -> Sequence[Sequence[Any]]:
            return conn.execute(limits.as_psycopg(stmt), values).fetchall()

        return limits.blocked(self.limits, agent.id, lock, rows)

    def _grant_with_store(
        self,
        conn: Conn,
        agent: AgentInfo,
        query: CheckoutQuery,
        values: dict[str, Any],
        claim: claims.ActiveClaim | None,
    ) -> dict[str, Any] | None:
        assert self.store is not None
        store = self.store
        tried: list[uuid.UUID] = []
        cur = conn.cursor(row_factory=dict_row)
        counted: limits.Blocked | None = limits.NOTHING_BLOCKED
        if self.limits:
            conn.execute("BEGIN")
            counted = self._count(conn, agent)
        assert counted is not None  # no per-agent limit is counted on the rows here
        blocked, full = set(counted.types), counted.tenants
        with conn.pipeline():  # without limits, BEGIN and the pick in one round trip
            if not self.limits:
                conn.execute("BEGIN")
            cur.execute(
                candidate_sql(shape_of(query, blocked, (), full)),
                {**values, **_blocked_params(counted)},
                prepare=True,
            )
        while True:
            row = cur.fetchone()
            if row is None:
                conn.execute("ROLLBACK")
                _order_must_exist(conn, query)
                return None
            item_id, order_type = row["id"], row["order_type"]
            tried.append(item_id)
            token = store.acquire(
                item_id,
                agent.id,
                self.ctx.settings.lease_ttl_seconds * 1000,
                row["lease_token"] + 1,
                order_type,
                values["secret_hash"],
            )
            if token > 0:
                return self._grant_stored(conn, cur, agent, values, row, token, claim)
            if token == -1:  # the agent is at its limit
                conn.execute("ROLLBACK")
                return None
            if token == -2:  # this type is at its limit; others may not be
                blocked.add(order_type)
            shape = shape_of(query, blocked, tried, full)
            more = {
                **values,
                "q_blocked": sorted(blocked),
                "q_exclude": tried,
                "q_full_tenants": sorted(full),
            }
            cur.execute(candidate_sql(shape), more)

    def _grant_stored(
        self,
        conn: Conn,
        cur: Any,
        agent: AgentInfo,
        values: dict[str, Any],
        candidate: dict[str, Any],
        token: int,
        claim: claims.ActiveClaim | None,
    ) -> dict[str, Any]:
        try:
            with conn.pipeline():  # without a key to mark, the grant and COMMIT at once
                cur.execute(
                    grant_sql(Shape(), store=True),
                    {**values, "item_id": candidate["id"], "token": token},
                    prepare=True,
                )
                if claim is None:
                    conn.execute("COMMIT")
            row: dict[str, Any] = cur.fetchone()
            if claim is not None:
                _mark(conn, claim, row["order_id"], row["id"])
                conn.execute("COMMIT")
                _marked(claim)
            return row
        except BaseException:
            assert self.store is not None  # the grant rolled back: give its lock back
            holder = Holder(agent.id, token, values["secret_hash"])
            self.store.release_lock(candidate["id"], holder, candidate["order_type"])
            raise

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
            assert lease.item is not None
            ttl_ms = self.ctx.settings.lease_ttl_seconds * 1000
            self.store.extend_lock(lease.item_id, presented, ttl_ms, lease.item.order_type)
            return dataclasses.replace(lease, expires_at=expires)
        recorded = progress is not None or checkpoint is not None
        values = {
            **lease_params(self.ctx, lease, agent, now, "heartbeat"),
            "expires": expires,
            # as the ORM path writes it; the attempt is the row's, added in SQL
            "progress": Jsonb(
                {"progress": progress, "checkpoint": checkpoint, "at": now.isoformat()}
            ),
        }
        sql = heartbeat_sql(recorded)
        claim = claims.unmarked_claim()
        row = self.raw.run(lambda conn: self._beat(conn, sql, values, presented, now, claim))
        row.pop("was")
        announce_written(row)
        if recorded:  # what the caller sent, as the ORM path returns it (a copy)
            row["progress"] = {
                "progress": progress,
                "checkpoint": copy.deepcopy(checkpoint),
                "at": now.isoformat(),
                "attempt": row["attempts"],
            }
        item = item_of_row(row)
        return dataclasses.replace(lease, expires_at=expires, item=item_view(item))

    def _beat(
        self,
        conn: Conn,
        sql: str,
        values: dict[str, Any],
        lease: Holder,
        now: datetime,
        claim: claims.ActiveClaim | None,
    ) -> dict[str, Any]:
        """The statement alone (autocommit), or with a store or a key to mark: the row
        first (its guard, as ``check_row`` comes first everywhere), then the store's
        extend, the mark and the commit; a refused extend rolls the row back."""
        if self.store is None and claim is None:
            return self._guarded(conn, sql, values, lease, now)
        row = self._guarded(conn, sql, values, lease, now, begin=True)
        if self.store is not None:
            ttl_ms = self.ctx.settings.lease_ttl_seconds * 1000
            item_id = values["item"]
            # raises (and the connection rolls back) when refused
            self.store.extend_lock(item_id, lease, ttl_ms, row["order_type"])
        _mark(conn, claim, row["order_id"], row["id"])
        conn.execute("COMMIT")
        _marked(claim)
        return row

    def _guarded(
        self,
        conn: Conn,
        sql: str,
        values: dict[str, Any],
        lease: Holder,
        now: datetime,
        *,
        begin: bool = False,
    ) -> dict[str, Any]:
        """Run a statement guarded on ``lease`` being current (``begin``: in a
        transaction it opens, in the same round trip; else alone in autocommit, outside a
        pipeline, whose Python costs more than a lone statement's round trip); its row,
        or the refusal :meth:`_refuse` reads from the row. A value PostgreSQL cannot
        store is refused only after the lease was found current."""
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
            self._refuse(conn, values["item"], lease, now, check_only=True)
            raise  # the lease is current: the value is what is wrong (422)
        if row is None:
            self._refuse(conn, values["item"], lease, now)
        assert row is not None
        return row

    def _refuse(
        self,
        conn: Conn,
        item_id: uuid.UUID,
        lease: Holder,
        now: datetime,
        *,
        check_only: bool = False,
    ) -> None:
        """Say why a guard refused ``lease``, from the row (``check_row``, then the
        store's check): raises. ``check_only``: return when the lease is current."""
        found = conn.cursor(row_factory=dict_row).execute(LOCK_ITEM, {"id": item_id}).fetchone()
        if found is None:
            raise NotFound(f"item {item_id} not found", details={"item_id": str(item_id)})
        item = item_of_row(found)
        if self.store is None:
            check_row(item, lease, now)
        else:
            self.store.check(item, lease, now)
        if not check_only:  # the guard and check_row are one rule: not seen in practice
            raise LeaseConflict(
                "the lease changed while it was checked; try again",
                details={"item_id": str(item_id)},
            )


def _blocked_params(blocked: limits.Blocked) -> dict[str, Any]:
    return {"q_blocked": sorted(blocked.types), "q_full_tenants": sorted(blocked.tenants)}


def _order_must_exist(conn: Conn, query: CheckoutQuery) -> None:
    if query.order_id is None:
        return
    found = conn.execute(ORDER_EXISTS, {"order": query.order_id}).fetchone()
    if found is None:
        raise NotFound(
            f"order {query.order_id} not found", details={"order_id": str(query.order_id)}
        )
