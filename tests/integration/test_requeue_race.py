"""``orders requeue`` racing an agent: the order moved on (failed, submitted) between
requeue's read and its write. Requeue returned it as it was, exit 0, ``requeued`` in a
bulk report, with no event, and cleared the backoff of a failed order's queued items and
announced them; the same command a moment later was refused (SPEC §3.1: an illegal
transition raises and changes nothing). The store's last step now checks the state it
locked. SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.support.types import Multi
from workmanager import Actor, Registry
from workmanager.db.models import Item, utcnow
from workmanager.errors import IllegalStateTransition
from workmanager.services import admin
from workmanager.services.admin import ItemAdmin, OrderAdmin
from workmanager.types import Lease


def test_requeue_refuses_an_order_that_failed_since_it_looked(
    make_wm, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    wm = make_wm(db=database, registry=Registry([Multi()]))
    order_id = wm.propose("test.multi", {"count": 3})
    lease = wm.agent.checkout("agent-1", order_id=order_id)
    kept = wm.agent.checkout("agent-2", order_id=order_id)  # a sibling's lease, live
    assert lease is not None and kept is not None
    later = utcnow() + timedelta(hours=1)
    with wm.db.transaction() as s:  # the queued sibling waits out a backoff
        s.execute(update(Item).where(Item.state == "queued").values(available_at=later))

    # requeue read "in_progress"; the agent's terminal fail lands before its write
    class Stale(admin.Queries):  # type: ignore[misc]
        def order_state(self, order_id):  # type: ignore[no-untyped-def]
            state = super().order_state(order_id)
            wm.agent.fail(lease, {"code": "broken", "message": "no"}, retryable=False)
            return state

    monkeypatch.setattr(admin, "Queries", Stale)
    with pytest.raises(IllegalStateTransition) as refused:
        OrderAdmin(wm.ctx, wm.orders).requeue(order_id, Actor.system())
    assert refused.value.message.startswith("order became failed while requeue ran;")
    assert wm.queries.order(order_id)["state"] == "failed"
    with wm.db.transaction() as s:  # nothing of it was changed
        waits = s.scalars(select(Item.available_at).where(Item.state == "queued")).all()
    assert [w is not None for w in waits] == [True]
    events = [e["event"] for e in wm.queries.events(order_id)]
    assert "requeued" not in events and "lease_released" not in events
    wm.agent.submit(kept, {"answer": 1})  # the sibling's lease was not taken from it


def failed_beside_a_held_item(wm: Any) -> tuple[uuid.UUID, Lease, Lease]:
    """An order of two items, one failed for good by its agent while the other is held:
    (the order, the held lease, the failed one)."""
    order_id = wm.propose("test.multi", {"count": 2})
    held = wm.agent.checkout("agent-b", order_id=order_id)
    doomed = wm.agent.checkout("agent-a", order_id=order_id)
    assert held is not None and doomed is not None
    wm.agent.fail(doomed, {"code": "broken", "message": "no"}, retryable=False)
    return order_id, held, doomed


def test_a_retried_order_with_an_item_still_held_is_in_progress(make_wm, database: str) -> None:
    """An item failed for good while its sibling stayed leased: retry sent the order to
    ``queued`` around a held item (an order is queued only while none is held); it goes on
    to ``in_progress``, as an item's first lease moves it, and finishes as usual."""
    wm = make_wm(db=database, registry=Registry([Multi()]))
    order_id, held, _ = failed_beside_a_held_item(wm)
    assert wm.queries.order(order_id)["state"] == "failed"
    wm.orders.retry(order_id, Actor.system())
    assert wm.queries.order(order_id)["state"] == "in_progress"
    order_events = [e["event"] for e in wm.queries.events(order_id) if e["item_id"] is None]
    assert order_events[-2:] == ["retried", "in_progress"]
    wm.agent.submit(held, {"answer": 1})
    again = wm.agent.checkout("agent-a", order_id=order_id)
    assert again is not None
    wm.agent.submit(again, {"answer": 2})
    assert wm.queries.order(order_id)["state"] == "submitted"


def test_an_item_retried_while_a_sibling_is_held_leaves_its_order_in_progress(
    make_wm, database: str
) -> None:
    wm = make_wm(db=database, registry=Registry([Multi()]))
    order_id, _, doomed = failed_beside_a_held_item(wm)
    ItemAdmin(wm.ctx).retry(doomed.item_id, Actor.system())
    assert wm.queries.order(order_id)["state"] == "in_progress"
    order_events = [e["event"] for e in wm.queries.events(order_id) if e["item_id"] is None]
    assert order_events[-2:] == ["retried", "in_progress"]
