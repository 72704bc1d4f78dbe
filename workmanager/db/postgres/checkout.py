"""PostgreSQL's checkout (for :class:`.leases.PostgresStore`): the next eligible item leased.

* **database leases** — one statement in autocommit (one round trip, its own
  transaction): a data-modifying CTE picks and leases the next eligible item (``FOR
  UPDATE SKIP LOCKED``) and writes the ``leased`` event and the provenance row; its final
  ``SELECT`` then calls ``workmanager_start_order`` (``queued → in_progress`` and its
  event, on the order's first lease), a VOLATILE SQL function whose queries take their
  own snapshot, so it sees the order as committed after the grant (``db/sql/functions.sql``).
  With lease limits (:mod:`workmanager.leases.limits`) or an idempotency key to mark,
  the same statement runs inside ``BEGIN`` … ``COMMIT``, the limits' counts after it
  (a grant over a limit rolled back and tried again without its type or tenant), and
  the mark.
* **store leases** (Redis, memory) — ``BEGIN`` and the same grant in one round trip (the
  fence is the row's token + 1, as for database leases), the store's atomic lock under
  that fence, then ``COMMIT`` in a second; a lock refused or not taken rolls the grant
  back (nothing written), and a commit that fails gives the lock back.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from psycopg import errors as pgerrors
from psycopg.rows import dict_row

from ...errors import Contention, NotFound
from ...lease_tokens import Holder, compose, new_secret
from ...leases import limits
from ...leases.base import CheckoutQuery, LeaseLock
from ...leases.selection import shape_of
from ...leases.unreached import Unreached
from ...services.context import ServiceContext
from ...services.views import item_view
from ...types import AgentInfo, Lease
from .. import claims
from ..raw import Conn, RawPostgres
from .sql import ORDER_EXISTS, grant_sql
from .values import announce_written, item_of_row, mark, marked, provenance_params, query_params


class PostgresCheckout:
    """Checkout on a :class:`.leases.PostgresStore`'s pool, lock store and limits."""

    def __init__(
        self, ctx: ServiceContext, raw: RawPostgres, lock: LeaseLock | None, counted: limits.Limits
    ) -> None:
        self.ctx = ctx
        self.raw = raw
        self.lock = lock
        #: the limits counted on the rows (the lock store counts its own atomically)
        self.limits = counted

    def grant(self, agent: AgentInfo, query: CheckoutQuery) -> Lease | None:
        claim = claims.unmarked_claim()
        values: dict[str, Any] = {}

        def attempt(conn: Conn) -> dict[str, Any] | None:
            # each try its own clock and secret: one tried again after a lock timeout
            # would otherwise lease for seconds less than the TTL
            values.update(self.checkout_values(agent, query))
            if self.lock is None:
                return self._grant(conn, agent, query, values, claim)
            return self._grant_with_store(conn, agent, query, values, claim)

        row = self.raw.run(attempt)
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
            values["expires"],
            self.ctx.settings.advised_heartbeat_seconds,
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
        are counted (the agent's before the grant, its type's and tenant's after) or a
        key is marked after."""
        cur = conn.cursor(row_factory=dict_row)
        if not self.limits and claim is None:  # the common case: one round trip
            cur.execute(grant_sql(shape_of(query, (), ())), values, prepare=True)
            row: dict[str, Any] | None = cur.fetchone()
            if row is None:
                _order_must_exist(conn, query)
            return row
        full = Full()
        while True:
            row = self._begin_grant(conn, cur, agent, query, values, full)
            if row is None:
                return None
            over = self._refused(conn, values["now"], row)
            if over is None:
                break
            conn.execute("ROLLBACK")
            full.add(over)
            if full.covers(query):
                return None
        mark(conn, claim, row["order_id"], row["id"])
        conn.execute("COMMIT")
        marked(claim)
        return row

    def _begin_grant(
        self,
        conn: Conn,
        cur: Any,
        agent: AgentInfo,
        query: CheckoutQuery,
        values: dict[str, Any],
        full: Full,
        tried: Sequence[uuid.UUID] = (),
    ) -> dict[str, Any] | None:
        """``BEGIN`` (with the lock timeout, and the agent's own limit counted first) and
        the grant; ``None``, rolled back, when the agent is at its limit or no
        item is eligible (503 when a type or tenant was left out only as busy)."""
        shape = shape_of(query, full.types, tried, full.tenants)
        params = {
            **values,
            "q_blocked": sorted(full.types),
            "q_exclude": list(tried),
            "q_full_tenants": sorted(full.tenants),
        }
        counted_first = self.limits.per_agent is not None  # BEGIN, then the agent's count
        if counted_first and self._agent_full(conn, agent, values["now"]):
            conn.execute("ROLLBACK")
            _order_must_exist(conn, query)  # an unknown order is 404 whatever the limits
            return None
        with conn.pipeline():  # BEGIN and the grant in one round trip
            if not counted_first:
                conn.execute("BEGIN")
                # every checkout transaction that spans round trips: a checkout frozen
                # in one (a stopped process) holds its order's row (its first lease's
                # start), and the others' grants waited on it for good
                conn.execute(limits.LOCK_TIMEOUT_SQL)
            cur.execute(grant_sql(shape), params, prepare=not (tried or full))
        row: dict[str, Any] | None = cur.fetchone()
        if row is None:
            conn.execute("ROLLBACK")
            _order_must_exist(conn, query)
            full.none_but_busy()
        return row

    def _agent_full(self, conn: Conn, agent: AgentInfo, now: datetime) -> bool:
        """``BEGIN``, then the agent's own limit counted under its lock
        (:func:`workmanager.leases.limits.agent_full`), before anything is leased."""
        with conn.pipeline():
            conn.execute("BEGIN")
            conn.execute(limits.LOCK_TIMEOUT_SQL)
        try:
            return limits.agent_full(self.limits, agent.id, now, self._lock(conn), _rows(conn))
        except limits.AgentBusy:
            conn.execute("ROLLBACK")
            raise Contention(
                f"another checkout of agent {agent.id!r} held its lease-limit lock past"
                " the lock timeout; nothing was leased, try again"
            ) from None

    @staticmethod
    def _lock(conn: Conn) -> limits.Lock:
        def lock(key: str) -> bool:
            try:
                conn.execute(limits.ADVISORY_SQL, {"k": key})
            except pgerrors.LockNotAvailable:  # past lock_timeout: the key is busy
                return False
            return True

        return lock

    def _refused(self, conn: Conn, now: datetime, row: dict[str, Any]) -> limits.Refused | None:
        """The limit (type, tenant) the grant in this transaction takes past its value,
        if any (:func:`workmanager.leases.limits.refused`, its grant counted)."""
        if self.limits.per_type is None and self.limits.per_tenant is None:
            return None
        granted = (row["order_type"], row["tenant_id"])
        return limits.refused(self.limits, *granted, now, self._lock(conn), _rows(conn))

    def _grant_with_store(
        self,
        conn: Conn,
        agent: AgentInfo,
        query: CheckoutQuery,
        values: dict[str, Any],
        claim: claims.ActiveClaim | None,
    ) -> dict[str, Any] | None:
        """Store leases: the grant (the fence is the row's token + 1) in a transaction it
        opens, the store's lock under that fence, then ``COMMIT``; a lock refused (the item
        locked, a limit reached) or not taken (the store unavailable) rolls the grant back,
        so nothing is written. A type at its limit is skipped and the next item tried."""
        assert self.lock is not None
        lock = self.lock
        unreached = Unreached(lock)
        tried = unreached.known()  # their shard down a moment ago: left out
        full = Full()  # types the store found at their limit, tenants the rows did
        cur = conn.cursor(row_factory=dict_row)
        if lock.agent_full(agent.id):  # asked before a row is locked (another's to have)
            _order_must_exist(conn, query)
            return None
        while True:
            row = self._begin_grant(conn, cur, agent, query, values, full, tried)
            if row is None:
                unreached.none_left()  # raises when items were skipped for an outage
                return None
            over = self._refused(conn, values["now"], row)  # the tenant's, if set
            if over is not None:
                conn.execute("ROLLBACK")
                full.add(over)
                if full.covers(query):
                    return None
                continue
            # unavailable: the pool rolls the grant back; a shard of a Redis Cluster down
            # (0): this grant is rolled back below and the next item tried
            token = unreached.acquire(
                lock.acquire,
                row["id"],
                agent.id,
                self.ctx.settings.lease_ttl_seconds * 1000,
                row["lease_token"],
                row["order_type"],
                values["secret_hash"],
            )
            if token > 0:
                return self._commit_grant(conn, agent, values, row, claim)
            conn.execute("ROLLBACK")
            if token == -1:  # the agent is at its limit
                return None
            if token == -2:  # this type is at its limit; others may not be
                full.types.add(row["order_type"])
                if full.covers(query):
                    return None
            else:  # locked under a later fence than the row's (a restored database)
                tried.append(row["id"])

    def _commit_grant(
        self,
        conn: Conn,
        agent: AgentInfo,
        values: dict[str, Any],
        row: dict[str, Any],
        claim: claims.ActiveClaim | None,
    ) -> dict[str, Any]:
        """``COMMIT`` a grant whose lock the store took (the key marked first, when there
        is one); a commit that fails gives the lock back."""
        try:
            if claim is not None:
                mark(conn, claim, row["order_id"], row["id"])
            conn.execute("COMMIT")
            marked(claim)
            return row
        except BaseException:
            assert self.lock is not None
            holder = Holder(agent.id, row["lease_token"], values["secret_hash"])
            self.lock.release_lock(row["id"], holder, row["order_type"])
            raise


class Full:
    """The types and tenants found at their limit, or busy, during one checkout: its next
    grant leaves them out."""

    def __init__(self) -> None:
        self.types: set[str] = set()
        self.tenants: set[str] = set()
        self.busy: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.types or self.tenants)

    def add(self, over: limits.Refused) -> None:
        (self.types if over.kind == "type" else self.tenants).add(over.key)
        if over.busy:
            self.busy.append(f"{over.kind} {over.key!r}")

    def covers(self, query: CheckoutQuery) -> bool:
        """Whether ``query`` has nothing left but what was found full
        (:func:`workmanager.leases.limits.exhausted`); 503 when one was only busy."""
        if not limits.exhausted(query, self.types, self.tenants):
            return False
        self.none_but_busy()
        return True

    def none_but_busy(self) -> None:
        """Nothing else eligible, with a type or tenant left out only because another
        checkout held its lock past the timeout: 503, try again (not "no items")."""
        if self.busy:
            raise Contention(
                f"another checkout of {', '.join(self.busy)} held its lease-limit lock past"
                " the lock timeout; nothing was leased, try again"
            )


def _rows(conn: Conn) -> limits.Rows:
    def rows(stmt: limits.Count, values: dict[str, Any]) -> Sequence[Sequence[Any]]:
        return conn.execute(limits.as_psycopg(stmt), values).fetchall()

    return rows


def _order_must_exist(conn: Conn, query: CheckoutQuery) -> None:
    if query.order_id is None:
        return
    found = conn.execute(ORDER_EXISTS, {"order": query.order_id}).fetchone()
    if found is None:
        raise NotFound(
            f"order {query.order_id} not found", details={"order_id": str(query.order_id)}
        )
