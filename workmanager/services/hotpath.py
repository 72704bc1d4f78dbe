"""PostgreSQL hot paths for the agent API's busiest calls: checkout, heartbeat, submit, release.

Same rules, same rows, fewer round trips. The general path (:mod:`.agent`) runs each call
as an ORM transaction of four to six statements; on PostgreSQL these paths send
hand-written SQL on a raw psycopg connection (:mod:`workmanager.db.raw`):

* **checkout, database leases** — one statement in autocommit (one round trip, its own
  transaction): a data-modifying CTE picks and leases the next eligible item (``FOR
  UPDATE SKIP LOCKED``) and writes the ``leased`` event and the provenance row; its final
  ``SELECT`` then calls ``workmanager_start_order`` (``queued → in_progress`` and its
  event, on the order's first lease), a VOLATILE SQL function whose queries take their
  own snapshot, so it sees the order as committed after the grant (:mod:`..db.ddl`).
* **checkout, store leases** (Redis, memory) — ``BEGIN`` + candidate row locked ``SKIP
  LOCKED`` in one round trip, the store's atomic acquire, then the same grant (with the
  store's token) and ``COMMIT`` in a second.
* **heartbeat** — one statement in autocommit: the row locked by id in a CTE, the guard
  (current token, this holder, held, unexpired) tested on it, the lease extended, the
  progress recorded, the first heartbeat's ``leased → in_progress`` and its event, the
  provenance row. With a store: that statement in a transaction, the store's extend,
  ``COMMIT``. A refused guard goes to the general path, which says why.
* **submit** (:mod:`.hotsubmit`) — with a lease that carries its item (this process's checkout or
  heartbeat): the result validated against that view, then one statement in autocommit,
  guarded on the lease being current and the row still matching the view: item
  ``submitted`` with its event and provenance, then ``workmanager_submit_order`` (locks
  the order, then moves it to ``submitted`` when no other item is open). Otherwise, or
  when the guard does not match: ``BEGIN`` + the item locked in one round trip; the lease
  checks and the validation in Python; the same statement unguarded and ``COMMIT`` in a
  second. With a store, its lock is deleted once the commit succeeded.
* **release** — with a store, its lock checked first; then one statement in autocommit,
  guarded on the lease being current: the item back to
  ``queued`` (lease cleared, its attempt given back) with its event and provenance, then
  ``workmanager_release_order`` (locks the order; requeues it when no other item is
  held, waiting for a sibling's grant in flight). The caller drops the store's lock
  afterwards, as after the general release. A refused guard goes to the general path.

Which items are eligible, in which order, and which transitions are legal are the same
rules as :mod:`workmanager.leases.selection` and :mod:`.lifecycle`; the contract suite
(``tests/contract``) runs every backend on PostgreSQL through these paths and through the
general one (``WORK_MANAGER_PG_FAST_PATH=false``), so the two cannot drift apart unseen.
The database backend with concurrency limits, and any backend with a per-tenant lease
limit, checks out on the general path; fail,
parts and finalize always do.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import uuid
from datetime import timedelta
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ..db.raw import Conn
from ..errors import NotFound, SchemaOutdated, ValidationFailed
from ..lease_tokens import Holder, compose, new_secret
from ..leases.base import CheckoutQuery, Grant
from ..leases.database import DatabaseLeaseBackend
from ..leases.keyed import StoreLeaseBackend
from ..leases.selection import Shape, shape_of
from ..types import JSON, AgentInfo, Lease
from .context import ServiceContext
from .hotsql import (
    ORDER_EXISTS,
    RELEASE_SQL,
    candidate_sql,
    grant_sql,
    heartbeat_sql,
    item_of_row,
    lease_params,
    order_step,
    provenance_params,
    query_params,
)
from .hotsubmit import HotSubmit
from .inputs import as_presented
from .outcomes import ItemOutcome
from .views import item_dict, item_view

log = logging.getLogger("workmanager.agent")


def hot_path(ctx: ServiceContext) -> HotPath | None:
    """The hot path for this deployment, or ``None`` where the general path serves."""
    if not ctx.db.is_postgres:
        return None
    backend = ctx.leases
    if isinstance(backend, DatabaseLeaseBackend):
        # Limits take advisory locks and counts: the general path does that.
        limited = backend.max_per_agent is not None or backend.max_per_type is not None
        limited = limited or backend.max_per_tenant is not None
        return HotPath(ctx, store=None, checkout=not limited)
    if isinstance(backend, StoreLeaseBackend):
        # The tenant limit is counted on the rows under an advisory lock (leases/limits.py):
        # the general path does that too.
        return HotPath(ctx, store=backend, checkout=backend.max_per_tenant is None)
    return None


class HotPath:
    """checkout, heartbeat, submit and release on PostgreSQL, one statement each where it
    can (see the module's docstring)."""

    def __init__(self, ctx: ServiceContext, store: StoreLeaseBackend | None, checkout: bool):
        self.ctx = ctx
        self.raw = ctx.db.raw
        self.store = store
        self.handles_checkout = checkout
        #: off once ``workmanager_release_order`` is found missing (migration 0005 not run)
        self.handles_release = True
        #: submit (:mod:`.hotsubmit`), on the same pool and store
        self.submitter = HotSubmit(ctx, self.raw, store)

    # --- checkout ---------------------------------------------------------------------
    def checkout(self, agent: AgentInfo, query: CheckoutQuery) -> Lease | None:
        values = self.checkout_values(agent, query)
        expires = values["expires"]
        if self.store is None:
            row = self.raw.run(lambda conn: self._grant_in_one(conn, query, values))
        else:
            row = self.raw.run(lambda conn: self._grant_with_store(conn, agent, query, values))
        if row is None:
            return None
        row.pop("order_started")  # the order's step, already done
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

    def _grant_in_one(
        self, conn: Conn, query: CheckoutQuery, values: dict[str, Any]
    ) -> dict[str, Any] | None:
        """One statement in autocommit: one round trip, its own transaction."""
        cur = conn.cursor(row_factory=dict_row)
        cur.execute(grant_sql(shape_of(query, (), ()), store=False), values, prepare=True)
        row = cur.fetchone()
        if row is None:
            _order_must_exist(conn, query)
        return row

    def _grant_with_store(
        self, conn: Conn, agent: AgentInfo, query: CheckoutQuery, values: dict[str, Any]
    ) -> dict[str, Any] | None:
        assert self.store is not None
        store = self.store
        blocked: set[str] = set()
        tried: list[uuid.UUID] = []
        cur = conn.cursor(row_factory=dict_row)
        with conn.pipeline():
            conn.execute("BEGIN")
            cur.execute(candidate_sql(shape_of(query, (), ())), values, prepare=True)
        while True:
            row = cur.fetchone()
            if row is None:
                conn.execute("ROLLBACK")
                _order_must_exist(conn, query)
                return None
            item_id, order_type = row["id"], row["order_type"]
            tried.append(item_id)
            token = store.store.acquire(
                str(item_id),
                agent.id,
                self.ctx.settings.lease_ttl_seconds * 1000,
                row["lease_token"] + 1,
                order_type,
                store.agent_limit,
                store.type_limit,
                values["secret_hash"],
            )
            if token > 0:
                return self._grant_stored(conn, cur, agent, values, row, token)
            if token == -1:  # the agent is at its limit
                conn.execute("ROLLBACK")
                return None
            if token == -2:  # this type is at its limit; others may not be
                blocked.add(order_type)
            shape = shape_of(query, blocked, tried)
            more = {**values, "q_blocked": sorted(blocked), "q_exclude": tried}
            cur.execute(candidate_sql(shape), more)

    def _grant_stored(
        self,
        conn: Conn,
        cur: Any,
        agent: AgentInfo,
        values: dict[str, Any],
        candidate: dict[str, Any],
        token: int,
    ) -> dict[str, Any]:
        try:
            with conn.pipeline():
                cur.execute(
                    grant_sql(Shape(), store=True),
                    {**values, "item_id": candidate["id"], "token": token},
                    prepare=True,
                )
                conn.execute("COMMIT")
            row: dict[str, Any] = cur.fetchone()
            return row
        except BaseException:
            assert self.store is not None
            stub = item_of_row(dict(candidate))
            grant = Grant(stub, token, values["expires"], values["secret_hash"])
            self.store.abandoned(grant, agent.id)
            raise

    # --- heartbeat --------------------------------------------------------------------
    def heartbeat(
        self, lease: Lease, agent: AgentInfo, progress: float | None, checkpoint: JSON | None
    ) -> Lease | None:
        """Extend a current lease in one statement (database leases) or around the
        store's extend (store leases), as ``AgentAPI._heartbeat_tx`` does; ``None`` when
        the guard did not match: the general path then reads the row and says why."""
        now = self.ctx.clock()
        presented = as_presented(lease, agent)
        expires = now + timedelta(seconds=self.ctx.settings.lease_ttl_seconds)
        recorded = progress is not None or checkpoint is not None
        values = {
            **lease_params(self.ctx, lease, agent, now, "heartbeat"),
            "expires": expires,
            # as the general path writes it; the attempt is the row's, added in SQL
            "progress": Jsonb(
                {"progress": progress, "checkpoint": checkpoint, "at": now.isoformat()}
            ),
        }
        sql = heartbeat_sql(recorded)
        try:
            if self.store is None:
                row = self.raw.run(lambda conn: _one_row(conn, sql, values))
            else:
                row = self.raw.run(lambda conn: self._beat_with_store(conn, sql, values, presented))
        except ValidationFailed:
            return None  # a checkpoint jsonb refuses: the general path checks the lease first
        if row is None:
            return None
        row.pop("was")
        if recorded:  # what the caller sent, as the general path returns it (a copy)
            row["progress"] = {
                "progress": progress,
                "checkpoint": copy.deepcopy(checkpoint),
                "at": now.isoformat(),
                "attempt": row["attempts"],
            }
        item = item_of_row(row)
        return dataclasses.replace(lease, expires_at=expires, item=item_view(item))

    def _beat_with_store(
        self, conn: Conn, sql: str, values: dict[str, Any], lease: Holder
    ) -> dict[str, Any] | None:
        """The row first (its guard, as ``check_row`` comes first in general), then the
        store's extend, then the commit; a refused extend rolls the row back."""
        assert self.store is not None
        cur = conn.cursor(row_factory=dict_row)
        with conn.pipeline():
            conn.execute("BEGIN")
            cur.execute(sql, values, prepare=True)
        row: dict[str, Any] | None = cur.fetchone()
        if row is None:
            conn.execute("ROLLBACK")
            return None
        ttl_ms = self.ctx.settings.lease_ttl_seconds * 1000
        item_id = values["item"]
        verdict = self.store.store.extend(
            str(item_id), lease.agent_id, lease.store_proof(), ttl_ms, row["order_type"]
        )
        self.store.verdict(item_id, verdict)  # raises (and rolls back) when refused
        conn.execute("COMMIT")
        return row

    # --- release ----------------------------------------------------------------------
    def release(self, lease: Lease, agent: AgentInfo) -> ItemOutcome | None:
        """Give a current lease's item back in one statement, as ``endings.release_tx``
        does (the order's step is ``workmanager_release_order``, migration 0005). With a
        store, its lock is checked first, as the general path's ``check`` does (unlike
        the hot submit, a release is not worth keeping past a lost lock: the sweep
        reclaims the item). ``None`` leaves the call to the general path, which says
        why: a lock the store no longer holds, a guard that did not match, a value the
        database refuses, or the function missing (a schema at 0004: logged, and
        releases take the general path from then on). The caller then drops the store's
        lock, as after the general release."""
        if not self.handles_release:
            return None
        values = lease_params(self.ctx, lease, agent, self.ctx.clock(), "release")
        proof = as_presented(lease, agent).store_proof()
        if self.store is not None and (
            self.store.store.check(str(lease.item_id), values["agent"], proof) != 1
        ):
            return None  # the store lost or moved the lock: the general path says how
        try:
            row = self.raw.run(lambda conn: _one_row(conn, RELEASE_SQL, values))
        except SchemaOutdated as exc:
            self.handles_release = False
            log.error("%s; releasing on the general path until restarted", exc.message)
            return None
        except ValidationFailed:
            return None  # a value jsonb or text refuses: the general path checks the lease first
        if row is None:
            return None
        order_state, _ = order_step(row)
        return ItemOutcome(item_dict(item_of_row(row)), order_state)


def _one_row(conn: Conn, sql: str, values: dict[str, Any]) -> dict[str, Any] | None:
    """One statement in autocommit (one round trip, its own transaction), its row."""
    row: dict[str, Any] | None = (
        conn.cursor(row_factory=dict_row).execute(sql, values, prepare=True).fetchone()
    )
    return row


def _order_must_exist(conn: Conn, query: CheckoutQuery) -> None:
    if query.order_id is None:
        return
    found = conn.execute(ORDER_EXISTS, {"order": query.order_id}).fetchone()
    if found is None:
        raise NotFound(
            f"order {query.order_id} not found", details={"order_id": str(query.order_id)}
        )
