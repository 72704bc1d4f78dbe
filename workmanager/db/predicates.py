"""Item-state predicates rendered with the states inline, and :func:`count_rows`.

PostgreSQL uses a partial index (``WHERE state = 'queued'``, ``WHERE state IN ('leased',
'in_progress')``) only when the query's predicate names the same constants; a bound
parameter does not match in a generic plan, which psycopg's prepared statements get after
a few executions, and the checkout or sweep then scans every row.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, literal, or_, select
from sqlalchemy.orm import Session

from ..states import HELD_ITEM_STATES, LEASABLE_ORDER_STATES, OPEN_ORDER_STATES, ItemState
from .models import Item, Order


def count_rows(s: Session, model: Any, *where: ColumnElement[bool]) -> int:
    """How many rows of ``model`` match ``where`` (every condition)."""
    return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def old_audit(model: Any, cutoff: Any) -> list[ColumnElement[bool]]:
    """``ops prune``'s audit rows (events or provenance): written before ``cutoff``, and
    not an order's still under way (:data:`~workmanager.states.OPEN_ORDER_STATES`: a
    reviewer reads its evidence in its events). The PostgreSQL store's ``prune_audit``
    statement says the same in SQL."""
    under_way = select(Order.id).where(
        Order.id == model.order_id, Order.state.in_(sorted(OPEN_ORDER_STATES))
    )
    return [model.created_at < cutoff, ~under_way.exists()]


def given(*pairs: tuple[Any, Any]) -> list[ColumnElement[bool]]:
    """``column == value`` for each ``(column, value)`` whose value is given (not ``None``)."""
    return [column == value for column, value in pairs if value is not None]


def item_state_in(states: Iterable[str]) -> ColumnElement[bool]:
    return Item.state.in_([literal(str(s), literal_execute=True) for s in sorted(states)])


def queued() -> ColumnElement[bool]:
    """Matches ``ix_work_items_checkout``."""
    return Item.state == literal(ItemState.QUEUED.value, literal_execute=True)


def waiting() -> ColumnElement[bool]:
    """An item a checkout will take once it is due: queued, of an order still being
    worked on (not failed, say). What ``queue_depth`` counts."""
    return and_(
        queued(),
        exists().where(
            Order.id == Item.order_id,
            Order.state.in_([s.value for s in LEASABLE_ORDER_STATES]),
        ),
    )


def leasable(now: Any) -> ColumnElement[bool]:
    """An item a checkout may take at ``now`` (a value or a bind parameter): waiting
    (above) and due. The checkout's selection and the listing's ``has_available_items``
    both use it (PostgreSQL's ``eligible`` in ``db/sql/queries.sql`` says the same, pinned
    by the contract suite)."""
    return and_(waiting(), or_(Item.available_at.is_(None), Item.available_at <= now))


def held() -> ColumnElement[bool]:
    """Matches ``ix_work_items_lease_expiry`` and ``ix_work_items_agent_held``."""
    return item_state_in(s.value for s in HELD_ITEM_STATES)
