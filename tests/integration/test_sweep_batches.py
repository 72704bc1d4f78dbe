"""The sweep and ``workmanager leases reclaim`` over many batches, on PostgreSQL with both
lease backends: 1,250 leases in batches of 100, each reclaimed exactly once (one event per
item, attempts and backoff right), the per-run batch cut-off, and the Redis audit paging
through every held row after Redis lost its keys.

The leases are real checkouts (about a second for 1,250), so the rows and Redis locks are
exactly what agents leave.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.cli.conftest import Console
from tests.support.dispatch import RecordingDispatcher
from tests.support.types import Multi
from tests.support.waiting import wait_for
from workmanager import Registry, WorkManager
from workmanager.db.models import Event, Item, utcnow
from workmanager.metrics.simple import MemoryDriver
from workmanager.reads.leases import LeaseSelector
from workmanager.services.lease_admin import LeaseAdmin

pytestmark = pytest.mark.postgres

LEASES = 1250
ONCE = 250  # of the LEASES, items of a type allowed one attempt: they fail when reclaimed
BATCH = 100
BACKOFF = 30.0
BACKENDS = ["database", pytest.param("redis", marks=pytest.mark.redis)]


class Once(Multi):
    """Items get one attempt: a reclaimed lease fails the item."""

    type = "test.once"
    max_attempts = 1


class Other(Multi):
    type = "test.other"


def build(make_wm: Any, backend: str, ttl: int) -> WorkManager:
    wm: WorkManager = make_wm(
        db="postgres",
        backend=backend,
        registry=Registry([Multi(), Once(), Other()]),
        lease_ttl_seconds=ttl,
        sweep_batch_size=BATCH,
        retry_backoff_seconds=BACKOFF,
        retry_jitter_seconds=0,
        default_max_attempts=3,
        broker_url="memory://",
    )
    return wm


def hold(wm: WorkManager, order_type: str, count: int, agent: str = "agent-1") -> set[uuid.UUID]:
    """``count`` items of ``order_type`` leased by real checkouts, in orders of 250."""
    for start in range(0, count, 250):
        wm.propose(order_type, {"count": min(250, count - start)})
    held: set[uuid.UUID] = set()
    for _ in range(count):
        lease = wm.agent.checkout(agent, type=order_type)
        assert lease is not None
        held.add(lease.item_id)
    assert len(held) == count
    return held


def hold_many(wm: WorkManager) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    """LEASES held leases, and the ONCE among them whose one attempt is spent."""
    once = hold(wm, "test.once", ONCE)
    return hold(wm, "test.multi", LEASES - ONCE) | once, once


def redis_client(wm: WorkManager) -> Any:
    import redis

    return redis.Redis.from_url(wm.settings.redis_url)


def lock_keys(wm: WorkManager) -> list[bytes]:
    client = redis_client(wm)
    return list(client.scan_iter(match=f"{wm.settings.redis_prefix}item:*", count=1000))


def wait_expired(wm: WorkManager, backend: str) -> None:
    """Until every recorded expiry has passed and (Redis) every lock has timed out."""

    def expired() -> bool:
        with wm.db.transaction() as s:
            last = s.scalar(select(func.max(Item.lease_expires_at)))
        return last is not None and last < utcnow()

    wait_for(expired, 30, "every recorded lease expiry to pass")
    if backend == "redis":
        wait_for(lambda: not lock_keys(wm), 30, "Redis to expire every lock")


def lost(wm: WorkManager) -> None:
    """Redis lost its data: this test's keys deleted (never the shared db)."""
    client = redis_client(wm)
    keys = list(client.scan_iter(match=f"{wm.settings.redis_prefix}*", count=1000))
    assert keys
    client.delete(*keys)


def events_per_item(wm: WorkManager, name: str) -> Counter[uuid.UUID]:
    with wm.db.transaction() as s:
        rows = s.scalars(select(Event.item_id).where(Event.event == name))
        return Counter(rows)


def announced(wm: WorkManager, since: int = 0) -> Counter[uuid.UUID]:
    """Items announced available, counted, from announcement number ``since`` on."""
    dispatcher = wm.dispatcher
    assert isinstance(dispatcher, RecordingDispatcher)
    return Counter(i for _, ids in dispatcher.available[since:] for i in ids)


def announcements(wm: WorkManager) -> int:
    dispatcher = wm.dispatcher
    assert isinstance(dispatcher, RecordingDispatcher)
    return len(dispatcher.available)


def counter(wm: WorkManager, name: str, **labels: str) -> float:
    driver = wm.metrics.driver
    assert isinstance(driver, MemoryDriver)
    return sum(
        v
        for (n, lbl), v in driver.counters.items()
        if n == f"work_manager.{name}"
        and all(dict(lbl).get(k) == want for k, want in labels.items())
    )


def assert_reclaimed_once(
    wm: WorkManager, ids: set[uuid.UUID], event: str, failed: set[uuid.UUID]
) -> None:
    """Every item in ``ids`` ended exactly once: one ``event``, attempts 1, requeued with
    the first backoff, or failed (the items in ``failed``, whose one attempt is spent)."""
    per_item = events_per_item(wm, event)
    assert set(per_item) == ids
    assert set(per_item.values()) == {1}
    with wm.db.transaction() as s:
        items = {i.id: i for i in s.scalars(select(Item).where(Item.id.in_(ids)))}
        logged = {
            e.item_id: e
            for e in s.scalars(select(Event).where(Event.event == event, Event.item_id.in_(ids)))
        }
    for item_id, item in items.items():
        entry = logged[item_id]
        assert item.attempts == 1 and item.leased_by_agent_id is None
        assert item.lease_expires_at is None
        if item_id in failed:
            assert item.state == "failed", item_id
            assert entry.payload["outcome"] == "failed"
            assert item.error["code"] == "max_attempts_exceeded"
        else:
            assert item.state == "queued", item_id
            assert entry.payload["outcome"] == "requeued"
            assert entry.payload["attempts"] == 1 and entry.payload["max_attempts"] == 3
            assert item.available_at is not None
            delay = (item.available_at - entry.created_at).total_seconds()
            assert abs(delay - BACKOFF) < 5, (item_id, delay)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sweep_reclaims_1250_expired_leases_once_across_runs_and_batches(
    make_wm: Any, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    wm = build(make_wm, backend, ttl=2)
    assert wm.sweeper.sweep().reclaimed == 0  # first sweep: sets the Redis marker
    ids, failed = hold_many(wm)
    wait_expired(wm, backend)
    before = announcements(wm)

    # The documented cut-off: at most 20 batches per run (here 20 x 30 rows) ...
    with caplog.at_level(logging.INFO, logger="workmanager.leases"):
        first = wm.sweeper.sweep(batch_size=30)
    assert first.reclaimed == 600
    # one line a run, naming items (an operator's "which leases expired?")
    (said,) = [r.getMessage() for r in caplog.records if r.name == "workmanager.leases"]
    requeued = next(str(i) for ids in first.requeued.values() for i in ids)
    assert said.startswith("sweep: 600 expired lease(s) reclaimed") and requeued in said
    # ... or fewer when asked; the next runs continue where the last one stopped.
    second = wm.sweeper.sweep(max_batches=5)
    assert second.reclaimed == 5 * BATCH
    third = wm.sweeper.sweep()
    assert third.reclaimed == LEASES - 600 - 500
    assert wm.sweeper.sweep().reclaimed == 0

    assert_reclaimed_once(wm, ids, "lease_expired", failed)
    assert counter(wm, "leases_expired_total") == LEASES
    assert counter(wm, "leases_expired_total", type="test.once") == ONCE
    assert counter(wm, "items_failed_total", error_code="max_attempts_exceeded") == ONCE
    assert announced(wm, before) == Counter({i: 1 for i in ids - failed})
    with wm.db.transaction() as s:
        held = s.scalar(select(func.count()).where(Item.state.in_(["leased", "in_progress"])))
    assert held == 0


@pytest.mark.redis
def test_redis_audit_pages_through_every_held_row_after_redis_lost_its_keys(
    make_wm: Any,
) -> None:
    wm = build(make_wm, "redis", ttl=600)  # far from expiry: only the audit can end them
    assert wm.sweeper.sweep().reclaimed == 0  # sets the marker
    ids, failed = hold_many(wm)
    assert wm.sweeper.sweep().reclaimed == 0  # the locks are there: nothing to do
    lost(wm)
    alive = hold(wm, "test.other", 20, agent="agent-2")  # granted after the loss: kept

    # One run, whatever its batch budget: the audit pages through all 1,270 held rows.
    result = wm.sweeper.sweep(max_batches=1)
    assert result.reclaimed == LEASES
    assert wm.sweeper.sweep().reclaimed == 0

    assert_reclaimed_once(wm, ids, "lease_expired", failed)
    assert not events_per_item(wm, "lease_expired").keys() & alive
    for item_id in alive:
        assert wm.queries.item(item_id)["state"] == "leased"
    assert len(lock_keys(wm)) == len(alive)


@pytest.mark.parametrize("backend", BACKENDS)
def test_leases_reclaim_cli_ends_1250_leases_once_in_batches(make_wm: Any, backend: str) -> None:
    wm = build(make_wm, backend, ttl=600)
    ids, failed = hold_many(wm)
    others = hold(wm, "test.other", 5, agent="agent-2")
    console = Console(wm)
    before = announcements(wm)

    dry = console.json("leases", "reclaim", "--agent", "agent-1", "--dry-run")
    assert dry["counts"] == {"requeued": LEASES - ONCE, "failed": ONCE}
    assert not events_per_item(wm, "lease_reclaimed")

    report = console.json("leases", "reclaim", "--agent", "agent-1")
    assert report["counts"] == {"requeued": LEASES - ONCE, "failed": ONCE}
    assert {uuid.UUID(r["item_id"]) for r in report["leases"]} == ids
    assert_reclaimed_once(wm, ids, "lease_reclaimed", failed)
    assert announced(wm, before) == Counter({i: 1 for i in ids - failed})
    if backend == "redis":  # the locks were released; agent-2's are still held
        assert len(lock_keys(wm)) == len(others)

    again = console.json("leases", "reclaim", "--agent", "agent-1")
    assert again["counts"] == {} and again["leases"] == []
    assert sum(events_per_item(wm, "lease_reclaimed").values()) == LEASES
    for item_id in others:
        assert wm.queries.item(item_id)["state"] == "leased"
    # An item reclaimed above is leasable after its backoff, under a new lease.
    requeued = next(iter(ids - failed))
    wm.ctx.clock = lambda: utcnow() + timedelta(seconds=BACKOFF + 1)
    lease = wm.agent.checkout("agent-3", item_id=requeued)
    assert lease is not None and lease.item is not None and lease.item.attempts == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_sweep_passes_over_rows_another_sweeper_holds(make_wm: Any, backend: str) -> None:
    """The first rows due are locked by another transaction (a second sweeper): the sweep
    skips them and takes the next ones in its following batches, instead of stopping."""
    wm = build(make_wm, backend, ttl=600)
    assert wm.sweeper.sweep().reclaimed == 0  # first sweep: sets the Redis marker
    ids = hold(wm, "test.multi", 50)
    if backend == "redis":  # the locks timed out (their keys deleted, the marker kept)
        client = redis_client(wm)
        client.delete(*lock_keys(wm))
    wm.ctx.clock = lambda: utcnow() + timedelta(seconds=601)
    with wm.db.transaction() as s:
        first = list(s.scalars(select(Item.id).order_by(Item.lease_expires_at, Item.id).limit(10)))
    with wm.db.raw.connection() as other:
        other.execute("BEGIN")
        other.execute("SELECT 1 FROM work_items WHERE id = ANY(%s) FOR UPDATE", [first])
        result = wm.sweeper.sweep(batch_size=10)
        other.execute("ROLLBACK")
    reclaimed = {i for found in result.requeued.values() for i in found}
    assert reclaimed == ids - set(first)
    assert wm.sweeper.sweep(batch_size=10).reclaimed == 10  # released: the next run's


def test_reclaim_expired_asks_the_lock_store_about_every_selected_lease(make_wm: Any) -> None:
    """One lock key gone while the row's expiry is ten minutes away: the holder is told
    lease_expired, yet ``leases reclaim --order X --expired`` matched nothing (it selected
    by the row's expiry first), leaving the item blocked until then. With a lock store the
    store says which selected leases are gone; the live one is left alone."""
    wm = build(make_wm, "redis", ttl=600)
    ids = sorted(hold(wm, "test.multi", 2))
    gone, kept = ids
    client = redis_client(wm)
    (key,) = [k for k in lock_keys(wm) if str(gone).encode() in k]
    client.delete(key)
    order_id = uuid.UUID(wm.queries.item(gone)["order_id"])
    admin = LeaseAdmin(wm.ctx)
    selector = LeaseSelector(order_id=order_id, expired=True)
    dry = admin.reclaim(selector, dry_run=True)
    assert [c["item_id"] for c in dry.changes] == [str(gone)]
    done = admin.reclaim(selector)
    assert [(c["item_id"], c["outcome"]) for c in done.changes] == [(str(gone), "requeued")]
    assert wm.queries.item(gone)["state"] == "queued"
    assert wm.queries.item(kept)["state"] == "leased"


def test_a_dry_run_does_not_list_a_lease_its_agent_finished_meanwhile(
    make_wm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a volume pass: `leases reclaim --dry-run` on Redis listed live leases as
    "would be requeued" while agents worked. It reads the rows unlocked, then asks the
    lock store; a lease submitted in between had left its row, then its lock, and looked
    gone. The row is read again: the submitted item is not listed, a lease really gone is."""
    wm = build(make_wm, "redis", ttl=600)
    wm.propose("test.multi", {"count": 2})
    finished, gone = (wm.agent.checkout("agent-1", type="test.multi") for _ in range(2))
    assert finished is not None and gone is not None
    (key,) = [k for k in lock_keys(wm) if str(gone.item_id).encode() in k]
    redis_client(wm).delete(key)
    lock = wm.ctx.leases.lock
    assert lock is not None
    asked = lock.alive

    def alive_after_the_agent_submits(ids: Any) -> Any:
        wm.agent.submit(finished, {"done": True})  # between the read and the question
        return asked(ids)

    monkeypatch.setattr(lock, "alive", alive_after_the_agent_submits)
    dry = LeaseAdmin(wm.ctx).reclaim(LeaseSelector(expired=True), dry_run=True)
    assert [c["item_id"] for c in dry.changes] == [str(gone.item_id)]
    assert wm.queries.item(finished.item_id)["state"] == "submitted"
