"""Every (from, to) pair of the order and item transition tables, allowed and refused."""

from __future__ import annotations

import itertools

import pytest

from workmanager import IllegalStateTransition, ItemState, OrderState
from workmanager.state_machine import can_item, can_order, check_item, check_order
from workmanager.states import ITEM_TRANSITIONS, ORDER_TRANSITIONS

# The allowed transitions as SPEC §3.1 describes them, written out independently of the
# package's tables so that a change to either shows up here.
O, I = OrderState, ItemState  # noqa: E741
EXPECTED_ORDER = {
    (O.QUEUED, O.IN_PROGRESS),  # first lease
    (O.QUEUED, O.FAILED),  # an item fails terminally
    (O.IN_PROGRESS, O.QUEUED),  # release / expiry with no held item left
    (O.IN_PROGRESS, O.SUBMITTED),  # every item submitted
    (O.IN_PROGRESS, O.FAILED),  # an item fails terminally
    (O.SUBMITTED, O.APPROVED),
    (O.SUBMITTED, O.REJECTED),
    (O.APPROVED, O.APPLIED),
    (O.APPROVED, O.FAILED),  # apply retries spent
    (O.APPLIED, O.COMPLETED),
    (O.REJECTED, O.QUEUED),  # rework
    (O.FAILED, O.QUEUED),  # retry
    (O.FAILED, O.SUBMITTED),  # retry of an order that failed in apply
    (O.FAILED, O.DEAD_LETTERED),  # maintenance
}
EXPECTED_ITEM = {
    (I.QUEUED, I.LEASED),
    (I.LEASED, I.IN_PROGRESS),  # first heartbeat
    (I.LEASED, I.SUBMITTED),
    (I.LEASED, I.QUEUED),
    (I.LEASED, I.FAILED),
    (I.IN_PROGRESS, I.SUBMITTED),
    (I.IN_PROGRESS, I.QUEUED),
    (I.IN_PROGRESS, I.FAILED),
    (I.SUBMITTED, I.ACCEPTED),
    (I.SUBMITTED, I.REJECTED),
    (I.ACCEPTED, I.COMPLETED),
    (I.REJECTED, I.QUEUED),  # rework
    (I.FAILED, I.QUEUED),  # retry
    (I.FAILED, I.DEAD_LETTERED),
    # maintain dead-letters an order's items "same" as the order: every one not done (a
    # queued one left behind was walked by every checkout until the order was pruned)
    (I.QUEUED, I.DEAD_LETTERED),
    (I.LEASED, I.DEAD_LETTERED),
    (I.IN_PROGRESS, I.DEAD_LETTERED),
}

ORDER_PAIRS = list(itertools.product(OrderState, OrderState))
ITEM_PAIRS = list(itertools.product(ItemState, ItemState))


def _id(pair: tuple[str, str]) -> str:
    return f"{pair[0]}->{pair[1]}"


def test_tables_cover_every_state() -> None:
    assert set(ORDER_TRANSITIONS) == set(OrderState)
    assert set(ITEM_TRANSITIONS) == set(ItemState)


def test_tables_match_the_spec() -> None:
    order = {(a, b) for a, targets in ORDER_TRANSITIONS.items() for b in targets}
    item = {(a, b) for a, targets in ITEM_TRANSITIONS.items() for b in targets}
    assert order == EXPECTED_ORDER
    assert item == EXPECTED_ITEM


def test_terminal_states_have_no_way_out() -> None:
    for state in (O.COMPLETED, O.DEAD_LETTERED):
        assert not ORDER_TRANSITIONS[state]
    for istate in (I.COMPLETED, I.DEAD_LETTERED):
        assert not ITEM_TRANSITIONS[istate]


@pytest.mark.parametrize("pair", ORDER_PAIRS, ids=[_id(p) for p in ORDER_PAIRS])
def test_every_order_pair(pair: tuple[OrderState, OrderState]) -> None:
    from_state, to_state = pair
    allowed = to_state in ORDER_TRANSITIONS[from_state]
    assert allowed == (pair in EXPECTED_ORDER)
    assert can_order(from_state.value, to_state.value) is allowed
    if allowed:
        check_order(from_state.value, to_state.value)
        return
    with pytest.raises(IllegalStateTransition) as info:
        check_order(from_state.value, to_state.value)
    err = info.value
    assert (err.kind, err.from_state, err.to_state) == ("order", from_state, to_state)
    assert err.code == "illegal_state_transition" and err.http_status == 409
    assert err.details == {"kind": "order", "from": from_state, "to": to_state}


@pytest.mark.parametrize("pair", ITEM_PAIRS, ids=[_id(p) for p in ITEM_PAIRS])
def test_every_item_pair(pair: tuple[ItemState, ItemState]) -> None:
    from_state, to_state = pair
    allowed = to_state in ITEM_TRANSITIONS[from_state]
    assert allowed == (pair in EXPECTED_ITEM)
    assert can_item(from_state.value, to_state.value) is allowed
    if allowed:
        check_item(from_state.value, to_state.value)
        return
    with pytest.raises(IllegalStateTransition) as info:
        check_item(from_state.value, to_state.value)
    err = info.value
    assert (err.kind, err.from_state, err.to_state) == ("item", from_state, to_state)
    assert err.details == {"kind": "item", "from": from_state, "to": to_state}


def test_unknown_state_names_are_refused() -> None:
    with pytest.raises(ValueError):
        can_order("queued", "teleported")
    with pytest.raises(ValueError):
        can_item("limbo", "queued")
