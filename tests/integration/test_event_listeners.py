"""``workmanager.events``: upstream's events announced to listeners after commit (SPEC §13).

On PostgreSQL the hot paths are on by default: while a listener is registered they step
aside, so the same events are heard there too."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from tests.support.types import Parts, Simple
from workmanager import Actor, Registry, WorkManager, events
from workmanager.errors import ValidationFailed


@pytest.fixture
def heard() -> Iterator[list[events.Event]]:
    seen: list[events.Event] = []
    events.listen(events.ANY, seen.append)
    yield seen
    events.clear()


@pytest.fixture
def wm(make_wm: Callable[..., WorkManager], database: str) -> WorkManager:
    return make_wm(db=database, backend="database", registry=Registry([Simple(), Parts()]))


def names(seen: list[events.Event]) -> list[str]:
    return [e.name for e in seen]


def test_a_whole_flow_is_announced(wm: WorkManager, heard: list[events.Event]) -> None:
    order_id = wm.propose("test.parts", {})
    assert names(heard) == ["WorkOrderProposed", "WorkOrderPlanned"]
    lease = wm.agent.checkout("agent-1", order_id=order_id)
    assert lease is not None
    wm.agent.heartbeat(lease, progress=0.5)
    wm.agent.submit_part(lease, "a", {"v": 1})
    with pytest.raises(ValidationFailed):
        wm.agent.submit_part(lease, "a", {"v": "x"}, seq=2)
    wm.agent.submit_part(lease, "b", {"x": 1})
    wm.agent.finalize(lease)
    wm.approve(order_id)
    wm.executor.apply(order_id)
    got = names(heard)
    for name in (
        "WorkItemLeased",
        "WorkItemHeartbeat",
        "WorkItemPartSubmitted",
        "WorkItemPartValidated",
        "WorkItemPartRejected",
        "WorkItemSubmitted",
        "WorkItemFinalized",
        "WorkOrderApproved",
        "WorkOrderApplied",
        "WorkOrderCompleted",
    ):
        assert name in got, (name, got)
    rejected = next(e for e in heard if e.name == "WorkItemPartRejected")
    assert rejected.item_id == lease.item_id and rejected.payload["part_key"] == "a"
    assert got.index("WorkOrderApproved") < got.index("WorkOrderApplied")


def test_a_raising_listener_never_breaks_the_operation(
    wm: WorkManager, heard: list[events.Event], caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: events.Event) -> None:
        raise RuntimeError("listener bug")

    events.listen(events.ORDER_PROPOSED, broken)
    order_id = wm.propose("test.simple", {"n": 1})
    assert wm.queries.order_state(order_id) == "queued"
    assert "WorkOrderProposed" in names(heard)  # the others still heard it
    assert "listener bug" in caplog.text


def test_listeners_hear_only_what_committed(wm: WorkManager, heard: list[events.Event]) -> None:
    order_id = wm.propose("test.simple", {"n": 1})
    heard.clear()
    with pytest.raises(ValidationFailed):
        wm.agent.submit(wm.agent.checkout("agent-1", order_id=order_id), {})  # type: ignore[arg-type]
    assert names(heard) == ["WorkItemLeased"]  # the refused submit rolled back: nothing


def test_unknown_event_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown event"):
        events.listen("WorkOrderExploded", print)


def test_rejection_lease_expiry_and_failure_are_announced(
    wm: WorkManager, heard: list[events.Event]
) -> None:
    """The events the whole flow does not reach: an order rejected, a lease the sweep
    reclaims after its expiry, an item failed by its agent."""
    rejected = wm.propose("test.simple", {"n": 1})
    lease = wm.agent.checkout("agent-1", order_id=rejected)
    assert lease is not None
    wm.agent.submit(lease, {"answer": 1})
    errors = [{"code": "redo", "message": "again"}]
    wm.orders.reject(rejected, errors, Actor("user", "ops"), allow_rework=True)
    (event,) = [e for e in heard if e.name == events.ORDER_REJECTED]
    assert event.order_id == rejected and event.item_id is None

    lapsed = wm.propose("test.simple", {"n": 2})
    lease = wm.agent.checkout("agent-1", order_id=lapsed)
    assert lease is not None
    saved = wm.ctx.clock
    wm.ctx.clock = lambda: saved() + timedelta(seconds=wm.settings.lease_ttl_seconds + 1)
    try:
        assert wm.sweeper.sweep().reclaimed == 1
    finally:
        wm.ctx.clock = saved
    (event,) = [e for e in heard if e.name == events.ITEM_LEASE_EXPIRED]
    assert event.order_id == lapsed and event.item_id == lease.item_id

    failed = wm.propose("test.simple", {"n": 3})
    lease = wm.agent.checkout("agent-1", order_id=failed)
    assert lease is not None
    wm.agent.fail(lease, {"code": "boom", "message": "it broke"}, retryable=False)
    (event,) = [e for e in heard if e.name == events.ITEM_FAILED]
    assert event.order_id == failed and event.item_id == lease.item_id


def test_listeners_run_with_no_connection_lent(wm: WorkManager) -> None:
    """A listener ran while its operation's pooled connection was still lent (SQLite's
    session, PostgreSQL's raw pool on submit): one that called back into the services,
    or was slow, starved the pool, and 40 concurrent submits waited 30 s and failed.
    Every event is heard with both pools whole."""
    lent: dict[str, tuple[int, int]] = {}
    pool = wm.db.engine.pool
    before = pool.checkedout()  # type: ignore[attr-defined]  # (the test's own, if any)

    def count(event: events.Event) -> None:
        raw = wm.db.raw._pool.lent if wm.db.raw._pool is not None else 0
        lent[event.name] = (pool.checkedout() - before, raw)  # type: ignore[attr-defined]
        wm.queries.order_state(event.order_id)  # calling back in works meanwhile

    events.listen(events.ANY, count)
    try:
        order_id = wm.propose("test.parts", {})
        lease = wm.agent.checkout("agent-1", order_id=order_id)
        assert lease is not None
        wm.agent.heartbeat(lease, progress=0.5)
        wm.agent.submit_part(lease, "a", {"v": 1})
        wm.agent.submit_part(lease, "b", {"x": 1})
        wm.agent.finalize(lease)
        wm.approve(order_id)
        wm.executor.apply(order_id)
    finally:
        events.clear()
    assert "WorkItemSubmitted" in lent and "WorkOrderCompleted" in lent, lent
    assert {name: n for name, n in lent.items() if n != (0, 0)} == {}
