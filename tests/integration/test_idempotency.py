"""Idempotency keys (SPEC §6.3) on a real database, over SQLite and PostgreSQL (its hot
path on)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.support.types import Simple
from workmanager import Registry, WorkManager
from workmanager.db.models import Event, IdempotencyKey, Order
from workmanager.db.postgres.leases import PostgresStore
from workmanager.errors import (
    IdempotencyInFlight,
    IdempotencyKeyReused,
    IllegalStateTransition,
    LeaseConflict,
    LeaseExpired,
    NoItemsAvailable,
    Unavailable,
    ValidationFailed,
)
from workmanager.services.idempotency import IN_FLIGHT_LOCK, Claim, Replay
from workmanager.services.tokens import Principal
from workmanager.surface.callers import AgentMetadata, Caller, build_caller
from workmanager.surface.operations import Answer, CheckoutFilters, Operations


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
    started = begin(wm, "propose", "-", principal, key, body)
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
    begin(wm, "approve", "o1", "token-a", "k2", {"a": 1})
    with pytest.raises(IdempotencyKeyReused):
        begin(wm, "approve", "o1", "token-a", "k2", {"a": 2})


def test_begin_while_in_flight_is_refused(wm: WorkManager) -> None:
    claim = begin(wm, "submit", "item-1", "token-a", "k", {"r": 1})
    assert isinstance(claim, Claim)
    with pytest.raises(IdempotencyInFlight) as info:
        begin(wm, "submit", "item-1", "token-a", "k", {"r": 1})
    assert info.value.http_status == 409
    wm.idempotency.complete(claim, 202, {"state": "submitted"})
    replay = begin(wm, "submit", "item-1", "token-a", "k", {"r": 1})
    assert replay == Replay(202, {"state": "submitted"})


def test_a_request_running_past_the_keys_ttl_keeps_its_key(
    make_wm: Callable[..., WorkManager], database: str, clock: Clock
) -> None:
    """Found by a time pass: a keyed request that ran longer than the key's TTL (a slow
    plan, ``approve?wait``) lost its key while it ran: a duplicate was accepted and ran,
    maintenance's purge deleted the row, and the first was then refused as taken over.
    The key's lock, not its expiry, says whether its request is still running. Its answer
    is then replayed for the TTL from when it was stored (an audit pass: it expired with
    the claim, so the retry of a request longer than the TTL ran it again)."""
    wm = make_wm(db=database, registry=Registry([Simple()]), idempotency_ttl_hours=0.001)
    wm.ctx.clock = clock
    claim = begin(wm, "propose", "-", "token-a", "slow", BODY)
    assert isinstance(claim, Claim)
    clock.advance(seconds=30)  # past the TTL (3.6 s), inside the lock (5 min)
    with pytest.raises(IdempotencyInFlight):
        begin(wm, "propose", "-", "token-a", "slow", BODY)
    assert wm.idempotency.purge() == 0 and keys(wm) == 1
    wm.idempotency.complete(claim, 201, {"order": {"id": "o"}})
    assert wm.idempotency.purge() == 0  # answered just now: kept for its TTL from now
    clock.advance(seconds=3)
    assert begin(wm, "propose", "-", "token-a", "slow", BODY) == Replay(201, {"order": {"id": "o"}})
    clock.advance(seconds=1)  # the TTL (3.6 s) since the answer
    assert wm.idempotency.purge() == 1 and keys(wm) == 0


def test_racing_begins_give_exactly_one_claim(wm: WorkManager) -> None:
    threads = 10
    barrier = threading.Barrier(threads)
    results: list[Any] = []
    lock = threading.Lock()

    def racer() -> None:
        barrier.wait()
        try:
            outcome: Any = begin(wm, "propose", "-", "token-a", "race", BODY)
        except Exception as exc:  # collected and asserted below
            outcome = exc
        with lock:
            results.append(outcome)

    workers = [threading.Thread(target=racer) for _ in range(threads)]
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
    claim = begin(wm, "propose", "-", "token-a", "k", BODY)
    assert isinstance(claim, Claim)
    wm.idempotency.abandon(claim)
    assert keys(wm) == 0
    # A failed attempt is not stored: the same key may carry another body now.
    assert isinstance(begin(wm, "propose", "-", "token-a", "k", {"other": 1}), Claim)


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
        started = begin(wm, endpoint, target, "token-a", "shared", BODY)
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
    begin(wm, "submit", "i", "token-a", "k", {"r": 1})  # its request crashed
    clock.advance(seconds=IN_FLIGHT_LOCK.total_seconds() - 1)
    with pytest.raises(IdempotencyInFlight):
        begin(wm, "submit", "i", "token-a", "k", {"r": 1})
    clock.advance(seconds=2)
    assert isinstance(begin(wm, "submit", "i", "token-a", "k", {"r": 1}), Claim)


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
    cutoff = clock.now - timedelta(minutes=5)
    # "a" still answers its retries (its hour runs from its answer): kept unless forced
    assert wm.idempotency.purge(older_than=cutoff) == 0
    assert wm.idempotency.purge(older_than=cutoff, force=True) == 1
    assert keys(wm) == 1


def test_purge_by_age_keeps_an_answer_still_replayed(wm: WorkManager, clock: Clock) -> None:
    """A review pass: once answers were kept for the TTL from when they were stored,
    ``ops purge-keys --older-than`` the TTL (no ``--force`` needed) still judged by the
    claim and deleted the key of a long request answered late, whose retry then ran
    again."""
    claim = begin(wm, "propose", "-", "token-a", "slow", BODY)
    assert isinstance(claim, Claim)
    clock.advance(minutes=50)  # the request ran 50 minutes
    wm.idempotency.complete(claim, 201, {"order": {"id": "o"}})
    clock.advance(minutes=20)  # created 70 minutes ago, answered 20 minutes ago
    assert wm.idempotency.purge(clock.now - timedelta(hours=1)) == 0  # ops purge-keys
    assert begin(wm, "propose", "-", "token-a", "slow", BODY) == Replay(201, {"order": {"id": "o"}})
    clock.advance(minutes=41)  # its hour since the answer is over
    assert wm.idempotency.purge(clock.now - timedelta(hours=1)) == 1
    assert uuid.UUID(propose_once(wm, "b", BODY)[1]["order"]["id"])


def test_completing_with_a_failure_status_stores_nothing(wm: WorkManager) -> None:
    claim = begin(wm, "approve", "o1", "token-a", "k", {})
    assert isinstance(claim, Claim)
    wm.idempotency.complete(claim, 409, {"error": {"code": "illegal_state_transition"}})
    assert keys(wm) == 0
    assert isinstance(begin(wm, "approve", "o1", "token-a", "k", {}), Claim)


# --- the outcome of a key is never unknown (issue 11, item 3) ---------------------------
# Through ``once``, the operation's own transaction marks the key committed; these run on
# SQLite and on PostgreSQL's hot path (which declines while a claim is unmarked).


class Died(BaseException):
    """The process "dies" after the operation committed, before its response is stored
    (a BaseException, as the end of a process is: nothing catches it to answer)."""


def die(*_: Any) -> None:
    raise Died()


def begin(wm: WorkManager, *args: Any) -> Claim | Replay:
    """The key's claim or replay, as ``IdempotencyService.begin`` returns it first."""
    return wm.idempotency.begin(*args)[0]


def caller(agent: str = "agent-1") -> Caller:
    return build_caller(Principal("token-a", None, frozenset({"admin"})), AgentMetadata(agent))


def order_ids(wm: WorkManager) -> list[str]:
    with wm.db.transaction() as s:
        return [str(i) for i in s.scalars(select(Order.id))]


def test_a_key_whose_propose_committed_is_never_run_again(
    wm: WorkManager, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    ops = Operations(wm)

    def propose(c: Caller) -> Answer:
        return ops.propose(c, "test.simple", {"n": 1})

    monkeypatch.setattr(wm.idempotency, "complete", die)
    monkeypatch.setattr(wm.idempotency, "abandon", die)  # a dead process does no more
    with pytest.raises(Died):
        wm.idempotency.once(caller(), "propose", "", "k", BODY, propose)
    monkeypatch.undo()
    (order_id,) = order_ids(wm)
    with wm.db.transaction() as s:
        row = s.scalars(select(IdempotencyKey)).one()
        assert row.status == "committed" and row.locked_until is not None
    # while the in-flight lock lasts, the first request may still be storing its answer
    with pytest.raises(IdempotencyInFlight):
        wm.idempotency.once(caller(), "propose", "", "k", BODY, propose)
    clock.advance(seconds=IN_FLIGHT_LOCK.total_seconds() + 1)  # the lock has lapsed
    again = wm.idempotency.once(caller(), "propose", "", "k", BODY, propose)
    assert isinstance(again, Replay) and again.status == 200
    assert again.body["replayed"] is True and again.body["outcome"] == "committed"
    assert again.body["order_id"] == again.body["order"]["id"] == order_id
    assert wm.idempotency.once(caller(), "propose", "", "k", BODY, propose) == again
    assert order_ids(wm) == [order_id]  # one order for one key
    with pytest.raises(IdempotencyKeyReused):  # the key still knows its body
        wm.idempotency.once(caller(), "propose", "", "k", {"other": 1}, propose)


def test_a_key_whose_submit_committed_answers_from_the_item(
    wm: WorkManager, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    ops = Operations(wm)
    wm.orders.propose("test.simple", {})
    leased = ops.checkout(caller(), CheckoutFilters())[1]["item"]
    item_id, token = leased["id"], str(leased["lease_token"])
    body = {"result": {"answer": 42}}

    def submit(c: Caller) -> Answer:
        return ops.submit(c, item_id, token, {"answer": 42})

    monkeypatch.setattr(wm.idempotency, "complete", die)
    monkeypatch.setattr(wm.idempotency, "abandon", die)  # a dead process does no more
    with pytest.raises(Died):
        wm.idempotency.once(caller(), "submit", item_id, "s", body, submit, token)
    monkeypatch.undo()
    clock.advance(seconds=IN_FLIGHT_LOCK.total_seconds() + 1)
    again = wm.idempotency.once(caller(), "submit", item_id, "s", body, submit, token)
    assert isinstance(again, Replay) and again.status == 200
    assert again.body["outcome"] == "committed" and again.body["item_id"] == item_id
    assert again.body["item"]["state"] == "submitted"
    with wm.db.transaction() as s:
        submitted = s.scalar(
            select(func.count()).where(
                Event.item_id == uuid.UUID(item_id), Event.event == "submitted"
            )
        )
    assert submitted == 1


@pytest.mark.redis
@pytest.mark.parametrize("operation", ["submit", "release", "fail"])
def test_a_keyed_lease_call_that_committed_is_never_run_again_with_redis_leases(
    make_wm: Callable[..., WorkManager],
    database: str,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
    operation: str,
) -> None:
    """Issue 11, item 3, with the Redis lock backend: the process dies after the call
    committed (its Redis lock already dropped), before the answer is stored. The key is
    marked in the call's own transaction, so after the in-flight lock would have lapsed
    the key replays ``committed`` and the call does not run again (one event)."""
    wm = make_wm(db=database, backend="redis", registry=Registry([Simple()]))
    wm.ctx.clock = clock
    ops = Operations(wm)
    wm.orders.propose("test.simple", {})
    leased = ops.checkout(caller(), CheckoutFilters())[1]["item"]
    item_id, token = leased["id"], str(leased["lease_token"])
    calls: dict[str, tuple[dict[str, Any], Callable[[Caller], Answer], str, str]] = {
        "submit": (
            {"result": {"answer": 1}},
            lambda c: ops.submit(c, item_id, token, {"answer": 1}),
            "submitted",
            "submitted",
        ),
        "release": ({}, lambda c: ops.release(c, item_id, token), "released", "queued"),
        "fail": (
            {"error": {"code": "x", "message": "y"}},
            lambda c: ops.fail(c, item_id, token, {"code": "x", "message": "y"}),
            "agent_failed",
            "queued",
        ),
    }
    body, run, event, state = calls[operation]
    monkeypatch.setattr(wm.idempotency, "complete", die)
    monkeypatch.setattr(wm.idempotency, "abandon", die)  # a dead process does no more
    with pytest.raises(Died):
        wm.idempotency.once(caller(), operation, item_id, "rk", body, run, token)
    monkeypatch.undo()
    with wm.db.transaction() as s:
        row = s.scalars(select(IdempotencyKey)).one()
        assert row.status == "committed" and row.locked_until is not None
    with pytest.raises(IdempotencyInFlight):
        wm.idempotency.once(caller(), operation, item_id, "rk", body, run, token)
    clock.advance(seconds=IN_FLIGHT_LOCK.total_seconds() + 1)
    again = wm.idempotency.once(caller(), operation, item_id, "rk", body, run, token)
    assert isinstance(again, Replay) and again.status == 200, again
    assert again.body["outcome"] == "committed" and again.body["item_id"] == item_id
    assert again.body["item"]["state"] == state
    with wm.db.transaction() as s:
        count = s.scalar(
            select(func.count()).where(Event.item_id == uuid.UUID(item_id), Event.event == event)
        )
    assert count == 1, (operation, event, count)


def test_an_answer_that_cannot_be_stored_unlocks_its_committed_key(
    wm: WorkManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operation committed, then storing its answer failed (the database went away):
    the answer is sent all the same (an operator pass found a checkout answered 503 there:
    its lease token lost, the lease unusable until its TTL), and the key is unlocked, so a
    retry whose first answer was lost gets the recovered one at once, not "in flight"
    until the lock would lapse."""
    ops = Operations(wm)

    def propose(c: Caller) -> Answer:
        return ops.propose(c, "test.simple", {"n": 1})

    def unavailable(*_: Any) -> None:
        raise Unavailable("the database went away")

    monkeypatch.setattr(wm.idempotency.store, "complete_key", unavailable)
    first = wm.idempotency.once(caller(), "propose", "", "k", BODY, propose)
    assert not isinstance(first, Replay) and first[0] == 201
    assert first[1]["order"]["id"] == str(order_ids(wm)[0])
    monkeypatch.undo()
    again = wm.idempotency.once(caller(), "propose", "", "k", BODY, propose)
    assert isinstance(again, Replay) and again.body["outcome"] == "committed"
    assert len(order_ids(wm)) == 1


def test_a_key_the_outage_kept_locked_is_unlocked_when_the_database_is_back(
    wm: WorkManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a PostgreSQL outage pass: storing the answer failed and so did the unlock
    (the same moment of the outage): a retry after the outage was "in flight" (409) for
    the lock's 5 minutes. The unlock is tried again while the database comes back."""
    from workmanager.services import idempotency

    monkeypatch.setattr(idempotency.UNLOCKING, "first_wait", 0.05)
    ops = Operations(wm)

    def propose(c: Caller) -> Answer:
        return ops.propose(c, "test.simple", {"n": 1})

    def unavailable(*_: Any) -> None:
        raise Unavailable("the database went away")

    abandon = wm.idempotency.store.abandon_key
    outage = [Unavailable("the database went away"), Unavailable("still away")]

    def abandon_after_the_outage(*args: Any) -> None:
        if outage:
            raise outage.pop()
        abandon(*args)

    monkeypatch.setattr(wm.idempotency.store, "complete_key", unavailable)
    monkeypatch.setattr(wm.idempotency.store, "abandon_key", abandon_after_the_outage)
    first = wm.idempotency.once(caller(), "propose", "", "k", BODY, propose)
    assert not isinstance(first, Replay) and first[0] == 201  # committed: its answer sent
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the thread's unlock, after the outage
        with wm.db.transaction() as s:
            if s.scalars(select(IdempotencyKey)).one().locked_until is None:
                break
        time.sleep(0.02)
    assert outage == []
    monkeypatch.undo()
    again = wm.idempotency.once(caller(), "propose", "", "k", BODY, propose)
    assert isinstance(again, Replay) and again.body["outcome"] == "committed"
    assert len(order_ids(wm)) == 1


def test_an_operation_that_raises_after_its_commit_keeps_its_key(wm: WorkManager) -> None:
    ops = Operations(wm)

    def propose_then_fail(c: Caller) -> Answer:
        ops.propose(c, "test.simple", {"n": 1})
        raise Unavailable("the broker went away after the commit")

    with pytest.raises(Unavailable):
        wm.idempotency.once(caller(), "propose", "", "k", BODY, propose_then_fail)
    again = wm.idempotency.once(caller(), "propose", "", "k", BODY, propose_then_fail)
    assert isinstance(again, Replay) and again.body["outcome"] == "committed"
    assert len(order_ids(wm)) == 1


def test_a_refusal_after_the_commit_is_the_stored_answer(wm: WorkManager) -> None:
    """An operation that commits and then refuses (a part stored ``rejected``, answered
    422) keeps its key with that refusal: the retry gets the same 422, replayed, and runs
    nothing again."""
    ops = Operations(wm)
    runs: list[int] = []

    def propose_then_refuse(c: Caller) -> Answer:
        runs.append(1)
        ops.propose(c, "test.simple", {"n": 1})
        raise ValidationFailed([{"path": "x", "message": "refused", "validator": "type"}])

    with pytest.raises(ValidationFailed):
        wm.idempotency.once(caller(), "propose", "", "k2", BODY, propose_then_refuse)
    again = wm.idempotency.once(caller(), "propose", "", "k2", BODY, propose_then_refuse)
    assert isinstance(again, Replay) and again.status == 422
    assert again.body["error"]["code"] == "validation_failed"
    assert again.body["error"]["details"][0]["message"] == "refused"
    assert runs == [1] and len(order_ids(wm)) == 1


def test_an_operation_that_fails_before_committing_frees_its_key(wm: WorkManager) -> None:
    ops = Operations(wm)
    wm.orders.propose("test.simple", {})
    leased = ops.checkout(caller(), CheckoutFilters())[1]["item"]
    item_id, body = leased["id"], {"result": {"answer": 1}}

    def submit_with(token: str) -> Callable[[Caller], Answer]:
        return lambda c: ops.submit(c, item_id, token, {"answer": 1})

    # The lease is read (a transaction that writes nothing), then refused: nothing marked.
    with pytest.raises(LeaseConflict):
        wm.idempotency.once(caller(), "submit", item_id, "s", body, submit_with("999999"))
    assert keys(wm) == 0
    with pytest.raises(ValidationFailed):  # a result the type refuses
        wm.idempotency.once(
            caller(), "propose", "", "p", BODY, lambda c: ops.propose(c, "test.simple", {"n": -1})
        )
    assert keys(wm) == 0
    token = str(leased["lease_token"])
    first = wm.idempotency.once(caller(), "submit", item_id, "s", body, submit_with(token), token)
    assert not isinstance(first, Replay) and first[0] == 202


def test_concurrent_requests_with_one_key_run_one_operation(wm: WorkManager) -> None:
    ops = Operations(wm)
    threads = 8
    barrier = threading.Barrier(threads)
    results: list[Any] = []
    lock = threading.Lock()

    def request() -> None:
        barrier.wait()
        try:
            outcome: Any = wm.idempotency.once(
                caller(), "propose", "", "race", BODY, lambda c: ops.propose(c, "test.simple", {})
            )
        except Exception as exc:  # collected and asserted below
            outcome = exc
        with lock:
            results.append(outcome)

    workers = [threading.Thread(target=request) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(30)
    assert len(results) == threads
    ran = [r for r in results if isinstance(r, tuple)]
    assert len(ran) == 1 and ran[0][0] == 201
    others = [r for r in results if not isinstance(r, tuple)]
    assert all(isinstance(r, IdempotencyInFlight | Replay) for r in others), others
    # a replay is the stored answer (201 and its body), never the recovered form of a key
    # whose request is still running (committed, its answer not stored yet)
    replays = [r for r in others if isinstance(r, Replay)]
    assert all(r.status == 201 and r.body == ran[0][1] for r in replays), replays
    assert len(order_ids(wm)) == 1


def test_a_retry_while_the_first_stores_its_answer_is_in_flight(wm: WorkManager) -> None:
    """Between the commit that marks the key and the stored answer, a retry with the key
    is 409 ``idempotency_in_flight`` (SPEC §6.3), not an answer of its own."""
    ops = Operations(wm)
    seen: list[Any] = []

    def propose(c: Caller) -> Answer:
        return ops.propose(c, "test.simple", {"n": 1})

    def complete_after_a_retry(claim: Claim, status: int, body: dict[str, Any]) -> None:
        try:
            wm.idempotency.once(caller(), "propose", "", "k", BODY, propose)
        except IdempotencyInFlight as exc:
            seen.append(exc)
        store_answer(claim, status, body)

    store_answer = wm.idempotency.complete
    wm.idempotency.complete = complete_after_a_retry  # type: ignore[method-assign]
    status, body = wm.idempotency.once(caller(), "propose", "", "k", BODY, propose)
    wm.idempotency.complete = store_answer  # type: ignore[method-assign]
    assert [type(e) for e in seen] == [IdempotencyInFlight]
    again = wm.idempotency.once(caller(), "propose", "", "k", BODY, propose)
    assert isinstance(again, Replay) and (again.status, again.body) == (status, body)
    assert len(order_ids(wm)) == 1


def test_a_target_id_in_another_spelling_is_the_same_key(wm: WorkManager) -> None:
    """The routes take an id in upper case or without dashes as the same resource: a retry
    spelled so replays the stored answer and runs nothing again."""
    ops = Operations(wm)
    wm.orders.propose("test.simple", {})
    leased = ops.checkout(caller(), CheckoutFilters())[1]["item"]
    item_id, token = leased["id"], str(leased["lease_token"])
    body = {"result": {"answer": 1}}
    runs: list[str] = []

    def submit(target: str) -> Callable[[Caller], Answer]:
        def run(c: Caller) -> Answer:
            runs.append(target)
            return ops.submit(c, target, token, {"answer": 1})

        return run

    first = wm.idempotency.once(caller(), "submit", item_id, "s", body, submit(item_id), token)
    for spelled in (item_id.upper(), item_id.replace("-", ""), "{" + item_id + "}"):
        again = wm.idempotency.once(caller(), "submit", spelled, "s", body, submit(spelled), token)
        assert isinstance(again, Replay) and again.status == first[0], spelled
    assert runs == [item_id]


def test_a_claim_taken_over_while_it_ran_cannot_commit(wm: WorkManager, clock: Clock) -> None:
    """An operation that outlived its in-flight lock, its key taken over meanwhile by
    another request: its commit is refused, so the key runs one operation."""
    ops = Operations(wm)
    taken_over = threading.Event()
    slow_outcome: list[Any] = []

    def propose(c: Caller) -> Answer:
        return ops.propose(c, "test.simple", {"n": 1})

    def slow(c: Caller) -> Answer:
        assert taken_over.wait(30)
        return propose(c)

    def first_request() -> None:
        try:
            slow_outcome.append(wm.idempotency.once(caller(), "propose", "", "k", BODY, slow))
        except Exception as exc:  # asserted below
            slow_outcome.append(exc)

    worker = threading.Thread(target=first_request)
    worker.start()
    deadline = time.monotonic() + 30
    while keys(wm) == 0 and time.monotonic() < deadline:  # the first request holds the key
        time.sleep(0.01)
    clock.advance(seconds=IN_FLIGHT_LOCK.total_seconds() + 1)
    second = wm.idempotency.once(caller(), "propose", "", "k", BODY, propose)
    taken_over.set()
    worker.join(30)
    assert not isinstance(second, Replay) and second[0] == 201
    assert isinstance(slow_outcome[0], IdempotencyInFlight), slow_outcome
    assert order_ids(wm) == [second[1]["order"]["id"]]
    replay = wm.idempotency.once(caller(), "propose", "", "k", BODY, propose)
    assert isinstance(replay, Replay) and replay.body == second[1]


# --- the lease token is part of the fingerprint (issue 11, item 8) ----------------------


def test_the_lease_token_is_part_of_the_fingerprint(wm: WorkManager) -> None:
    def answer(_: Caller) -> Answer:
        return 202, {"state": "submitted"}

    first = wm.idempotency.once(caller(), "submit", "i", "k", {"r": 1}, answer, "7.secret")
    assert first == (202, {"state": "submitted"})
    same = wm.idempotency.once(caller(), "submit", "i", "k", {"r": 1}, answer, "7.secret")
    assert same == Replay(202, {"state": "submitted"})
    for other in ("7.other", "8.secret", None):
        with pytest.raises(IdempotencyKeyReused):
            wm.idempotency.once(caller(), "submit", "i", "k", {"r": 1}, answer, other)


# --- a keyed lease call on PostgreSQL marks its key in its own statement ------------------


def _leased(wm: WorkManager, call: str = "") -> tuple[Operations, str, str]:
    """A leased ``test.simple`` item; for ``finalize``, with a part that assembles into a
    result its ``result_schema`` takes (``{"answer": …}``): finalize meets it too."""
    ops = Operations(wm)
    wm.orders.propose("test.simple", {})
    leased = ops.checkout(caller(), CheckoutFilters())[1]["item"]
    if call == "finalize":
        ops.submit_part(caller(), leased["id"], leased["lease_token"], "answer", {"v": 1})
    return ops, leased["id"], leased["lease_token"]


#: A lease call by name, as a request makes it: (operations, item id, token) -> answer.
LEASE_CALLS: dict[str, Callable[[Operations, str, str], Callable[[Caller], Answer]]] = {
    "submit": lambda ops, i, t: lambda c: ops.submit(c, i, t, {"answer": 1}),
    "release": lambda ops, i, t: lambda c: ops.release(c, i, t),
    "fail": lambda ops, i, t: lambda c: ops.fail(c, i, t, {"code": "x", "message": "y"}),
    "submit_part": lambda ops, i, t: lambda c: ops.submit_part(c, i, t, "a", {"v": 1}),
    "finalize": lambda ops, i, t: lambda c: ops.finalize(c, i, t),
    "heartbeat": lambda ops, i, t: lambda c: ops.heartbeat(c, i, t),
}


@pytest.mark.parametrize("call", sorted(LEASE_CALLS))
def test_a_keyed_lease_call_marks_its_key_in_its_one_statement(
    make_wm: Callable[..., WorkManager], monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    """The statement that writes also marks the key (``claim_held`` / ``claim_marked``):
    one round trip, no locked read first, and the key committed with the write."""
    from workmanager.db.postgres import endings, guarded, parts, submit, values

    wm = make_wm(db="postgres", backend="database", registry=Registry([Simple()]))
    assert isinstance(wm.agent.store, PostgresStore)
    wm.ctx.clock = clock = Clock()
    ops, item_id, token = _leased(wm, call)
    locked: list[int] = []
    for module in (endings, parts, submit):  # the two-round-trip path starts with it
        monkeypatch.setattr(module, "lock_item", lambda *a, **k: locked.append(1))
    monkeypatch.setattr(parts, "lock_item_with", lambda *a, **k: locked.append(1))
    # nor is the key marked by a statement of its own
    for module in (values, guarded):
        monkeypatch.setattr(module, "send_mark", lambda *a, **k: locked.append(1))
    run = LEASE_CALLS[call](ops, item_id, token)
    monkeypatch.setattr(wm.idempotency, "complete", die)  # dies after the commit
    monkeypatch.setattr(wm.idempotency, "abandon", die)
    with pytest.raises(Died):
        wm.idempotency.once(caller(), call, item_id, "hk", {}, run, token)
    monkeypatch.undo()
    assert locked == []
    states = {"release": "queued", "fail": "queued", "submit_part": "leased"}
    state = states.get(call, "in_progress" if call == "heartbeat" else "submitted")
    assert wm.queries.item(uuid.UUID(item_id))["state"] == state
    with wm.db.transaction() as s:
        (row,) = s.scalars(select(IdempotencyKey))
        assert row.status == "committed" and row.response_body == {
            "order_id": str(wm.queries.item(uuid.UUID(item_id))["order_id"]),
            "item_id": item_id,
        }
    with pytest.raises(IdempotencyInFlight):  # its answer might still be on its way
        wm.idempotency.once(caller(), call, item_id, "hk", {}, run, token)
    clock.advance(seconds=IN_FLIGHT_LOCK.total_seconds() + 1)
    again = wm.idempotency.once(caller(), call, item_id, "hk", {}, run, token)
    assert isinstance(again, Replay) and again.body["outcome"] == "committed"


@pytest.mark.parametrize("call", sorted(LEASE_CALLS))
def test_a_keyed_lease_call_whose_key_was_taken_over_does_not_commit(
    make_wm: Callable[..., WorkManager], call: str
) -> None:
    wm = make_wm(db="postgres", backend="database", registry=Registry([Simple()]))
    ops, item_id, token = _leased(wm, call)
    run = LEASE_CALLS[call](ops, item_id, token)

    def taken_then_call(c: Caller) -> Answer:
        with wm.db.engine.begin() as conn:  # another request took the key meanwhile
            conn.execute(IdempotencyKey.__table__.update().values(status="done"))
        return run(c)

    def events() -> list[str]:
        with wm.db.transaction() as s:
            found = s.scalars(select(Event.event).where(Event.item_id == uuid.UUID(item_id)))
            return list(found)

    before = events()  # leased (and, before a finalize, its part)
    with pytest.raises(IdempotencyInFlight):
        wm.idempotency.once(caller(), call, item_id, "tk", {}, taken_then_call, token)
    item = wm.queries.item(uuid.UUID(item_id))
    assert item["state"] == "leased" and item["attempts"] == 1
    assert events() == before and before[0] == "leased"


def test_a_stored_checkout_answer_keeps_the_lease_secret_sealed(wm: WorkManager) -> None:
    """A keyed checkout's answer is stored to be replayed; what is stored must not be a
    live lease token for whoever reads the database, and the replay (the caller sends the
    key again) is the very token checkout returned."""
    ops = Operations(wm)
    wm.orders.propose("test.simple", {})

    def checkout(c: Caller) -> Answer:
        return ops.checkout(c, CheckoutFilters())

    first = wm.idempotency.once(caller(), "checkout", "", "ck", {}, checkout)
    assert not isinstance(first, Replay)
    token = first[1]["item"]["lease_token"]
    secret = token.split(".", 1)[1]
    with wm.db.transaction() as s:
        (row,) = s.scalars(select(IdempotencyKey))
        stored = row.response_body["item"]["lease_token"]
    assert secret not in json.dumps(row.response_body) and stored.startswith(
        token.split(".")[0] + ".sealed:"
    )
    again = wm.idempotency.once(caller(), "checkout", "", "ck", {}, checkout)
    assert isinstance(again, Replay) and again.body["item"]["lease_token"] == token


def test_a_keyed_checkout_that_found_nothing_is_not_stored(wm: WorkManager) -> None:
    """A fuzzing pass: on SQLite a keyed checkout that found no item stored its 409 (its
    grant, an ``UPDATE … RETURNING`` of no row, counted as a write) and replayed it for
    the key's life, the item leasable meanwhile; on PostgreSQL the retry leased it.
    Failures are not stored (SPEC §6.3), on either database."""
    ops = Operations(wm)
    order_id = wm.orders.propose("test.simple", {}).order["id"]
    held = wm.agent.checkout("agent-a", order_id=order_id)
    assert held is not None

    def checkout(c: Caller) -> Answer:
        return ops.checkout(c, CheckoutFilters(), order_id)

    with pytest.raises(NoItemsAvailable):
        wm.idempotency.once(caller(), "checkout", "", "poll-1", {}, checkout)
    assert keys(wm) == 0
    wm.agent.release(held)
    again = wm.idempotency.once(caller(), "checkout", "", "poll-1", {}, checkout)
    assert not isinstance(again, Replay) and again[1]["item"]["order_id"] == order_id


@pytest.mark.parametrize("how", ["fetch-synced", "bulk-by-key"])
def test_a_keyed_write_with_no_rows_to_judge_by_is_still_counted(wm: WorkManager, how: str) -> None:
    """The review of the change above: an update the ORM syncs by fetching what it
    changed, or a bulk update by key, hands back no rows to judge by; counted as no
    write, the key stayed unmarked and a retry after a crash would run again. Only a
    statement run with ``synchronize_session=False`` is judged by its rows."""
    from sqlalchemy import update

    from workmanager.db.claims import COMMITTED

    order_id = uuid.UUID(wm.orders.propose("test.simple", {}).order["id"])
    seen: list[str] = []

    def write(c: Caller) -> Answer:
        def tx(s: Any) -> None:
            if how == "fetch-synced":
                stmt = update(Order).where(Order.id == order_id).values(priority=5)
                s.execute(stmt.execution_options(synchronize_session="fetch"))
            else:
                s.execute(update(Order), [{"id": order_id, "priority": 6}])

        wm.db.run(tx)
        with wm.db.transaction() as s:  # the key, as the transaction left it
            seen.extend(s.scalars(select(IdempotencyKey.status)))
        return 200, {"ok": True}

    wm.idempotency.once(caller(), "propose", "-", f"w-{how}", {}, write)
    assert seen == [COMMITTED]


def test_a_checkout_whose_answer_cannot_be_stored_still_hands_over_its_lease(
    wm: WorkManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator pass (PostgreSQL connections killed under keyed checkouts) found the
    checkout committed, its answer not stored, a 503 sent: every retry was then answered
    "recovered", without the lease token no later answer can give back, and the agent
    held a lease it could not use until its TTL. The committed answer is sent."""
    ops = Operations(wm)
    wm.orders.propose("test.simple", {})

    def checkout(c: Caller) -> Answer:
        return ops.checkout(c, CheckoutFilters())

    def unavailable(*_: Any) -> None:
        raise Unavailable("the database went away")

    monkeypatch.setattr(wm.idempotency.store, "complete_key", unavailable)
    first = wm.idempotency.once(caller(), "checkout", "", "ck", {}, checkout)
    monkeypatch.undo()
    assert not isinstance(first, Replay) and first[0] == 200
    item = first[1]["item"]
    status, beat = ops.heartbeat(caller(), item["id"], item["lease_token"])
    assert status == 200 and beat["lease_expires_at"]


#: What the request that lost the race may answer: its key was taken over (409 in
#: flight), the retry found the key committed (a replay), or the retry's call ended the
#: lease first (the lease is checked before the key, on both stores: a 409 saying the
#: lease expired or the item has moved on).
LOSERS = (IdempotencyInFlight, Replay, LeaseExpired, IllegalStateTransition)


def _race(wm: WorkManager, call: str, round_: int, late: threading.local) -> dict[str, Any]:
    """One round: a keyed lease call and its retry, which takes the key over (its clock
    is past the in-flight lock), released together from a barrier once the first holds
    the key; each thread's outcome (an answer, a replay or an error) by name."""
    ops, item_id, token = _leased(wm, call)
    run = LEASE_CALLS[call](ops, item_id, token)
    barrier = threading.Barrier(2, timeout=30)
    results: dict[str, Any] = {"item_id": item_id}

    def first(c: Caller) -> Answer:
        barrier.wait()  # the key is claimed: the retry may now take it over
        if round_ % 3 == 1:
            time.sleep(0.002)  # let the takeover win some rounds
        return run(c)

    def request(name: str, operation: Callable[[Caller], Answer], retry: bool) -> None:
        late.on = retry
        if retry:
            barrier.wait()
            if round_ % 3 == 2:
                time.sleep(0.002)  # let the statement win some rounds
        try:
            results[name] = wm.idempotency.once(
                caller(), call, item_id, f"race-{round_}", {}, operation, token
            )
        except Exception as exc:  # asserted by the test
            results[name] = exc

    threads = [
        threading.Thread(target=request, args=("first", first, False)),
        threading.Thread(target=request, args=("retry", run, True)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


@pytest.mark.parametrize("call", sorted(LEASE_CALLS))
def test_a_keyed_lease_call_racing_its_key_taken_over_commits_once(
    make_wm: Callable[..., WorkManager], call: str
) -> None:
    """The race the sequential test above cannot show: a request's one statement and a
    retry of it that takes its key over (the in-flight lock ran out, as the retry's clock
    sees it) run at the same time, many rounds. Whichever way a round falls — the takeover
    before the statement (the statement's key guard matches nothing) or the statement's
    lock on the key first (the retry finds the key committed) — exactly one of the two
    writes, and it writes what one call writes alone."""
    wm = make_wm(
        db="postgres",
        backend="database",
        registry=Registry([Simple()]),
        lease_ttl_seconds=3600,  # the lease outlives the retry's later clock
    )
    start = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    late = threading.local()

    def clock() -> datetime:
        return start + IN_FLIGHT_LOCK * 1.1 if getattr(late, "on", False) else start

    wm.ctx.clock = clock

    def events_of(item_id: str) -> list[str]:
        """The item's events from its last lease on (a released item may be leased again
        by a later round's checkout)."""
        with wm.db.transaction() as s:
            query = select(Event.event).where(Event.item_id == uuid.UUID(item_id))
            events = list(s.scalars(query.order_by(Event.id)))
        return events[len(events) - events[::-1].index("leased") - 1 :]

    ops, item_id, token = _leased(wm, call)  # what one call writes, alone
    run = LEASE_CALLS[call](ops, item_id, token)
    alone = wm.idempotency.once(caller(), call, item_id, "alone", {}, run, token)
    assert isinstance(alone, tuple) and alone[0] < 400, alone
    expected = events_of(item_id)
    for round_ in range(12):
        results = _race(wm, call, round_, late)
        item_id = results.pop("item_id")
        answers = [r for r in results.values() if isinstance(r, tuple)]
        losers = [r for r in results.values() if not isinstance(r, tuple)]
        assert len(answers) == 1 and answers[0][0] < 400, results
        assert len(losers) == 1 and isinstance(losers[0], LOSERS), results
        assert events_of(item_id) == expected, results
        with wm.db.engine.begin() as conn:  # the next round's key starts afresh
            conn.execute(IdempotencyKey.__table__.delete())
