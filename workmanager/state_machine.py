"""Pure checks over the transition tables in :mod:`workmanager.states`."""

from __future__ import annotations

from collections.abc import Iterable

from .errors import IllegalStateTransition
from .states import HELD_ITEM_STATES, ITEM_TRANSITIONS, ORDER_TRANSITIONS, ItemState, OrderState


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


def settled_after_retry(to: str, item_states: Iterable[str]) -> str:
    """Where a retried order ends: ``to`` (``retry_target``'s queued or submitted, checked
    from failed) or, going to queued while an item is still held (a sibling's lease lived
    through the failure), on to in_progress, as an item's first lease moves it: an order
    is queued only while none of its items is held (SPEC §3.1)."""
    check_order(OrderState.FAILED, to)
    if to == OrderState.QUEUED and any(ItemState(s) in HELD_ITEM_STATES for s in item_states):
        check_order(to, OrderState.IN_PROGRESS)
        return OrderState.IN_PROGRESS.value
    return to
