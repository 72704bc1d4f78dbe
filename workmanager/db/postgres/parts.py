"""PostgreSQL's submit_part and finalize (for :class:`.leases.PostgresStore`).

The rules are the services' (one home each): a part's verdict, slot limit, stored columns
and parts state are :mod:`workmanager.services.parts`' functions, finalize's result is
``parts.assemble_parts``. Python decides from the item row; the statements of :mod:`.sql`
only write what was decided.

* **submit_part** — the part judged (``parts.judge_part``) against the item view the
  lease carries, then one statement in autocommit (:func:`.sql.part_sql`): the item
  locked, guarded on the lease being current and on the row being the view judged
  against, then ``workmanager_put_part`` (migration 0011) places it in its slot under
  the parts limit and sums up the parts state: on PostgreSQL those parts rules are SQL's
  (SQLite's are :mod:`workmanager.services.parts`'), decided under the item's lock. With
  an idempotency key, the statement marks it when the part is stored (a part refused for
  room writes nothing and leaves it unmarked). When the guard does not match (a refused
  lease, a row that moved on, a key taken over), or with a lock the store no longer holds:
  the item locked and checked first (:mod:`.guarded`), the part judged against it, then
  the same statement and ``COMMIT``. A rejected part is stored and committed, then
  refused.
* **finalize** — the item and its latest validated part per key read (one statement,
  no lock: :data:`.sql.FINALIZE_READ`), the lease checked from that row, the parts
  assembled, then one guarded statement (:func:`.sql.finalize_sql`: a submit of the
  assembled result and its order's step, guarded on the lease and on the row unwritten
  since the read; with a key, marking it). When the guard does not match: the item
  locked and its parts read in one round trip, the lease checked, the parts assembled,
  then :data:`.sql.FINALIZE_SQL` with ``COMMIT``.

Event listeners get each statement's event rows after its commit; with a lock store, its
hold is dropped after the commit of a finalize (by the submit it makes).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ...errors import LeaseConflict, ValidationFailed
from ...order_types import Part as PartValue
from ...services.inputs import as_presented
from ...services.parts import (
    assemble_parts,
    check_room,
    judge_part,
    part_event,
    part_fields,
    rejection_errors,
    required_of,
)
from ...services.views import ItemOutcome, PartOutcome, item_view, part_dict
from ...state_machine import check_item, check_order
from ...states import ItemState, OrderState
from ...types import JSON, AgentInfo, ItemView, Lease
from .. import claims
from ..raw import Conn, utc_row
from ..store import ItemRow, PartRow
from .guarded import checked, lock_item, lock_item_with, one, store_holds, write
from .sql import FINALIZE_READ, FINALIZE_SQL, LATEST_PARTS, finalize_sql, part_sql
from .values import announce_written, jsonb_or_none, lease_params, mark, marked, view_guard

if TYPE_CHECKING:
    from .leases import PostgresStore


class PostgresParts:
    """submit_part and finalize of a :class:`.leases.PostgresStore` (its pool, lock store
    and submit)."""

    def __init__(self, store: PostgresStore) -> None:
        self.pg = store
        self.ctx = store.ctx

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
        base = {
            **lease_params(self.ctx, lease, agent, now, "submit-part"),
            "max_parts": self.ctx.settings.max_parts_per_item,
        }

        def judged(view: ItemView, marks: claims.ActiveClaim | None = None) -> _Judged:
            order_type = self.ctx.registry.get(view.order_type)
            refused = judge_part(order_type, view, part_key, payload, seq, evidence)
            errors = rejection_errors(refused)
            fields = part_fields(payload, evidence, notes, agent.id, errors)
            event, event_payload = part_event(part_key, seq, fields["checksum"], errors)
            values = {
                **base,
                **view_guard(view),
                "order": view.order_id,
                "part_id": uuid.uuid4(),
                "part_key": part_key,
                "part_seq": seq,
                "part_status": fields["status"],
                "part_payload": Jsonb(payload),
                "part_evidence": jsonb_or_none(fields["evidence"]),
                "part_notes": notes,
                "part_errors": jsonb_or_none(fields["errors"]),
                "part_checksum": fields["checksum"],
                "part_agent": agent.id,
                "part_created_at": fields["created_at"],
                "payload": Jsonb(event_payload),
            }
            values |= claims.claim_params(marks)  # ``marks``: the statement marks its key
            sql = part_sql(event, marks is not None)
            return _Judged(view, order_type, refused, fields, sql, values)

        view = lease.item
        row: dict[str, Any] | None = None
        if (
            view is not None
            and view.id == lease.item_id
            and store_holds(self.pg.store, lease.item_id, presented)
        ):
            verdict = judged(view, marks=claim)
            row = self._at_once(verdict, claim)
        if row is None:

            def locked(conn: Conn) -> tuple[_Judged, dict[str, Any]]:
                item = lock_item(conn, self.pg.store, lease.item_id, presented, now)
                fresh = judged(item_view(item))
                return fresh, self._write_part(conn, fresh, claim, item)

            verdict, row = self.pg.raw.run(locked)
        if not row["current"]:  # locked and checked: the guard and check_row are one rule
            raise LeaseConflict(
                "the lease changed while it was checked; try again",
                details={"item_id": str(lease.item_id)},
            )
        if row["part_id"] is None:  # no room for a new slot: nothing was written
            check_room(self.ctx.settings, row["parts"])
            raise AssertionError("the parts limit refused a part with room for it")
        announce_written(row)
        part = _part(
            {
                "id": row["part_id"],
                "item_id": lease.item_id,
                "part_key": part_key,
                "seq": seq,
                "seq_slot": -1 if seq is None else seq,
                **verdict.fields,
            }
        )
        state = dict(sorted(row["parts_state"].items()))  # by key, as parts.summarize
        if verdict.refused is not None:
            return PartOutcome(part_dict(part), state, rejected=verdict.refused)
        required, missing = required_of(verdict.order_type, verdict.view, row["validated_keys"])
        return PartOutcome(part_dict(part), state, required, missing)

    def _at_once(self, verdict: _Judged, claim: claims.ActiveClaim | None) -> dict[str, Any] | None:
        """The part's one statement in autocommit: its row, or ``None`` when its guard did
        not match (a refused lease, the row moved on since the view, the key taken over)
        or the value cannot be stored (a refused lease is said first, by the locked path)."""
        try:
            row = self.pg.raw.run(lambda conn: one(conn, verdict.sql, verdict.values))
        except ValidationFailed:
            return None
        if row is None or not row["current"]:
            return None
        if row["part_id"] is not None:
            marked(claim)  # stored: the statement marked the key (none when no room)
        return row

    def _write_part(
        self, conn: Conn, verdict: _Judged, claim: claims.ActiveClaim | None, item: ItemRow
    ) -> dict[str, Any]:
        """The part's statement in the transaction ``_lock`` opened, and ``COMMIT`` (a
        part refused for room wrote nothing; the key is then left unmarked)."""
        cur = conn.cursor(row_factory=dict_row)
        if claim is None:
            with conn.pipeline():
                cur.execute(verdict.sql, verdict.values, prepare=True)
                conn.execute("COMMIT")
            row = cur.fetchone()
        else:
            cur.execute(verdict.sql, verdict.values, prepare=True)
            row = cur.fetchone()
            if row is None or row["part_id"] is None:
                conn.execute("ROLLBACK")
            else:
                mark(conn, claim, item.order_id, item.id)
                conn.execute("COMMIT")
                marked(claim)
        assert row is not None  # the item is locked by this transaction, its lease checked
        return row

    # --- finalize ---------------------------------------------------------------------
    def finalize(self, lease: Lease, agent: AgentInfo, mode: str) -> ItemOutcome:
        """Assemble the latest validated part per key and submit it, as ``OrmStore.
        finalize`` does on SQLite."""
        now = self.ctx.clock()
        presented = as_presented(lease, agent)
        claim = claims.unmarked_claim()
        submitter = self.pg.submitter

        def assembled(item: ItemRow, parts: list[dict[str, Any]]) -> tuple[JSON, dict[str, Any]]:
            order_type = self.ctx.registry.get(item.order_type)
            latest = {  # LATEST_PARTS: one per key
                p["part_key"]: PartValue(p["part_key"], p["seq"], p["payload"]) for p in parts
            }
            result, missing = assemble_parts(order_type, item_view(item), latest, mode)
            check_item(item.state, ItemState.SUBMITTED)
            check_order(OrderState.IN_PROGRESS, OrderState.SUBMITTED)
            payload = {"mode": mode, "missing": missing}
            values = submitter.submit_values(
                now, lease, item.order_id, agent, result, payload, "finalize"
            )
            return result, values

        # read, assemble, then one guarded statement (marking the key, when there is one)
        found = self.pg.raw.run(lambda conn: one(conn, FINALIZE_READ, {"id": lease.item_id}))
        parts = [] if found is None else found.pop("parts")
        item = checked(self.pg.store, found, lease.item_id, presented, now)
        result, values = assembled(item, parts)
        values |= {**view_guard(item_view(item)), "v_updated_at": item.updated_at}
        values |= claims.claim_params(claim)
        sql = finalize_sql(keyed=claim is not None)
        try:
            row = self.pg.raw.run(lambda conn: one(conn, sql, values))
        except ValidationFailed:
            row = None  # unstorable: but a refused lease is said first, below
        if row is not None:
            marked(claim)
            return submitter.submitted(row, lease, agent, result, assembled=True)

        def tx(conn: Conn) -> tuple[dict[str, Any], JSON]:
            item, rows = lock_item_with(
                conn, self.pg.store, lease.item_id, presented, now, LATEST_PARTS
            )
            result, values = assembled(item, rows[0]["parts"])
            return write(conn, FINALIZE_SQL, values, claim, item), result

        row, result = self.pg.raw.run(tx)
        return submitter.submitted(row, lease, agent, result, assembled=True)


@dataclass(frozen=True)
class _Judged:
    """A part judged against ``view``: its verdict, columns, statement and parameters."""

    view: ItemView
    order_type: Any
    refused: ValidationFailed | None
    fields: dict[str, Any]
    sql: str
    values: dict[str, Any]


def _part(row: dict[str, Any]) -> PartRow:
    """A part row as the parts functions read it (attributes only), datetimes in UTC."""
    utc_row(row)
    return PartRow._make([row[name] for name in PartRow._fields])
