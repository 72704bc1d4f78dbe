"""The agent API module (SPEC §4.2): the one path every agent takes.

HTTP routes, MCP tools and Celery consumer agents all call these methods. Each call runs
in one transaction (lease check, state change, event, provenance), then reports metrics
and announces follow-up work once the transaction has committed.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import uuid
from datetime import timedelta
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import events, tracing
from ..checks import Evidence, check, guarded
from ..db.models import Item, Order
from ..errors import NotFound, ValidationFailed
from ..jsonvalues import json_value
from ..lease_tokens import compose, new_secret
from ..leases.base import CheckoutQuery, Grant
from ..ratelimit.factory import build_limiter
from ..ratelimit.limiter import RateLimiter
from ..ratelimit.rules import CHECKOUT
from ..states import ItemState
from ..types import JSON, AgentInfo, ItemView, Lease
from .context import ServiceContext
from .endings import fail_tx, release_tx
from .hotpath import hot_path
from .inputs import (
    agent_of,
    as_presented,
    check_error,
    check_finalize_mode,
    check_progress,
    checkout_query,
)
from .lifecycle import (
    lock_item,
    lock_order_ref,
    maybe_submit_order,
    start_order,
)
from .outcomes import ItemOutcome, PartOutcome
from .parts import add_part, assemble, check_part_input
from .transitions import clear_lease, move_item, record_event
from .views import item_dict, item_view

log = logging.getLogger("workmanager.agent")


class AgentAPI:
    """checkout · heartbeat · submit · submit_part · finalize · release · fail."""

    def __init__(self, ctx: ServiceContext, limits: RateLimiter | None = None) -> None:
        self.ctx = ctx
        self.hot = hot_path(ctx)
        self.limits = limits or build_limiter(ctx.settings, ctx.db)

    # --- checkout ---------------------------------------------------------------------
    @tracing.traced("workmanager.checkout", tracing.checkout_call)
    def checkout(
        self,
        agent: AgentInfo | str,
        order_id: uuid.UUID | str | None = None,
        type: str | None = None,
        min_priority: int | None = None,
        tenant_id: str | None = None,
        item_id: uuid.UUID | str | None = None,
    ) -> Lease | None:
        """Lease the next eligible item (of one order, or globally), or return ``None``.

        ``item_id`` narrows the checkout to that one item (how Celery consumer agents take
        the item their message names). Over a checkout rate limit: ``RateLimited``."""
        info = agent_of(agent)
        query = checkout_query(order_id, type, min_priority, tenant_id, item_id)
        if self.limits.limits(CHECKOUT):  # off: not even a call
            self._take_checkout_token(info, query)
        if self.hot is not None:  # PostgreSQL: its one path
            lease = self.hot.checkout(info, query)
            self._acquired(lease, info)
            return lease
        granted: list[Grant] = []
        try:
            lease = self.ctx.db.run(lambda s: self._checkout_tx(s, info, query, granted))
        except BaseException:
            for grant in granted:
                self.ctx.leases.abandoned(grant, info.id)
            raise
        self._acquired(lease, info)
        return lease

    def _take_checkout_token(self, agent: AgentInfo, query: CheckoutQuery) -> None:
        item_id = query.item_id
        item_tenant = None if item_id is None else (lambda: self._item_tenant(item_id))
        self.limits.checkout(agent.id, query.tenant_id, item_tenant)

    def _item_tenant(self, item_id: uuid.UUID) -> str | None:
        with self.ctx.db.transaction() as s:
            return s.scalar(select(Item.tenant_id).where(Item.id == item_id))

    def _acquired(self, lease: Lease | None, agent: AgentInfo) -> None:
        if lease is not None and lease.item is not None:
            self.ctx.metrics.increment(
                "leases_acquired_total",
                type=lease.item.order_type,
                agent_id=agent,
                tenant=lease.item.tenant_id,
            )

    def _checkout_tx(
        self, s: Session, agent: AgentInfo, query: CheckoutQuery, granted: list[Grant]
    ) -> Lease | None:
        now = self.ctx.clock()
        while granted:  # an earlier run of this transaction rolled back (deadlock retry)
            self.ctx.leases.abandoned(granted.pop(), agent.id)
        secret, secret_hash = new_secret()
        grant = self.ctx.leases.checkout(
            s, agent.id, query, now, self.ctx.settings.lease_ttl_seconds, secret_hash
        )
        if grant is None:
            if query.order_id is not None and s.get(Order, query.order_id) is None:
                raise NotFound(
                    f"order {query.order_id} not found", details={"order_id": str(query.order_id)}
                )
            return None
        granted.append(grant)
        item = grant.item
        record_event(
            s,
            item.order_id,
            ItemState.LEASED,
            agent.actor,
            item_id=item.id,
            payload={"agent_id": agent.id, "attempt": item.attempts},
        )
        start_order(s, item.order_id, agent.actor, now)
        self.ctx.provenance.record(s, "checkout", agent, order_id=item.order_id, item_id=item.id)
        return Lease(
            item.id,
            item.order_id,
            agent.id,
            compose(grant.token, secret),
            grant.expires_at,
            self.ctx.settings.heartbeat_every_seconds,
            item_view(item),
        )

    # --- heartbeat --------------------------------------------------------------------
    @tracing.traced("workmanager.heartbeat", tracing.lease_call)
    def heartbeat(
        self,
        lease: Lease,
        progress: float | None = None,
        checkpoint: JSON | None = None,
        agent: AgentInfo | None = None,
    ) -> Lease:
        """Extend the lease to now + TTL; optionally record progress and a checkpoint."""
        check_progress(progress, checkpoint)
        json_value(checkpoint, "checkpoint", self.ctx.settings.max_json_depth)
        info = agent_of(agent, lease)
        if self.hot is not None:  # PostgreSQL: its one path
            renewed = self.hot.heartbeat(lease, info, progress, checkpoint)
        else:
            renewed = self.ctx.db.run(
                lambda s: self._heartbeat_tx(s, lease, progress, checkpoint, info)
            )
        if events.listening():  # heartbeats write no event row: announced here, committed
            beat = {"progress": progress, "lease_expires_at": renewed.expires_at.isoformat()}
            events.announce(
                events.Event(
                    events.ITEM_HEARTBEAT,
                    "heartbeat",
                    lease.order_id,
                    lease.item_id,
                    "agent",
                    info.id,
                    beat,
                    self.ctx.clock(),
                )
            )
        return renewed

    def _heartbeat_tx(
        self,
        s: Session,
        lease: Lease,
        progress: float | None,
        checkpoint: JSON | None,
        agent: AgentInfo,
    ) -> Lease:
        now = self.ctx.clock()
        ttl = self.ctx.settings.lease_ttl_seconds
        item = lock_item(s, lease.item_id)
        self.ctx.leases.extend(item, as_presented(lease, agent), now, ttl)
        item.lease_expires_at = now + timedelta(seconds=ttl)
        item.last_heartbeat_at = now
        if progress is not None or checkpoint is not None:
            item.progress = {
                "progress": progress,
                # a copy: the lease this returns must not change when the caller's does
                "checkpoint": copy.deepcopy(checkpoint),
                "at": now.isoformat(),
                "attempt": item.attempts,
            }
        if item.state == ItemState.LEASED:
            move_item(s, item, ItemState.IN_PROGRESS, agent.actor)
        self.ctx.provenance.record(s, "heartbeat", agent, order_id=item.order_id, item_id=item.id)
        # The item as it now is, so a submit with this lease can skip re-reading it.
        return dataclasses.replace(lease, expires_at=item.lease_expires_at, item=item_view(item))

    # --- submit -----------------------------------------------------------------------
    @tracing.traced("workmanager.submit", tracing.lease_call)
    def submit(
        self,
        lease: Lease,
        result: JSON,
        evidence: Any = None,
        notes: str | None = None,
        agent: AgentInfo | None = None,
    ) -> ItemOutcome:
        """Submit the whole result; validated by the type's schema and hook. Ends the lease."""
        if not isinstance(result, dict):
            raise ValidationFailed(
                [{"path": "result", "message": "must be an object", "validator": "type"}]
            )
        depth = self.ctx.settings.max_json_depth
        json_value({"result": result, "evidence": evidence, "notes": notes}, "$", depth)
        info = agent_of(agent, lease)
        if self.hot is not None:  # PostgreSQL: its one path
            submitter = self.hot.submitter
            outcome = submitter.submit(
                lease,
                info,
                result,
                {"evidence": evidence, "notes": notes},
                lambda view: self._validate_result(view, result, evidence),
            )
            self._after_submit(lease, info, outcome, release=not submitter.ends_store_lease)
            return outcome
        outcome = self.ctx.db.run(
            lambda s: self._submit_tx(s, lease, result, evidence, notes, info)
        )
        self._after_submit(lease, info, outcome)
        return outcome

    def _submit_tx(
        self,
        s: Session,
        lease: Lease,
        result: JSON,
        evidence: Any,
        notes: str | None,
        agent: AgentInfo,
    ) -> ItemOutcome:
        now = self.ctx.clock()
        item = lock_item(s, lease.item_id)
        self.ctx.leases.check(item, as_presented(lease, agent), now)
        self._validate_result(item_view(item), result, evidence)
        return self._mark_submitted(
            s, item, agent, now, "submit", {"evidence": evidence, "notes": notes}, result
        )

    def _validate_result(self, view: ItemView, result: JSON, evidence: Any) -> None:
        """The result and its evidence, through the one rule (``checks.check``): both
        schemas, then ``validate_submission`` when they passed. The hot path calls this too."""
        order_type = self.ctx.registry.get(view.order_type)
        schema = guarded(lambda: order_type.result_schema(view), "result")
        proof = Evidence(
            evidence,
            guarded(lambda: order_type.evidence_schema(view), "evidence"),
            order_type.requires_evidence,
        )
        check(schema, result, "result", lambda: order_type.validate_submission(view, result), proof)

    def _mark_submitted(
        self,
        s: Session,
        item: Item,
        agent: AgentInfo,
        now: Any,
        action: str,
        payload: dict[str, Any],
        result: JSON,
        *,
        assembled: bool = False,
    ) -> ItemOutcome:
        # Lock the order before touching the item: the lock's SELECT would otherwise flush
        # the item once for the result and again for the state.
        order = lock_order_ref(s, item.order_id)
        item.result = result
        if assembled:
            item.assembled_result = result
        clear_lease(item)
        move_item(
            s,
            item,
            ItemState.SUBMITTED,
            agent.actor,
            payload={"agent_id": agent.id, **{k: v for k, v in payload.items() if v}},
        )
        became = maybe_submit_order(s, order, agent.actor, now)
        self.ctx.provenance.record(s, action, agent, order_id=item.order_id, item_id=item.id)
        return ItemOutcome(item_dict(item), order.state, became)

    def _after_submit(
        self, lease: Lease, agent: AgentInfo, outcome: ItemOutcome, *, release: bool = True
    ) -> None:
        if release:
            self._released(lease, outcome.item)
        self.ctx.metrics.increment(
            "items_submitted_total",
            type=outcome.item["order_type"],
            agent_id=agent,
            tenant=outcome.item.get("tenant_id"),
        )
        if outcome.order_submitted:
            self.ctx.dispatcher.order_submitted(lease.order_id)

    def _released(self, lease: Lease, item: dict[str, Any]) -> None:
        # The lease ended in the database; drop the backend's hold (best effort: an
        # orphaned store lock only delays nothing, since the row is no longer queued).
        stub = cast(Item, SimpleNamespace(id=lease.item_id, order_type=item["order_type"]))
        with contextlib.suppress(Exception):
            self.ctx.leases.released(stub, lease.holder)

    # --- parts ------------------------------------------------------------------------
    @tracing.traced("workmanager.submit_part", tracing.lease_call)
    def submit_part(
        self,
        lease: Lease,
        part_key: str,
        payload: JSON,
        seq: int | None = None,
        evidence: Any = None,
        notes: str | None = None,
        agent: AgentInfo | None = None,
    ) -> PartOutcome:
        """Store one part in its (key, seq) slot; the lease stays held. A part that fails
        validation is stored ``rejected`` with its errors (event ``part_rejected``), then
        its ``ValidationFailed`` is raised."""
        check_part_input(self.ctx.settings, part_key, payload, seq)
        json_value(
            {"part_key": part_key, "payload": payload, "evidence": evidence, "notes": notes},
            "$",
            self.ctx.settings.max_json_depth,
        )
        info = agent_of(agent, lease)
        outcome = self.ctx.db.run(
            lambda s: self._part_tx(s, lease, part_key, payload, seq, evidence, notes, info)
        )
        if outcome.rejected is not None:
            raise outcome.rejected
        return outcome

    def _part_tx(
        self,
        s: Session,
        lease: Lease,
        part_key: str,
        payload: JSON,
        seq: int | None,
        evidence: Any,
        notes: str | None,
        agent: AgentInfo,
    ) -> PartOutcome:
        now = self.ctx.clock()
        item = lock_item(s, lease.item_id)
        self.ctx.leases.check(item, as_presented(lease, agent), now)
        order_type = self.ctx.registry.get(item.order_type)
        outcome = add_part(
            s, self.ctx.settings, order_type, item, agent, part_key, payload, seq, evidence, notes
        )
        self.ctx.provenance.record(s, "submit-part", agent, order_id=item.order_id, item_id=item.id)
        return outcome

    @tracing.traced("workmanager.finalize", tracing.lease_call)
    def finalize(
        self, lease: Lease, mode: str = "strict", agent: AgentInfo | None = None
    ) -> ItemOutcome:
        """Assemble the latest validated part per key into the result and submit it."""
        check_finalize_mode(mode)
        info = agent_of(agent, lease)
        outcome = self.ctx.db.run(lambda s: self._finalize_tx(s, lease, mode, info))
        self._after_submit(lease, info, outcome)
        return outcome

    def _finalize_tx(self, s: Session, lease: Lease, mode: str, agent: AgentInfo) -> ItemOutcome:
        now = self.ctx.clock()
        item = lock_item(s, lease.item_id)
        self.ctx.leases.check(item, as_presented(lease, agent), now)
        result, missing = assemble(s, self.ctx.registry.get(item.order_type), item, mode)
        return self._mark_submitted(
            s,
            item,
            agent,
            now,
            "finalize",
            {"mode": mode, "missing": missing},
            result,
            assembled=True,
        )

    # --- release and fail -------------------------------------------------------------
    @tracing.traced("workmanager.release", tracing.lease_call)
    def release(self, lease: Lease, agent: AgentInfo | None = None) -> ItemOutcome:
        """Give the item back to the queue now; the attempt it cost is given back too."""
        info = agent_of(agent, lease)
        if self.hot is not None:  # PostgreSQL: its one path
            outcome = self.hot.release(lease, info)
        else:
            outcome = self.ctx.db.run(lambda s: release_tx(self.ctx, s, lease, info))
        self._released(lease, outcome.item)
        self.ctx.metrics.increment(
            "leases_released_total",
            type=outcome.item["order_type"],
            agent_id=info,
            tenant=outcome.item.get("tenant_id"),
        )
        self.ctx.dispatcher.items_available(outcome.item["order_type"], [lease.item_id])
        return outcome

    @tracing.traced("workmanager.fail", tracing.lease_call)
    def fail(
        self, lease: Lease, error: JSON, retryable: bool = True, agent: AgentInfo | None = None
    ) -> ItemOutcome:
        """Report that the work failed: requeued with backoff, or failed when not retryable
        or out of attempts."""
        check_error(error)
        json_value(error, "error", self.ctx.settings.max_json_depth)
        info = agent_of(agent, lease)
        outcome = self.ctx.db.run(lambda s: fail_tx(self.ctx, s, lease, error, retryable, info))
        self._released(lease, outcome.item)
        if outcome.item["state"] == ItemState.QUEUED:
            self.ctx.dispatcher.items_available(outcome.item["order_type"], [lease.item_id])
        else:
            self.ctx.metrics.increment(
                "items_failed_total", type=outcome.item["order_type"], error_code=error["code"]
            )
        return outcome
