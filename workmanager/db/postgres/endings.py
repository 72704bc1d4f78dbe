"""PostgreSQL's release, fail, submit_part and finalize (for :class:`.leases.PostgresStore`).

The rules are the services' (one home each): what a failed lease becomes is
:func:`workmanager.services.retries.decide_ending`, a part's verdict, slot limit, stored
columns and parts state are :mod:`workmanager.services.parts`' functions, finalize's result
is ``parts.assemble_parts``. Python decides from the item row; the statements of
:mod:`.sql` only write what was decided.

* **release** — with a store, its lock checked first; then one statement in autocommit
  (:data:`.sql.RELEASE_SQL`), guarded on the lease being current (see :mod:`.leases`).
* **fail** — decided from the item view the lease carries (the attempts it was granted
  with), then one statement in autocommit (:data:`.sql.FAIL_SQL`), guarded on the lease
  being current and on those attempts. When the guard does not match (a refused lease, a
  row that moved on), with a key to mark, or with a lock the store no longer holds: the
  item is locked and read first (``BEGIN`` and the lock in one round trip), the lease
  checked from the row (``check_row``, then the store's check), the ending decided from
  the row, and the same statement run with ``COMMIT`` (and the mark) in a second.
* **submit_part** — the item locked and its parts read (one round trip); the lease
  checked from the row; the part judged against the item as locked; its slot, the parts
  limit, its columns and the item's new parts state computed; then one statement stores
  the part, the parts state, the event and the provenance row, with ``COMMIT`` (one
  round trip). A rejected part is stored and committed, then refused.
* **finalize** — the item locked and its validated parts read (one round trip), the lease
  checked, the parts assembled, then :data:`.sql.FINALIZE_SQL` (a submit of the assembled
  result, its order's step ``workmanager_submit_order``) with ``COMMIT``.

Event listeners get each statement's event rows after its commit; with a lock store, its
hold is dropped after the commit of a fail or a finalize.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ...errors import NotFound, ValidationFailed
from ...lease_tokens import Holder
from ...leases.base import check_row
from ...services.inputs import as_presented
from ...services.outcomes import ItemOutcome, PartOutcome
from ...services.parts import (
    assemble_parts,
    check_room,
    judge_part,
    latest_of,
    part_event,
    part_fields,
    rejection_errors,
    required_of,
    summarize,
)
from ...services.retries import ORDER_FAILS_FROM, Ending, decide_ending
from ...services.views import item_dict, item_view, part_dict
from ...state_machine import check_item, check_order
from ...states import ItemState, OrderState
from ...types import JSON, AgentInfo, Lease
from .. import claims
from ..models import Item, Part
from ..raw import Conn, utc_row
from .sql import (
    FAIL_SQL,
    FINALIZE_SQL,
    LOCK_ITEM,
    PARTS_OF,
    RELEASE_SQL,
    VALIDATED_PARTS_OF,
    announce_written,
    item_of_row,
    lease_params,
    mark,
    marked,
    order_step,
    part_sql,
)

if TYPE_CHECKING:
    from .leases import PostgresStore


class PostgresEndings:
    """release, fail, submit_part and finalize of a :class:`.leases.PostgresStore` (its pool, lock
    store, submit and refusals)."""

    def __init__(self, store: PostgresStore) -> None:
        self.pg = store
        self.ctx = store.ctx

    # --- release ----------------------------------------------------------------------
    def release(self, lease: Lease, agent: AgentInfo) -> ItemOutcome:
        """Give a current lease's item back in one statement, as ``endings.release_tx``
        does on SQLite (the order's step is ``workmanager_release_order``). With a store,
        its lock is checked first (a lease the store lost is expired, SPEC §4.5), and
        dropped after the commit."""
        now = self.ctx.clock()
        values = lease_params(self.ctx, lease, agent, now, "release")
        presented = as_presented(lease, agent)
        claim = claims.unmarked_claim()
        row = self.pg.raw.run(lambda conn: self._release(conn, values, presented, now, claim))
        order_state, _ = order_step(row)
        announce_written(row)
        outcome = ItemOutcome(item_dict(item_of_row(row)), order_state)
        return self.pg.orm.end_lock(lease, outcome)  # the lock store's hold, after the commit

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
            self.pg._refuse(conn, item_id, lease, now)  # the row, then the store, says how
        if claim is None:
            return self.pg._guarded(conn, RELEASE_SQL, values, lease, now)
        row = self.pg._guarded(conn, RELEASE_SQL, values, lease, now, begin=True)
        mark(conn, claim, row["order_id"], row["id"])
        conn.execute("COMMIT")
        marked(claim)
        return row

    # --- fail -------------------------------------------------------------------------
    def fail(self, lease: Lease, agent: AgentInfo, error: JSON, retryable: bool) -> ItemOutcome:
        """Requeue (with backoff) or fail the item, as ``endings.fail_tx`` does on SQLite."""
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
        if (
            claims.unmarked_claim() is None
            and view is not None
            and view.id == lease.item_id
            and self._store_holds(lease.item_id, presented)
        ):
            guessed = values(view.attempts, view.max_attempts)
            try:
                row = self.pg.raw.run(lambda conn: _one(conn, FAIL_SQL, guessed))
            except ValidationFailed:
                row = None  # unstorable: but a refused lease is said first, below
        if row is None:  # refused, moved on since the view, a key to mark, a lost lock:
            claim = claims.unmarked_claim()

            def locked(conn: Conn) -> dict[str, Any]:
                item = self._lock(conn, lease.item_id, presented, now)
                decided = values(item.attempts, item.max_attempts)
                return self._write(conn, FAIL_SQL, decided, claim, item)

            row = self.pg.raw.run(locked)
        order_state = row.pop("order_state")
        announce_written(row)
        outcome = ItemOutcome(item_dict(item_of_row(row)), order_state)
        return self.pg.orm.end_lock(lease, outcome)  # the lock store's hold, after the commit

    # --- submit_part ------------------------------------------------------------------
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
        """Store one part in its slot, as ``parts.add_part`` does on SQLite."""
        now = self.ctx.clock()
        presented = as_presented(lease, agent)
        claim = claims.unmarked_claim()

        def tx(conn: Conn) -> tuple[PartOutcome, dict[str, Any]]:
            item, rows = self._lock_with(conn, lease.item_id, presented, now, PARTS_OF)
            order_type = self.ctx.registry.get(item.order_type)
            view = item_view(item)
            refused = judge_part(order_type, view, part_key, payload, seq, evidence)
            errors = rejection_errors(refused)
            slot = -1 if seq is None else seq
            parts = [_part(r) for r in rows]
            held = [p for p in parts if p.part_key == part_key and p.seq_slot == slot]
            if not held:
                check_room(self.ctx.settings, len(parts))
            fields = part_fields(payload, evidence, notes, agent.id, errors)
            part = _part(
                {
                    "id": held[0].id if held else uuid.uuid4(),
                    "item_id": item.id,
                    "part_key": part_key,
                    "seq": held[0].seq if held else seq,
                    "seq_slot": slot,
                    **fields,
                }
            )
            parts = [p for p in parts if p not in held] + [part]  # the slot's new part
            state = summarize(parts)
            event, event_payload = part_event(part_key, seq, part.checksum, errors)
            values = {
                **lease_params(self.ctx, lease, agent, now, "submit-part"),
                **{f"part_{k}": _jsonb(v) if k in _JSON else v for k, v in vars(part).items()},
                "parts_state": Jsonb(state),
                "payload": Jsonb(event_payload),
            }
            row = self._write(conn, part_sql(event), values, claim, item)
            if refused is not None:
                return PartOutcome(part_dict(part), state, rejected=refused), row
            required, missing = required_of(order_type, view, latest_of(parts))
            return PartOutcome(part_dict(part), state, required, missing), row

        outcome, row = self.pg.raw.run(tx)
        announce_written(row)
        return outcome

    # --- finalize ---------------------------------------------------------------------
    def finalize(self, lease: Lease, agent: AgentInfo, mode: str) -> ItemOutcome:
        """Assemble the latest validated part per key and submit it, as ``OrmStore.
        finalize`` does on SQLite."""
        now = self.ctx.clock()
        presented = as_presented(lease, agent)
        claim = claims.unmarked_claim()
        submitter = self.pg.submitter

        def tx(conn: Conn) -> tuple[dict[str, Any], JSON]:
            item, rows = self._lock_with(conn, lease.item_id, presented, now, VALIDATED_PARTS_OF)
            order_type = self.ctx.registry.get(item.order_type)
            latest = latest_of(_part(r) for r in rows)
            result, missing = assemble_parts(order_type, item_view(item), latest, mode)
            check_item(item.state, ItemState.SUBMITTED)
            check_order(OrderState.IN_PROGRESS, OrderState.SUBMITTED)
            payload = {"mode": mode, "missing": missing}
            values = submitter.submit_values(
                now, lease, item.order_id, agent, result, payload, "finalize"
            )
            return self._write(conn, FINALIZE_SQL, values, claim, item), result

        row, result = self.pg.raw.run(tx)
        return submitter.submitted(row, lease, agent, result, assembled=True)

    # --- the item locked and checked, the write committed -----------------------------
    def _lock(self, conn: Conn, item_id: uuid.UUID, lease: Holder, now: datetime) -> Item:
        """``BEGIN`` and the item locked (one round trip); the lease checked from the row
        (``check_row``, then the store's check): raises when refused."""
        cur = conn.cursor(row_factory=dict_row)
        with conn.pipeline():
            conn.execute("BEGIN")
            cur.execute(LOCK_ITEM, {"id": item_id}, prepare=True)
        return self._checked(cur.fetchone(), item_id, lease, now)

    def _lock_with(
        self, conn: Conn, item_id: uuid.UUID, lease: Holder, now: datetime, sql: str
    ) -> tuple[Item, list[dict[str, Any]]]:
        """``_lock``, and ``sql``'s rows read after the lock, in the same round trip."""
        cur = conn.cursor(row_factory=dict_row)
        rows = conn.cursor(row_factory=dict_row)
        with conn.pipeline():
            conn.execute("BEGIN")
            cur.execute(LOCK_ITEM, {"id": item_id}, prepare=True)
            rows.execute(sql, {"id": item_id}, prepare=True)
        item = self._checked(cur.fetchone(), item_id, lease, now)
        return item, rows.fetchall()

    def _checked(
        self, found: dict[str, Any] | None, item_id: uuid.UUID, lease: Holder, now: datetime
    ) -> Item:
        if found is None:
            raise NotFound(f"item {item_id} not found", details={"item_id": str(item_id)})
        item = item_of_row(found)
        if self.pg.store is None:
            check_row(item, lease, now)
        else:  # the row, then the store's lock: a lease the store lost is expired
            self.pg.store.check(item, lease, now)
        return item

    def _write(
        self,
        conn: Conn,
        sql: str,
        values: dict[str, Any],
        claim: claims.ActiveClaim | None,
        item: Item,
    ) -> dict[str, Any]:
        """Run ``sql`` in the transaction ``_lock`` opened (its item locked and checked)
        and commit, with the key's mark when there is one; its row."""
        cur = conn.cursor(row_factory=dict_row)
        if claim is None:
            with conn.pipeline():
                cur.execute(sql, values, prepare=True)
                conn.execute("COMMIT")
            row = cur.fetchone()
        else:
            cur.execute(sql, values, prepare=True)
            row = cur.fetchone()
            mark(conn, claim, item.order_id, item.id)
            conn.execute("COMMIT")
            marked(claim)
        assert row is not None  # the item is locked by this transaction, its lease checked
        return row

    def _store_holds(self, item_id: uuid.UUID, lease: Holder) -> bool:
        """Whether the store still holds the lease (always, without a store)."""
        store = self.pg.store
        if store is None:
            return True
        return store.holds(item_id, lease)


def _one(conn: Conn, sql: str, values: dict[str, Any]) -> dict[str, Any] | None:
    """One guarded statement in autocommit (its own transaction, one round trip): its
    row, or ``None`` when the guard matched nothing (and nothing was written)."""
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(sql, values, prepare=True)
    row: dict[str, Any] | None = cur.fetchone()
    return row


def _fail_values(
    base: dict[str, Any], end: Ending, item_id: uuid.UUID, attempts: int, max_attempts: int
) -> dict[str, Any]:
    """:data:`.sql.FAIL_SQL`'s parameters: what ``decide_ending`` decided from
    ``attempts`` and ``max_attempts`` (the guard's)."""
    fails_order = not end.requeued
    return {
        **base,
        "state": end.state,
        "available_at": end.available_at,
        "error": _jsonb(end.error),
        "payload": Jsonb(end.payload),
        "v_attempts": attempts,
        "v_max_attempts": max_attempts,
        "fails_order": fails_order,
        "fails_from": list(ORDER_FAILS_FROM),
        "order_error": Jsonb(end.order_error(item_id)) if fails_order else None,
        "order_payload": Jsonb(end.order_payload(item_id)) if fails_order else None,
    }


#: The JSON columns of a part.
_JSON = frozenset({"payload", "evidence", "errors"})


def _part(row: dict[str, Any]) -> Part:
    """A part row as the parts functions read it (attributes only), datetimes in UTC."""
    return cast(Part, SimpleNamespace(**utc_row(row)))


def _jsonb(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value)
