"""PostgreSQL's checkout with a lock store (Redis): the grant, under the row's fence, then
the lock under that fence, then the commit (``db/postgres/checkout.py``).

An item whose lock is still there (a holder that has not given it back yet) is skipped:
its grant is rolled back, so its row, its order and the audit trail are as they were,
and the next item is leased instead; once the lock is gone, the item is leased under the
row's next fence, and the lock holds that same fence.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.support.types import Multi
from workmanager import Registry, WorkManager
from workmanager.db.models import Event, Item, Order, Provenance

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def state_of(wm: WorkManager, item_id: uuid.UUID) -> dict[str, Any]:
    """The item's row, its order's state and how many audit rows name the item."""
    with wm.db.transaction() as s:
        item = s.get(Item, item_id)
        assert item is not None
        row = {c.key: getattr(item, c.key) for c in item.__mapper__.column_attrs}
        order = s.get(Order, item.order_id)
        assert order is not None
        events = s.scalar(select(func.count()).where(Event.item_id == item_id))
        provenance = s.scalar(select(func.count()).where(Provenance.item_id == item_id))
    return {"item": row, "order": order.state, "events": events, "provenance": provenance}


def test_an_item_locked_under_a_later_fence_is_skipped_and_its_grant_leaves_no_trace(
    make_wm: Callable[..., WorkManager],
) -> None:
    wm = make_wm(db="postgres", backend="redis", registry=Registry([Multi()]))
    store = wm.ctx.leases.store
    first_order = wm.propose("test.multi", {"count": 1})
    second_order = wm.propose("test.multi", {"count": 1})
    with wm.db.transaction() as s:
        first_id, second_id = (
            s.scalar(select(Item.id).where(Item.order_id == order))
            for order in (first_order, second_order)
        )
    stale = store.keys.item(str(first_id))
    # a lock under a later fence than the row knows (a database restored from an older
    # backup without `ops restored`); one under an earlier fence is stale and taken over
    store.client.set(stale, "99|-|ghost", px=60_000)
    before = state_of(wm, first_id)

    lease = wm.agent.checkout("agent-1")  # the oldest first: the first order's item
    assert lease is not None and lease.item_id == second_id  # it is skipped
    assert state_of(wm, first_id) == before  # its grant was rolled back: no trace
    assert before["order"] == "queued"
    assert wm.agent.checkout("agent-2") is None  # nothing else free

    store.client.delete(stale)
    again = wm.agent.checkout("agent-2")
    assert again is not None and again.item_id == first_id
    assert again.fence == before["item"]["lease_token"] + 1  # the row's next fence
    value = store.client.get(stale).decode()
    assert value.startswith(f"{again.fence}|") and value.endswith("|agent-2")
    wm.agent.heartbeat(again)  # the lock and the row agree on the fence
    wm.agent.submit(wm.agent.heartbeat(lease), {"answer": 2})
