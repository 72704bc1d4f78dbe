"""The demo's example data: an order type (``types``), payloads, and answers."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select

from ..container import WorkManager
from ..db.models import Order
from ..states import OrderState

COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Wonka"]


def payload(n: int) -> dict[str, object]:
    """The n-th demo order: a company and one or two questions (so one or two items)."""
    return {
        "company": f"{COMPANIES[n % len(COMPANIES)]} #{n}",
        "questions": ["overview", "funding"][: 1 + n % 2],
    }


def answer(item_input: dict[str, object]) -> dict[str, object]:
    """What the demo's agents "find out"."""
    return {
        "answer": f"{item_input['company']}: notes on {item_input['question']}",
        "confidence": 0.9,
    }


def existing(wm: WorkManager, order_ids: Sequence[uuid.UUID]) -> int:
    """How many of these orders the control worker has created."""
    with wm.db.transaction() as s:
        where = Order.id.in_(order_ids)
        return s.scalar(select(func.count()).select_from(Order).where(where)) or 0


def completed(wm: WorkManager, order_ids: Sequence[uuid.UUID]) -> int:
    """How many of these orders are completed."""
    with wm.db.transaction() as s:
        return (
            s.scalar(
                select(func.count())
                .select_from(Order)
                .where(Order.id.in_(order_ids), Order.state == OrderState.COMPLETED.value)
            )
            or 0
        )
