"""Order and item states, and the transitions allowed between them, as data."""

from __future__ import annotations

from enum import StrEnum


class OrderState(StrEnum):
    """The life of a work order (SPEC §3.1)."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    APPLIED = "applied"
    COMPLETED = "completed"
    REJECTED = "rejected"
    FAILED = "failed"
    DEAD_LETTERED = "dead_lettered"


class ItemState(StrEnum):
    """The life of a work item (SPEC §3.1)."""

    QUEUED = "queued"
    LEASED = "leased"
    IN_PROGRESS = "in_progress"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    REJECTED = "rejected"
    FAILED = "failed"
    DEAD_LETTERED = "dead_lettered"


O, I = OrderState, ItemState  # noqa: E741 - short names keep the tables readable

#: Every allowed order transition. Anything not listed raises IllegalStateTransition.
ORDER_TRANSITIONS: dict[OrderState, frozenset[OrderState]] = {
    O.QUEUED: frozenset({O.IN_PROGRESS, O.FAILED}),
    O.IN_PROGRESS: frozenset({O.QUEUED, O.SUBMITTED, O.FAILED}),
    O.SUBMITTED: frozenset({O.APPROVED, O.REJECTED}),
    O.APPROVED: frozenset({O.APPLIED, O.FAILED}),
    O.APPLIED: frozenset({O.COMPLETED}),
    O.COMPLETED: frozenset(),
    O.REJECTED: frozenset({O.QUEUED}),
    O.FAILED: frozenset({O.QUEUED, O.SUBMITTED, O.DEAD_LETTERED}),
    O.DEAD_LETTERED: frozenset(),
}

#: Every allowed item transition. Anything not listed raises IllegalStateTransition.
ITEM_TRANSITIONS: dict[ItemState, frozenset[ItemState]] = {
    # an order dead-lettered takes every item not done with it (maintenance)
    I.QUEUED: frozenset({I.LEASED, I.DEAD_LETTERED}),
    I.LEASED: frozenset({I.IN_PROGRESS, I.SUBMITTED, I.QUEUED, I.FAILED, I.DEAD_LETTERED}),
    I.IN_PROGRESS: frozenset({I.SUBMITTED, I.QUEUED, I.FAILED, I.DEAD_LETTERED}),
    I.SUBMITTED: frozenset({I.ACCEPTED, I.REJECTED}),
    I.ACCEPTED: frozenset({I.COMPLETED}),
    I.COMPLETED: frozenset(),
    I.REJECTED: frozenset({I.QUEUED}),
    I.FAILED: frozenset({I.QUEUED, I.DEAD_LETTERED}),
    I.DEAD_LETTERED: frozenset(),
}

#: Item states in which somebody holds a lease on the item.
HELD_ITEM_STATES = frozenset({I.LEASED, I.IN_PROGRESS})
#: Item states that count as "done by the agent" for the order to become submitted.
SUBMITTED_ITEM_STATES = frozenset({I.SUBMITTED, I.ACCEPTED, I.COMPLETED})
#: Order states in which items may be leased.
LEASABLE_ORDER_STATES = frozenset({O.QUEUED, O.IN_PROGRESS})
#: Orders that are done for good: ``ops prune`` deletes them when old.
SETTLED_ORDER_STATES = frozenset({O.COMPLETED, O.DEAD_LETTERED})
#: Orders that can still change (a failed or rejected one can be retried or reworked):
#: their history (the evidence a reviewer reads is in their ``submitted`` events) is kept
#: by ``ops prune`` however old.
OPEN_ORDER_STATES = frozenset(O) - SETTLED_ORDER_STATES
