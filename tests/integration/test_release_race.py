"""A release deciding "nothing held: back to queued" waits for a sibling's grant that is
committing at that moment, instead of requeueing an order being worked on (PostgreSQL)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from tests.support.types import Multi
from tests.support.waiting import wait_for
from workmanager import Registry

pytestmark = pytest.mark.postgres


def test_release_waits_for_a_sibling_grant_in_flight(make_wm) -> None:
    wm = make_wm(db="postgres", backend="database", registry=Registry([Multi()]))
    order_id = wm.propose("test.multi", {"count": 2})
    lease = wm.agent.checkout("agent-a")
    assert wm.queries.order_state(order_id) == "in_progress"
    [sibling] = [i["id"] for i in wm.queries.order(order_id)["items"] if i["state"] == "queued"]

    grant = wm.db.engine.connect()  # a checkout of the sibling, granted but not committed
    tx = grant.begin()
    grant.execute(
        text(
            "UPDATE work_items SET state = 'leased', leased_by_agent_id = 'agent-b', "
            "lease_token = lease_token + 1 WHERE id = :id"
        ),
        {"id": sibling},
    )
    released = threading.Thread(target=wm.agent.release, args=(lease,))
    released.start()
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )

    def release_waits_on_a_lock() -> bool:
        with wm.db.engine.connect() as admin:  # a new transaction: a fresh activity snapshot
            return bool(admin.execute(waiting).scalar())

    wait_for(release_waits_on_a_lock, what="the release to wait on the sibling's row lock")
    assert released.is_alive()
    tx.commit()
    grant.close()
    released.join(timeout=10)
    assert not released.is_alive()
    assert wm.queries.order_state(order_id) == "in_progress"  # the sibling is held
