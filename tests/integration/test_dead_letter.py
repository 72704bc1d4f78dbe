"""Dead-lettering (SPEC §3.1 "maintain"): ``workmanager maintain --dead-letter`` moves failed
orders older than ``DEAD_LETTER_AFTER_HOURS`` to ``dead_lettered`` with their failed items,
one event each, ends the leases still held in them, and leaves everything else alone; a
second run changes nothing. SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from tests.cli.conftest import Console
from tests.support.types import Flaky, Multi, Simple
from workmanager import Actor, Registry, WorkManager
from workmanager.db.models import Event, Item, Order, utcnow
from workmanager.errors import ApplyFailed, WorkManagerError

HOURS = 24


def failed_by_agent(wm: WorkManager, count: int = 2) -> uuid.UUID:
    """An order whose first item an agent failed for good: the order and that item are
    ``failed``, the other items stay ``queued``."""
    order_id = wm.propose("test.multi", {"count": count})
    lease = wm.agent.checkout("agent-1", order_id=order_id)
    assert lease is not None
    wm.agent.fail(lease, {"code": "broken", "message": "no"}, retryable=False)
    return order_id


def failed_in_apply(wm: WorkManager) -> uuid.UUID:
    """An order whose apply failed for good: the order is ``failed``, its item ``submitted``."""
    order_id = wm.propose("test.flaky", {})
    lease = wm.agent.checkout("agent-1", order_id=order_id)
    assert lease is not None
    wm.agent.submit(lease, {"answer": 1})
    wm.approve(order_id)
    with pytest.raises(ApplyFailed):
        wm.executor.apply(order_id)
    return order_id


def completed(wm: WorkManager) -> uuid.UUID:
    order_id = wm.propose("test.simple", {"n": 1})
    lease = wm.agent.checkout("agent-1", order_id=order_id)
    assert lease is not None
    wm.agent.submit(lease, {"answer": 1})
    wm.approve(order_id)
    wm.executor.apply(order_id)
    return order_id


def age(wm: WorkManager, order_id: uuid.UUID, hours: float) -> None:
    """Make an order and its items look last changed ``hours`` ago (their state kept)."""
    then = utcnow() - timedelta(hours=hours)
    with wm.db.transaction() as s:
        s.execute(update(Order).where(Order.id == order_id).values(last_transitioned_at=then))
        s.execute(update(Item).where(Item.order_id == order_id).values(updated_at=then))


def states(wm: WorkManager, order_id: uuid.UUID) -> tuple[str, list[str]]:
    order = wm.queries.order(order_id)
    return order["state"], sorted(i["state"] for i in order["items"])


def events(wm: WorkManager, name: str | None = None) -> list[tuple[Any, Any, str]]:
    stmt = select(Event.order_id, Event.item_id, Event.event).order_by(Event.id)
    if name is not None:
        stmt = stmt.where(Event.event == name)
    with wm.db.transaction() as s:
        return [tuple(r) for r in s.execute(stmt)]


def test_dead_letter_moves_old_failures_once_and_nothing_else(make_wm, database: str) -> None:
    registry = Registry([Multi(), Flaky(failures=99), Simple()])
    wm = make_wm(
        db=database,
        registry=registry,
        dead_letter_after_hours=HOURS,
        apply_max_retries=0,
        broker_url="memory://",
    )
    console = Console(wm)
    old_by_agent = failed_by_agent(wm)
    old_in_apply = failed_in_apply(wm)
    recent = failed_by_agent(wm)
    old_done = completed(wm)
    old_queued = wm.propose("test.multi", {"count": 1})
    for order_id in (old_by_agent, old_in_apply, old_done, old_queued):
        age(wm, order_id, HOURS + 1)
    age(wm, recent, HOURS - 1)  # failed, but not for long enough
    assert states(wm, old_by_agent) == ("failed", ["failed", "queued"])
    assert states(wm, old_in_apply) == ("failed", ["submitted"])
    untouched = {o: states(wm, o) for o in (recent, old_done, old_queued)}
    with wm.db.transaction() as s:
        failed_item = s.scalar(
            select(Item.id).where(Item.order_id == old_by_agent, Item.state == "failed")
        )
        queued_item = s.scalar(
            select(Item.id).where(Item.order_id == old_by_agent, Item.state == "queued")
        )
    before = len(events(wm))

    report = console.json("maintain", "--dead-letter")
    assert report["dead_lettered_orders"] == 2
    # the queued sibling too (a volume pass: left queued, it stayed in the checkout's index
    # and every checkout walked it until the order was pruned, 90 days by default)
    assert report["dead_lettered_items"] == 2
    assert "leases_requeued" not in report  # --dead-letter alone does not sweep
    assert states(wm, old_by_agent) == ("dead_lettered", ["dead_lettered", "dead_lettered"])
    assert states(wm, old_in_apply) == ("dead_lettered", ["submitted"])
    assert {o: states(wm, o) for o in untouched} == untouched
    written = events(wm)[before:]
    assert sorted(written, key=str) == sorted(
        [
            (old_by_agent, None, "dead_lettered"),
            (old_in_apply, None, "dead_lettered"),
            (old_by_agent, failed_item, "dead_lettered"),
            (old_by_agent, queued_item, "dead_lettered"),
        ],
        key=str,
    )
    dead = wm.queries.events(old_by_agent)[-1]
    assert dead["actor_type"] == "system"

    again = console.json("maintain", "--dead-letter")
    assert (again["dead_lettered_orders"], again["dead_lettered_items"]) == (0, 0)
    assert len(events(wm)) == before + 4
    assert len(events(wm, "dead_lettered")) == 4
    with wm.db.transaction() as s:
        by_state = dict(s.execute(select(Order.state, func.count()).group_by(Order.state)).all())
    assert by_state == {"dead_lettered": 2, "failed": 1, "completed": 1, "queued": 1}


def test_a_lease_in_a_dead_lettered_order_ends_with_it(make_wm, backend) -> None:
    """The failed order was dead-lettered while a sibling stayed leased: that lease heart-
    beated and submitted on, "accepted" into an order never to be applied. The lease ends
    with the order now (event ``lease_released``, then the item ``dead_lettered`` with the
    rest; a lock store's hold dropped too, or its heartbeats, which touch only the lock,
    went on and the agent's place stayed taken); the agent is refused."""
    database, lease_backend = backend
    wm = make_wm(
        db=database,
        backend=lease_backend,
        registry=Registry([Multi()]),
        dead_letter_after_hours=HOURS,
        max_leases_per_agent=1,
    )
    order_id = wm.propose("test.multi", {"count": 2})
    other = wm.propose("test.multi", {"count": 1})
    held = wm.agent.checkout("agent-2", order_id=order_id)
    doomed = wm.agent.checkout("agent-1", order_id=order_id)
    assert held is not None and doomed is not None
    held = wm.agent.heartbeat(held)  # the lease as the agent holds it now: in progress
    wm.agent.fail(doomed, {"code": "broken", "message": "no"}, retryable=False)
    assert states(wm, order_id) == ("failed", ["failed", "in_progress"])
    age(wm, order_id, HOURS + 1)
    assert wm.maintenance.run(dead_letter=True).dead_lettered_items == 2
    assert states(wm, order_id) == ("dead_lettered", ["dead_lettered", "dead_lettered"])
    with wm.db.transaction() as s:
        item = s.get(Item, held.item_id)
        assert item is not None and (item.leased_by_agent_id, item.lease_expires_at) == (None, None)
    trail = [e for e in wm.queries.events(order_id) if e["item_id"] == str(held.item_id)]
    assert [e["event"] for e in trail[-2:]] == ["lease_released", "dead_lettered"]
    assert trail[-2]["payload"]["reason"] == "order_dead_lettered"
    for call in (wm.agent.heartbeat, lambda lease: wm.agent.submit(lease, {"answer": 1})):
        with pytest.raises(WorkManagerError) as refused:
            call(held)
        # "this lease is gone", the code agents know (the consumer logs it and moves on)
        assert refused.value.code == "lease_expired", refused.value
    # the agent's place (one lease at most) is free: its next checkout is granted
    assert wm.agent.checkout("agent-2", order_id=other) is not None


def test_an_order_being_retried_is_not_dead_lettered_in_half(make_wm, pg_url: str) -> None:
    """PostgreSQL: maintenance skips an order another transaction holds (a retry), but
    took its failed items, which are locked on their own rows: the retried order came
    back ``queued`` around a ``dead_lettered`` item, stuck for good."""
    import psycopg

    wm = make_wm(db="postgres", registry=Registry([Multi()]), dead_letter_after_hours=HOURS)
    order_id = failed_by_agent(wm)
    age(wm, order_id, HOURS + 1)
    with psycopg.connect(pg_url.replace("postgresql+psycopg", "postgresql")) as other:
        other.execute("SELECT 1 FROM work_orders WHERE id = %s FOR UPDATE", (order_id,))
        report = wm.maintenance.run(dead_letter=True)
        assert (report.dead_lettered_orders, report.dead_lettered_items) == (0, 0)
    wm.orders.retry(order_id, Actor.system())
    assert states(wm, order_id) == ("queued", ["queued", "queued"])


@pytest.mark.postgres
def test_an_item_a_lock_kept_from_the_run_is_dead_lettered_once_queued(make_wm) -> None:
    """A review pass: dead-lettering skips rows another transaction holds (a heartbeat
    in flight); a held item skipped so, then released (queued), was never collected: it
    stayed queued in a dead order, in the checkout's index, until pruned. The next run
    takes the queued items of orders dead for less than ``LATE_QUEUED``."""
    import psycopg

    from tests.conftest import PG_ADMIN_DSN

    wm = make_wm(db="postgres", registry=Registry([Multi()]), dead_letter_after_hours=HOURS)
    order_id = wm.propose("test.multi", {"count": 2})
    held = wm.agent.checkout("agent-2", order_id=order_id)
    doomed = wm.agent.checkout("agent-1", order_id=order_id)
    assert held is not None and doomed is not None
    wm.agent.fail(doomed, {"code": "broken", "message": "no"}, retryable=False)
    age(wm, order_id, HOURS + 1)
    dsn = psycopg.conninfo.make_conninfo(PG_ADMIN_DSN, dbname=wm.db.engine.url.database)
    with psycopg.connect(dsn) as other:  # the held item's row locked, as a heartbeat does
        other.execute("SELECT 1 FROM work_items WHERE id = %s FOR UPDATE", (held.item_id,))
        wm.maintenance.run(dead_letter=True)
        other.rollback()
    assert states(wm, order_id) == ("dead_lettered", ["dead_lettered", "leased"])
    with wm.db.transaction() as s:  # released since (the agent's release, or the sweep)
        s.execute(
            update(Item)
            .where(Item.id == held.item_id)
            .values(state="queued", leased_by_agent_id=None, lease_expires_at=None)
        )
    assert wm.maintenance.run(dead_letter=True).dead_lettered_items == 1
    assert states(wm, order_id) == ("dead_lettered", ["dead_lettered", "dead_lettered"])
