"""Idempotency keys (SPEC §6.3) on a real database, over SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.support.types import Simple
from workmanager import Registry, WorkManager
from workmanager.db.models import IdempotencyKey, Order
from workmanager.errors import IdempotencyInFlight, IdempotencyKeyReused
from workmanager.services.idempotency import IN_FLIGHT_LOCK, Claim, Replay


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def wm(make_wm: Callable[..., WorkManager], database: str, clock: Clock) -> WorkManager:
    manager = make_wm(
        db=database, backend="database", registry=Registry([Simple()]), idempotency_ttl_hours=1
    )
    manager.ctx.clock = clock
    return manager


def keys(wm: WorkManager) -> int:
    with wm.db.transaction() as s:
        return int(s.scalar(select(func.count()).select_from(IdempotencyKey)) or 0)


def orders(wm: WorkManager) -> int:
    with wm.db.transaction() as s:
        return int(s.scalar(select(func.count()).select_from(Order)) or 0)


def propose_once(
    wm: WorkManager, key: str, body: dict[str, Any], principal: str = "token-a"
) -> tuple[int, dict[str, Any], bool]:
    """What an adapter does around ``propose``: (status, body, replayed)."""
    started = wm.idempotency.begin("propose", "-", principal, key, body)
    if isinstance(started, Replay):
        return started.status, started.body, True
    try:
        proposal = wm.orders.propose(body["type"], body["payload"])
    except Exception:
        wm.idempotency.abandon(started)
        raise
    response = {"order": proposal.order}
    wm.idempotency.complete(started, 201, response)
    return 201, response, False


BODY = {"type": "test.simple", "payload": {"n": 1}}


def test_same_key_same_body_replays_without_re_executing(wm: WorkManager) -> None:
    status, body, replayed = propose_once(wm, "k1", BODY)
    assert (status, replayed) == (201, False)
    again = propose_once(wm, "k1", {"payload": {"n": 1}, "type": "test.simple"})  # key order
    assert again == (201, body, True)
    assert orders(wm) == 1 and keys(wm) == 1


def test_same_key_different_body_is_refused(wm: WorkManager) -> None:
    propose_once(wm, "k1", BODY)
    with pytest.raises(IdempotencyKeyReused) as info:
        propose_once(wm, "k1", {"type": "test.simple", "payload": {"n": 2}})
    assert info.value.code == "idempotency_key_reused" and info.value.http_status == 422
    assert orders(wm) == 1
    # ... also while the first request is still in flight.
    wm.idempotency.begin("approve", "o1", "token-a", "k2", {"a": 1})
    with pytest.raises(IdempotencyKeyReused):
        wm.idempotency.begin("approve", "o1", "token-a", "k2", {"a": 2})


def test_begin_while_in_flight_is_refused(wm: WorkManager) -> None:
    claim = wm.idempotency.begin("submit", "item-1", "token-a", "k", {"r": 1})
    assert isinstance(claim, Claim)
    with pytest.raises(IdempotencyInFlight) as info:
        wm.idempotency.begin("submit", "item-1", "token-a", "k", {"r": 1})
    assert info.value.http_status == 409
    wm.idempotency.complete(claim, 202, {"state": "submitted"})
    replay = wm.idempotency.begin("submit", "item-1", "token-a", "k", {"r": 1})
    assert replay == Replay(202, {"state": "submitted"})


def test_racing_begins_give_exactly_one_claim(wm: WorkManager) -> None:
    threads = 10
    barrier = threading.Barrier(threads)
    results: list[Any] = []
    lock = threading.Lock()

    def begin() -> None:
        barrier.wait()
        try:
            outcome: Any = wm.idempotency.begin("propose", "-", "token-a", "race", BODY)
        except Exception as exc:  # collected and asserted below
            outcome = exc
        with lock:
            results.append(outcome)

    workers = [threading.Thread(target=begin) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(30)
    assert len(results) == threads
    claims = [r for r in results if isinstance(r, Claim)]
    others = [r for r in results if not isinstance(r, Claim)]
    assert len(claims) == 1
    assert all(isinstance(r, IdempotencyInFlight) for r in others), others
    assert keys(wm) == 1


def test_abandon_frees_the_key(wm: WorkManager) -> None:
    claim = wm.idempotency.begin("propose", "-", "token-a", "k", BODY)
    assert isinstance(claim, Claim)
    wm.idempotency.abandon(claim)
    assert keys(wm) == 0
    # A failed attempt is not stored: the same key may carry another body now.
    assert isinstance(wm.idempotency.begin("propose", "-", "token-a", "k", {"other": 1}), Claim)


def test_failures_are_not_stored(wm: WorkManager) -> None:
    with pytest.raises(Exception, match="unknown order type"):
        propose_once(wm, "k", {"type": "no.such", "payload": {}})
    assert keys(wm) == 0
    assert propose_once(wm, "k", BODY)[2] is False


def test_keys_are_scoped_by_principal_endpoint_and_target(wm: WorkManager) -> None:
    _, first, _ = propose_once(wm, "shared", BODY, principal="token-a")
    _, second, replayed = propose_once(wm, "shared", BODY, principal="token-b")
    assert not replayed and second["order"]["id"] != first["order"]["id"]
    assert orders(wm) == 2
    for endpoint, target in (("approve", "o1"), ("approve", "o2"), ("reject", "o1")):
        started = wm.idempotency.begin(endpoint, target, "token-a", "shared", BODY)
        assert isinstance(started, Claim)
    assert keys(wm) == 5


def test_only_hashes_are_stored(wm: WorkManager) -> None:
    propose_once(wm, "secret-key-123", BODY)
    with wm.db.transaction() as s:
        row = s.scalars(select(IdempotencyKey)).one()
        assert len(row.key_hash) == 64 and "secret-key-123" not in row.key_hash
        assert len(row.request_fingerprint) == 64
        assert row.status == "done" and row.response_status == 201


def test_expired_keys_start_afresh(wm: WorkManager, clock: Clock) -> None:
    propose_once(wm, "k", BODY)
    clock.advance(hours=1, seconds=1)
    assert propose_once(wm, "k", BODY)[2] is False  # expired: executed again
    assert orders(wm) == 2 and keys(wm) == 1


def test_stale_in_flight_marker_can_be_taken_over(wm: WorkManager, clock: Clock) -> None:
    wm.idempotency.begin("submit", "i", "token-a", "k", {"r": 1})  # its request crashed
    clock.advance(seconds=IN_FLIGHT_LOCK.total_seconds() - 1)
    with pytest.raises(IdempotencyInFlight):
        wm.idempotency.begin("submit", "i", "token-a", "k", {"r": 1})
    clock.advance(seconds=2)
    assert isinstance(wm.idempotency.begin("submit", "i", "token-a", "k", {"r": 1}), Claim)


def test_maintenance_purges_expired_keys(wm: WorkManager, clock: Clock) -> None:
    propose_once(wm, "old-1", BODY)
    propose_once(wm, "old-2", BODY)
    clock.advance(minutes=30)
    propose_once(wm, "young", BODY)
    assert keys(wm) == 3
    clock.advance(minutes=31)  # the first two are past their hour, the third is not
    report = wm.maintenance.run(dead_letter=False, check_stale=False, recover_applies=False)
    assert report.purged_keys == 2
    assert keys(wm) == 1
    assert propose_once(wm, "young", BODY)[2] is True
    clock.advance(hours=1)
    assert wm.maintenance.run().purged_keys == 1
    assert keys(wm) == 0


def test_purge_older_than(wm: WorkManager, clock: Clock) -> None:
    propose_once(wm, "a", BODY)
    clock.advance(minutes=10)
    propose_once(wm, "b", BODY)
    assert wm.idempotency.purge(older_than=clock.now - timedelta(minutes=5)) == 1
    assert keys(wm) == 1
    assert uuid.UUID(propose_once(wm, "b", BODY)[1]["order"]["id"])


def test_completing_with_a_failure_status_stores_nothing(wm: WorkManager) -> None:
    claim = wm.idempotency.begin("approve", "o1", "token-a", "k", {})
    assert isinstance(claim, Claim)
    wm.idempotency.complete(claim, 409, {"error": {"code": "illegal_state_transition"}})
    assert keys(wm) == 0
    assert isinstance(wm.idempotency.begin("approve", "o1", "token-a", "k", {}), Claim)
