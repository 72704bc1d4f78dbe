"""PostgreSQL's submit (for :class:`.leases.PostgresStore`): the result validated against the
item view a lease carries, then one guarded statement; otherwise, or when the guard does not match,
the item locked and checked first, then the same statement unguarded. With a store, its
lock is deleted once the commit succeeded."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ...errors import ValidationFailed, WorkManagerError
from ...leases.base import LeaseLock
from ...services.context import ServiceContext
from ...services.inputs import as_presented
from ...services.views import ItemOutcome, item_dict, item_view
from ...state_machine import can_item, check_item, check_order
from ...states import ItemState, OrderState
from ...types import JSON, AgentInfo, ItemView, Lease
from .. import claims
from ..raw import Conn, RawPostgres
from ..store import end_hold, submitted_payload
from .guarded import lock_item, store_holds, write
from .sql import SUBMIT_SQL, submit_sql
from .values import announce_written, item_of_row, lease_params, marked, order_step, view_guard

log = logging.getLogger("workmanager.agent")


class PostgresSubmit:
    """``submit`` for :class:`.leases.PostgresStore`, on the same pool and lock store."""

    def __init__(self, ctx: ServiceContext, raw: RawPostgres, store: LeaseLock | None):
        self.ctx = ctx
        self.raw = raw
        self.store = store

    def submit(
        self,
        lease: Lease,
        agent: AgentInfo,
        result: JSON,
        payload: dict[str, Any],
        validate: Callable[[ItemView], None],
    ) -> ItemOutcome:
        """Check the lease, ``validate(view)``, then mark the item (and maybe its order)
        submitted, as ``OrmStore._mark_submitted`` does.

        A lease from this process's checkout carries the item as it was granted. The
        result is then validated against that view first, and the write goes out in one
        round trip (one statement in autocommit), guarded on the lease being current
        *and* on the row still matching the view (input, state, attempts, progress,
        result — a caller may have changed its copy): the hooks saw what a fresh read
        would have shown; with an idempotency key, the same statement marks it. When the
        guard does not match (a refused lease, a row that moved on since, such as after a
        heartbeat, a key taken over), or the result fails validation or
        cannot be stored, the two-round-trip path decides: it locks and reads the row,
        checks the lease first as everywhere, and says why (the hooks run again only if
        the row changed since).
        """
        view = lease.item
        refused: ValidationFailed | None = None
        if (
            view is not None
            and view.id == lease.item_id
            and store_holds(self.store, lease.item_id, as_presented(lease, agent))
        ):
            try:
                validate(view)
            except ValidationFailed as exc:
                refused = exc  # the lease is checked before the result: decided below
            except WorkManagerError:
                pass  # likewise, and the hooks say it again below
            else:
                try:
                    done = self.raw.run(
                        lambda conn: self._submit_at_once(conn, lease, view, agent, result, payload)
                    )
                except ValidationFailed:
                    done = None  # unstorable: but a refused lease is said first, below
                if done is not None:
                    return done

        def validate_fresh(fresh: ItemView) -> None:
            # The result was already refused against this very view: say so again rather
            # than run the hooks twice.
            if refused is not None and fresh == view:
                raise refused
            validate(fresh)

        return self.raw.run(
            lambda conn: self._submit(conn, lease, agent, result, payload, validate_fresh)
        )

    def _submit_at_once(
        self,
        conn: Conn,
        lease: Lease,
        view: ItemView,
        agent: AgentInfo,
        result: JSON,
        payload: dict[str, Any],
    ) -> ItemOutcome | None:
        if not can_item(view.state, ItemState.SUBMITTED):  # the view is of an ended lease
            return None  # (an HTTP request's read): the locked path checks the lease first
        check_order(OrderState.IN_PROGRESS, OrderState.SUBMITTED)
        claim = claims.unmarked_claim()
        values = {
            **self.submit_values(self.ctx.clock(), lease, lease.order_id, agent, result, payload),
            **view_guard(view),
            **claims.claim_params(claim),
        }
        cur = conn.cursor(row_factory=dict_row)
        sql = submit_sql(guarded=True, keyed=claim is not None)
        cur.execute(sql, values, prepare=True)  # autocommit: one round trip
        row = cur.fetchone()
        if row is None:  # the lease was refused, the row moved on since the checkout, or
            return None  # the key was taken over: the two-round-trip path says which
        marked(claim)
        return self.submitted(row, lease, agent, result)

    def _submit(
        self,
        conn: Conn,
        lease: Lease,
        agent: AgentInfo,
        result: JSON,
        payload: dict[str, Any],
        validate: Callable[[ItemView], None],
    ) -> ItemOutcome:
        now = self.ctx.clock()
        item = lock_item(conn, self.store, lease.item_id, as_presented(lease, agent), now)
        validate(item_view(item))
        check_item(item.state, ItemState.SUBMITTED)
        check_order(OrderState.IN_PROGRESS, OrderState.SUBMITTED)
        values = self.submit_values(now, lease, item.order_id, agent, result, payload)
        row = write(conn, SUBMIT_SQL, values, claims.unmarked_claim(), item)
        return self.submitted(row, lease, agent, result)

    def submit_values(
        self,
        now: datetime,
        lease: Lease,
        order_id: uuid.UUID,
        agent: AgentInfo,
        result: JSON,
        payload: dict[str, Any],
        action: str = "submit",
    ) -> dict[str, Any]:
        """The submit statements' parameters (finalize's too: ``action``)."""
        event_payload = submitted_payload(agent.id, payload)
        return {
            **lease_params(self.ctx, lease, agent, now, action),
            "order": order_id,
            "result": Jsonb(result),
            "payload": Jsonb(event_payload),
        }

    def submitted(
        self,
        row: dict[str, Any],
        lease: Lease,
        agent: AgentInfo,
        result: JSON,
        *,
        assembled: bool = False,
    ) -> ItemOutcome:
        """The outcome of a committed submit (``row``: the item as written, with its
        order's state); with a store, its lock is deleted now. The result is the one
        submitted, as the ORM store returns it (not its jsonb round trip, whose keys
        are reordered); ``assembled``: finalize's, the assembled result too."""
        order_state, became = order_step(row)
        announce_written(row)
        results = {"result": result, **({"assembled_result": result} if assembled else {})}
        item = item_of_row({**row, **results})
        outcome = ItemOutcome(item_dict(item), order_state, became)
        return end_hold(self.store, lease, outcome, as_presented(lease, agent))
