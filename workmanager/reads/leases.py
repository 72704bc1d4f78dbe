"""Which held leases an operator picks (:class:`LeaseSelector`), and reading them
unlocked: the sweep and lease administration (:mod:`workmanager.services.lease_admin`)
act on what these select."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Select, func, select

from ..db.models import Event, Item
from ..db.predicates import given, held
from ..db.store import Held
from ..errors import InvalidQuery
from ..states import ItemState

if TYPE_CHECKING:
    from ..services.context import ServiceContext


@dataclass(frozen=True)
class LeaseSelector:
    """Which held leases to act on; the fields narrow each other (AND)."""

    agent_id: str | None = None
    order_id: uuid.UUID | None = None
    order_type: str | None = None
    older_than: timedelta | None = None
    all: bool = False
    item_id: uuid.UUID | None = None
    #: only the lease of this fencing token (a page's action on the lease it showed)
    fence: int | None = None
    #: only expired leases: past the row's expiry, or, with a lock store, gone from it
    #: (the store is asked about every selected lease: a heartbeat may extend only the
    #: lock, and a lost key is a lease gone before the row's expiry)
    expired: bool = False

    def empty(self) -> bool:
        named = (self.agent_id, self.order_id, self.order_type, self.older_than, self.item_id)
        return not self.all and not self.expired and all(v is None for v in named)

    def require(self) -> None:
        """Refuse an empty selector: acting on every lease must be asked for with ``all``."""
        if self.empty():
            raise InvalidQuery(
                "no lease selector: name an agent, an order, an order type or an age "
                "(older than), or select all leases explicitly",
                details={"selectors": ["agent", "order", "type", "older_than", "expired", "all"]},
            )

    def where(self, now: datetime, lock_store: bool = False) -> list[ColumnElement[bool]]:
        """The rows selected (``lock_store``: the lock store, not the row's expiry, says
        which leases are expired, asked by :func:`~workmanager.db.store.dead_or_alive`)."""
        conds = [
            held(),
            *given(
                (Item.leased_by_agent_id, self.agent_id),
                (Item.order_id, self.order_id),
                (Item.order_type, self.order_type),
                (Item.id, self.item_id),
                (Item.lease_token, self.fence),
            ),
        ]
        if self.older_than is not None:
            conds.append(_granted_at() <= now - self.older_than)
        if self.expired and not lock_store:
            conds.append(Item.lease_expires_at <= now)
        return conds


def _granted_at() -> Any:
    """When the item's current lease was granted: its latest ``leased`` event."""
    return (
        select(func.max(Event.created_at))
        .where(Event.item_id == Item.id, Event.event == ItemState.LEASED.value)
        .correlate(Item)
        .scalar_subquery()
    )


def held_leases(ctx: ServiceContext, stmt: Select[Any]) -> list[Held]:
    """The held leases ``stmt`` (a select of items) reads; no lock, nothing written."""
    with ctx.db.transaction() as s:
        return [Held.of(item) for item in s.scalars(stmt)]


def fence_of(ctx: ServiceContext, item_id: uuid.UUID) -> int | None:
    """The fencing token of the item's lease, ``None`` when it is not held: what a page
    showing the lease puts in its forms (:attr:`LeaseSelector.fence`)."""
    leases = held_leases(ctx, select(Item).where(Item.id == item_id, held()))
    return leases[0].lease_token if leases else None
