"""Pure checks over the transition tables in :mod:`workmanager.states`."""

from __future__ import annotations

from .errors import IllegalStateTransition
from .states import ITEM_TRANSITIONS, ORDER_TRANSITIONS, ItemState, OrderState


def can_order(from_state: str, to_state: str) -> bool:
    """Whether an order may go from ``from_state`` to ``to_state``."""
    return OrderState(to_state) in ORDER_TRANSITIONS[OrderState(from_state)]


def can_item(from_state: str, to_state: str) -> bool:
    """Whether an item may go from ``from_state`` to ``to_state``."""
    return ItemState(to_state) in ITEM_TRANSITIONS[ItemState(from_state)]


def check_order(from_state: str, to_state: str) -> None:
    """Raise :class:`IllegalStateTransition` unless the order transition is allowed."""
    if not can_order(from_state, to_state):
        raise IllegalStateTransition(kind="order", from_state=from_state, to_state=to_state)


def check_item(from_state: str, to_state: str) -> None:
    """Raise :class:`IllegalStateTransition` unless the item transition is allowed."""
    if not can_item(from_state, to_state):
        raise IllegalStateTransition(kind="item", from_state=from_state, to_state=to_state)
