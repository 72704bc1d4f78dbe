"""Development helpers: seed orders of a type, wipe every row (SPEC §9 ``dev``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete

from ..db.models import Base
from ..errors import ValidationFailed
from ..types import JSON, Actor
from .context import ServiceContext
from .orders import OrderService

MAX_SEED = 100_000


class DevTools:
    def __init__(self, ctx: ServiceContext, orders: OrderService) -> None:
        self.ctx = ctx
        self.orders = orders

    def seed(
        self,
        type: str,
        count: int,
        payload: JSON | None = None,
        priority: int = 0,
        progress: Callable[[int], None] | None = None,
    ) -> list[uuid.UUID]:
        """Propose ``count`` orders of ``type`` with ``payload`` (validated like any other),
        each marked ``meta.seed = n``. ``progress`` is called after each order."""
        if not 1 <= count <= MAX_SEED:
            raise ValidationFailed.at("count", f"must be 1..{MAX_SEED}", "range")
        actor = Actor("user", "dev-seed")
        ids = []
        for n in range(count):
            proposal = self.orders.propose(
                type, dict(payload or {}), priority=priority, meta={"seed": n}, requested_by=actor
            )
            ids.append(uuid.UUID(proposal.order["id"]))
            if progress is not None:
                progress(n + 1)
        return ids

    def reset(self) -> dict[str, Any]:
        """Delete every row of every workmanager table (the schema stays). Returns the rows
        deleted per table."""
        deleted: dict[str, int] = {}
        with self.ctx.db.transaction() as s:
            for table in reversed(Base.metadata.sorted_tables):
                result = s.execute(delete(table))
                deleted[table.name] = int(getattr(result, "rowcount", 0) or 0)
        return deleted
