"""The operations of SPEC §6 as one surface, for the HTTP API and the MCP server alike.

Each method checks the caller's scope, parses ids (one that is not a UUID is a 404),
rebuilds the lease an agent presents, calls one service and returns ``(status, body)``.
The adapters only translate their transport to and from these calls.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from ..container import WorkManager
from ..db.request_store import build_request_store
from ..errors import NoItemsAvailable, NotFound, Unavailable, UnknownOrderType, ValidationFailed
from ..lease_tokens import NO_TOKEN_FENCE, Holder
from ..reads.leases import LeaseSelector
from ..reads.listing import OrderListing
from ..registry import untold
from ..services.inputs import checked_wait
from ..services.lease_admin import LeaseAdmin
from ..services.tokens import (
    checkout_tenant,
    item_visible,
    proposal_tenant,
    require_item,
    require_order,
)
from ..states import OrderState
from ..types import JSON, Actor, Lease, as_id
from .callers import Caller
from .middleware import STOPPING
from .no_items import sees_types, unknown_type
from .shapes import finalize_answer, heartbeat_dict, lease_dict, part_answer, submit_answer

Answer = tuple[int, dict[str, Any]]
#: Order states after which an approved order's apply has finished, one way or the other.
SETTLED = frozenset({OrderState.APPLIED, OrderState.COMPLETED, OrderState.FAILED})


def parse_token(value: str | int | None) -> str:
    """The lease token as presented: required, and opaque (``<fence>.<secret>``; one that
    is not well formed is simply not the current one, a 409 ``lease_conflict``)."""
    if value is None or value == "":
        raise ValidationFailed.at("lease_token", "the lease token is required", "required")
    return value if isinstance(value, str) else str(value)


@dataclass(frozen=True)
class CurrentLease(Lease):
    """A lease acted on without its token (``WORK_MANAGER_LEASE_TOKEN_REQUIRED=false``):
    the checks compare the holder as the row recorded it when the request was read, so a
    lease granted anew since then is still refused."""

    proof: Holder | None = None

    @property
    def holder(self) -> Holder:
        return self.proof or Holder(self.agent_id, NO_TOKEN_FENCE, None)


@dataclass(frozen=True)
class CheckoutFilters:
    type: str | None = None
    min_priority: int | None = None
    tenant_id: str | None = None


class Operations:
    """propose · list · get · checkout · heartbeat · submit · parts · finalize · release ·
    fail · approve · reject · retry · logs · release_lease · extend_lease."""

    def __init__(self, wm: WorkManager) -> None:
        self.wm = wm
        self.listing = OrderListing(wm.ctx)
        #: the item row a presented lease is rebuilt from (one statement)
        self.requests = build_request_store(wm.db)
        #: waiting approvals hold a server thread each: at most this many at once
        self._waiters = threading.BoundedSemaphore(wm.settings.approve_wait_max_waiters)

    # --- orders -----------------------------------------------------------------------
    def propose(
        self,
        caller: Caller,
        type: str,
        payload: JSON,
        meta: JSON | None = None,
        priority: int = 0,
        dedupe_key: str | None = None,
        tenant_id: str | None = None,
    ) -> Answer:
        caller.principal.require("propose")
        tenant = proposal_tenant(caller.principal.tenant_id, tenant_id)
        try:
            proposal = self.wm.orders.propose(
                type,
                payload,
                priority=priority,
                meta=meta,
                dedupe_key=dedupe_key,
                requested_by=Actor("agent", caller.agent.id),
                agent=caller.agent,
                tenant_id=tenant,
            )
        except UnknownOrderType as exc:
            if sees_types(caller.principal):
                raise
            raise untold(exc) from None
        if proposal.created:  # upstream's items_count beside it
            return 201, {"order": proposal.order, "items_count": proposal.items_count}
        order = proposal.order
        if not caller.principal.allows("view"):  # a guessed key must not read the order
            order = {"id": order["id"], "state": order["state"]}
        return 200, {"order": order}

    def list_orders(
        self, caller: Caller, params: Iterable[tuple[str, str]], size: int | None = None
    ) -> Answer:
        caller.principal.require("view")
        return 200, self.listing.list(params, size, tenant=caller.principal.tenant_id)

    # --- ids, through the caller's tenant (services/tokens.py) -------------------------
    def order_id(self, caller: Caller, order_id: str | uuid.UUID) -> uuid.UUID:
        """A path's order id, parsed, and (for a token bound to a tenant) in its tenant:
        another tenant's order is a 404, as an unknown one."""
        oid = as_id(order_id, "order")
        require_order(self.wm.db, oid, caller.principal.tenant_id)
        return oid

    def item_id(self, caller: Caller, item_id: str | uuid.UUID) -> uuid.UUID:
        """:meth:`order_id` for an item."""
        iid = as_id(item_id, "item")
        require_item(self.wm.db, iid, caller.principal.tenant_id)
        return iid

    def get_order(self, caller: Caller, order_id: str) -> Answer:
        caller.principal.require("view")
        return 200, {"order": self.wm.queries.order(self.order_id(caller, order_id))}

    @staticmethod
    def approve_request(wait: Any) -> dict[str, Any]:
        """What an approval's idempotency key fingerprints: its ``wait`` (a query parameter
        over HTTP, an argument over MCP), so the key sent again with another ``wait`` is
        ``idempotency_key_reused``, not the other call's answer replayed; none, or 0, is
        no wait (the fingerprint of an approval without one, as before)."""
        return {"wait": wait} if wait else {}

    def approve(self, caller: Caller, order_id: str, wait: float | None = None) -> Answer:
        caller.principal.require("approve")
        oid = self.order_id(caller, order_id)
        wait = checked_wait(wait)
        if not wait:
            return 202, {"order": self._approve(caller, oid)}
        # A place among the waiters first: a request refused for want of one approved nothing.
        if not self._waiters.acquire(blocking=False):
            limit = self.wm.settings.approve_wait_max_waiters
            raise Unavailable(
                f"{limit} approvals are already waiting (WORK_MANAGER_APPROVE_WAIT_MAX_WAITERS);"
                " try again later, or approve without wait and poll the order",
                details={"max_waiters": limit},
            )
        try:
            order = self._approve(caller, oid)
            return self._wait(oid, wait, order)
        finally:
            self._waiters.release()

    def _approve(self, caller: Caller, order_id: uuid.UUID) -> dict[str, Any]:
        return self.wm.orders.approve(order_id, self._actor(caller), agent=caller.agent)

    def _wait(self, order_id: uuid.UUID, wait: float, order: dict[str, Any]) -> Answer:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            order = self.wm.queries.order(order_id, events=20)
            if order["state"] in SETTLED:
                return 200, {"order": order, "diff": order.get("diff")}
            if STOPPING.wait(0.05):
                break
        return 202, {"order": order}

    def reject(
        self, caller: Caller, order_id: str, errors: list[JSON], allow_rework: bool = False
    ) -> Answer:
        caller.principal.require("reject")
        order = self.wm.orders.reject(
            self.order_id(caller, order_id),
            errors,
            self._actor(caller),
            allow_rework=allow_rework,
            agent=caller.agent,
        )
        return 200, {"order": order}

    def retry(self, caller: Caller, order_id: str) -> Answer:
        caller.principal.require("approve")
        return 200, {
            "order": self.wm.orders.retry(self.order_id(caller, order_id), self._actor(caller))
        }

    # --- operator lease actions (the console's item page): end now, or push out ---------
    def release_lease(self, caller: Caller, item_id: str, fence: int | None = None) -> Answer:
        admin, selector = self._lease_action(caller, item_id, fence)
        return 200, admin.release(selector).to_dict()

    def extend_lease(
        self, caller: Caller, item_id: str, seconds: int, fence: int | None = None
    ) -> Answer:
        admin, selector = self._lease_action(caller, item_id, fence)
        return 200, admin.extend(selector, seconds).to_dict()

    def _lease_action(
        self, caller: Caller, item_id: str, fence: int | None
    ) -> tuple[LeaseAdmin, LeaseSelector]:
        """``admin`` checked; the item's lease selected, of ``fence`` (the fencing token of
        the lease the operator saw) when given. An unknown item is 404, not "no live lease"."""
        caller.principal.require("admin")
        item = self.item_id(caller, item_id)
        self.wm.queries.item(item)  # NotFound
        admin = LeaseAdmin(self.wm.ctx, self._actor(caller))
        return admin, LeaseSelector(item_id=item, fence=fence)

    @staticmethod
    def _actor(caller: Caller) -> Actor:
        return Actor("user", caller.principal.name)

    # --- leases -----------------------------------------------------------------------
    def checkout(
        self, caller: Caller, filters: CheckoutFilters, order_id: str | None = None
    ) -> Answer:
        caller.principal.require("checkout")
        oid = self.order_id(caller, order_id) if order_id is not None else None
        # A bound token's checkout is narrowed to its tenant; asked for another, it finds
        # nothing (the answer of an empty queue, revealing nothing).
        tenant, possible = checkout_tenant(caller.principal.tenant_id, filters.tenant_id)
        lease = None
        if possible:
            lease = self.wm.agent.checkout(
                caller.agent,
                order_id=oid,
                type=filters.type,
                min_priority=filters.min_priority,
                tenant_id=tenant,
            )
        if lease is None:
            which = "no item matching filters" if filters != CheckoutFilters() else "no item"
            said = {}
            if sees_types(caller.principal):
                said = unknown_type(self.wm, filters.type, oid)
            raise NoItemsAvailable(f"{which} is available to lease", **said)
        return 200, {"item": lease_dict(lease)}

    def lease(self, caller: Caller, item_id: str, token: str | int | None) -> Lease:
        """The lease an agent presents: the item, its token and the caller's agent id.

        Without a token, when ``WORK_MANAGER_LEASE_TOKEN_REQUIRED=false`` (upstream agents
        send none), the caller's current lease: the row's fence and secret hash if the
        caller is its holder, else a holder that every check refuses (409). The one place
        this rule lives."""
        iid = as_id(item_id, "item")
        settings = self.wm.settings
        without = (token is None or token == "") and not settings.lease_token_required
        presented = "" if without else parse_token(token)
        read = caller.read  # the row read with the key's claim, if any
        row = read if read is not None and read.item.id == iid else self.requests.lease_row(iid)
        if row is None or not item_visible(row.tenant_id, caller.principal.tenant_id):
            raise NotFound(f"item {iid} not found", details={"item_id": str(iid)})
        if without:
            agent = caller.agent.id
            held = row.leased_by_agent_id is not None and row.leased_by_agent_id == agent
            proof = Holder(agent, row.lease_token, row.lease_secret_hash) if held else None
            return CurrentLease(
                iid,
                row.order_id,
                agent,
                presented,
                self.wm.ctx.clock(),
                settings.advised_heartbeat_seconds,
                proof=proof,
            )
        lease = Lease(
            iid,
            row.order_id,
            caller.agent.id,
            presented,
            self.wm.ctx.clock(),
            settings.advised_heartbeat_seconds,
            row.item,
        )
        if (row.lease_token, row.leased_by_agent_id) != (lease.fence, lease.agent_id):
            # not the row's holder: no snapshot, so no call is decided by the lock store
            # alone (a lock-only heartbeat): a lock restored from an older copy of Redis
            # held an ended lease's fence, and its beats were answered 200 while the
            # row's holder was refused
            return replace(lease, item=None)
        return lease

    def heartbeat(
        self,
        caller: Caller,
        item_id: str,
        token: str | int | None,
        progress: float | None = None,
        checkpoint: JSON | None = None,
    ) -> Answer:
        caller.principal.require("checkout")
        lease = self.lease(caller, item_id, token)
        renewed = self.wm.agent.heartbeat(lease, progress, checkpoint, agent=caller.agent)
        return 200, heartbeat_dict(renewed)

    def release(self, caller: Caller, item_id: str, token: str | int | None) -> Answer:
        caller.principal.require("checkout")
        outcome = self.wm.agent.release(self.lease(caller, item_id, token), agent=caller.agent)
        return 200, {"item": outcome.item}

    # --- results ----------------------------------------------------------------------
    def submit(
        self,
        caller: Caller,
        item_id: str,
        token: str | int | None,
        result: JSON,
        evidence: Any = None,
        notes: str | None = None,
    ) -> Answer:
        caller.principal.require("submit")
        lease = self.lease(caller, item_id, token)
        outcome = self.wm.agent.submit(lease, result, evidence, notes, agent=caller.agent)
        return 202, submit_answer(outcome)

    def submit_part(
        self,
        caller: Caller,
        item_id: str,
        token: str | int | None,
        part_key: str,
        payload: JSON,
        seq: int | None = None,
        evidence: Any = None,
        notes: str | None = None,
    ) -> Answer:
        caller.principal.require("submit")
        lease = self.lease(caller, item_id, token)
        outcome = self.wm.agent.submit_part(
            lease, part_key, payload, seq, evidence, notes, agent=caller.agent
        )
        return 202, part_answer(outcome)

    def list_parts(
        self,
        caller: Caller,
        item_id: str,
        part_key: str | None = None,
        status: str | None = None,
    ) -> Answer:
        caller.principal.require("view")
        return 200, self.wm.queries.parts(self.item_id(caller, item_id), part_key, status)

    def finalize(
        self, caller: Caller, item_id: str, token: str | int | None, mode: str = "strict"
    ) -> Answer:
        caller.principal.require("submit")
        lease = self.lease(caller, item_id, token)
        return 202, finalize_answer(self.wm.agent.finalize(lease, mode, agent=caller.agent))

    def fail(
        self,
        caller: Caller,
        item_id: str,
        token: str | int | None,
        error: JSON,
        retryable: bool = True,
    ) -> Answer:
        caller.principal.require("submit")
        lease = self.lease(caller, item_id, token)
        outcome = self.wm.agent.fail(lease, error, retryable, agent=caller.agent)
        return 200, {"item": outcome.item}

    def logs(
        self,
        caller: Caller,
        item_id: str | None,
        limit: int = 100,
        order_id: str | None = None,
    ) -> Answer:
        """An item's events and its order's order-level ones, or (``order_id`` alone, as
        upstream's ``work.logs``) every event of the order; newest first."""
        caller.principal.require("view")
        queries = self.wm.queries
        if item_id is not None:
            return 200, {"events": queries.item_logs(self.item_id(caller, item_id), limit)}
        if order_id is None:
            raise ValidationFailed.at("item_id", "item_id or order_id is required", "required")
        return 200, {"events": queries.order_logs(self.order_id(caller, order_id), limit)}
