"""Producers and reviewers: propose (plan), approve, reject, retry, auto-approval."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from .. import tracing
from ..checks import can_approve
from ..db.models import Item, Order
from ..db.order_store import TAKEN_TRIES, OrderRow, build_order_store
from ..errors import (
    NotFound,
    NotReadyForApproval,
    TransientError,
    UnknownOrderType,
    ValidationFailed,
    WorkManagerError,
)
from ..jsonvalues import json_value
from ..order_types import OrderType
from ..registry import untold
from ..saying import logged
from ..state_machine import check_order
from ..states import OrderState
from ..types import JSON, Actor, AgentInfo, OrderView, as_id
from .context import ServiceContext
from .idempotency import IdempotencyService
from .inputs import checked_actor, checked_agent, reject_errors
from .proposals import (
    build_order,
    check_proposal,
    check_request,
    keyed_id,
    order_id_for,
    proposed_id,
    same_proposal,
)
from .refusals import (
    droppable,
    planning_lost,
    refusal_actor,
    refusal_tenant,
    refused_order,
    replaceable,
)
from .tokens import checked_tenant, order_tenant
from .transitions import refused, retry_target
from .views import order_dict

log = logging.getLogger("workmanager.orders")
PLANNING_AGAIN = "orders.create.redelivered"  #: the key note_redelivery marks


#: The error code of a person's rejection when they give none (the CLI's ``orders reject``
#: and the review console).
REVIEWER_REJECTION = "rejected_by_reviewer"


@dataclass(frozen=True)
class Proposal:
    """The order created (``created``, with its ``items_count``) or found by its dedupe
    key or id (the caller's only for the same type and payload; a caller without ``view``
    is shown its id and state alone: SPEC §13, "Dedupe keys")."""

    order: dict[str, Any]
    created: bool
    items_count: int | None = None


class OrderService:
    """Everything done to orders that is not an agent's lease work."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        #: The control plane's state changes, one path per database (db/store.py).
        self.store = build_order_store(ctx)

    # --- propose ----------------------------------------------------------------------
    @tracing.traced("workmanager.propose", tracing.propose_call)
    def propose(
        self,
        type: str,
        payload: JSON,
        *,
        priority: int = 0,
        meta: JSON | None = None,
        dedupe_key: str | None = None,
        requested_by: Actor | None = None,
        agent: AgentInfo | None = None,
        order_id: uuid.UUID | str | None = None,
        tenant_id: str | None = None,
    ) -> Proposal:
        """Validate, create and plan an order (in ``tenant_id``; services/tokens.py). A known
        ``dedupe_key`` (or ``order_id``, a UUID or its text) returns the existing order when
        it has the same type, payload and tenant; else :class:`DedupeKeyReused`."""
        order_id, agent = proposed_id(order_id), checked_agent(agent)
        who = checked_actor(requested_by, "requested_by")
        actor = who or (agent.actor if agent else Actor.system())
        try:
            order, items = self.planned(
                type, payload, priority, meta, dedupe_key, actor, order_id, tenant_id
            )
        except (UnknownOrderType, ValidationFailed):
            found = self._made_before(
                type, payload, dedupe_key, order_id, tenant_id,
                priority=priority, meta=meta, requested_by=actor,
            )  # fmt: skip
            if found is None:
                raise
            return Proposal(found, False)
        # a known id or dedupe key fails the insert (no read before it), then finds its order
        found = self._insert(order, items, actor, agent)
        # a refused proposal's record gives its id to the corrected one (each sender drops it)
        for _ in range(TAKEN_TRIES):
            if found is None or not replaceable(found, order.tenant_id):
                break
            self.store.drop_refused(order.id, droppable(order.tenant_id))
            found = self._insert(order, items, actor, agent)
        if found is not None:
            same_proposal(found, type, payload, dedupe_key, order.tenant_id)
            return Proposal(found, False)
        self.ctx.metrics.increment("orders_created_total", type=type, priority=priority)
        self.ctx.dispatcher.items_available(type, [i.id for i in items])
        return Proposal(order_dict(order), True, len(items))

    def planned(
        self,
        type: str,
        payload: JSON,
        priority: int = 0,
        meta: JSON | None = None,
        dedupe_key: str | None = None,
        actor: Actor | None = None,
        order_id: uuid.UUID | None = None,
        tenant_id: str | None = None,
    ) -> tuple[Order, list[Item]]:
        """What :meth:`propose` does before it stores anything: the proposal checked
        (``check_proposal``) and planned, or the refusal it would answer."""
        order_type = check_proposal(
            self.ctx.registry, type, payload, priority=priority, meta=meta,
            dedupe_key=dedupe_key, requested_by=actor,
            max_depth=self.ctx.settings.max_json_depth,
        )  # fmt: skip
        return build_order(
            self.ctx.settings, order_type, payload, priority=priority, meta=meta or {},
            dedupe_key=dedupe_key, actor=actor or Actor.system(), order_id=order_id,
            now=self.ctx.clock(), tenant_id=checked_tenant(tenant_id),
        )  # fmt: skip

    def _made_before(
        self, type: str, payload: Any, dedupe_key: Any, order_id: Any, tenant: Any, **rest: Any
    ) -> dict[str, Any] | None:
        """The order this very proposal made before its type changed (or went), which
        its type's checks now refuse (SPEC §4.3: a known key returns the existing order);
        ``None`` when the proposal is at fault whatever the type (its own refusal is the
        answer: ``rest``, its other fields, checked) or names no order of its own."""
        try:
            check_request(
                payload, dedupe_key=dedupe_key, max_depth=self.ctx.settings.max_json_depth, **rest
            )
            return self.repeated(type, payload, dedupe_key, tenant, order_id)
        except WorkManagerError:
            return None

    def _insert(
        self, order: Order, items: list[Item], actor: Actor, agent: AgentInfo | None
    ) -> dict[str, Any] | None:
        """Insert the proposal (the store's ``create_order``): ``None`` once created; when
        its id or dedupe key is already an order's, nothing is stored and that order (as
        :func:`order_dict`) is returned."""
        found = self.store.create_order(order, items, actor, agent)
        return None if found is None else order_dict(found)

    def repeated(
        self,
        type: str,
        payload: JSON,
        dedupe_key: str | None,
        tenant_id: str | None = None,
        order_id: uuid.UUID | None = None,
    ) -> dict[str, Any] | None:
        """The order :meth:`propose` would find for this proposal under ``dedupe_key`` (or
        ``order_id``): ``None`` when none (or a refused record it replaces); else
        :class:`DedupeKeyReused` for another proposal's (a producer's check before sending)."""
        key = dedupe_key if keyed_id(dedupe_key) else None  # None: what cannot be a key
        if not (order_id or key):
            return None
        row = self.store.find(order_id or order_id_for(key), key)
        found = None if row is None else order_dict(row)
        tenant = order_tenant(checked_tenant(tenant_id), payload)
        if found is None or replaceable(found, tenant):
            return None
        same_proposal(found, type, payload, dedupe_key, tenant)
        return found

    def refuse(
        self,
        error: WorkManagerError,
        type: str,
        payload: Any,
        *,
        order_id: uuid.UUID,
        **proposal: Any,
    ) -> dict[str, Any]:
        """Record a refused proposal (``proposal``: its ``priority``, ``meta``,
        ``requested_by``, ``tenant_id``) as a ``failed`` order under ``order_id``, the id
        its producer got (:func:`~.refusals.refused_order`), counted once in
        ``orders_refused_total``; an order already under the id is left and returned."""
        row, created = self._refusal(error, type, payload, order_id, **proposal)
        if created:  # not again for a redelivered message
            self.count_refused(type, error)
        return order_dict(row)

    def note_redelivery(
        self, order_id: uuid.UUID, type: str, payload: Any, **proposal: Any
    ) -> dict[str, Any] | None:
        """Before a create message delivered again plans: ``None`` to plan (the first
        redelivery, noted as a key of the system's own; or an order a run created), else
        the ``failed`` order of :func:`~.refusals.planning_lost` where it stops."""
        if IdempotencyService(self.ctx).mark(PLANNING_AGAIN, str(order_id)):
            return None
        row, created = self._refusal(planning_lost(), type, payload, order_id, **proposal)
        if not created:
            return None
        self.count_refused(type, planning_lost())
        return order_dict(row)

    def _refusal(
        self, error: WorkManagerError, type: str, payload: Any, order_id: uuid.UUID, **p: Any
    ) -> tuple[OrderRow, bool]:  # the store's refuse(): (the order, whether created)
        actor = refusal_actor(p.get("requested_by") or Actor.system())
        tenant = refusal_tenant(p.get("tenant_id"), payload)
        if tenant is not None and isinstance(error, UnknownOrderType):
            error = untold(error)  # its tenant's tokens read it: not the deployment's types
        order = refused_order(
            order_id, type, payload, p.get("priority", 0), p.get("meta"), actor, error,
            self.ctx.settings,
        )  # fmt: skip
        # The tenant it was proposed into, so a token of that tenant sees why it failed.
        order.tenant_id = tenant
        return self.store.refuse(order, actor)

    def count_refused(self, type: Any, error: WorkManagerError) -> None:
        """``orders_refused_total{type, reason}``; an unregistered type: ``other``."""
        label = type if isinstance(type, str) and type in self.ctx.registry else "other"
        self.ctx.metrics.increment("orders_refused_total", type=label, reason=error.code)

    @tracing.traced("workmanager.approve", tracing.order_call)
    def approve(
        self, order_id: uuid.UUID | str, actor: Actor, agent: AgentInfo | None = None
    ) -> dict[str, Any]:
        """``submitted → approved`` (the store's ``approve``, :meth:`_ready` deciding from
        the locked order); then the apply is dispatched."""
        order_id, agent, by = as_id(order_id, "order"), checked_agent(agent), checked_actor(actor)
        row = self.store.approve(order_id, self._plain_types(), self._ready, by, agent)
        assert row is not None, "_ready approves or raises"
        order = order_dict(row)
        self._approved(order_id, order)
        return order

    def _approved(self, order_id: uuid.UUID, order: dict[str, Any], announce: bool = True) -> None:
        """After the approval committed: metrics, then the apply (unless the caller
        chains it)."""
        self.ctx.metrics.increment("orders_approved_total", type=order["type"])
        waited = datetime.fromisoformat(order["last_transitioned_at"]) - datetime.fromisoformat(
            order["created_at"]
        )
        self.ctx.metrics.histogram(
            "order_time_to_approval_seconds", waited.total_seconds(), type=order["type"]
        )
        if announce:
            self.ctx.dispatcher.order_approved(order_id)

    def _check_ready(self, order: OrderView) -> None:
        """Refuse approval of the locked order (its view, with its items) when it is not
        ready: its type's ``can_approve`` refused, or items are still open (other states
        are refused by the state machine)."""
        if order.state == OrderState.SUBMITTED:
            if not can_approve(self.ctx.registry.get(order.type), order):
                raise NotReadyForApproval(
                    "the order type's can_approve check refused",
                    details={"order_id": str(order.id)},
                )
        elif order.state in (OrderState.QUEUED, OrderState.IN_PROGRESS):
            raise NotReadyForApproval(
                "not every item is submitted yet",
                details={"order_id": str(order.id), "state": order.state},
            )

    def _ready(self, order: OrderView) -> bool:
        """Approve the locked order (its view, with its items) by hand: refused when it is
        not ready (:meth:`_check_ready`) or not submitted."""
        self._check_ready(order)
        check_order(order.state, OrderState.APPROVED)
        return True

    def _auto_ready(self, order: OrderView) -> bool:
        """Whether to auto-approve the locked order (its view, with its items): False when
        there is nothing to auto-approve (it changed meanwhile, or its type is approved
        by hand); raises when the type refuses. Both stores' ``approve`` ask it."""
        if not (
            order.state == OrderState.SUBMITTED and self.ctx.registry.get(order.type).auto_approve
        ):
            return False
        self._check_ready(order)
        return True

    def _plain_types(self, auto: bool = False) -> list[str]:
        """Types whose approval asks nothing of the order but its state: the default
        ``can_approve`` (and, ``auto``, ``auto_approve``)."""
        return [
            t.type
            for t in self.ctx.registry
            if (t.auto_approve or not auto) and type(t).can_approve is OrderType.can_approve
        ]

    @tracing.traced("workmanager.check_auto_approval", tracing.order_call)
    def check_auto_approval(self, order_id: uuid.UUID | str, chained: bool = False) -> bool:
        """Approve (actor ``system``) when the type auto-approves and the order is ready.

        A refusal or error is logged and counted; the order stays ``submitted``, for a
        person (a :class:`TransientError` is raised for the task to retry instead). One
        transaction: the order is locked, its type asked, and approved in the same step.
        ``chained``: the caller runs apply itself next (the Celery chain
        ``check_auto_approval | apply``), so the approval is not announced."""
        order_id = as_id(order_id, "order")
        try:
            row = self.store.approve(
                order_id, self._plain_types(auto=True), self._auto_ready, Actor.system()
            )
        except TransientError:
            raise  # the database or lock store unreachable: the task retries, nothing refused
        except Exception as exc:  # logged and counted; a person reviews the order instead
            if isinstance(exc, NotFound) and exc.details.get("order_id") == str(order_id):
                log.warning("auto-approval of %s: no such order", order_id)
                return False  # nothing to refuse, and no order to hang an event on
            if isinstance(exc, UnknownOrderType):  # this process's mistake, not the order's
                log.error(
                    "auto-approval of %s not asked: %s; this process lacks the module in"
                    " WORK_MANAGER_ORDER_TYPES (maintenance asks again where it has it)",
                    order_id,
                    exc.message,
                )
                return False
            if not isinstance(exc, WorkManagerError):
                log.exception("auto-approval of %s raised", order_id)
                exc = WorkManagerError(str(exc))
            log.warning("auto-approval of %s refused: %s", order_id, logged(exc.message))
            self.store.record_event(  # maintenance will not ask again
                order_id,
                "auto_approval_refused",
                Actor.system(),
                {"code": exc.code, "message": exc.message},
            )
            self.ctx.metrics.increment(
                "auto_approval_refused_total", type=self._type_of(order_id), reason=exc.code
            )
            return False
        if row is None:
            return False
        self._approved(order_id, order_dict(row), announce=not chained)
        return True

    def _type_of(self, order_id: uuid.UUID) -> str:
        with self.ctx.db.transaction() as s:
            return str(s.scalar(select(Order.type).where(Order.id == order_id)) or "")

    # --- reject and retry -------------------------------------------------------------
    @tracing.traced("workmanager.reject", tracing.order_call)
    def reject(
        self,
        order_id: uuid.UUID | str,
        errors: list[JSON],
        actor: Actor,
        allow_rework: bool = False,
        agent: AgentInfo | None = None,
    ) -> dict[str, Any]:
        """``submitted → rejected`` (items and parts too); with rework, back to ``queued``."""
        errors, agent, by = reject_errors(errors), checked_agent(agent), checked_actor(actor)
        json_value(errors, "errors", self.ctx.settings.max_json_depth)
        change = self.store.reject(as_id(order_id, "order"), errors, by, allow_rework, agent)
        order = order_dict(refused(change, OrderState.REJECTED))
        self.ctx.metrics.increment("orders_rejected_total", type=order["type"])
        if change.items:
            self.ctx.dispatcher.items_available(order["type"], list(change.items))
        return order

    def retry(self, order_id: uuid.UUID | str, actor: Actor) -> dict[str, Any]:
        """A failed order goes back to work: its failed items to ``queued`` (error cleared).
        An order that failed in apply, with every item submitted, goes back to ``submitted``
        (:func:`retry_target` decides, from the locked order)."""
        order_id, by = as_id(order_id, "order"), checked_actor(actor)
        change = self.store.retry(order_id, retry_target, by)
        order = order_dict(change.order)
        if change.items:
            self.ctx.dispatcher.items_available(order["type"], list(change.items))
        if change.order.state == OrderState.SUBMITTED:
            self.ctx.dispatcher.order_submitted(order_id)
        return order
