"""How an attempt that ended without a result ends the item: requeued with backoff, or
failed with its order when its attempts are spent (:func:`decide_ending`, the one rule
both stores write; :func:`requeue_or_fail`, the ORM's write of it).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from ..db.models import Item
from ..db.orm_steps import lock_order_ref, move_order_ref
from ..settings import Settings
from ..states import ItemState, OrderState
from ..types import Actor
from .transitions import clear_lease, move_item


def backoff(settings: Settings, attempt: int) -> float:
    """Seconds before a reclaimed item is leasable again: ``base·2^(attempt-1) + U(0, jitter)``."""
    base = settings.retry_backoff_seconds * 2.0 ** max(attempt - 1, 0)
    return float(base + random.uniform(0, settings.retry_jitter_seconds))


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


def requeue_or_fail(
    session: Session,
    settings: Settings,
    item: Item,
    actor: Actor,
    now: datetime,
    *,
    event: str,
    error: dict[str, Any] | None = None,
    retryable: bool = True,
) -> bool:
    """End a held lease as :func:`decide_ending` says: requeue the item with backoff, or
    fail it (and its order). Returns True when requeued."""
    clear_lease(item)
    end = decide_ending(
        settings, item.attempts, item.max_attempts, now, error=error, retryable=retryable
    )
    if end.available_at is not None:
        item.available_at = end.available_at
    if end.error is not None:
        item.error = end.error
    move_item(session, item, end.state, actor, event=event, payload=end.payload)
    if end.requeued:
        # The order stays as it is (SPEC §3.1: expiry and fail change only the item; only
        # a release by the holder sends the order back to queued).
        return True
    order = lock_order_ref(session, item.order_id)
    if order.state in ORDER_FAILS_FROM:
        move_order_ref(
            session,
            order,
            OrderState.FAILED,
            actor,
            now,
            payload=end.order_payload(item.id),
            last_error=end.order_error(item.id),
        )
    return False
