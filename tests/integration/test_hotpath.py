"""The PostgreSQL paths (agent and control plane, hand-written SQL) write what SQLite's
(the ORM's) write.

The same scenario runs on each database (with each lease backend); the rows it leaves —
item state, events in order with their payloads and actors, provenance rows — must be the
same once ids and timestamps are set aside. The contract suite covers the rules; this
covers the audit trail the hand-written SQL produces.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from tests.support.types import Multi, Parts, Simple
from tests.support.waiting import wait_for
from workmanager import Actor, AgentInfo, Registry, WorkManager
from workmanager.db.models import Event, Item, Order, Part, Provenance
from workmanager.db.orm_orders import OrmOrderStore
from workmanager.db.orm_store import OrmStore
from workmanager.db.postgres.control import PostgresOrderStore
from workmanager.db.postgres.leases import PostgresStore
from workmanager.errors import (
    Forbidden,
    IllegalStateTransition,
    LeaseConflict,
    LeaseExpired,
    MissingParts,
    NotFound,
    SchemaOutdated,
    ValidationFailed,
)
from workmanager.provenance import DefaultEnricher
from workmanager.reads.leases import LeaseSelector
from workmanager.services.lease_admin import LeaseAdmin

pytestmark = pytest.mark.postgres

AGENT = AgentInfo(id="agent-7", name="tester", version="1.2.3", model_name="m", runtime="py")
VOLATILE = {"id", "order_id", "item_id", "created_at", "request_fingerprint"}


def scenario(wm: WorkManager, tenant: str) -> list[uuid.UUID]:
    """Two orders: one of two items (scoped checkouts), one of one item (filtered global
    checkout); everything submitted, approved (one automatically) and applied; plus
    refused calls that must change nothing."""
    multi = wm.propose("test.multi", {"count": 2}, priority=3)
    simple = wm.propose("test.simple", {"tenant_id": tenant}, priority=1)
    first = wm.agent.checkout(AGENT, order_id=multi)
    second = wm.agent.checkout("agent-8", order_id=multi)
    assert first is not None and second is not None
    with pytest.raises(LeaseConflict):  # a stale token changes nothing
        wm.agent.submit(_with_token(first, first.fence - 1), {"x": 1})
    # Heartbeats: the first moves the item to in_progress (an event), with progress and a
    # checkpoint; a stale one is refused; a later one writes provenance only.
    beat = wm.agent.heartbeat(first, progress=0.5, checkpoint={"page": 3})
    assert beat.item is not None and beat.item.state == "in_progress"
    assert beat.item.progress is not None and beat.item.progress["checkpoint"] == {"page": 3}
    assert beat.item.progress["attempt"] == 1 and beat.expires_at > first.expires_at
    with pytest.raises(LeaseConflict):
        wm.agent.heartbeat(_with_token(first, first.fence - 1))
    with pytest.raises(Forbidden):
        wm.agent.heartbeat(first, agent=AgentInfo(id="someone-else"))
    beat = wm.agent.heartbeat(beat, checkpoint={"pages": [1, "two"]})
    assert beat.item is not None and beat.item.progress is not None
    assert beat.item.progress["progress"] is None
    assert beat.item.progress["checkpoint"] == {"pages": [1, "two"]}
    wm.agent.heartbeat(second)
    wm.agent.submit(beat, {"x": 1}, evidence={"url": "e"}, notes="n")
    wm.agent.submit(second, {"x": 2})
    only = wm.agent.checkout(AGENT, type="test.simple", min_priority=1, tenant_id=tenant)
    assert only is not None and only.order_id == simple
    with pytest.raises(ValidationFailed):  # schema refusal: the lease stays
        wm.agent.submit(only, {"no": "answer"})
    wm.agent.submit(only, {"answer": 42})
    assert wm.agent.checkout(AGENT, order_id=simple) is None
    with pytest.raises(NotFound):
        wm.agent.checkout(AGENT, order_id=uuid.uuid4())
    # The control plane: plain auto-approval, a refused one, a manual one, two applies.
    assert wm.orders.check_auto_approval(multi) is False  # not an auto-approving type
    assert wm.orders.check_auto_approval(simple) is True
    assert wm.orders.check_auto_approval(simple) is False  # already approved
    wm.approve(multi)
    assert wm.executor.apply(multi).recorded and wm.executor.apply(simple).recorded
    again = wm.executor.apply(simple)  # a redelivered apply records nothing
    assert not again.recorded and again.order["state"] == "completed"
    with pytest.raises(IllegalStateTransition):
        wm.executor.apply(wm.propose("test.multi", {"count": 1}))
    # Proposed by an agent (provenance), with a dedupe key: the second call finds it.
    by_agent = wm.orders.propose(
        "test.multi", {"count": 3}, priority=2, dedupe_key=f"dk-{tenant}", agent=AGENT
    )
    again_proposed = wm.orders.propose(
        "test.multi", {"count": 3}, dedupe_key=f"dk-{tenant}", agent=AGENT
    )
    assert by_agent.created and not again_proposed.created
    assert again_proposed.order == by_agent.order
    # Releases: refused ones change nothing; the order goes back to queued with the last.
    third = uuid.UUID(by_agent.order["id"])
    a = wm.agent.checkout(AGENT, order_id=third)
    b = wm.agent.checkout("agent-8", order_id=third)
    assert a is not None and b is not None
    with pytest.raises(LeaseConflict):
        wm.agent.release(_with_token(a, a.fence - 1))
    with pytest.raises(Forbidden):
        wm.agent.release(a, agent=AgentInfo(id="someone-else"))
    wm.agent.heartbeat(a)  # in_progress, released from there
    held = wm.agent.release(a)
    assert held.item["state"] == "queued" and held.item["attempts"] == 0
    assert held.item["leased_by_agent_id"] is None and held.order_state == "in_progress"
    last = wm.agent.release(b)
    assert last.order_state == "queued" and not last.order_submitted
    with pytest.raises(LeaseExpired):  # released: the lease has ended
        wm.agent.release(b)
    return [multi, simple, third]


class Once(Multi):
    """Items with one attempt: a retryable fail is out of attempts."""

    type = "test.once"
    max_attempts = 1


def endings(wm: WorkManager, tenant: str) -> list[uuid.UUID]:
    """Parts (rejected, replaced in their slot) and finalize (strict, missing parts, best
    effort); fail retryable (requeued; the order stays), decided from the row when the
    lease's view moved on, not retryable and out of attempts (item and order failed);
    refused calls that must change nothing."""
    parts = wm.propose("test.parts", {"tenant": tenant})
    lease = wm.agent.checkout(AGENT, order_id=parts)
    assert lease is not None
    with pytest.raises(ValidationFailed):  # stored rejected, then refused
        wm.agent.submit_part(lease, "a", {"v": "not an integer"})
    with pytest.raises(LeaseConflict):
        wm.agent.submit_part(_with_token(lease, lease.fence - 1), "a", {"v": 1})
    with pytest.raises(Forbidden):
        wm.agent.submit_part(lease, "a", {"v": 1}, agent=AgentInfo(id="someone-else"))
    stored = wm.agent.submit_part(lease, "a", {"v": 1}, evidence="seen", notes="n")
    assert stored.required == ["a", "b"] and stored.missing == ["b"]
    assert stored.part["status"] == "validated" and stored.parts_state["a"]["seq"] is None
    first_b = wm.agent.submit_part(lease, "b", {"w": 1}, seq=0)
    replaced = wm.agent.submit_part(lease, "b", {"w": 2}, seq=0)  # the same slot
    assert replaced.part["id"] == first_b.part["id"] and replaced.missing == []
    done = wm.agent.finalize(lease)
    assert done.item["state"] == "submitted" and done.order_submitted
    assert done.item["assembled_result"] == done.item["result"] == {"a": {"v": 1}, "b": {"w": 2}}
    with pytest.raises(IllegalStateTransition):  # submitted: the lease has ended
        wm.agent.finalize(lease)
    partial = wm.propose("test.parts", {"tenant": tenant, "n": 2})
    lease = wm.agent.checkout(AGENT, order_id=partial)
    assert lease is not None
    wm.agent.submit_part(lease, "b", {"w": 3})
    with pytest.raises(MissingParts):  # the lease stays
        wm.agent.finalize(lease)
    best = wm.agent.finalize(lease, mode="best_effort")
    assert best.item["result"] == {"b": {"w": 3}} and best.order_state == "submitted"
    # Fail: requeued with backoff, the order as it was.
    again = wm.propose("test.multi", {"count": 2})
    a = wm.agent.checkout(AGENT, order_id=again)
    b = wm.agent.checkout("agent-8", order_id=again)
    assert a is not None and b is not None and b.item is not None
    error = {"code": "flaky", "message": "try later"}
    with pytest.raises(LeaseConflict):
        wm.agent.fail(_with_token(a, a.fence - 1), error)
    with pytest.raises(Forbidden):
        wm.agent.fail(a, error, agent=AgentInfo(id="someone-else"))
    requeued = wm.agent.fail(a, error)
    assert requeued.item["state"] == "queued" and requeued.order_state == "in_progress"
    assert requeued.item["available_at"] is not None and requeued.item["error"] == error
    # The view says the attempts are spent; the row (attempt 1 of 3) decides: requeued.
    moved = dataclasses.replace(b, item=dataclasses.replace(b.item, attempts=3))
    assert wm.agent.fail(moved, error).item["state"] == "queued"
    with pytest.raises(LeaseExpired):
        wm.agent.fail(a, error)
    # Not retryable, and out of attempts: the item fails, and its order with it.
    hard = wm.propose("test.multi", {"count": 2})
    c = wm.agent.checkout(AGENT, order_id=hard)
    assert c is not None
    failed = wm.agent.fail(c, {"code": "bad_input", "message": "no"}, retryable=False)
    assert failed.item["state"] == "failed" and failed.order_state == "failed"
    once = wm.propose("test.once", {})
    d = wm.agent.checkout(AGENT, order_id=once)
    assert d is not None
    spent = wm.agent.fail(d, error)
    assert spent.item["state"] == "failed" and spent.order_state == "failed"
    return [parts, partial, again, hard, once]


def _no_ids(payload: Any) -> Any:
    """An event's payload, an item id in it set aside (an order's ``failed`` names one)."""
    if isinstance(payload, dict) and "item_id" in payload:
        return {**payload, "item_id": None}
    return payload


def _with_token(lease: Any, fence: int) -> Any:
    """``lease`` presenting another fence with its own secret."""
    return dataclasses.replace(lease, token=f"{fence}.{lease.token.split('.', 1)[1]}")


def trail(wm: WorkManager, order_ids: list[uuid.UUID]) -> dict[str, Any]:
    """What the scenario left, ids and clocks aside."""
    out: dict[str, Any] = {
        "orders": [],
        "items": [],
        "events": [],
        "provenance": [],
        "parts": [],
    }
    with wm.db.transaction() as s:
        for order_id in order_ids:
            order = s.get(Order, order_id)
            assert order is not None
            out["orders"].append(
                (
                    order.state,
                    order.diff,
                    order.apply_attempts,
                    order.applied_at == order.completed_at is not None,
                    order.last_error and {**order.last_error, "item_id": None},
                )
            )
            items = s.scalars(select(Item).where(Item.order_id == order_id).order_by(Item.id))
            out["items"].extend(
                sorted(
                    (
                        (
                            i.state,
                            i.result,
                            i.attempts,
                            i.lease_token > 0,
                            i.leased_by_agent_id,
                            {k: v for k, v in (i.progress or {}).items() if k != "at"},
                            i.last_heartbeat_at is not None,
                            i.assembled_result,
                            i.error,
                            i.available_at is not None,
                            {
                                key: {k: v for k, v in part.items() if k != "submitted_at"}
                                for key, part in (i.parts_state or {}).items()
                            },
                        )
                        for i in items
                    ),
                    key=repr,
                )
            )
            parts = s.scalars(
                select(Part)
                .join(Item, Item.id == Part.item_id)
                .where(Item.order_id == order_id)
                .order_by(Part.part_key, Part.seq_slot)
            )
            out["parts"].extend(
                (
                    p.part_key,
                    p.seq,
                    p.status,
                    p.payload,
                    p.evidence,
                    p.notes,
                    p.errors,
                    p.checksum,
                    p.submitted_by_agent_id,
                )
                for p in parts
            )
            rows = s.scalars(
                select(Provenance).where(Provenance.order_id == order_id).order_by(Provenance.id)
            )
            out["provenance"].extend(
                {
                    c: getattr(p, c)
                    for c in (col.name for col in Provenance.__table__.columns)
                    if c not in VOLATILE
                }
                for p in rows
            )
    for order_id in order_ids:
        out["events"].extend(
            (
                e["event"],
                e["actor_type"],
                e["actor_id"],
                _no_ids(e["payload"]),
                e["item_id"] is None,
            )
            for e in wm.queries.events(order_id)
        )
    return out


@pytest.mark.parametrize("backend", ["database", pytest.param("redis", marks=pytest.mark.redis)])
def test_postgres_and_sqlite_leave_the_same_trail(make_wm, backend) -> None:
    registry = Registry([Simple(auto=True), Multi(), Parts(), Once()])
    hot = make_wm(db="postgres", backend=backend, registry=registry)  # first: truncated
    general = make_wm(db="sqlite", backend=backend, registry=registry)
    assert isinstance(hot.agent.store, PostgresStore)
    assert isinstance(general.agent.store, OrmStore)
    assert isinstance(hot.executor.store, PostgresOrderStore)
    assert isinstance(general.executor.store, OrmOrderStore)
    via_general = trail(general, scenario(general, "t-general"))
    via_hot = trail(hot, scenario(hot, "t-hot"))
    assert [o[0] for o in via_hot["orders"]] == ["completed", "completed", "queued"]
    assert [p["action"] for p in via_hot["provenance"]][-6:] == [
        "propose",
        "checkout",
        "checkout",
        "heartbeat",
        "release",
        "release",
    ]
    assert via_hot == via_general
    names = [e[0] for e in via_hot["events"]]
    assert names[names.index("leased") :][:3] == ["leased", "in_progress", "leased"], names
    # Parts, finalize and fail (PostgreSQL's own SQL since issue 12).
    ends_general = trail(general, endings(general, "t-general"))
    ends_hot = trail(hot, endings(hot, "t-hot"))
    assert [o[0] for o in ends_hot["orders"]] == [
        "submitted",
        "submitted",
        "in_progress",
        "failed",
        "failed",
    ]
    assert [p[2] for p in ends_hot["parts"]] == ["validated"] * 3  # "a" replaced its rejection
    assert ends_hot == ends_general
    assert [p["action"] for p in ends_hot["provenance"]].count("submit-part") == 5


def lease_actions(wm: WorkManager) -> list[uuid.UUID]:
    """The operator's extend, release and reclaim by selector (one of them failing an item
    and its order) and the sweep of a lease past its expiry (its lock gone)."""
    admin = LeaseAdmin(wm.ctx, Actor("user", "ops"))
    held = wm.propose("test.multi", {"count": 3})
    leases = [wm.agent.checkout(a, order_id=held) for a in (AGENT, "agent-8", "agent-9")]
    assert all(leases)
    wm.agent.heartbeat(leases[1])  # type: ignore[arg-type]
    assert admin.extend(LeaseSelector(order_id=held), 60).counts() == {"extended": 3}
    assert admin.release(LeaseSelector(agent_id="agent-8")).counts() == {"released": 1}
    assert admin.reclaim(LeaseSelector(agent_id=AGENT.id)).counts() == {"requeued": 1}
    assert admin.release(LeaseSelector(order_id=held)).counts() == {"released": 1}
    once = wm.propose("test.once", {})
    assert wm.agent.checkout(AGENT, order_id=once) is not None
    assert admin.reclaim(LeaseSelector(order_id=once)).counts() == {"failed": 1}
    lapsed = wm.propose("test.multi", {"count": 2})
    assert wm.agent.checkout(AGENT, order_id=lapsed) is not None
    lock = wm.ctx.leases.lock
    store = getattr(lock, "store", None)
    if store is not None:  # its lock timed out (the key deleted, as its TTL would)
        keys = list(store.client.scan_iter(match=f"{store.keys.prefix}item:*"))
        store.client.delete(*keys)
    saved = wm.ctx.clock
    wm.ctx.clock = lambda: saved() + timedelta(seconds=wm.settings.lease_ttl_seconds + 1)
    try:
        assert wm.sweeper.sweep().reclaimed == 1
    finally:
        wm.ctx.clock = saved
    return [held, once, lapsed]


def _fenceless(trail: dict[str, Any]) -> dict[str, Any]:
    """A trail with the fences and expiry times an event's payload names set aside (Redis
    counts fences across both databases' runs; clocks differ)."""
    volatile = ("lease_token", "lease_expires_at")
    events = [
        (e[0], e[1], e[2], {k: v for k, v in (e[3] or {}).items() if k not in volatile}, e[4])
        for e in trail["events"]
    ]
    return {**trail, "events": events}


@pytest.mark.parametrize("backend", ["database", pytest.param("redis", marks=pytest.mark.redis)])
def test_lease_admin_and_the_sweep_leave_the_same_trail(make_wm, backend, monkeypatch) -> None:
    """Issue 12: reclaim, release_held and extend are the store's; PostgreSQL's statements
    write what the ORM store writes, and none of them reaches the ORM store there."""
    registry = Registry([Multi(), Once()])
    hot = make_wm(db="postgres", backend=backend, registry=registry, **NO_BACKOFF)
    general = make_wm(db="sqlite", backend=backend, registry=registry, **NO_BACKOFF)
    via_general = _fenceless(trail(general, lease_actions(general)))
    for name in ("reclaim", "release_held", "extend"):
        monkeypatch.setattr(OrmStore, name, _refused)
    via_hot = _fenceless(trail(hot, lease_actions(hot)))
    assert [o[0] for o in via_hot["orders"]] == ["queued", "failed", "in_progress"]
    names = [e[0] for e in via_hot["events"]]
    assert names.count("lease_extended") == 3 and names.count("lease_released") == 2
    assert names.count("lease_reclaimed") == 2 and names.count("lease_expired") == 1
    assert names[names.index("lease_released", names.index("lease_reclaimed")) :][:2] == [
        "lease_released",
        "requeued",
    ]
    assert via_hot == via_general


NO_BACKOFF = {"retry_backoff_seconds": 0, "retry_jitter_seconds": 0}


def _refused(*_: Any, **__: Any) -> Any:
    raise AssertionError("the ORM path ran on PostgreSQL")


def _no_orm(wm: WorkManager, monkeypatch: Any) -> None:
    """Fail the test if any lease operation reaches the ORM implementation (SQLite's)."""

    def refused(*_: Any) -> Any:
        raise AssertionError("the ORM path ran on PostgreSQL")

    assert isinstance(wm.agent.store, PostgresStore)
    for name in ("grant", "heartbeat", "submit", "release", "submit_part", "finalize", "fail"):
        monkeypatch.setattr(OrmStore, name, refused)


@pytest.mark.parametrize("backend", ["database", pytest.param("redis", marks=pytest.mark.redis)])
def test_fail_parts_and_finalize_run_on_the_sql_path(make_wm, backend, monkeypatch) -> None:
    """Issue 12: on PostgreSQL no fail, part or finalize reaches the ORM store, refused
    ones included (each refusal is said from the locked row)."""
    wm = make_wm(db="postgres", backend=backend, registry=Registry([Multi(), Parts(), Once()]))
    _no_orm(wm, monkeypatch)
    orders = endings(wm, "t")
    states = [wm.queries.order(o)["state"] for o in orders]
    assert states == ["submitted", "submitted", "in_progress", "failed", "failed"]


@pytest.mark.parametrize("backend", ["database", pytest.param("redis", marks=pytest.mark.redis)])
@pytest.mark.parametrize("limit", ["agent", "type", "tenant"])
def test_limits_are_counted_on_the_sql_path(make_wm, backend, limit, monkeypatch) -> None:
    """Per-agent, per-type and per-tenant limits (leases/limits.py, one rule) hold on the
    PostgreSQL path, with no call reaching the ORM."""
    registry = Registry([Multi(), Simple()])
    wm = make_wm(
        db="postgres", backend=backend, registry=registry, **{f"max_leases_per_{limit}": 1}
    )
    _no_orm(wm, monkeypatch)
    if limit == "agent":
        order_id = wm.propose("test.multi", {"count": 3})
        first = wm.agent.checkout("a", order_id=order_id)
        assert first is not None
        assert wm.agent.checkout("a", order_id=order_id) is None  # at its limit
        assert wm.agent.checkout("b", order_id=order_id) is not None  # another agent is not
        wm.agent.submit(first, {"x": 1})
        assert wm.agent.checkout("a", order_id=order_id) is not None  # below it again
    elif limit == "type":
        multi = wm.propose("test.multi", {"count": 2})
        simple = wm.propose("test.simple", {"x": 1})
        assert wm.agent.checkout("a", order_id=multi) is not None
        assert wm.agent.checkout("b", order_id=multi) is None  # test.multi is full
        got = wm.agent.checkout("b")  # the global pick skips the full type
        assert got is not None and got.order_id == simple
    else:
        t1 = wm.propose("test.multi", {"count": 2}, tenant_id="t1")
        t2 = wm.propose("test.multi", {"count": 1}, tenant_id="t2")
        assert wm.agent.checkout("a", order_id=t1) is not None
        assert wm.agent.checkout("b", order_id=t1) is None  # tenant t1 is full
        other = wm.agent.checkout("b")
        assert other is not None and other.order_id == t2


def _every_lease_call(wm: WorkManager, lease: Any) -> dict[str, Any]:
    agent = wm.agent
    return {
        "submit": lambda: agent.submit(lease, {"x": 1}),
        "heartbeat": lambda: agent.heartbeat(lease),
        "release": lambda: agent.release(lease),
        "submit_part": lambda: agent.submit_part(lease, "a", {"v": 1}),
        "finalize": lambda: agent.finalize(lease),
        "fail": lambda: agent.fail(lease, {"code": "x", "message": "y"}),
    }


@pytest.mark.redis
def test_a_lock_the_store_lost_is_expired_on_every_path(make_wm) -> None:
    """SPEC §4.5: a lease with no Redis lock is expired, for every operation on every
    path. (Until issue 11 the hot submit accepted it while the general path refused.)"""
    registry = Registry([Simple(), Multi()])
    outcomes = {}
    for db in ("postgres", "sqlite"):
        wm = make_wm(db=db, backend="redis", registry=registry)
        order_id = wm.propose("test.multi", {"count": 1})
        lease = wm.agent.checkout(AGENT, order_id=order_id)
        assert lease is not None
        lease = wm.agent.heartbeat(lease)  # a lease carrying its item: the one-trip submit
        store = wm.ctx.leases.store  # type: ignore[attr-defined]
        store.client.delete(*store.client.keys(f"{store.keys.prefix}item:*"))
        before = trail(wm, [order_id])
        for name, call in _every_lease_call(wm, lease).items():
            try:
                call()
                outcomes[(db, name)] = "accepted"
            except LeaseExpired:
                outcomes[(db, name)] = "lease_expired"
        assert trail(wm, [order_id]) == before, "a refused call changed nothing"
    assert set(outcomes.values()) == {"lease_expired"}, outcomes


@pytest.mark.parametrize("backend", ["database", pytest.param("redis", marks=pytest.mark.redis)])
def test_a_submit_the_database_refuses_leaves_the_lease_usable(make_wm, backend) -> None:
    """A result PostgreSQL cannot store (a lone surrogate in a string) is a 422 and
    changes nothing, so the holder can still heartbeat and fail. (It is refused at the
    edge now; the hot paths still turn a value psycopg refuses at the commit's round trip
    into the same 422, and delete the store lock only after a commit that succeeded.)"""
    wm = make_wm(db="postgres", backend=backend, registry=Registry([Multi()]))
    order_id = wm.propose("test.multi", {"count": 1})
    lease = wm.agent.checkout(AGENT, order_id=order_id)
    assert lease is not None
    with pytest.raises(ValidationFailed):
        wm.agent.submit(lease, {"x": "\ud800"})
    wm.agent.heartbeat(lease)
    outcome = wm.agent.fail(lease, {"code": "gave_up", "message": "after the 422"})
    assert outcome.item["state"] == "queued"


def test_the_order_start_sees_a_requeue_committed_after_the_grant(make_wm) -> None:
    """Review finding: a release that requeues the order can commit while the checkout's
    statement runs. The order start (``workmanager_start_order``, VOLATILE) takes its own
    snapshot once the item is locked, so the order still ends ``in_progress`` with its
    event. The statement is paused between the item's grant and the order start while
    the requeue commits."""
    wm = make_wm(db="postgres", backend="database", registry=Registry([Multi()]))
    order_id = wm.propose("test.multi", {"count": 2})
    assert wm.agent.checkout("agent-a", order_id=order_id) is not None  # order in_progress
    with paused_grant(wm, order_id, "agent-b") as (admin, granted):
        # Meanwhile the other holder's release requeued the order and committed.
        admin.execute("UPDATE work_orders SET state = 'queued' WHERE id = %s", (order_id,))
    assert granted and granted[0] is not None
    assert wm.queries.order(order_id)["state"] == "in_progress"
    assert [e["event"] for e in wm.queries.events(order_id)][-2:] == ["leased", "in_progress"]


#: Holds a statement of the session that set ``wmtest.pause`` at its provenance insert
#: until the test gives up the advisory lock ``PAUSE_KEY`` (BEFORE INSERT: it fires
#: during the statement, not at its end). A gate, not a sleep: what runs meanwhile may
#: take as long as it needs on a loaded machine.
PAUSE_KEY = 7_417_001
PAUSE_TRIGGER = f"""
CREATE OR REPLACE FUNCTION wmtest_pause() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('wmtest.pause', true) = 'on' THEN
    PERFORM pg_advisory_xact_lock({PAUSE_KEY});
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER wmtest_pause BEFORE INSERT ON work_provenance
  FOR EACH ROW EXECUTE FUNCTION wmtest_pause();
"""


@contextlib.contextmanager
def paused_grant(wm: WorkManager, order_id: uuid.UUID, agent_id: str) -> Iterator[Any]:
    """A hot checkout of ``order_id`` by ``agent_id`` (the real statement, on its own
    connection) held mid-statement — its item locked, its order step not yet run — until
    the block ends. Yields an admin connection and the list the grant's row lands in;
    the grant has finished when the block ends, whether it ended well or not."""
    import threading

    import psycopg

    from workmanager.db.postgres import sql as hotsql
    from workmanager.leases.base import CheckoutQuery
    from workmanager.leases.selection import shape_of

    hot = wm.agent.store
    assert hot is not None
    query = CheckoutQuery(order_id=order_id)
    values = hot.checkout.checkout_values(AgentInfo(id=agent_id), query)
    sql = hotsql.grant_sql(shape_of(query, (), ()))
    url = wm.settings.database_url.replace("postgresql+psycopg://", "postgresql://")
    granted: list[Any] = []
    held_at_gate = (
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'"
        " AND datname = current_database()"
    )
    with psycopg.connect(url, autocommit=True) as b, psycopg.connect(url, autocommit=True) as a:
        a.execute(PAUSE_TRIGGER)
        a.execute("SELECT pg_advisory_lock(%s)", (PAUSE_KEY,))
        grant = threading.Thread(target=lambda: granted.append(b.execute(sql, values).fetchone()))
        try:
            b.execute("SET wmtest.pause = 'on'")
            grant.start()
            wait_for(lambda: a.execute(held_at_gate).fetchone() == (1,))
            yield a, granted
        finally:
            a.execute("SELECT pg_advisory_unlock(%s)", (PAUSE_KEY,))
            if grant.is_alive() or grant.ident is not None:
                grant.join(30)
            a.execute("DROP TRIGGER IF EXISTS wmtest_pause ON work_provenance")


class EmptyExtraEnricher(DefaultEnricher):
    """A custom enricher whose ``extra`` is an empty object, not None."""

    def enrich(self, action: str, agent: AgentInfo) -> dict[str, Any]:
        return {**super().enrich(action, agent), "extra": {}}


@pytest.mark.parametrize("backend", ["database", pytest.param("redis", marks=pytest.mark.redis)])
def test_custom_provenance_fields_are_stored_alike(make_wm, backend) -> None:
    """Review finding: an enricher's empty ``extra`` made the hot propose fail to adapt it."""
    wm = make_wm(
        db="postgres",
        backend=backend,
        registry=Registry([Multi()]),
        provenance_enricher="tests.integration.test_hotpath:EmptyExtraEnricher",
    )
    order_id = uuid.UUID(wm.orders.propose("test.multi", {"count": 1}, agent=AGENT).order["id"])
    lease = wm.agent.checkout(AGENT, order_id=order_id)
    assert lease is not None
    wm.agent.submit(lease, {"x": 1})
    with wm.db.transaction() as s:
        rows = s.scalars(select(Provenance).where(Provenance.order_id == order_id))
        assert [(p.action, p.extra) for p in rows] == [
            ("propose", {}),
            ("checkout", {}),
            ("submit", {}),
        ]


def test_after_the_server_drops_its_connections_one_call_fails_then_all_succeed(make_wm):
    """Every pooled connection killed at once (what a restart does): the first hot call
    that meets a dead one answers 503 and the server is marked lost, so the other pooled
    connections are pinged and replaced before they are lent, instead of each failing
    one more call."""
    import psycopg

    from workmanager.errors import Unavailable

    wm = make_wm(db="postgres", backend="database", registry=Registry([Multi()]))
    order_id = wm.propose("test.multi", {"count": 3})
    with wm.db.raw.connection(), wm.db.raw.connection():  # type: ignore[union-attr]
        pass  # two connections now sit in the pool
    url = wm.settings.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert killed is not None and killed[0] >= 2
    with pytest.raises(Unavailable):
        wm.agent.checkout(AGENT, order_id=order_id)
    assert wm.agent.checkout(AGENT, order_id=order_id) is not None
    assert wm.agent.checkout(AGENT, order_id=order_id) is not None
    assert wm.db.raw.pool.lent == 0  # nothing leaked; the pool's count intact


@pytest.mark.parametrize("backend", ["database", pytest.param("redis", marks=pytest.mark.redis)])
def test_auto_approval_of_an_unknown_order_writes_nothing(make_wm, backend) -> None:
    """Audit rows carry no foreign keys, so nothing but this check stops an orphan
    ``auto_approval_refused`` event for an order that does not exist."""
    wm = make_wm(db="postgres", backend=backend, registry=Registry([Simple(auto=True)]))
    assert wm.orders.check_auto_approval(uuid.uuid4()) is False
    with wm.db.transaction() as s:
        assert s.scalars(select(Event)).first() is None


class LooksUpElsewhere(Simple):
    """``can_approve`` fails with a NotFound of its own (a record it looks up elsewhere)."""

    def can_approve(self, order: Any) -> bool:
        raise NotFound("the customer record is gone", details={"customer": "c-1"})


def test_a_hooks_own_not_found_is_a_recorded_refusal(make_wm) -> None:
    wm = make_wm(db="postgres", backend="database", registry=Registry([LooksUpElsewhere(True)]))
    order_id = wm.propose("test.simple", {})
    lease = wm.agent.checkout(AGENT, order_id=order_id)
    assert lease is not None
    wm.agent.submit(lease, {"answer": 1})
    assert wm.orders.check_auto_approval(order_id) is False
    events = [e["event"] for e in wm.queries.events(order_id)]
    assert events[-1] == "auto_approval_refused"


class SeesItems(Simple):
    """Records the item view each validation saw."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, Any]] = []

    def validate_submission(self, item: Any, result: Any) -> None:
        self.seen.append((item.state, item.progress and item.progress["progress"]))
        super().validate_submission(item, result)


@pytest.mark.parametrize("backend", ["database", pytest.param("redis", marks=pytest.mark.redis)])
def test_the_one_trip_submit_decides_as_the_general_path(make_wm, backend) -> None:
    """A lease from checkout carries the item: its submit validates against that view and
    writes in one round trip, guarded on the view still being the row. Whatever that
    guard refuses is decided as in general: lease first, then the fresh row's view."""
    sees = SeesItems()
    wm = make_wm(db="postgres", backend=backend, registry=Registry([sees]))
    order_id = wm.propose("test.simple", {})
    lease = wm.agent.checkout(AGENT, order_id=order_id)
    assert lease is not None and lease.item is not None
    stale = _with_token(lease, lease.fence - 1)
    # a result the schema passes and the hook refuses (the hook sees only those)
    refused = {"answer": "forbidden"}
    with pytest.raises(LeaseConflict):  # not the 422 this result also deserves
        wm.agent.submit(stale, refused)
    with pytest.raises(ValidationFailed):
        wm.agent.submit(lease, refused)
    # Once per refused submit; with a store, the stale lease is refused before the hooks
    # (its lock check comes first there), which is the general path's order.
    refused_by_hooks = 1 if backend == "redis" else 2
    assert sees.seen == [("leased", None)] * refused_by_hooks
    beat = wm.agent.heartbeat(lease, progress=0.5)
    assert beat.item is not None and beat.item.state == "in_progress"
    # The first lease's view is stale now; its submit reads the row afresh and succeeds.
    outcome = wm.agent.submit(lease, {"answer": 1})
    assert outcome.item["state"] == "submitted" and outcome.order_submitted
    assert sees.seen[-1] == ("in_progress", 0.5)
    order_id2 = wm.propose("test.simple", {})
    second = wm.agent.checkout(AGENT, order_id=order_id2)
    assert second is not None
    renewed = wm.agent.heartbeat(second, progress=0.25)
    sees.seen.clear()
    wm.agent.submit(renewed, {"answer": 2})  # the renewal's view is current: one check
    assert sees.seen == [("in_progress", 0.25)]


class NeedsKeys(Multi):
    """The result must carry every key the item's input lists under ``need``."""

    type = "test.needs"

    def plan(self, order: Any) -> list[Any]:
        from workmanager import ItemSpec

        return [ItemSpec(input={"need": ["a", "b"]})]

    def result_schema(self, item: Any) -> Any:
        return {"type": "object", "required": list(item.input["need"])}


@pytest.mark.parametrize("backend", ["database", pytest.param("redis", marks=pytest.mark.redis)])
def test_third_review_findings_on_the_one_trip_submit(make_wm, backend) -> None:
    """(1) a caller that changed its copy of the item's input is validated against the
    row, not its copy; (2) a stale lease with an unstorable result is answered as in
    general: since lone surrogates are refused at the edge like NUL, that is the 422,
    before any lease check; (3) a checkpoint changed by the caller after its heartbeat
    does not make the renewal's view stale."""
    wm = make_wm(db="postgres", backend=backend, registry=Registry([NeedsKeys(), Simple()]))
    order_id = wm.propose("test.needs", {})
    lease = wm.agent.checkout(AGENT, order_id=order_id)
    assert lease is not None and lease.item is not None
    lease.item.input["need"] = []  # a handler's scribble on its view
    with pytest.raises(ValidationFailed):
        wm.agent.submit(lease, {"partial": True})
    stale = _with_token(lease, lease.fence - 1)
    with pytest.raises(ValidationFailed):
        wm.agent.submit(stale, {"answer": "\ud800"})
    with pytest.raises(LeaseConflict):
        wm.agent.submit(stale, {"answer": 1})
    cp = {"step": 1}
    renewed = wm.agent.heartbeat(lease, progress=0.5, checkpoint=cp)
    cp["step"] = 2  # the caller keeps its running checkpoint
    assert renewed.item is not None and renewed.item.progress["checkpoint"] == {"step": 1}
    outcome = wm.agent.submit(renewed, {"a": 1, "b": 2})
    assert outcome.item["state"] == "submitted"


@pytest.mark.parametrize("backend", ["database", pytest.param("redis", marks=pytest.mark.redis)])
def test_code_newer_than_the_schema_is_an_error_naming_its_fix(make_wm, backend) -> None:
    """Code deployed before ``workmanager db upgrade`` (the functions of migration 0004
    missing; start-up and ``/readyz`` refuse it first): a checkout or a submit changes
    nothing and says to run the upgrade (503 ``schema_outdated``); there is no second
    path. With Redis the lock the checkout took is given back. After the upgrade, the
    same calls succeed."""
    wm = make_wm(db="postgres", backend=backend, registry=Registry([Multi()]))
    order_id = wm.propose("test.multi", {"count": 2})
    held = wm.agent.checkout(AGENT, order_id=order_id)
    assert held is not None
    before = trail(wm, [order_id])
    with functions_dropped(wm):
        with pytest.raises(SchemaOutdated, match="workmanager db upgrade"):
            wm.agent.checkout(AGENT, order_id=order_id)
        with pytest.raises(SchemaOutdated, match="workmanager db upgrade"):
            wm.agent.submit(held, {"x": 1})
        assert trail(wm, [order_id]) == before
        if backend == "redis":
            store = wm.ctx.leases.store  # type: ignore[attr-defined]
            assert len(store.client.keys(f"{store.keys.prefix}item:*")) == 1  # held's only
    second = wm.agent.checkout(AGENT, order_id=order_id)
    assert second is not None
    for lease in (held, second):
        wm.agent.submit(lease, {"x": 1})
    assert wm.queries.order(order_id)["state"] == "submitted"


@contextlib.contextmanager
def functions_dropped(wm: WorkManager, migration: str = "0004") -> Iterator[None]:
    """The SQL functions ``migration`` adds (0004: start and submit; 0005: release) gone
    for the block, as on a schema from before it (the test database is shared, so they
    come back afterwards)."""
    from sqlalchemy import text

    from workmanager.db import sql

    added = [s for s in sql.sections("functions.sql") if s.migration == migration and s.signature]
    assert added, migration
    drop = "; ".join(f"DROP FUNCTION IF EXISTS {s.signature}" for s in added)
    create = "\n".join(s.sql for s in added)
    with wm.db.engine.begin() as conn:
        conn.execute(text(drop))
    try:
        yield
    finally:
        with wm.db.engine.begin() as conn:
            conn.execute(text(create))


def test_only_the_missing_functions_are_an_outdated_schema(make_wm) -> None:
    """Review finding: another "undefined function" error (an operator for a filter of
    the wrong type) is not an outdated schema: it stays the bug it is. The agent API
    refuses such a filter before any SQL, naming it."""
    import psycopg

    from workmanager.errors import InvalidAgentMetadata
    from workmanager.leases.base import CheckoutQuery

    wm = make_wm(db="postgres", backend="database", registry=Registry([Multi()]))
    order_id = wm.propose("test.multi", {"count": 1})
    hot = wm.agent.store
    assert hot is not None
    with pytest.raises(psycopg.errors.UndefinedFunction):
        hot.grant(AgentInfo(id="a"), CheckoutQuery(tenant_id=7))  # type: ignore[arg-type]
    with functions_dropped(wm, "0005"), pytest.raises(psycopg.errors.UndefinedFunction):
        # a schema at 0004 (only the release function missing): still the bug it is
        hot.grant(AgentInfo(id="a"), CheckoutQuery(tenant_id=7))  # type: ignore[arg-type]
    for bad, path in (
        ({"tenant_id": 7}, "tenant_id"),
        ({"type": 7}, "type"),
        ({"min_priority": "high"}, "min_priority"),
        ({"min_priority": True}, "min_priority"),
        ({"min_priority": 10**20}, "min_priority"),
    ):
        with pytest.raises(ValidationFailed) as refused:
            wm.agent.checkout("a", **bad)
        assert refused.value.details[0]["path"] == path
    for bad in ({"order_id": 7}, {"item_id": "not-a-uuid"}):  # SPEC §6.1: 404, as over HTTP
        with pytest.raises(NotFound):
            wm.agent.checkout("a", **bad)
    with pytest.raises(InvalidAgentMetadata) as named:  # an agent id that is not a string
        wm.agent.checkout(AgentInfo(id=uuid.uuid4()))  # type: ignore[arg-type]
    assert named.value.details[0]["field"] == "agent_id"
    assert wm.agent.store is hot
    assert wm.agent.checkout("a", order_id=str(order_id)) is not None


@pytest.mark.parametrize("backend", ["database", pytest.param("redis", marks=pytest.mark.redis)])
def test_the_outcome_carries_the_result_as_submitted(make_wm, backend) -> None:
    """Review finding: the hot submit returned the result as jsonb gave it back (keys
    reordered, 1e300 an integer); both paths return what was submitted."""
    wm = make_wm(db="postgres", backend=backend, registry=Registry([Multi()]))
    order_id = wm.propose("test.multi", {"count": 1})
    lease = wm.agent.checkout(AGENT, order_id=order_id)
    assert lease is not None
    result = {"zeta": 1, "alpha": 1e300, "x": 1}
    outcome = wm.agent.submit(lease, result)
    assert outcome.item["result"] == result
    assert list(outcome.item["result"]) == ["zeta", "alpha", "x"]
    assert isinstance(outcome.item["result"]["alpha"], float)


@pytest.mark.parametrize("backend", ["database", pytest.param("redis", marks=pytest.mark.redis)])
def test_every_heartbeat_runs_on_the_sql_path(make_wm, backend, monkeypatch) -> None:
    """A refused heartbeat is explained from the row (no ORM run to say why): a wrong
    fence is a conflict, another agent is forbidden, an expired lease is expired; the
    lease stays usable after each refusal."""
    wm = make_wm(db="postgres", backend=backend, registry=Registry([Multi()]))
    order_id = wm.propose("test.multi", {"count": 1})
    lease = wm.agent.checkout(AGENT, order_id=order_id)
    assert lease is not None
    _no_orm(wm, monkeypatch)
    renewed = wm.agent.heartbeat(lease, progress=1)
    renewed = wm.agent.heartbeat(renewed)
    with pytest.raises(LeaseConflict):
        wm.agent.heartbeat(_with_token(lease, lease.fence + 5))
    with pytest.raises(Forbidden):
        wm.agent.heartbeat(lease, agent=AgentInfo(id="someone-else"))
    assert wm.queries.item(lease.item_id)["state"] == "in_progress"
    outcome = wm.agent.submit(renewed, {"x": 1})  # the renewal's view: one round trip
    assert outcome.order_submitted


@pytest.mark.parametrize("backend", ["database", pytest.param("redis", marks=pytest.mark.redis)])
def test_heartbeat_answers_as_the_general_path(make_wm, backend) -> None:
    """Review findings on the hot heartbeat: a checkpoint jsonb cannot store (a lone
    surrogate) is refused as in general (at the edge, like NUL, before the lease check);
    the renewal carries the checkpoint as sent (key order, a float stays a float), as in
    general."""
    wm = make_wm(db="postgres", backend=backend, registry=Registry([Multi()]))
    order_id = wm.propose("test.multi", {"count": 1})
    lease = wm.agent.checkout(AGENT, order_id=order_id)
    assert lease is not None
    bad = {"s": "\ud800"}
    with pytest.raises(ValidationFailed):
        wm.agent.heartbeat(_with_token(lease, lease.fence + 1), checkpoint=bad)
    with pytest.raises(LeaseConflict):
        wm.agent.heartbeat(_with_token(lease, lease.fence + 1), checkpoint={"s": 1})
    with pytest.raises(ValidationFailed):
        wm.agent.heartbeat(lease, checkpoint=bad)
    checkpoint = {"zeta": 1, "alpha": 1e16}
    renewed = wm.agent.heartbeat(lease, progress=0.25, checkpoint=checkpoint)
    assert renewed.item is not None and renewed.item.progress is not None
    kept = renewed.item.progress["checkpoint"]
    assert kept == checkpoint and list(kept) == ["zeta", "alpha"]
    assert isinstance(kept["alpha"], float) and kept is not checkpoint
    assert wm.queries.item(lease.item_id)["state"] == "in_progress"


def test_guarded_writes_find_their_row_by_primary_key(make_wm) -> None:
    """Review finding (bench): with the guard in the UPDATE's WHERE, a generic plan on
    statistics from before the leases existed scanned a partial index of held items,
    every held lease for one row (heartbeat ~4x slower with 3,000 held). The guard is now
    tested on a CTE that locks the row by id, and the grant's UPDATE finds its pick by id
    alone. Set up as the bench found it: a queue analysed, then partly leased; every scan
    of ``work_items`` but the pick's must be a primary-key lookup."""
    import psycopg

    from workmanager.db.postgres import sql as hotsql
    from workmanager.leases.selection import Shape

    wm = make_wm(db="postgres", backend="database", registry=Registry([Multi()]))
    order_id = wm.propose("test.multi", {"count": 300})
    url = wm.settings.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute("ANALYZE work_items")  # 300 queued, nothing held
        for _ in range(150):
            assert wm.agent.checkout("one-agent", order_id=order_id) is not None
        _assert_pkey_lookups(
            conn,
            {
                "heartbeat": hotsql.heartbeat_sql(False),
                "heartbeat+progress": hotsql.heartbeat_sql(True),
                "submit": hotsql.SUBMIT_SQL,
                "submit guarded": hotsql.submit_sql(guarded=True),
                "submit guarded keyed": hotsql.submit_sql(guarded=True, keyed=True),
                "release keyed": hotsql.release_sql(True),
            },
        )
        while wm.agent.checkout("one-agent", order_id=order_id) is not None:
            pass
        conn.execute("ANALYZE work_items")  # nothing queued
        wm.propose("test.multi", {"count": 300})
        _assert_pkey_lookups(
            conn,
            {
                "grant": hotsql.grant_sql(Shape()),
            },
        )


def _assert_pkey_lookups(conn: Any, statements: dict[str, str]) -> None:
    import json
    import re

    for name, sql in statements.items():
        params = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", sql)))
        for i, param in enumerate(params, 1):
            sql = sql.replace(f"%({param})s", f"${i}")
        prepared = f"wmtest_{abs(hash(name))}"
        conn.execute(f"PREPARE {prepared} AS {sql}")
        nulls = ", ".join("NULL" for _ in params)
        (plan,) = conn.execute(f"EXPLAIN (FORMAT JSON) EXECUTE {prepared}({nulls})").fetchone()
        plan = plan if isinstance(plan, list) else json.loads(plan)
        scans = [
            (node.get("Alias"), node["Node Type"], node.get("Index Name"))
            for node in _plan_nodes(plan[0]["Plan"])
            if node.get("Relation Name") == "work_items"
            and node.get("Alias") != "i"  # the pick: the checkout index, rightly
            and node["Node Type"] != "ModifyTable"
        ]
        assert scans, (name, plan)
        for _alias, kind, index in scans:
            assert (kind, index) == ("Index Scan", "work_items_pkey"), (name, scans)


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


class _Died(BaseException):
    """The process "dies" after the operation committed, before its answer is stored."""


def _caller() -> Any:
    from workmanager.services.tokens import Principal
    from workmanager.surface.callers import AgentMetadata, build_caller

    return build_caller(Principal("token-a", None, frozenset({"admin"})), AgentMetadata("a-1"))


@pytest.mark.parametrize("backend", ["database", pytest.param("redis", marks=pytest.mark.redis)])
def test_keyed_fail_part_and_finalize_mark_their_key_in_their_transaction(
    make_wm, backend, monkeypatch
) -> None:
    """A pending idempotency key is marked ``committed`` by the transaction of the part,
    the finalize or the fail (so a process dying before the answer is stored replays it);
    a key taken over meanwhile commits nothing."""
    from sqlalchemy import update

    from workmanager.db.models import IdempotencyKey
    from workmanager.errors import IdempotencyInFlight

    wm = make_wm(db="postgres", backend=backend, registry=Registry([Multi(), Parts()]))
    _no_orm(wm, monkeypatch)
    lease = wm.agent.checkout(AGENT, order_id=wm.propose("test.parts", {}))
    other = wm.agent.checkout(AGENT, order_id=wm.propose("test.multi", {"count": 1}))
    taken = wm.agent.checkout(AGENT, order_id=wm.propose("test.multi", {"count": 1}))
    assert lease is not None and other is not None and taken is not None
    error = {"code": "flaky", "message": "later"}
    calls = {
        "part": lambda: wm.agent.submit_part(lease, "a", {"v": 1}),
        "finalize": lambda: wm.agent.finalize(lease, mode="best_effort"),
        "fail": lambda: wm.agent.fail(other, error),
    }
    for key, call in calls.items():

        def run(_: Any, call: Any = call) -> Any:
            call()
            return 200, {"done": True}

        with monkeypatch.context() as m:
            m.setattr(wm.idempotency, "complete", lambda *_: (_ for _ in ()).throw(_Died()))
            with pytest.raises(_Died):
                wm.idempotency.once(_caller(), key, "", key, {}, run)
    with wm.db.transaction() as s:
        assert sorted(s.scalars(select(IdempotencyKey.status))) == ["committed"] * 3
    assert wm.queries.item(lease.item_id)["state"] == "submitted"
    assert wm.queries.item(other.item_id)["state"] == "queued"

    def taken_then_fail(_: Any) -> Any:
        with wm.db.engine.begin() as conn:  # another request took the key meanwhile
            conn.execute(update(IdempotencyKey).values(status="done"))
        wm.agent.fail(taken, error)
        return 200, {}

    with pytest.raises(IdempotencyInFlight):
        wm.idempotency.once(_caller(), "fail", "", "tk", {}, taken_then_fail)
    assert wm.queries.item(taken.item_id)["state"] == "leased"
