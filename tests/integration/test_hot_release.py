"""The PostgreSQL release (one statement + ``workmanager_release_order``, migration 0005).

The trail test in ``test_hotpath.py`` checks it writes what the SQLite release writes,
and the contract suite runs every release rule on both databases; these check that the
SQL path is the only one serving on PostgreSQL, that a refusal is explained from the row,
that its order step waits for a sibling's grant in flight, and that a schema without the
function is an error that names its fix (nothing written, no second path).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.integration.test_hotpath import functions_dropped, paused_grant
from tests.support.types import Multi
from tests.support.waiting import wait_for
from workmanager import Registry
from workmanager.db.orm_store import OrmStore
from workmanager.errors import LeaseConflict, SchemaOutdated

pytestmark = pytest.mark.postgres


def _count_orm_releases(monkeypatch: Any) -> list[object]:
    calls: list[object] = []
    orm = OrmStore.release

    def counted(*args: Any) -> Any:
        calls.append(args[1])
        return orm(*args)

    monkeypatch.setattr(OrmStore, "release", counted)
    return calls


@pytest.mark.parametrize("backend", ["database", pytest.param("redis", marks=pytest.mark.redis)])
def test_a_current_lease_releases_on_the_sql_path_only(make_wm, backend, monkeypatch) -> None:
    wm = make_wm(db="postgres", backend=backend, registry=Registry([Multi()]))
    order_id = wm.propose("test.multi", {"count": 2})
    first = wm.agent.checkout("agent-1", order_id=order_id)
    second = wm.agent.checkout("agent-2", order_id=order_id)
    assert first is not None and second is not None
    orm = _count_orm_releases(monkeypatch)
    assert wm.agent.release(first).order_state == "in_progress"
    assert wm.agent.release(second).order_state == "queued"
    if backend == "redis":  # the store's locks went with them
        store = wm.agent.store.store.store
        assert store.alive([str(first.item_id), str(second.item_id)]) == {}
    again = wm.agent.checkout("agent-3", order_id=order_id)  # leasable again, a new token
    assert again is not None and again.fence > max(first.fence, second.fence)
    with pytest.raises(LeaseConflict):  # a refused guard, explained from the row
        wm.agent.release(first)
    assert orm == []  # every release, refused or not, served by the SQL path


@pytest.mark.redis
def test_a_lock_the_store_lost_is_refused_as_on_the_general_path(make_wm) -> None:
    """Unlike a submit (kept: the work is done), a release under a lock Redis lost is
    refused as expired, as the general path's store check refuses it; nothing is
    written, and the sweep reclaims the item. On PostgreSQL and on SQLite."""
    from workmanager.errors import LeaseExpired

    for db in ("postgres", "sqlite"):
        wm = make_wm(db=db, backend="redis", registry=Registry([Multi()]))
        order_id = wm.propose("test.multi", {"count": 1})
        lease = wm.agent.checkout("agent-1", order_id=order_id)
        assert lease is not None
        store = wm.ctx.leases.store  # type: ignore[attr-defined]
        store.client.delete(*store.client.keys(f"{store.keys.prefix}item:*"))
        before = [e["event"] for e in wm.queries.events(order_id)]
        with pytest.raises(LeaseExpired):
            wm.agent.release(lease)
        assert [e["event"] for e in wm.queries.events(order_id)] == before, db
        assert wm.queries.item(lease.item_id)["state"] == "leased"


def test_the_order_step_waits_for_a_sibling_grant_in_flight(make_wm) -> None:
    """A checkout does not lock the order, so a sibling's grant can be uncommitted while
    the last holder releases. The release's order step must not requeue the order under
    it: it locks the siblings that look queued ``FOR SHARE``, which waits for the grant,
    and then sees it leased. The grant is paused mid-statement while the release runs."""
    wm = make_wm(db="postgres", backend="database", registry=Registry([Multi()]))
    order_id = wm.propose("test.multi", {"count": 2})
    held = wm.agent.checkout("agent-a", order_id=order_id)
    assert held is not None
    released: list[Any] = []
    waiting = (  # on the grant's row (the grant itself waits at the test's advisory gate)
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND wait_event <> 'advisory' AND datname = current_database()"
    )
    with paused_grant(wm, order_id, "agent-b") as (admin, granted):
        release = threading.Thread(target=lambda: released.append(wm.agent.release(held)))
        release.start()
        wait_for(lambda: admin.execute(waiting).fetchone() == (1,))
    release.join(30)
    assert granted and granted[0] is not None
    assert released and released[0].order_state == "in_progress"
    assert wm.queries.order(order_id)["state"] == "in_progress"
    assert "requeued" not in [e["event"] for e in wm.queries.events(order_id)]


def test_a_schema_without_the_release_function_is_an_error_naming_its_fix(make_wm) -> None:
    """Code deployed before migration 0005 (start-up and ``/readyz`` say so first): a
    release finds the function missing, writes nothing, and says to run ``workmanager db
    upgrade`` (503 ``schema_outdated``); there is no second path to fall back on. Once
    the function is back, the same lease releases."""
    wm = make_wm(db="postgres", backend="database", registry=Registry([Multi()]))
    order_id = wm.propose("test.multi", {"count": 2})
    lease = wm.agent.checkout("agent-1", order_id=order_id)
    assert lease is not None
    with functions_dropped(wm, "0005"):
        with pytest.raises(SchemaOutdated, match="workmanager db upgrade"):
            wm.agent.release(lease)
        assert wm.queries.item(lease.item_id)["state"] == "leased"
        assert "released" not in [e["event"] for e in wm.queries.events(order_id)]
    assert wm.agent.release(lease).item["state"] == "queued"
