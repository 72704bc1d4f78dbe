"""The leasing contract (SPEC §3.1, §4.2, §4.4 to §4.6), one suite over every lease backend.

Each test runs once per store and lock backend (the ``backend`` fixture): SQLite (the ORM
path) and PostgreSQL (the SQL path), each with database, Redis and memory leases, and
Redis Cluster on PostgreSQL. Expiry is real: leases of a few seconds and a sleep past their
end. Every margin a stall could eat is a second or more, for loaded CI machines.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.support.types import Multi, Parts, Simple
from tests.support.waiting import wait_for
from workmanager import Actor, Registry, WorkManager
from workmanager.db.models import Item, Order, utcnow
from workmanager.db.store import Held
from workmanager.errors import (
    Forbidden,
    LeaseConflict,
    LeaseExpired,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    ValidationFailed,
)
from workmanager.leases.memory import MemoryLeaseStore
from workmanager.leases.redis import RedisLeaseStore
from workmanager.reads.leases import LeaseSelector
from workmanager.services.lease_admin import LeaseAdmin
from workmanager.types import Lease

FAST = {"retry_backoff_seconds": 0, "retry_jitter_seconds": 0}
#: Short enough to wait out, long enough that a call right after a grant is well inside it.
SHORT_TTL = 2
#: For a lease that is only left to expire (nothing keeps it alive meanwhile, and what is
#: done with it before comes at once): the suite's many waits for an expiry are its
#: longest part.
EXPIRING_TTL = 1


@pytest.fixture
def build(
    make_wm: Callable[..., WorkManager], backend: tuple[str, str]
) -> Callable[..., WorkManager]:
    """A WorkManager on this test's backend with the test order types registered."""
    db, lease_backend = backend

    def factory(**overrides: Any) -> WorkManager:
        registry = Registry([Simple(), Multi(), Parts()])
        return make_wm(db=db, backend=lease_backend, registry=registry, **overrides)

    return factory


def row(wm: WorkManager, item_id: uuid.UUID) -> Item:
    with wm.db.transaction() as s:
        item = s.get(Item, item_id)
        assert item is not None
        return item


def order_state(wm: WorkManager, order_id: uuid.UUID) -> str:
    with wm.db.transaction() as s:
        order = s.get(Order, order_id)
        assert order is not None
        return order.state


def item_events(wm: WorkManager, order_id: uuid.UUID, item_id: uuid.UUID) -> list[str]:
    return [e["event"] for e in wm.queries.events(order_id) if e["item_id"] == str(item_id)]


def lose_store_data(wm: WorkManager) -> None:
    """What a Redis flush does to this WorkManager's lease store (a no-op for ``database``).

    Deletes the test's own keys rather than FLUSHDB, so tests running at the same time on
    the same Redis database are not disturbed.
    """
    store = getattr(wm.ctx.leases, "store", None)
    if isinstance(store, MemoryLeaseStore):
        store.flush()
    elif isinstance(store, RedisLeaseStore):
        keys = list(store.client.scan_iter(match=f"{store.keys.prefix}*"))
        if keys:
            store.client.delete(*keys)


def sleep_past(moment: datetime) -> None:
    """Sleep until ``moment`` (an aware UTC time) is a little way in the past everywhere.

    The pad covers the Redis key, whose expiry is counted from the Lua call that comes
    just after the row's clock was read (a stall between the two moves it later).
    """
    time.sleep(max(0.0, (moment - utcnow()).total_seconds()) + 0.5)


def keep_alive_past(wm: WorkManager, lease: Lease, moment: datetime, **beat: Any) -> Lease:
    """Heartbeat ``lease`` every quarter second until ``moment`` (an aware UTC time) is a
    little way in the past (``sleep_past``'s pad); returns the last beat's lease. No beat
    races a deadline: each only has to come within the TTL of the one before."""
    last = [lease]

    def beaten_past() -> bool:
        past = utcnow() > moment + timedelta(seconds=0.5)  # read first: the beat comes after
        last.append(wm.agent.heartbeat(last[-1], **beat))
        return past

    wait_for(beaten_past, timeout=60, what=f"a heartbeat past {moment}", interval=0.25)
    return last[-1]


def checkout(wm: WorkManager, agent: str = "agent-a", **query: Any) -> Lease:
    lease = wm.agent.checkout(agent, **query)
    assert lease is not None, f"{agent} got no item for {query}"
    return lease


#: Every call that acts on a held lease, each with arguments it would succeed with.
LEASE_OPS: dict[str, Callable[[WorkManager, Lease], object]] = {
    "heartbeat": lambda wm, lease: wm.agent.heartbeat(lease, progress=0.5),
    "submit_part": lambda wm, lease: wm.agent.submit_part(lease, "a", {"v": 1}),
    "finalize": lambda wm, lease: wm.agent.finalize(lease, mode="best_effort"),
    "submit": lambda wm, lease: wm.agent.submit(lease, {"answer": 1}),
    "release": lambda wm, lease: wm.agent.release(lease),
    "fail": lambda wm, lease: wm.agent.fail(lease, {"code": "boom", "message": "no"}),
}


def assert_all_refused(wm: WorkManager, lease: Lease, error: type[Exception]) -> None:
    """Every lease operation with ``lease`` raises ``error`` and changes nothing."""
    before = row(wm, lease.item_id)
    for name, op in LEASE_OPS.items():
        with pytest.raises(error):
            op(wm, lease)
        after = row(wm, lease.item_id)
        assert (after.state, after.lease_token, after.leased_by_agent_id) == (
            before.state,
            before.lease_token,
            before.leased_by_agent_id,
        ), f"{name} changed the item although it was refused"


# --- checkout ---------------------------------------------------------------------------
def test_global_checkout_takes_priority_desc_then_oldest(build) -> None:
    wm = build()
    low = wm.propose("test.simple", {"n": 0}, priority=0)
    high_old = wm.propose("test.simple", {"n": 1}, priority=5)
    mid = wm.propose("test.simple", {"n": 2}, priority=1)
    high_new = wm.propose("test.simple", {"n": 3}, priority=5)
    got = [checkout(wm, f"agent-{i}").order_id for i in range(4)]
    assert got == [high_old, high_new, mid, low]
    assert wm.agent.checkout("agent-9") is None


def test_checkout_filters_type_min_priority_and_tenant(build) -> None:
    wm = build()
    t1_simple = wm.propose("test.simple", {"tenant_id": "t1"}, priority=1)
    t2_simple = wm.propose("test.simple", {"tenant_id": "t2"}, priority=3)
    t1_multi = wm.propose("test.multi", {"count": 1, "tenant_id": "t1"}, priority=5)
    assert wm.agent.checkout("a", min_priority=6) is None
    assert wm.agent.checkout("a", tenant_id="t3") is None
    assert checkout(wm, tenant_id="t1", type="test.simple").order_id == t1_simple
    assert checkout(wm, min_priority=4).order_id == t1_multi
    assert wm.agent.checkout("a", type="test.multi") is None
    assert wm.agent.checkout("a", tenant_id="t1") is None
    assert checkout(wm, type="test.simple", min_priority=3).order_id == t2_simple


def test_scoped_checkout_takes_only_that_order(build) -> None:
    wm = build()
    scoped = wm.propose("test.multi", {"count": 2}, priority=0)
    wm.propose("test.simple", {}, priority=9)
    first = checkout(wm, order_id=scoped)
    second = checkout(wm, order_id=scoped)
    assert {first.order_id, second.order_id} == {scoped}
    assert first.item_id != second.item_id
    assert wm.agent.checkout("a", order_id=scoped) is None
    with pytest.raises(NotFound):
        wm.agent.checkout("a", order_id=uuid.uuid4())


def test_items_not_yet_available_are_skipped(build) -> None:
    wm = build()
    later = wm.propose("test.simple", {}, priority=9)
    now_ = wm.propose("test.simple", {}, priority=0)
    with wm.db.transaction() as s:
        s.execute(
            update(Item)
            .where(Item.order_id == later)
            .values(available_at=utcnow() + timedelta(minutes=5))
        )
    assert checkout(wm).order_id == now_
    assert wm.agent.checkout("a") is None
    assert wm.agent.checkout("a", order_id=later) is None
    with wm.db.transaction() as s:
        s.execute(update(Item).where(Item.order_id == later).values(available_at=utcnow()))
    assert checkout(wm).order_id == later


def test_first_grant_moves_item_and_order_and_counts_the_attempt(build) -> None:
    wm = build()
    order_id = wm.propose("test.multi", {"count": 2})
    lease = checkout(wm)
    item = row(wm, lease.item_id)
    assert (item.state, item.attempts, item.leased_by_agent_id) == ("leased", 1, "agent-a")
    assert item.lease_token == lease.fence > 0 and lease.token.startswith(f"{lease.fence}.")
    assert item.lease_expires_at == lease.expires_at
    assert order_state(wm, order_id) == "in_progress"
    assert lease.heartbeat_every_seconds == wm.settings.heartbeat_every_seconds == 120


def test_the_advised_heartbeat_is_at_most_a_third_of_the_ttl(build) -> None:
    """HEARTBEAT_EVERY 120 with a 30 s lease advised 120: every agent following the advice
    lost its lease before its first beat. Capped at TTL/3, on checkout and heartbeat."""
    wm = build(lease_ttl_seconds=30)
    wm.propose("test.multi", {"count": 1})
    lease = checkout(wm)
    assert lease.heartbeat_every_seconds == 10
    beat = wm.agent.heartbeat(lease)
    assert beat.heartbeat_every_seconds == 10


# --- fencing tokens ---------------------------------------------------------------------
def test_tokens_strictly_increase_across_every_kind_of_regrant(build) -> None:
    wm = build(lease_ttl_seconds=EXPIRING_TTL, default_max_attempts=20, **FAST)
    wm.propose("test.simple", {})
    leases = [checkout(wm, "agent-a")]
    wm.agent.release(_current(wm, leases[-1]))
    leases.append(checkout(wm, "agent-a"))  # same agent, after release
    wm.agent.fail(_current(wm, leases[-1]), {"code": "x", "message": "retry me"})
    held = checkout(wm, "agent-b")  # after a retryable failure
    leases.append(held)
    sleep_past(held.expires_at)
    assert wm.sweeper.sweep().reclaimed == 1
    leases.append(checkout(wm, "agent-a"))  # after expiry and sweep
    wm.agent.release(_current(wm, leases[-1]))
    lose_store_data(wm)  # Redis flushed: every lock and count is gone
    leases.append(checkout(wm, "agent-c"))
    fences = [lease.fence for lease in leases]
    assert all(a < b for a, b in itertools.pairwise(fences)), fences
    secrets = {lease.token.split(".", 1)[1] for lease in leases}
    assert len(secrets) == len(leases), "every grant gets a secret of its own"


def _current(wm: WorkManager, lease: Lease) -> Lease:
    """``lease``, checked to be the one recorded on the only item."""
    with wm.db.transaction() as s:
        item = s.query(Item).one()
        assert item.lease_token == lease.fence and item.lease_expires_at is not None
        assert item.leased_by_agent_id == lease.agent_id
    return lease


# --- heartbeat --------------------------------------------------------------------------
def test_heartbeat_extends_the_lease_and_first_one_starts_the_item(build) -> None:
    # Beaten every quarter second until the grant's own expiry has passed: each beat need only
    # come within the TTL (3 s) of the one before, so a stall of up to ~2.5 s is harmless, and
    # a beat accepted past the grant's expiry shows the beats extended it.
    wm = build(lease_ttl_seconds=3)
    order_id = wm.propose("test.simple", {})
    lease = checkout(wm)
    beat = wm.agent.heartbeat(lease, progress=0.25, checkpoint={"page": 3})
    assert beat.expires_at >= lease.expires_at
    assert row(wm, lease.item_id).state == "in_progress"
    beat = keep_alive_past(wm, beat, lease.expires_at, progress=0.5)
    assert beat.expires_at > lease.expires_at
    item = row(wm, lease.item_id)
    assert item.lease_expires_at == item.last_heartbeat_at + timedelta(seconds=3)
    assert item.progress is not None and item.progress["progress"] == 0.5
    # written as every timestamp the product gives (it said +00:00 beside the Zs)
    assert item.progress["at"].endswith("Z") and beat.item is not None
    assert beat.item.progress is not None and beat.item.progress["at"].endswith("Z")
    assert wm.sweeper.sweep().reclaimed == 0
    wm.agent.submit(lease, {"answer": 1})
    assert item_events(wm, order_id, lease.item_id).count("in_progress") == 1


def test_checkpoint_is_readable_by_the_next_attempt(build) -> None:
    wm = build(lease_ttl_seconds=EXPIRING_TTL, **FAST)
    wm.propose("test.simple", {})
    lease = checkout(wm)
    wm.agent.heartbeat(lease, progress=0.4, checkpoint={"cursor": "abc"})
    sleep_past(wm.agent.heartbeat(lease).expires_at)
    wm.sweeper.sweep()
    again = checkout(wm, "agent-b")
    assert again.item is not None and again.item.progress is not None
    assert again.item.progress["checkpoint"] == {"cursor": "abc"}


# --- refusals: stale, expired, foreign --------------------------------------------------
def test_a_stale_token_is_refused_even_for_the_same_agent(build) -> None:
    wm = build(**FAST)
    wm.propose("test.parts", {})
    old = checkout(wm, "agent-a")
    wm.agent.release(old)
    current = checkout(wm, "agent-a")  # the same agent id, a newer grant
    assert current.item_id == old.item_id and current.fence > old.fence
    assert_all_refused(wm, old, LeaseConflict)
    wm.agent.heartbeat(current)  # the current holder is unaffected
    wm.agent.submit_part(current, "a", {"v": 1})
    wm.agent.submit_part(current, "b", {})
    assert wm.agent.finalize(current).item["state"] == "submitted"


def test_another_agent_presenting_the_current_token_is_forbidden(build) -> None:
    wm = build()
    wm.propose("test.parts", {})
    lease = checkout(wm, "agent-a")
    assert_all_refused(wm, dataclasses.replace(lease, agent_id="agent-b"), Forbidden)
    assert wm.agent.submit(lease, {"answer": 1}).item["state"] == "submitted"


def test_the_current_fence_without_its_secret_is_a_conflict(
    build: Callable[..., WorkManager],
) -> None:
    """Issue 11, item 1: the fence can be read (events, ``attempts``) but proves nothing.
    The current fence with any other secret, a truncated one or none, by the holder's own
    agent id, is 409 ``lease_conflict`` on every call and changes nothing; the real token
    still works afterwards."""
    wm = build()
    wm.propose("test.parts", {})
    lease = checkout(wm, "agent-a")
    fence, secret = lease.token.split(".", 1)
    assert len(secret) >= 32 and not secret.isdigit()
    guesses = [
        f"{fence}.{'A' * len(secret)}",
        f"{fence}.{secret[:-1]}",
        f"{fence}.{secret}x",
        f"{fence}.",
        fence,
        f"{fence}.{secret.swapcase()}",
    ]
    for guess in guesses:
        assert_all_refused(wm, dataclasses.replace(lease, token=guess), LeaseConflict)
    assert row(wm, lease.item_id).leased_by_agent_id == "agent-a"
    assert wm.agent.submit(lease, {"answer": 1}).item["state"] == "submitted"


def test_only_the_secrets_hash_is_stored(
    build: Callable[..., WorkManager], backend: tuple[str, str]
) -> None:
    """Issue 11, item 1: the secret is kept hashed on the row and in the Redis lock's
    value, so a reader of the database or of Redis cannot present the lease."""
    wm = build()
    wm.propose("test.simple", {})
    lease = checkout(wm, "agent-a")
    secret = lease.token.split(".", 1)[1]
    digest = hashlib.sha256(secret.encode()).hexdigest()
    item = row(wm, lease.item_id)
    assert item.lease_secret_hash == digest
    with wm.db.transaction() as s:
        stored = s.execute(select(Item).where(Item.id == lease.item_id)).scalar_one()
        assert secret not in repr({c.key: getattr(stored, c.key) for c in Item.__table__.c})
    store = getattr(wm.ctx.leases, "store", None)
    if isinstance(store, RedisLeaseStore):
        value = store.client.get(store.keys.item(str(lease.item_id)))
        assert value is not None, backend
        text = value.decode() if isinstance(value, bytes) else str(value)
        assert digest in text and secret not in text, text


def test_an_expired_lease_is_refused(build) -> None:
    wm = build(lease_ttl_seconds=EXPIRING_TTL, **FAST)
    wm.propose("test.parts", {})
    lease = checkout(wm, "agent-a")
    sleep_past(lease.expires_at)
    assert_all_refused(wm, lease, LeaseExpired)  # expired, not yet swept
    assert wm.sweeper.sweep().reclaimed == 1
    assert_all_refused(wm, lease, LeaseExpired)  # swept back to the queue
    regrant = checkout(wm, "agent-b")
    assert_all_refused(wm, lease, LeaseConflict)  # somebody else holds it now
    wm.agent.heartbeat(regrant)


# --- release and fail -------------------------------------------------------------------
def test_release_requeues_the_item_and_the_order_when_nothing_is_held(build) -> None:
    wm = build()
    order_id = wm.propose("test.multi", {"count": 2})
    first, second = checkout(wm, "agent-a"), checkout(wm, "agent-b")
    outcome = wm.agent.release(first)
    assert outcome.item["state"] == "queued" and outcome.order_state == "in_progress"
    item = row(wm, first.item_id)
    assert (item.leased_by_agent_id, item.lease_expires_at) == (None, None)
    assert wm.agent.release(second).order_state == "queued"
    assert order_state(wm, order_id) == "queued"
    assert "released" in item_events(wm, order_id, first.item_id)
    assert {checkout(wm).item_id, checkout(wm).item_id} == {first.item_id, second.item_id}


def test_retryable_failure_requeues_with_backoff(build) -> None:
    wm = build(retry_backoff_seconds=30, retry_jitter_seconds=0)
    order_id = wm.propose("test.simple", {})
    lease = checkout(wm)
    before = utcnow()
    outcome = wm.agent.fail(lease, {"code": "flaky", "message": "try later"})
    after = utcnow()
    assert outcome.item["state"] == "queued"
    item = row(wm, lease.item_id)
    assert item.available_at is not None
    backoff = timedelta(seconds=30)
    assert before + backoff <= item.available_at <= after + backoff, item.available_at
    assert item.error == {"code": "flaky", "message": "try later"}
    assert item.leased_by_agent_id is None
    assert order_state(wm, order_id) == "in_progress"  # SPEC §3.1: fail changes the item only
    assert wm.agent.checkout("agent-b") is None  # backing off


def test_non_retryable_failure_fails_the_item_and_the_order(build) -> None:
    wm = build()
    order_id = wm.propose("test.multi", {"count": 2})
    lease = checkout(wm)
    outcome = wm.agent.fail(lease, {"code": "bad_input", "message": "never"}, retryable=False)
    assert outcome.item["state"] == "failed" and outcome.order_state == "failed"
    assert row(wm, lease.item_id).error == {"code": "bad_input", "message": "never"}
    assert order_state(wm, order_id) == "failed"
    # The order's other item is still queued, but a failed order hands out no more work.
    assert wm.agent.checkout("agent-b") is None
    assert wm.agent.checkout("agent-b", order_id=order_id) is None
    wm.orders.retry(order_id, Actor("user", "ops"))
    assert checkout(wm, "agent-b").order_id == order_id


# --- the sweep --------------------------------------------------------------------------
def test_sweep_requeues_expired_leases_with_backoff(build) -> None:
    # 3 s leases, ``kept`` beaten until ``lease`` has expired: the sweep then runs a whole
    # TTL (less a beat's interval) before ``kept`` would expire, slack for a loaded machine.
    wm = build(lease_ttl_seconds=3, retry_backoff_seconds=30, retry_jitter_seconds=0)
    order_id = wm.propose("test.multi", {"count": 2})
    lease, kept = checkout(wm, "agent-a"), checkout(wm, "agent-b")
    keep_alive_past(wm, kept, lease.expires_at)
    before = utcnow()
    result = wm.sweeper.sweep()
    after = utcnow()
    assert result.requeued == {"test.multi": [lease.item_id]}
    item = row(wm, lease.item_id)
    assert (item.state, item.attempts, item.leased_by_agent_id) == ("queued", 1, None)
    backoff = timedelta(seconds=30)
    assert item.available_at is not None
    assert before + backoff <= item.available_at <= after + backoff, item.available_at
    assert row(wm, kept.item_id).state == "in_progress"
    expired = [e for e in wm.queries.events(order_id) if e["event"] == "lease_expired"]
    assert len(expired) == 1 and expired[0]["payload"]["attempts"] == 1
    assert wm.sweeper.sweep().reclaimed == 0  # nothing else is due


def test_sweep_fails_items_whose_attempts_are_spent(build) -> None:
    wm = build(lease_ttl_seconds=EXPIRING_TTL, default_max_attempts=2, **FAST)
    order_id = wm.propose("test.simple", {})
    for attempt in (1, 2):
        lease = checkout(wm, f"agent-{attempt}")
        assert row(wm, lease.item_id).attempts == attempt
        sleep_past(lease.expires_at)
        result = wm.sweeper.sweep()
        assert result.reclaimed == 1
    item = row(wm, lease.item_id)
    assert item.state == "failed" and item.error is not None
    assert item.error["code"] == "max_attempts_exceeded"
    assert result.failed == {"test.simple": 1}
    assert order_state(wm, order_id) == "failed"
    assert wm.agent.checkout("agent-3") is None


def test_a_submitted_item_is_never_reclaimed(build) -> None:
    wm = build(lease_ttl_seconds=EXPIRING_TTL, **FAST)
    order_id = wm.propose("test.multi", {"count": 2})
    lease = checkout(wm)
    wm.agent.submit(lease, {"answer": 1})
    item = row(wm, lease.item_id)
    assert (item.state, item.leased_by_agent_id, item.lease_expires_at) == (
        "submitted",
        None,
        None,
    )
    sleep_past(lease.expires_at)
    assert wm.sweeper.sweep().reclaimed == 0
    assert row(wm, lease.item_id).state == "submitted"
    assert lease.item_id not in {checkout(wm, "agent-b").item_id}
    assert "lease_expired" not in item_events(wm, order_id, lease.item_id)


def test_leases_lost_with_the_store_are_reclaimed_by_the_next_sweep(build, backend) -> None:
    wm = build(**FAST)  # leases of 600 s: only the loss of the store can end this one early
    wm.propose("test.multi", {"count": 2})
    lost = checkout(wm, "agent-a")
    assert wm.sweeper.sweep().reclaimed == 0  # a live lease survives the first (audit) sweep
    lose_store_data(wm)
    result = wm.sweeper.sweep()
    if backend[1].startswith("database"):  # the rows are the leases: nothing was lost
        assert result.reclaimed == 0
        wm.agent.heartbeat(lost)
        return
    assert result.requeued == {"test.multi": [lost.item_id]}
    assert_all_refused(wm, lost, LeaseExpired)
    regrant = checkout(wm, "agent-b", order_id=lost.order_id)
    assert regrant.item_id == lost.item_id and regrant.fence > lost.fence
    assert_all_refused(wm, lost, LeaseConflict)
    wm.agent.submit(regrant, {"answer": 1})
    assert wm.sweeper.sweep().reclaimed == 0


# --- concurrency limits -----------------------------------------------------------------
def test_per_agent_limit_on_global_and_scoped_checkout(build) -> None:
    wm = build(max_leases_per_agent=2)
    order_id = wm.propose("test.multi", {"count": 5})
    first = checkout(wm, "agent-a")
    checkout(wm, "agent-a", order_id=order_id)
    assert wm.agent.checkout("agent-a") is None
    assert wm.agent.checkout("agent-a", order_id=order_id) is None
    checkout(wm, "agent-b")  # other agents are not affected
    wm.agent.submit(first, {"answer": 1})
    checkout(wm, "agent-a", order_id=order_id)
    assert wm.agent.checkout("agent-a") is None
    # an unknown order is not found, full or not (PostgreSQL answered "no item")
    with pytest.raises(NotFound):
        wm.agent.checkout("agent-a", order_id=uuid.uuid4())


def test_an_agent_at_its_limit_locks_no_row_another_agent_could_have(build, monkeypatch) -> None:
    """A limits pass found the lock-store backends leasing the row first and only then
    hearing from the store that the agent was at its limit: while the refused checkout
    held the row, a racing free agent skipped it and was told "no items" (SPEC §4.5). The
    store is asked before any row is locked. (The database backend counts the agent under
    its own lock before the grant: tests/integration/test_limit_locks.py.)"""
    wm = build(max_leases_per_agent=1)
    if wm.ctx.leases.lock is None:
        pytest.skip("the row is the lock: its count comes before the grant already")
    wm.propose("test.multi", {"count": 2})
    checkout(wm, "agent-a")  # agent-a at its limit; one item left
    store = wm.ctx.leases.store  # type: ignore[attr-defined]
    acquire, asked, done = store.acquire, [], threading.Event()

    def slow_acquire(item_id: str, owner: str, *args: Any) -> int:
        asked.append(owner)
        if owner == "agent-a":  # its refusal held back while agent-b checks out
            done.wait(3)
        return int(acquire(item_id, owner, *args))

    monkeypatch.setattr(store, "acquire", slow_acquire)
    got: list[Lease | None] = []
    polling = threading.Thread(target=lambda: got.append(wm.agent.checkout("agent-a")))
    polling.start()
    time.sleep(0.3)
    lease = wm.agent.checkout("agent-b")
    done.set()
    polling.join(10)
    assert lease is not None  # not "no items"
    assert got == [None] and asked == ["agent-b"]


def test_a_lock_the_store_could_not_drop_does_not_hold_back_the_item(build, monkeypatch) -> None:
    """An operator pass found a release answered 200 while Redis refused writes (a
    replica) leave the item queued with its lock still in Redis: every checkout skipped
    it ("no items") until the lock's TTL, 10 minutes by default. The next grant's fence is
    later than the stale lock's, which it takes over; a lock under a later fence than the
    row's is still left alone."""
    wm = build()
    if wm.ctx.leases.lock is None:
        pytest.skip("the row is the lock")
    order_id = wm.propose("test.simple", {})
    store = wm.ctx.leases.store  # type: ignore[attr-defined]

    def refused(*_: Any) -> int:
        raise Unavailable("redis unavailable: the server is a read-only replica")

    for end, agent in (("release", "agent-a"), ("fail", "agent-b")):
        lease = checkout(wm, agent, order_id=order_id)
        with monkeypatch.context() as m:  # refused until the next grant (drops.py retries)
            m.setattr(store, "release", refused)
            if end == "release":
                wm.agent.release(lease)
            else:
                wm.agent.fail(lease, {"code": "x", "message": "y"}, retryable=True)
                with wm.db.transaction() as s:  # due again at once, for the next checkout
                    s.execute(update(Item).values(available_at=None))
            assert store.check(str(lease.item_id), agent, lease.holder.store_proof()) == 1
            again = checkout(wm, "agent-c", order_id=order_id)
        assert again.item_id == lease.item_id and again.token > lease.token
        assert_all_refused(wm, lease, LeaseConflict)
        wm.agent.heartbeat(again)
        wm.agent.release(again)
    later = store.acquire(str(lease.item_id), "agent-x", 60_000, 10_000, "test.simple", 0, 0, "h")
    assert later == 10_000
    assert wm.agent.checkout("agent-d", order_id=order_id) is None


def test_a_lock_the_store_refused_to_drop_is_dropped_once_it_takes_writes(
    build, monkeypatch
) -> None:
    """A lease-safety pass: after a release while Redis refused writes, its lock stayed
    for the TTL, counting against its agent's limit (an agent at a limit of 1 got "no
    items") and answering its old holder's heartbeats. The drop is tried again in the
    background until the store takes it (leases/drops.py)."""
    from workmanager.leases import drops
    from workmanager.patience import Patience

    wm = build(max_leases_per_agent=1)
    if wm.ctx.leases.lock is None:
        pytest.skip("the row is the lock")
    monkeypatch.setattr(drops, "DROPPING", Patience("drop", seconds=20, first_wait=0.05))
    wm.propose("test.multi", {"count": 2})
    lease = checkout(wm, "agent-a")
    store = wm.ctx.leases.store  # type: ignore[attr-defined]
    release, outage = store.release, [Unavailable("redis unavailable: a read-only replica")] * 3

    def refused_a_while(*args: Any) -> int:
        if outage:
            raise outage.pop()
        return int(release(*args))

    monkeypatch.setattr(store, "release", refused_a_while)
    wm.agent.release(lease)
    proof = lease.holder.store_proof()
    wait_for(lambda: store.check(str(lease.item_id), "agent-a", proof) == 0, what="the drop")
    assert outage == []
    assert checkout(wm, "agent-a").item_id  # its limit's place given back with the lock


def test_a_lock_taken_over_between_a_release_and_its_drop_frees_its_agent(
    build, monkeypatch
) -> None:
    """A review of the takeover found the releasing agent counted at its limit for the
    lease TTL: another agent's checkout took the item over between the release's commit
    and its lock's drop, and the drop (the lock no longer its own) left the item in the
    releasing agent's count. Its place is given back whoever holds the lock now."""
    wm = build(max_leases_per_agent=1)
    if wm.ctx.leases.lock is None:
        pytest.skip("the row is the lock")
    order_id = wm.propose("test.simple", {})
    first = checkout(wm, "agent-a", order_id=order_id)
    lock = wm.ctx.leases
    drop, taken = lock.release_lock, []

    def racing(item_id: uuid.UUID, holder: Any, order_type: str) -> bool:
        if not taken:  # agent-b lands between agent-a's commit and its lock's drop
            taken.append(checkout(wm, "agent-b", order_id=order_id))
        return bool(drop(item_id, holder, order_type))

    monkeypatch.setattr(lock, "release_lock", racing)
    wm.agent.release(first)
    monkeypatch.undo()
    assert taken and taken[0].item_id == first.item_id
    other = wm.propose("test.multi", {"count": 1})
    assert checkout(wm, "agent-a", order_id=other).order_id == other
    wm.agent.heartbeat(taken[0])


def test_a_plain_heartbeat_after_the_submit_says_the_lease_has_ended(build) -> None:
    """With a lock store, a heartbeat without progress on a lease already heartbeaten
    touches only the lock, gone with the submit: it said ``lease_expired`` ("the lease has
    expired") where every other call after a submit says ``illegal_state_transition``,
    and an agent took its submitted work for lost."""
    from workmanager.errors import IllegalStateTransition

    wm = build()
    wm.propose("test.simple", {})
    lease = wm.agent.heartbeat(checkout(wm), progress=0.5)  # in_progress: lock-only next
    wm.agent.submit(lease, {"answer": 1})
    with pytest.raises(IllegalStateTransition):
        wm.agent.heartbeat(lease)
    with pytest.raises(IllegalStateTransition):
        wm.agent.heartbeat(lease, progress=0.9)


def test_a_stale_locks_limit_places_go_with_it_when_its_item_is_granted_again(build) -> None:
    """A grant that died before its commit leaves its lock (fence 1; the row still at 0),
    and the item's next grant takes the same fence and the lock over. On a single Redis
    and in memory the dead grant's places under the limits went with its lock; on Redis
    Cluster they stayed for a lease TTL and the regrant was refused as over the agent's
    and the type's limits (a review of the three acquires)."""
    wm = build(max_leases_per_agent=1, max_leases_per_type=1)
    store = getattr(wm.ctx.leases, "store", None)
    if wm.ctx.leases.lock is None or store is None:
        pytest.skip("the row is the lock")
    item = str(uuid.uuid4())

    def grant(agent: str, secret: str, agent_limit: int = 1) -> int:
        ttl = 60_000
        return int(store.acquire(item, agent, ttl, 1, "test.simple", agent_limit, 1, secret))

    assert grant("agent-a", "a" * 64) == 1  # its transaction then died: the row is queued
    assert grant("agent-a", "b" * 64) == 1  # the same agent's next grant of the row
    assert grant("agent-b", "c" * 64, agent_limit=0) == 1  # and another agent's
    other = str(uuid.uuid4())  # agent-b's one place is the item's: no other for it
    assert store.acquire(other, "agent-b", 60_000, 1, "test.simple", 1, 0, "d" * 64) == -1
    # agent-a holds nothing now (the lock it had is agent-b's): its place is free
    assert store.acquire(other, "agent-a", 60_000, 1, "test.simple", 1, 0, "e" * 64) == 1


def test_a_lease_extended_past_the_ttl_still_counts_after_the_ttl(build) -> None:
    """A lease-safety pass: an operator's ``leases extend`` past the TTL, then the agent's
    next grant, shortened its limit zset to the TTL; once that ran out the extended lease
    was not counted and the agent held one lease over its limit."""
    wm = build(max_leases_per_agent=2, lease_ttl_seconds=EXPIRING_TTL + 1)
    order_id = wm.propose("test.multi", {"count": 5})
    extended = checkout(wm, "agent-a", order_id=order_id)
    LeaseAdmin(wm.ctx).extend(LeaseSelector(item_id=extended.item_id), 120)
    wm.agent.submit(checkout(wm, "agent-a", order_id=order_id), {"answer": 1})
    time.sleep(EXPIRING_TTL + 1.5)  # past the TTL: the extended lease still held
    assert checkout(wm, "agent-a", order_id=order_id) is not None
    assert wm.agent.checkout("agent-a", order_id=order_id) is None  # two held: its limit
    wm.agent.heartbeat(extended)


def test_per_type_limit_does_not_block_other_types(build) -> None:
    wm = build(max_leases_per_type=2)
    busy = wm.propose("test.multi", {"count": 4}, priority=9)
    other = [wm.propose("test.simple", {}, priority=0) for _ in range(3)]
    multi = [checkout(wm, "agent-a"), checkout(wm, "agent-b")]
    assert {lease.order_id for lease in multi} == {busy}
    # test.multi is at its limit and has higher priority, yet the next grant is a simple.
    assert checkout(wm, "agent-c").order_id in other
    assert wm.agent.checkout("agent-d", order_id=busy) is None
    assert wm.agent.checkout("agent-d", type="test.multi") is None
    assert checkout(wm, "agent-d", order_id=other[2]).order_id == other[2]
    assert wm.agent.checkout("agent-e") is None  # both types at their limit
    wm.agent.release(multi[0])
    assert checkout(wm, "agent-e").order_id == busy


def test_an_expired_lease_frees_its_agent_and_type_slot_before_the_sweep(build) -> None:
    """The database backend counted an expired row until the sweep returned it, where the
    Redis and memory backends drop it at once: the same agent (a restarted one at its
    limit) and the full type got nothing for up to a sweep interval."""
    wm = build(max_leases_per_agent=1, max_leases_per_type=1, lease_ttl_seconds=EXPIRING_TTL)
    wm.propose("test.multi", {"count": 3})
    lost = checkout(wm, "agent-a")
    assert wm.agent.checkout("agent-a") is None and wm.agent.checkout("agent-b") is None
    time.sleep(EXPIRING_TTL + 1)  # expired; no sweep has run
    again = checkout(wm, "agent-a")  # the agent's slot and the type's are free again
    assert again.item_id != lost.item_id
    assert wm.agent.checkout("agent-b") is None  # the new lease counts
    assert_all_refused(wm, lost, LeaseExpired)


def test_per_tenant_limit_does_not_block_other_tenants(build) -> None:
    wm = build(max_leases_per_tenant=2)
    busy = wm.propose("test.multi", {"count": 4}, priority=9, tenant_id="acme")
    other = wm.propose("test.multi", {"count": 2}, priority=0, tenant_id="globex")
    untenanted = wm.propose("test.simple", {}, priority=0)
    acme = [checkout(wm, "agent-a"), checkout(wm, "agent-b")]
    assert {lease.order_id for lease in acme} == {busy}
    # acme is at its limit and has the higher priority, yet the next grants are others'.
    assert wm.agent.checkout("agent-c", tenant_id="acme") is None
    assert wm.agent.checkout("agent-c", order_id=busy) is None
    assert checkout(wm, "agent-c").order_id == other
    assert checkout(wm, "agent-d", order_id=untenanted).order_id == untenanted  # no tenant
    wm.agent.submit(acme[0], {"answer": 1})
    assert checkout(wm, "agent-e", tenant_id="acme").order_id == busy


@pytest.mark.parametrize("limit", ["type", "tenant"])
def test_a_checkout_of_nothing_but_a_full_type_or_tenant_picks_once(
    build, monkeypatch: pytest.MonkeyPatch, limit: str
) -> None:
    """A scale pass: a checkout whose own type (or tenant, or order) was found at its
    limit picked again leaving it out, a filter no index serves: each refused poll walked
    every queued item of that type (0.2-0.4 s on a queue of 480,000). It ends at once."""
    from workmanager.db.postgres import checkout as pg_checkout
    from workmanager.leases import database, keyed, selection

    picks: list[object] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        picks.append(args)
        return selection.shape_of(*args, **kwargs)

    for module in (pg_checkout, database, keyed):
        monkeypatch.setattr(module, "shape_of", counted)
    wm = build(**{f"max_leases_per_{limit}": 1})
    order_id = wm.propose("test.multi", {"count": 3}, tenant_id="acme")
    wm.propose("test.simple", {}, tenant_id="globex")
    assert checkout(wm, "agent-a", order_id=order_id) is not None
    asks = [
        {"order_id": order_id},
        {"type": "test.multi"} if limit == "type" else {"tenant_id": "acme"},
    ]
    for ask in asks:
        picks.clear()
        assert wm.agent.checkout("agent-c", **ask) is None, ask
        assert len(picks) <= 1, (ask, len(picks))
    assert checkout(wm, "agent-c").order_id != order_id  # the others' work goes on


def racing_checkouts(wm: WorkManager, threads: int, each: int, agents: int) -> list[Lease | None]:
    """``threads`` threads started together, each checking out ``each`` times as agent
    ``agent-<n % agents>``: every answer."""
    start = threading.Barrier(threads)
    got: list[Lease | None] = []

    def agent(n: int) -> None:
        start.wait()
        for _ in range(each):
            got.append(wm.agent.checkout(f"agent-{n % agents}"))

    workers = [threading.Thread(target=agent, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)
    assert len(got) == threads * each
    return got


def test_per_tenant_limit_holds_under_racing_checkouts(build) -> None:
    wm = build(max_leases_per_tenant=2)
    wm.propose("test.multi", {"count": 8}, tenant_id="acme")
    got = racing_checkouts(wm, threads=6, each=1, agents=6)
    assert len([lease for lease in got if lease is not None]) == 2


def test_per_type_and_agent_limits_hold_under_racing_checkouts(build) -> None:
    """Each limit is counted under its own key's lock after the grant (leases/limits.py):
    racing checkouts of one type never hold more than its limit, nor one agent more than
    its own, while another type goes on being granted beside them."""
    wm = build(max_leases_per_type=3, max_leases_per_agent=2)
    wm.propose("test.multi", {"count": 12}, priority=5)
    wm.propose("test.simple", {})
    got = racing_checkouts(wm, threads=8, each=2, agents=4)
    leases = [lease for lease in got if lease is not None]
    by_type = Counter(row(wm, lease.item_id).order_type for lease in leases)
    assert by_type == {"test.multi": 3, "test.simple": 1}, by_type
    by_agent = Counter(lease.agent_id for lease in leases)
    assert max(by_agent.values()) <= 2, by_agent


# --- the store's reclaim, release_held and extend (the operator's actions, the sweep) ----
OPERATOR = Actor("user", "ops")


def picked(wm: WorkManager, *leases: Lease) -> list[Held]:
    """The held leases as an operator picks them: read from their rows, no secret."""
    return [Held.of(row(wm, lease.item_id)) for lease in leases]


def test_store_reclaim_ends_the_leases_picked_and_leaves_a_regranted_one(build) -> None:
    wm = build(default_max_attempts=2, **FAST)
    store = wm.agent.store
    order_id = wm.propose("test.multi", {"count": 3})
    first, second, third = (checkout(wm, f"agent-{n}") for n in "abc")
    stale = picked(wm, third)
    wm.agent.release(third)
    regrant = checkout(wm, "agent-d", item_id=third.item_id)  # another fence: not picked
    batch = store.reclaim(picked(wm, first, second) + stale, OPERATOR, "lease_reclaimed")
    assert {c.lease.item_id: c.outcome for c in batch.changes} == {
        first.item_id: "requeued",
        second.item_id: "requeued",
    }
    assert batch.locked == {first.item_id, second.item_id}
    for lease in (first, second):
        item = row(wm, lease.item_id)
        assert (item.state, item.attempts, item.leased_by_agent_id) == ("queued", 1, None)
        assert item_events(wm, order_id, lease.item_id)[-1] == "lease_reclaimed"
        assert_all_refused(wm, lease, LeaseExpired)
    wm.agent.heartbeat(regrant)  # untouched, its lock too
    again = checkout(wm, "agent-e", item_id=first.item_id)  # the lock store let it go
    assert again.fence > first.fence
    assert order_state(wm, order_id) == "in_progress"  # an expiry changes the item only
    # attempts spent: the item fails, and its order with it (its event after the item's)
    batch = store.reclaim(picked(wm, again), OPERATOR, "lease_reclaimed")
    assert [c.outcome for c in batch.changes] == ["failed"]
    assert row(wm, first.item_id).error["code"] == "max_attempts_exceeded"
    assert order_state(wm, order_id) == "failed"
    events = [e["event"] for e in wm.queries.events(order_id)]
    assert events[-2:] == ["lease_reclaimed", "failed"]


def test_store_reclaim_expired_takes_only_the_leases_that_are_gone(build) -> None:
    wm = build(lease_ttl_seconds=SHORT_TTL, **FAST)
    store = wm.agent.store
    wm.propose("test.multi", {"count": 2})
    lapsed, kept = checkout(wm, "agent-a"), checkout(wm, "agent-b")
    kept = keep_alive_past(wm, kept, lapsed.expires_at)
    with wm.db.transaction() as s:  # kept's recorded expiry passes too (a lock-only beat)
        s.execute(
            update(Item)
            .where(Item.id == kept.item_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    both = picked(wm, lapsed, kept)
    batch = store.reclaim(both, Actor.system(), "lease_expired", expired=True)
    changes = {c.lease.item_id: c.outcome for c in batch.changes}
    if wm.ctx.leases.lock is None:  # the row is the lock: its expiry says
        assert changes == {lapsed.item_id: "requeued", kept.item_id: "requeued"}
        return
    assert changes == {lapsed.item_id: "requeued"}  # kept's lock is alive
    live = row(wm, kept.item_id)
    assert live.state == "in_progress" and live.lease_expires_at is not None
    assert live.lease_expires_at > utcnow()  # the lock's time, written back
    wm.agent.heartbeat(kept)


def test_store_release_held_gives_back_and_requeues_the_order_once_in_a_batch(build) -> None:
    wm = build()
    store = wm.agent.store
    order_id = wm.propose("test.multi", {"count": 2})
    first, second = checkout(wm, "agent-a"), checkout(wm, "agent-b")
    wm.agent.heartbeat(second)
    batch = store.release_held(picked(wm, first, second), OPERATOR)
    assert [c.outcome for c in batch.changes] == ["released", "released"]
    assert {c.lease.agent_id for c in batch.changes} == {"agent-a", "agent-b"}
    for lease in (first, second):
        item = row(wm, lease.item_id)
        assert (item.state, item.attempts, item.leased_by_agent_id) == ("queued", 0, None)
        assert_all_refused(wm, lease, LeaseExpired)
    assert order_state(wm, order_id) == "queued"  # both released in one batch: requeued
    events = [e["event"] for e in wm.queries.events(order_id)]
    assert events[-3:] == ["lease_released", "lease_released", "requeued"]
    assert {checkout(wm).item_id, checkout(wm).item_id} == {first.item_id, second.item_id}


def test_store_extend_pushes_live_leases_and_skips_expired_ones(build) -> None:
    wm = build(lease_ttl_seconds=SHORT_TTL, **FAST)
    store = wm.agent.store
    order_id = wm.propose("test.multi", {"count": 2})
    lapsed, live = checkout(wm, "agent-a"), checkout(wm, "agent-b")
    live = keep_alive_past(wm, live, lapsed.expires_at)
    before = row(wm, live.item_id).lease_expires_at
    assert before is not None
    lock = wm.ctx.leases.lock
    if lock is not None:  # the lock's end: plain beats extended only the lock
        before = lock.ends([live.item_id])[live.item_id]
    batch = store.extend(picked(wm, lapsed, live), OPERATOR, 60)
    outcome = {c.lease.item_id: c for c in batch.changes}
    assert outcome[lapsed.item_id].outcome == "skipped"
    assert (outcome[lapsed.item_id].reason or "").startswith("lease_expired")
    assert outcome[live.item_id].outcome == "extended"
    extended = outcome[live.item_id].at
    assert abs(extended - (before + timedelta(seconds=60))) <= timedelta(milliseconds=1)
    assert row(wm, live.item_id).lease_expires_at == extended
    assert item_events(wm, order_id, live.item_id)[-1] == "lease_extended"
    sleep_past(utcnow() + timedelta(seconds=SHORT_TTL))  # past the TTL its last beat gave
    wm.agent.heartbeat(live)  # the lock store's hold was extended with the row
    assert wm.sweeper.sweep().reclaimed == 1  # only the lapsed one
    assert row(wm, live.item_id).state == "in_progress"


class Race:
    """Agents and reclaimers on one WorkManager; what they saw, for the assertions."""

    def __init__(self, wm: WorkManager) -> None:
        self.wm = wm
        self.admin = LeaseAdmin(wm.ctx, OPERATOR)
        self.grants: list[tuple[uuid.UUID, int]] = []
        self.submitted: list[uuid.UUID] = []
        self.ended: list[int] = []
        self.errors: list[BaseException] = []
        self.done, self.reclaiming = threading.Event(), threading.Event()
        self.reclaiming.set()

    def agent(self, n: int) -> None:
        try:
            for turn in itertools.count():
                if self.done.is_set():
                    return
                lease = self.wm.agent.checkout(f"agent-{n}")
                if lease is None:
                    time.sleep(0.01)
                    continue
                self.grants.append((lease.item_id, lease.fence))
                if self.reclaiming.is_set() and turn % 5 == 4:
                    continue  # walked away: the sweep brings it back after the TTL
                self.work(lease, n)
        except BaseException as exc:  # surfaced by the test
            self.errors.append(exc)

    def work(self, lease: Lease, n: int) -> None:
        try:
            lease = self.wm.agent.heartbeat(lease, progress=0.5)
            time.sleep(0.005)  # held a moment: the reclaimers race this
            lease = self.wm.agent.heartbeat(lease)
            self.wm.agent.submit(lease, {"answer": n})
        except (LeaseExpired, LeaseConflict):
            return  # ended under it: by an operator or the sweep
        self.submitted.append(lease.item_id)

    def reclaimer(self) -> None:
        try:
            for turn in itertools.count():
                if self.done.is_set():
                    return
                if self.reclaiming.is_set():
                    action = self.admin.release if turn % 2 else self.admin.reclaim
                    self.ended.append(len(action(LeaseSelector(all=True)).changes))
                    if sum(self.ended) >= 20 or turn >= 400:
                        self.reclaiming.clear()  # the agents can finish now
                self.wm.sweeper.sweep()
                time.sleep(0.01)
        except BaseException as exc:
            self.errors.append(exc)


def test_reclaims_racing_agents_never_grant_twice_nor_lose_an_item(build) -> None:
    """Agents (8 threads) check out, beat and submit while the sweep, the operator's
    reclaim and release end their leases under them, and some agents walk away from a
    lease (the sweep must bring it back): every grant has its own fence, every item is
    submitted exactly once, nothing is left held or queued."""
    wm = build(lease_ttl_seconds=SHORT_TTL, default_max_attempts=10_000, **FAST)
    orders = [wm.propose("test.multi", {"count": 8}) for _ in range(4)]
    items = {uuid.UUID(i["id"]) for o in orders for i in wm.queries.order(o)["items"]}
    race = Race(wm)
    threads = [threading.Thread(target=race.agent, args=(n,)) for n in range(8)]
    threads += [threading.Thread(target=race.reclaimer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        finished = lambda: len(set(race.submitted)) == len(items) or race.errors  # noqa: E731
        wait_for(finished, 120, "every item submitted")
    finally:
        race.done.set()
        for t in threads:
            t.join(60)
    assert not race.errors, race.errors
    assert sum(race.ended) > 0  # the race was run: leases were ended under their agents
    assert len(set(race.grants)) == len(race.grants)  # no fence granted twice for an item
    assert sorted(race.submitted) == sorted(items)  # each item submitted once, none lost
    with wm.db.transaction() as s:
        states = set(s.scalars(select(Item.state).where(Item.id.in_(items))))
    assert states == {"submitted"}
    assert [order_state(wm, o) for o in orders] == ["submitted"] * 4


# --- concurrency ------------------------------------------------------------------------
def test_racing_threads_never_share_an_item_and_never_miss_one(build) -> None:
    threads, per_thread = 8, 5
    wm = build()
    orders = [wm.propose("test.multi", {"count": threads * per_thread // 4}) for _ in range(4)]
    held: dict[int, list[Lease]] = {}
    errors: list[BaseException] = []
    start, granted = threading.Barrier(threads), threading.Barrier(threads)

    def agent(n: int) -> None:
        try:
            start.wait()
            held[n] = [checkout(wm, f"agent-{n}") for _ in range(per_thread)]
            granted.wait()  # everything is held at once here
            for lease in held[n]:  # then all submit at once, on items of shared orders
                wm.agent.submit(lease, {"answer": n})
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            granted.abort()

    workers = [threading.Thread(target=agent, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)
    assert not errors, errors  # includes "got no item": a racing agent must get the next one
    leases = [lease for mine in held.values() for lease in mine]
    assert len({lease.item_id for lease in leases}) == threads * per_thread == len(leases)
    assert wm.agent.checkout("late") is None
    assert [order_state(wm, o) for o in orders] == ["submitted"] * 4
    assert sorted(map(str, wm.dispatcher.submitted)) == sorted(map(str, orders))  # type: ignore[attr-defined]


# --- parts: one rule per store (SQLite: services/parts.py; PostgreSQL: SQL) --------------
def test_parts_take_their_slots_and_sum_up_the_same_on_every_store(build) -> None:
    """A part takes its (key, seq) slot, replacing what it held; the parts state is the
    latest part per key (validated or rejected); required/missing count validated parts;
    a new slot past the limit is refused and writes nothing; finalize assembles the
    latest validated part per key (highest seq, then the most recent)."""
    wm = build(max_parts_per_item=3)
    order_id = wm.propose("test.parts", {})
    lease = checkout(wm)
    first = wm.agent.submit_part(lease, "a", {"v": 1})
    assert first.required == ["a", "b"] and first.missing == ["b"]
    assert list(first.parts_state) == ["a"]
    entry = first.parts_state["a"]
    assert entry == {
        "status": "validated",
        "seq": None,
        "checksum": first.part["checksum"],
        "submitted_at": first.part["created_at"],
    }
    assert entry["submitted_at"].endswith("Z")
    again = wm.agent.submit_part(lease, "a", {"v": 2})  # the same slot: replaced
    assert again.part["id"] == first.part["id"] and again.part["payload"] == {"v": 2}
    later = wm.agent.submit_part(lease, "a", {"v": 5}, seq=1)
    assert later.part["id"] != first.part["id"]
    assert later.parts_state["a"]["seq"] == 1
    with pytest.raises(ValidationFailed):  # schema: ``v`` must be an integer
        wm.agent.submit_part(lease, "a", {"v": "x"}, seq=0)
    events = len(wm.queries.events(order_id))
    with pytest.raises(PayloadTooLarge) as full:  # a, a#1, a#0 (rejected): no 4th slot
        wm.agent.submit_part(lease, "b", {"w": 1})
    assert full.value.details == {"limit": 3, "parts": 3}
    assert len(wm.queries.events(order_id)) == events  # nothing written
    state = wm.queries.parts(lease.item_id)["parts_state"]
    assert list(state) == ["a"] and state["a"]["status"] == "rejected"
    assert state["a"]["seq"] == 0
    replaced = wm.agent.submit_part(lease, "a", {"v": 7}, seq=0)  # its slot: room for it
    assert replaced.missing == ["b"] and replaced.parts_state["a"]["seq"] == 0
    assert replaced.parts_state == wm.queries.parts(lease.item_id)["parts_state"]
    done = wm.agent.finalize(lease, mode="best_effort")  # a#1 (v 5): the highest seq
    assert done.item["result"] == done.item["assembled_result"] == {"a": {"v": 5}}
    assert row(wm, lease.item_id).assembled_result == {"a": {"v": 5}}


def test_parts_stored_at_one_instant_sum_up_to_the_one_just_written(build) -> None:
    """The parts state shows the latest part per key; of parts stored at the same instant
    (a frozen clock here; one microsecond in life), the one just written, on every store."""
    wm = build()
    wm.propose("test.parts", {})
    lease = checkout(wm)
    instant = wm.ctx.clock()
    wm.ctx.clock = lambda: instant
    assert wm.agent.submit_part(lease, "a", {"v": 1}).parts_state["a"]["seq"] is None
    assert wm.agent.submit_part(lease, "a", {"v": 2}, seq=1).parts_state["a"]["seq"] == 1
    assert wm.agent.submit_part(lease, "a", {"v": 3}).parts_state["a"]["seq"] is None
    assert wm.queries.parts(lease.item_id)["parts_state"]["a"]["seq"] is None


def test_parts_sent_at_once_on_one_lease_all_count(build) -> None:
    """Parts of one item stored concurrently: each sees the others once it has the item's
    lock, so the parts state names every key."""
    wm = build()
    wm.propose("test.parts", {})
    lease = checkout(wm)
    keys = [f"k{n}" for n in range(6)]
    start = threading.Barrier(len(keys))
    errors: list[BaseException] = []

    def send(key: str) -> None:
        try:
            start.wait()
            wm.agent.submit_part(lease, key, {"n": key})
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    workers = [threading.Thread(target=send, args=(k,)) for k in keys]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)
    assert not errors, errors
    assert sorted(wm.queries.parts(lease.item_id)["parts_state"]) == keys


def test_checkout_leases_no_item_of_a_type_this_process_does_not_know(
    make_wm: Callable[..., WorkManager], backend: tuple[str, str]
) -> None:
    """Found by an adversarial pass: an order type removed from the code (or a server of
    other types) still had its items leased by a checkout without a filter — and with
    one naming it — then every submit refused ``unknown_order_type`` while the agents'
    ``fail`` spent the attempts and failed the orders. Such items are left queued."""
    db, lease_backend = backend
    both = make_wm(db=db, backend=lease_backend, registry=Registry([Simple(), Multi()]))
    gone = both.propose("test.multi", {"count": 1}, priority=9)  # first in line
    kept = both.propose("test.simple", {"n": 1})
    one = make_wm(db=db, backend=lease_backend, registry=Registry([Simple()]))
    lease = one.agent.checkout("agent-1")
    assert lease is not None and lease.order_id == kept
    assert one.agent.checkout("agent-1") is None  # the other type's item is left
    assert one.agent.checkout("agent-1", type="test.multi") is None
    assert one.agent.checkout("agent-1", order_id=gone) is None
    assert order_state(one, gone) == "queued"
    taken = both.agent.checkout("agent-2")  # a process that knows it takes it
    assert taken is not None and taken.order_id == gone
