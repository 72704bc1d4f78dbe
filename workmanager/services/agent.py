"""The agent API module (SPEC §4.2): the one path every agent takes.

HTTP routes, MCP tools and Celery consumer agents all call these methods. Each call runs
in one transaction (lease check, state change, event, provenance), then reports metrics
and announces follow-up work once the transaction has committed.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sqlalchemy import select

from .. import deployment, display, events, tracing
from ..checks import Evidence, check_result, guarded
from ..db import predicates
from ..db.models import Item, Order
from ..db.store import Store, build_store
from ..errors import ValidationFailed
from ..jsonvalues import json_fields, json_value
from ..leases.base import CheckoutQuery
from ..ratelimit.factory import build_limiter
from ..ratelimit.limiter import RateLimiter
from ..ratelimit.rules import CHECKOUT
from ..states import ItemState
from ..types import JSON, AgentInfo, ItemView, Lease
from .context import ServiceContext
from .inputs import (
    agent_of,
    check_error,
    check_finalize_mode,
    check_progress,
    checkout_query,
    lease_caller,
    notes_problem,
    require,
)
from .parts import check_part_input
from .views import ItemOutcome, PartOutcome, iso

log = logging.getLogger("workmanager.agent")


class AgentAPI:
    """checkout · heartbeat · submit · submit_part · finalize · release · fail."""

    def __init__(self, ctx: ServiceContext, limits: RateLimiter | None = None) -> None:
        self.ctx = ctx
        #: the one write path of this database (db/store.py)
        self.store: Store = build_store(ctx)
        self.limits = limits or build_limiter(ctx.settings, ctx.db)
        #: this process's settings and clock compared with the deployment's before it
        #: grants, renews or ends a lease, or takes a result under one (at start, then every
        #: minute): a process that differs does none of it, 503 naming the variable or the
        #: skew (with the wrong lease backend it judged a live Redis lease expired by its
        #: lagging row, and left the locks of those it ended)
        self.in_step = deployment.InStep(ctx.db, ctx.settings)

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
        query = self._known(checkout_query(order_id, type, min_priority, tenant_id, item_id))
        self.in_step()
        # a limit off: not even a call
        if self.limits.limits(CHECKOUT) and not self._take_checkout_token(info, query):
            return None
        lease = self.store.grant(info, query)
        self._acquired(lease, info)
        return lease

    def _known(self, query: CheckoutQuery) -> CheckoutQuery:
        """Only items of types this process knows: one of another (a type removed from the
        code, a server of other types) would be leased, then every submit of it refused
        and the agent's ``fail`` spend its attempts. A type asked for by name and not
        known matches nothing (``no_items_available``, as upstream's filters); an item
        asked for by id is leased as it is (a consumer agent's type was checked at its
        start)."""
        if query.item_id is not None or (
            query.type is not None and query.type in self.ctx.registry
        ):
            return query
        return replace(query, known=self.ctx.registry.known())

    def _take_checkout_token(self, agent: AgentInfo, query: CheckoutQuery) -> bool:
        """Take the checkout's token (``ratelimit/rules.py`` says whose), or raise
        ``RateLimited``. ``False``, nothing taken: the one item the checkout names is not
        leasable now (a consumer's message for an item leased or done already, a
        redelivery, a re-announce), which the agent did not ask for and no grant would
        lease."""
        tenant: Callable[[], str | None] | None = None
        if query.item_id is not None:
            with self.ctx.db.transaction() as s:
                leasable = predicates.leasable(self.ctx.clock())
                named = s.execute(
                    select(Item.tenant_id, leasable).where(Item.id == query.item_id)
                ).first()
            if named is None or not named[1]:
                return False
            item_tenant: str | None = named[0]
            tenant = lambda: item_tenant  # noqa: E731
        elif query.order_id is not None:
            order_id = query.order_id
            tenant = lambda: self._order_tenant(order_id)  # noqa: E731
        self.limits.checkout(agent.id, query.tenant_id, tenant)
        return True

    def _order_tenant(self, order_id: uuid.UUID) -> str | None:
        with self.ctx.db.transaction() as s:
            return s.scalar(select(Order.tenant_id).where(Order.id == order_id))

    def _acquired(self, lease: Lease | None, agent: AgentInfo) -> None:
        if lease is not None and lease.item is not None:
            self.ctx.metrics.increment(
                "leases_acquired_total",
                type=lease.item.order_type,
                agent_id=agent,
                tenant=lease.item.tenant_id,
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
        if checkpoint is not None:
            json_value(checkpoint, "checkpoint", self.ctx.settings.max_json_depth)
        info = lease_caller(agent, lease)
        self.in_step()  # a clock off would write an expiry already past, or too far
        renewed = self.store.heartbeat(lease, info, progress, checkpoint)
        if events.listening():  # heartbeats write no event row: announced here, committed
            beat = {"progress": progress, "lease_expires_at": iso(renewed.expires_at)}
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
            raise ValidationFailed.at("result", "must be an object", "type")
        if (wrong := notes_problem(notes)) is not None:  # as HTTP, MCP and parts say
            raise ValidationFailed([wrong])
        depth = self.ctx.settings.max_json_depth
        json_fields({"result": result, "evidence": evidence, "notes": notes}, depth)
        info = lease_caller(agent, lease)
        self.in_step()  # every call that judges a lease (a process that differs judges wrong)
        outcome = self.store.submit(
            lease,
            info,
            result,
            {"evidence": evidence, "notes": notes},
            lambda view: self._validate_result(view, result, evidence),
        )
        self._after_submit(lease, info, outcome)
        return outcome

    def _validate_result(self, view: ItemView, result: JSON, evidence: Any) -> None:
        """The result and its evidence, through the one rule (``checks.check``): both
        schemas, then ``validate_submission`` when they passed, against the item as the store
        locked it."""
        order_type = self.ctx.registry.get(view.order_type)
        proof = Evidence(
            evidence,
            guarded(lambda: order_type.evidence_schema(view), "evidence", "evidence_schema()"),
            order_type.requires_evidence,
        )
        check_result(order_type, view, result, "result", proof)

    def _after_submit(self, lease: Lease, agent: AgentInfo, outcome: ItemOutcome) -> None:
        self.ctx.metrics.increment(
            "items_submitted_total",
            type=outcome.item["order_type"],
            agent_id=agent,
            tenant=outcome.item.get("tenant_id"),
        )
        if outcome.order_submitted:
            self.ctx.dispatcher.order_submitted(lease.order_id)

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
        check_part_input(self.ctx.settings, part_key, payload, seq, evidence, notes)
        info = lease_caller(agent, lease)
        self.in_step()
        outcome = self.store.submit_part(lease, info, part_key, payload, seq, evidence, notes)
        if outcome.rejected is not None:
            raise outcome.rejected
        return outcome

    @tracing.traced("workmanager.finalize", tracing.lease_call)
    def finalize(
        self, lease: Lease, mode: str = "strict", agent: AgentInfo | None = None
    ) -> ItemOutcome:
        """Assemble the latest validated part per key into the result and submit it."""
        check_finalize_mode(mode)
        info = lease_caller(agent, lease)
        self.in_step()
        outcome = self.store.finalize(lease, info, mode)
        self._after_submit(lease, info, outcome)
        return outcome

    # --- release and fail -------------------------------------------------------------
    @tracing.traced("workmanager.release", tracing.lease_call)
    def release(self, lease: Lease, agent: AgentInfo | None = None) -> ItemOutcome:
        """Give the item back to the queue now; the attempt it cost is given back too."""
        info = lease_caller(agent, lease)
        self.in_step()
        outcome = self.store.release(lease, info)
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
        require(isinstance(retryable, bool), "retryable", "must be true or false")
        json_value(error, "error", self.ctx.settings.max_json_depth)
        info = lease_caller(agent, lease)
        self.in_step()
        outcome = self.store.fail(lease, info, error, retryable)
        if outcome.item["state"] == ItemState.QUEUED:
            self.ctx.dispatcher.items_available(outcome.item["order_type"], [lease.item_id])
        else:
            item = outcome.item
            self.ctx.metrics.increment(
                "items_failed_total", type=item["order_type"], error_code=error["code"]
            )
            log.warning(  # work that ended for good: the operator's line, with its ids
                "item %s of order %s failed for good [%s] after attempt %s of %s; order %s",
                item["id"],
                item["order_id"],
                display.shown(error["code"]),
                item["attempts"],
                item["max_attempts"],
                outcome.order_state,
            )
        return outcome
