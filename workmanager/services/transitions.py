"""Checked state changes of orders and items; each writes exactly one event.

And how an attempt that ended without a result ends the item: requeued with backoff, or
failed with its order when its attempts are spent (:func:`decide_ending`, the one rule
both stores write; the ORM's write of it is ``db/orm_steps.requeue_or_fail``).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from ..db import pending
from ..db.models import EVENTS_TABLE, Item, Order, utcnow
from ..db.order_store import OrderChange, OrderRow
from ..errors import IllegalStateTransition
from ..settings import Settings
from ..settings_values import MAX_DURATION_SECONDS
from ..state_machine import check_item, check_order
from ..states import ItemState, OrderState
from ..types import Actor


def record_event(
    session: Session,
    order_id: Any,
    event: str,
    actor: Actor,
    *,
    item_id: Any = None,
    payload: dict[str, Any] | None = None,
    diff: dict[str, Any] | None = None,
    message: str | None = None,
) -> None:
    """Append one event to the audit log (written at commit, see :mod:`..db.pending`)."""
    pending.add(
        session,
        EVENTS_TABLE,
        {
            "order_id": order_id,
            "item_id": item_id,
            "event": event,
            "actor_type": actor.type,
            "actor_id": actor.id,
            "payload": payload,
            "diff": diff,
            "message": message,
            "created_at": utcnow(),
        },
    )


def move_order(
    session: Session,
    order: Order,
    to_state: str,
    actor: Actor,
    *,
    event: str | None = None,
    payload: dict[str, Any] | None = None,
    diff: dict[str, Any] | None = None,
    message: str | None = None,
    now: datetime | None = None,
) -> None:
    """Move ``order`` to ``to_state`` (checked) and record the event (default: the state)."""
    check_order(order.state, to_state)
    order.state = OrderState(to_state).value
    order.last_transitioned_at = now or utcnow()
    record_event(
        session, order.id, event or to_state, actor, payload=payload, diff=diff, message=message
    )


def move_item(
    session: Session,
    item: Item,
    to_state: str,
    actor: Actor,
    *,
    event: str | None = None,
    payload: dict[str, Any] | None = None,
    message: str | None = None,
) -> None:
    """Move ``item`` to ``to_state`` (checked) and record the event (default: the state)."""
    check_item(item.state, to_state)
    item.state = ItemState(to_state).value
    item.updated_at = utcnow()
    record_event(
        session,
        item.order_id,
        event or to_state,
        actor,
        item_id=item.id,
        payload=payload,
        message=message,
    )


def clear_lease(item: Item) -> None:
    """Forget the holder; the token stays, so the next grant is still strictly greater."""
    item.leased_by_agent_id = None
    item.lease_expires_at = None


def rework_item(session: Session, item: Item, actor: Actor) -> None:
    """A rejected item goes back to work: result, attempts, backoff and parts state reset."""
    item.result = item.assembled_result = None
    item.attempts, item.available_at, item.parts_state = 0, None, None
    move_item(session, item, ItemState.QUEUED, actor, event="rework")


def backoff(settings: Settings, attempt: int) -> float:
    """Seconds before a reclaimed item is leasable again: ``base·2^(attempt-1) + U(0, jitter)``,
    at most :data:`~workmanager.settings_values.MAX_DURATION_SECONDS` (a high
    ``max_attempts`` doubles past what a date can hold)."""
    base = doubled(settings.retry_backoff_seconds, attempt)
    return min(float(base + random.uniform(0, settings.retry_jitter_seconds)), MAX_DURATION_SECONDS)


def doubled(base: float, attempt: int) -> float:
    """``base·2^(attempt-1)``, capped at ten years (the exponent too: ``2.0**1100``
    overflows a float)."""
    return float(min(base * 2.0 ** min(max(attempt - 1, 0), 64), MAX_DURATION_SECONDS))


#: The order states an item's failure fails its order from (any other state stays).
ORDER_FAILS_FROM = (OrderState.QUEUED.value, OrderState.IN_PROGRESS.value)


@dataclass(frozen=True)
class Ending:
    """How a held lease that failed (or expired) ends, decided from the item's attempts
    alone (:func:`decide_ending`), so every store writes the same thing.

    ``state``: ``queued`` (requeued, leasable again at ``available_at``) or ``failed``;
    ``error``: the item's error after (``None``: left as it was); ``payload``: the item
    event's; ``reason``: what a failed item fails its order with (``None`` when requeued).
    """

    state: str
    available_at: datetime | None
    error: dict[str, Any] | None
    payload: dict[str, Any]
    reason: dict[str, Any] | None

    @property
    def requeued(self) -> bool:
        return self.reason is None

    def order_payload(self, item_id: uuid.UUID) -> dict[str, Any]:
        """The payload of the order's ``failed`` event."""
        return {"item_id": str(item_id), "error": self.reason}

    def order_error(self, item_id: uuid.UUID) -> dict[str, Any]:
        """The order's ``last_error`` when it fails with the item."""
        assert self.reason is not None
        return {"item_id": str(item_id), **self.reason}


def decide_ending(
    settings: Settings,
    attempts: int,
    max_attempts: int,
    now: datetime,
    *,
    error: dict[str, Any] | None = None,
    retryable: bool = True,
) -> Ending:
    """Requeue with backoff, or fail: the item's attempts were counted at grant time;
    when they are spent (or ``retryable`` is false) the item fails (and its order, when
    in :data:`ORDER_FAILS_FROM`)."""
    counted: dict[str, Any] = {"attempts": attempts, "max_attempts": max_attempts}
    if retryable and attempts < max_attempts:
        return Ending(
            ItemState.QUEUED.value,
            now + timedelta(seconds=backoff(settings, attempts)),
            error,
            {**counted, "outcome": "requeued", "error": error},
            None,
        )
    reason = error or {
        "code": "max_attempts_exceeded",
        "message": f"attempts spent ({attempts}/{max_attempts})",
    }
    return Ending(
        ItemState.FAILED.value,
        None,
        reason,
        {**counted, "outcome": "failed", "error": reason},
        reason,
    )


def refused(change: OrderChange, to_state: str) -> OrderRow:
    """The order an admin change wrote, or the error named from the order as it is."""
    if change.done:
        return change.order
    check_order(change.order.state, to_state)  # raises: the state does not allow it
    raise IllegalStateTransition(  # allowed now, but not when the change looked
        kind="order", from_state=change.order.state, to_state=to_state
    )


def retry_target(order: OrderRow, item_states: list[str]) -> str:
    """Where retry sends the locked failed order (``item_states``: its items'): back to
    ``submitted`` when every item is submitted (it failed in apply), else ``queued``.
    Refuses any other state, and a refused proposal's record."""
    if order.state != OrderState.FAILED:  # retry is failed -> queued, nothing else
        dead = "; `orders clone` proposes it again" if order.state == "dead_lettered" else ""
        raise IllegalStateTransition(
            f"only a failed order can be retried; this one is {order.state}{dead}",
            kind="order",
            from_state=order.state,
            to_state=OrderState.QUEUED,
        )
    from .refusals import is_refused  # here: refusals -> proposals -> parts -> this module

    if is_refused({"state": order.state, "last_error": order.last_error}):
        raise IllegalStateTransition(
            "a refused proposal has nothing to retry: propose it again, corrected"
            " (under the same dedupe key it takes this id)",
            kind="order",
            from_state=order.state,
            to_state=OrderState.QUEUED,
        )
    if item_states and set(item_states) <= {ItemState.SUBMITTED.value}:
        return OrderState.SUBMITTED.value
    return OrderState.QUEUED.value
