"""What upstream's feature tests write straight into their database (``WorkOrder::create``
with a state, ``created_at``, ``meta`` or ``requested_by_type``; ``$item->update([...])``),
done here the same way: on the PostgreSQL database the server under test uses, after the
order was proposed through the server itself."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from tests.api.conftest import truncate_work_tables
from workmanager.db.models import Item, Order, utcnow
from workmanager.db.session import Database


class Seeder:
    def __init__(self, db_url: str) -> None:
        self.url = db_url
        self.db = Database(db_url)

    def reset(self) -> None:
        """An empty queue (upstream's RefreshDatabase), API tokens kept."""
        truncate_work_tables(self.url)

    def adjust(
        self,
        order_id: str,
        *,
        age: timedelta | None = None,
        item_state: str | None = None,
        attempts: int | None = None,
        **order_fields: Any,
    ) -> None:
        """Set an order's columns (and its items' ``created_at``, ``state``, ``attempts``)."""
        oid = uuid.UUID(order_id)
        items: dict[str, Any] = {}
        if age is not None:
            order_fields["created_at"] = items["created_at"] = utcnow() - age
        if item_state is not None:
            items["state"] = item_state
        if attempts is not None:
            items["attempts"] = attempts
        with self.db.engine.begin() as conn:
            if order_fields:
                conn.execute(update(Order).where(Order.id == oid).values(**order_fields))
            if items:
                conn.execute(update(Item).where(Item.order_id == oid).values(**items))

    def close(self) -> None:
        self.db.dispose()
