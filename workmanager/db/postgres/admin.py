"""PostgreSQL's reclaim, release_held and extend (for :class:`.leases.PostgresStore`): the
operator's lease actions and the sweep, on a batch of held leases each as it was picked.

Every batch is one transaction of two round trips: ``BEGIN`` and the rows locked by id,
in id order, those still held under the lease picked (:data:`HELD_LOCKED`; ``SKIP
LOCKED`` for the sweep); then, decided in Python from the locked rows, the batch's writes
and ``COMMIT`` in one pipeline.

* **reclaim** — each ending decided by :func:`~workmanager.services.transitions.decide_ending`
  (the agent's fail's rule), written by one statement (:data:`RECLAIM_SQL`); with
  ``expired``, only the leases :func:`~workmanager.db.store.dead_or_alive` says are gone,
  the live locks' time written to their rows first (:data:`REFRESH_SQL`).
* **release_held** — per lease, the holder's own release statement (``queries.sql``
  ``release``: the item back to ``queued``, its attempt given back, then
  ``workmanager_release_order``), guarded on the fence picked, event ``lease_released``:
  one statement per lease (the order's step must see the siblings released before it),
  all in one pipeline.
* **extend** — each lock store's hold extended while the row is locked (a refusal skips
  that lease), then one statement (:data:`EXTEND_SQL`).

The lock store's holds of the leases a batch ended are dropped after its commit; event
listeners get the statements' event rows after it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ...services.transitions import ORDER_FAILS_FROM, decide_ending
from ...services.views import iso
from ...types import Actor
from ..extends import extend_hold
from ..raw import Conn
from ..sql import queries
from ..store import Batch, Held, LeaseChange, dead_or_alive, drop_holds, holder_of
from .sql import ITEM_COLUMNS_SQL, WRITTEN
from .values import announce_written, item_of_row

if TYPE_CHECKING:
    from ...leases.base import LeaseLock
    from ...services.context import ServiceContext
    from ..raw import RawPostgres


def _locked_sql(skip: bool) -> str:
    return queries.template(
        "held_locked", item_columns=ITEM_COLUMNS_SQL, skip="SKIP LOCKED" if skip else ""
    )


HELD_LOCKED = _locked_sql(skip=False)
HELD_LOCKED_SKIP = _locked_sql(skip=True)
REFRESH_SQL = queries.text("held_refresh")
RECLAIM_SQL = queries.template("held_reclaim", written=WRITTEN)
EXTEND_SQL = queries.template("held_extend", written=WRITTEN)
#: The holder's release statement (``release``), guarded on the fence picked instead of
#: the presented lease, with the operator's event and no provenance row.
RELEASE_HELD_SQL = "\n" + queries.template(
    "release",
    locked=queries.template("locked", guard_columns=queries.text("guard_columns")),
    current=queries.text("held_current"),
    returned=queries.text("held_returned"),
    audit=queries.text("held_released_events"),
    then_order=queries.template(
        "then_order",
        written=WRITTEN,
        function="workmanager_release_order",
        audit_first=queries.text("held_events_first"),
    ),
)

#: a batch's writes, given its locked rows: (changes, rows ended, statements to send)
_Plan = tuple[list[LeaseChange], list[Any], list[tuple[str, dict[str, Any]]]]


class PostgresAdmin:
    """reclaim, release_held and extend of :class:`.leases.PostgresStore` (a base class:
    its context, pool and lock store)."""

    ctx: ServiceContext
    raw: RawPostgres
    #: the lock store (``None``: the row is the lock)
    store: LeaseLock | None

    def reclaim(
        self,
        leases: Sequence[Held],
        actor: Actor,
        event: str,
        *,
        expired: bool = False,
        skip_locked: bool = False,
    ) -> Batch:
        def plan(rows: list[Any], now: datetime) -> _Plan:
            writes: list[tuple[str, dict[str, Any]]] = []
            if expired:
                rows, refresh = dead_or_alive(self.store, rows, now)
                if refresh:
                    ids, expires = list(refresh), list(refresh.values())
                    writes.append((REFRESH_SQL, {"ids": ids, "expires": expires}))
            changes: list[LeaseChange] = []
            decided: list[dict[str, Any]] = []
            for seq, row in enumerate(rows):
                end = decide_ending(self.ctx.settings, row.attempts, row.max_attempts, now)
                fails = not end.requeued
                decided.append(
                    {
                        "id": str(row.id),
                        "seq": seq,
                        "state": end.state,
                        "available_at": iso(end.available_at),
                        "error": end.error,
                        "payload": end.payload,
                        "order_error": end.order_error(row.id) if fails else None,
                        "order_payload": end.order_payload(row.id) if fails else None,
                    }
                )
                at = end.available_at or row.available_at
                changes.append(LeaseChange(Held.of(row), "failed" if fails else "requeued", at))
            if decided:
                values = {
                    **_actor(actor, now),
                    "rows": Jsonb(decided),
                    "event": event,
                    "fails_from": list(ORDER_FAILS_FROM),
                }
                writes.append((RECLAIM_SQL, values))
            return changes, rows, writes

        return self._batch(leases, plan, skip_locked=skip_locked)

    def release_held(self, leases: Sequence[Held], actor: Actor) -> Batch:
        def plan(rows: list[Any], now: datetime) -> _Plan:
            writes = [
                (RELEASE_HELD_SQL, {**_actor(actor, now), "item": r.id, "token": r.lease_token})
                for r in rows
            ]
            return [LeaseChange(Held.of(r), "released") for r in rows], rows, writes

        return self._batch(leases, plan)

    def extend(self, leases: Sequence[Held], actor: Actor, seconds: int) -> Batch:
        def plan(rows: list[Any], now: datetime) -> _Plan:
            changes: list[LeaseChange] = []
            decided: list[dict[str, Any]] = []
            for row in rows:
                new_expiry, refused = extend_hold(self.store, row, now, seconds)
                if refused is not None:
                    changes.append(LeaseChange(Held.of(row), "skipped", reason=refused))
                    continue
                expires = iso(new_expiry)
                payload = {"seconds": seconds, "lease_expires_at": expires}
                decided.append(
                    {"id": str(row.id), "seq": len(decided), "expires": expires, "payload": payload}
                )
                changes.append(LeaseChange(Held.of(row), "extended", new_expiry))
            writes = []
            if decided:
                writes.append((EXTEND_SQL, {**_actor(actor, now), "rows": Jsonb(decided)}))
            return changes, [], writes

        return self._batch(leases, plan)

    def _batch(
        self,
        leases: Sequence[Held],
        plan: Callable[[list[Any], datetime], _Plan],
        *,
        skip_locked: bool = False,
    ) -> Batch:
        """Lock the batch's rows, plan its writes from them, send them and commit; then
        drop the lock store's holds of the leases it ended and announce its events."""
        if not leases:
            return Batch((), frozenset())
        ids = [lease.item_id for lease in leases]
        fences = [lease.lease_token for lease in leases]
        locking = HELD_LOCKED_SKIP if skip_locked else HELD_LOCKED

        def tx(conn: Conn) -> tuple[Batch, list[Any], list[dict[str, Any]]]:
            now = self.ctx.clock()
            cur = conn.cursor(row_factory=dict_row)
            with conn.pipeline():
                conn.execute("BEGIN")
                cur.execute(locking, {"ids": ids, "fences": fences}, prepare=True)
            rows = [item_of_row(r) for r in cur.fetchall()]
            changes, ended, writes = plan(rows, now)
            cursors = [conn.cursor(row_factory=dict_row) for _ in writes]
            with conn.pipeline():
                for (sql, values), write in zip(writes, cursors, strict=True):
                    write.execute(sql, values, prepare=True)
                conn.execute("COMMIT")
            results = [r for write in cursors if write.description for r in write.fetchall()]
            return Batch(tuple(changes), frozenset(r.id for r in rows)), ended, results

        batch, ended, results = self.raw.run(tx)
        drop_holds(self.store, [(row.id, row.order_type, holder_of(row)) for row in ended])
        for result in results:
            announce_written(result)
        return batch


def _actor(actor: Actor, now: datetime) -> dict[str, Any]:
    return {"now": now, "actor_type": actor.type, "actor_id": actor.id}
