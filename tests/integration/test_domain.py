"""The domain services on a real database, over SQLite and PostgreSQL (SPEC §3-§5, §12)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.support.types import Broken, Empty, Flaky, Hooked, Multi, Parts, Picky, Simple, Slow
from workmanager import IllegalStateTransition, Lease, Registry, ValidationFailed, WorkManager
from workmanager.db.models import Event, IdempotencyKey, Item, Order, Part, Provenance
from workmanager.errors import (
    ApplyFailed,
    DedupeKeyReused,
    MissingParts,
    NotFound,
    NotReadyForApproval,
    PayloadTooLarge,
    UnknownOrderType,
)
from workmanager.metrics.simple import MemoryDriver
from workmanager.services.transitions import move_item, move_order
from workmanager.types import Actor

REVIEWER = Actor("user", "reviewer")


# --- helpers ----------------------------------------------------------------------------


def count(wm: WorkManager, model: Any, *where: Any) -> int:
    with wm.db.transaction() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def rows_everywhere(wm: WorkManager) -> dict[str, int]:
    models = {"orders": Order, "items": Item, "parts": Part, "events": Event}
    return {name: count(wm, model) for name, model in {**models, "prov": Provenance}.items()}


def event_names(wm: WorkManager, order_id: uuid.UUID) -> list[str]:
    return [e["event"] for e in wm.queries.events(order_id)]


def new_events(wm: WorkManager, order_id: uuid.UUID, action: Callable[[], Any]) -> list[str]:
    """The names of the events ``action`` wrote to the order's log."""
    before = len(event_names(wm, order_id))
    action()
    return event_names(wm, order_id)[before:]


def items_of(wm: WorkManager, order_id: uuid.UUID) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = wm.queries.order(order_id)["items"]
    return items


def order_state(wm: WorkManager, order_id: uuid.UUID) -> str:
    return str(wm.queries.order(order_id)["state"])


def counter(wm: WorkManager, name: str) -> float:
    driver = wm.metrics.driver
    assert isinstance(driver, MemoryDriver)
    return driver.total(name)


def lease_one(wm: WorkManager, order_id: uuid.UUID, agent: str = "agent-1") -> Lease:
    lease = wm.agent.checkout(agent, order_id=order_id)
    assert lease is not None
    return lease


def submitted_order(wm: WorkManager, type: str = "test.simple", payload: Any = None) -> uuid.UUID:
    """An order of one item, leased and submitted: the order is ``submitted``."""
    order_id = wm.propose(type, payload or {"n": 1})
    lease = lease_one(wm, order_id)
    result = {"answer": 42, "ok": True}
    assert wm.agent.submit(lease, result).order_submitted
    return order_id


def completed_flow(wm: WorkManager, type: str = "test.simple") -> uuid.UUID:
    order_id = submitted_order(wm, type)
    wm.approve(order_id)
    wm.executor.apply(order_id)
    return order_id


@pytest.fixture
def wm(make_wm: Callable[..., WorkManager], database: str) -> WorkManager:
    registry = Registry([Simple(), Multi(), Parts(), Picky(), Hooked(), Empty(), Broken()])
    return make_wm(db=database, backend="database", registry=registry)


# --- propose ----------------------------------------------------------------------------


def test_propose_creates_and_plans(wm: WorkManager) -> None:
    proposal = wm.orders.propose(
        "test.multi", {"count": 3}, priority=5, meta={"k": "v"}, requested_by=REVIEWER
    )
    assert proposal.created
    order = proposal.order
    assert order["state"] == "queued" and order["priority"] == 5 and order["meta"] == {"k": "v"}
    assert (order["requested_by_type"], order["requested_by_id"]) == ("user", "reviewer")
    order_id = uuid.UUID(order["id"])
    items = items_of(wm, order_id)
    assert [i["input"] for i in items] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert {i["state"] for i in items} == {"queued"}
    assert {i["max_attempts"] for i in items} == {wm.settings.default_max_attempts}
    events = wm.queries.events(order_id)
    assert [e["event"] for e in events] == ["proposed", "planned"]
    assert events[1]["payload"] == {"item_count": 3}
    assert wm.dispatcher.available == [("test.multi", [uuid.UUID(i["id"]) for i in items])]  # type: ignore[attr-defined]
    assert counter(wm, "orders_created_total") == 1


def test_dedupe_key_returns_the_same_order(wm: WorkManager) -> None:
    first = wm.orders.propose("test.simple", {"n": 1}, dedupe_key="job-1")
    again = wm.orders.propose("test.simple", {"n": 1}, dedupe_key="job-1")
    assert first.created and not again.created
    assert again.order["id"] == first.order["id"]
    assert again.order["payload"] == {"n": 1}
    with pytest.raises(DedupeKeyReused):  # another payload: test_dedupe_keys.py
        wm.orders.propose("test.simple", {"n": 2}, dedupe_key="job-1")
    assert count(wm, Order) == 1 and count(wm, Item) == 1
    other = wm.orders.propose("test.simple", {"n": 1}, dedupe_key="job-2")
    assert other.created and count(wm, Order) == 2


def test_concurrent_proposes_with_one_dedupe_key_make_one_order(wm: WorkManager) -> None:
    threads = 8
    barrier = threading.Barrier(threads)
    results: list[Any] = []
    lock = threading.Lock()

    def propose(n: int) -> None:
        barrier.wait()
        try:
            outcome: Any = wm.orders.propose("test.simple", {"n": 1}, dedupe_key="same")
        except Exception as exc:  # collected and asserted below
            outcome = exc
        with lock:
            results.append(outcome)

    workers = [threading.Thread(target=propose, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(30)
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors
    assert len(results) == threads
    assert len({r.order["id"] for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert count(wm, Order) == 1 and count(wm, Item) == 1
    assert count(wm, Event) == 2  # one proposed, one planned


def test_plan_honours_parts_required_and_item_specs(wm: WorkManager) -> None:
    order_id = wm.propose("test.parts", {})
    (item,) = items_of(wm, order_id)
    assert item["parts_required"] == ["a", "b"]
    assert item["input"] == {}
    lease = lease_one(wm, order_id)
    assert lease.item is not None and lease.item.parts_required == ("a", "b")


def test_payload_schema_failure_writes_nothing(wm: WorkManager) -> None:
    before = rows_everywhere(wm)
    with pytest.raises(ValidationFailed) as info:
        wm.propose("test.simple", {"n": -1, "name": 7})
    paths = {(d["path"], d["validator"]) for d in info.value.details}
    assert paths == {("payload.n", "minimum"), ("payload.name", "type")}
    assert rows_everywhere(wm) == before == {k: 0 for k in before}
    assert wm.dispatcher.available == []  # type: ignore[attr-defined]
    assert counter(wm, "orders_created_total") == 0


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"payload": [1]}, "payload"),
        ({"payload": {}, "meta": "x"}, "meta"),
        ({"payload": {}, "priority": "high"}, "priority"),
        ({"payload": {}, "priority": True}, "priority"),
        ({"payload": {}, "dedupe_key": ""}, "dedupe_key"),
        ({"payload": {}, "dedupe_key": "k" * 192}, "dedupe_key"),
    ],
)
def test_propose_shape_errors_write_nothing(
    wm: WorkManager, kwargs: dict[str, Any], path: str
) -> None:
    with pytest.raises(ValidationFailed) as info:
        wm.orders.propose("test.simple", **kwargs)
    assert [d["path"] for d in info.value.details] == [path]
    assert count(wm, Order) == 0 and count(wm, Event) == 0


def test_unknown_type_writes_nothing(wm: WorkManager) -> None:
    with pytest.raises(UnknownOrderType):
        wm.propose("no.such.type", {})
    assert count(wm, Order) == 0


# --- submit -----------------------------------------------------------------------------


def _leased_state(wm: WorkManager, order_id: uuid.UUID) -> tuple[Any, ...]:
    (item,) = items_of(wm, order_id)
    return (
        item["state"],
        item["leased_by_agent_id"],
        item["lease_expires_at"],
        item["result"],
        order_state(wm, order_id),
        len(event_names(wm, order_id)),
        count(wm, Provenance),
    )


@pytest.mark.parametrize(
    ("result", "validator"),
    [
        ({"no_answer": 1}, "required"),  # result_schema
        ({"answer": "forbidden"}, "custom"),  # validate_submission, after the schema passed
    ],
)
def test_failed_submit_changes_nothing(wm: WorkManager, result: Any, validator: str) -> None:
    order_id = wm.propose("test.simple", {"n": 1})
    lease = lease_one(wm, order_id)
    before = _leased_state(wm, order_id)
    assert before[0] == "leased" and before[1] == "agent-1"
    with pytest.raises(ValidationFailed) as info:
        wm.agent.submit(lease, result)
    assert [d["validator"] for d in info.value.details] == [validator]
    assert _leased_state(wm, order_id) == before
    # The lease is still good: a valid result goes through with the same lease.
    assert wm.agent.submit(lease, {"answer": 1}).order_submitted


def test_validate_submission_runs_without_a_result_schema(
    make_wm: Callable[..., WorkManager], database: str
) -> None:
    hooked = Hooked()
    wm = make_wm(db=database, backend="database", registry=Registry([hooked]))
    order_id = wm.propose("test.hooked", {})
    lease = lease_one(wm, order_id)
    with pytest.raises(ValidationFailed):
        wm.agent.submit(lease, {"ok": False})
    assert hooked.validated == [{"ok": False}]
    assert items_of(wm, order_id)[0]["state"] == "leased"
    wm.agent.submit(lease, {"ok": True})
    assert hooked.validated == [{"ok": False}, {"ok": True}]
    assert items_of(wm, order_id)[0]["state"] == "submitted"


def test_submit_clears_the_lease(wm: WorkManager) -> None:
    order_id = wm.propose("test.simple", {"n": 1})
    lease = lease_one(wm, order_id)
    wm.agent.heartbeat(lease, progress=0.5)
    outcome = wm.agent.submit(lease, {"answer": 42})
    assert outcome.order_submitted and outcome.order_state == "submitted"
    (item,) = items_of(wm, order_id)
    assert item["state"] == "submitted" and item["result"] == {"answer": 42}
    assert item["leased_by_agent_id"] is None and item["lease_expires_at"] is None
    assert wm.dispatcher.submitted == [order_id]  # type: ignore[attr-defined]
    # A submitted item is done: the same lease can neither submit again nor heartbeat.
    events = len(event_names(wm, order_id))
    with pytest.raises(IllegalStateTransition):
        wm.agent.submit(lease, {"answer": 43})
    with pytest.raises(IllegalStateTransition):
        wm.agent.heartbeat(lease)
    assert items_of(wm, order_id)[0]["result"] == {"answer": 42}
    assert len(event_names(wm, order_id)) == events


def test_submit_of_one_item_of_two_keeps_the_order_in_progress(wm: WorkManager) -> None:
    order_id = wm.propose("test.multi", {"count": 2})
    first = lease_one(wm, order_id)
    outcome = wm.agent.submit(first, {"x": 1})
    assert not outcome.order_submitted and outcome.order_state == "in_progress"
    second = lease_one(wm, order_id, "agent-2")
    assert wm.agent.submit(second, {"x": 2}).order_submitted
    assert order_state(wm, order_id) == "submitted"


# --- parts ------------------------------------------------------------------------------


def test_part_count_limit(make_wm: Callable[..., WorkManager], database: str) -> None:
    wm = make_wm(
        db=database, backend="database", registry=Registry([Parts()]), max_parts_per_item=2
    )
    order_id = wm.propose("test.parts", {})
    lease = lease_one(wm, order_id)
    wm.agent.submit_part(lease, "a", {"v": 1})
    wm.agent.submit_part(lease, "b", {"x": 1})
    events = len(event_names(wm, order_id))
    with pytest.raises(PayloadTooLarge) as info:
        wm.agent.submit_part(lease, "c", {"x": 1})
    assert info.value.http_status == 413 and info.value.details["limit"] == 2
    with pytest.raises(PayloadTooLarge):
        wm.agent.submit_part(lease, "a", {"v": 2}, seq=1)  # a new slot counts too
    assert count(wm, Part) == 2
    assert len(event_names(wm, order_id)) == events
    # Replacing a slot that already exists is not a new part.
    wm.agent.submit_part(lease, "a", {"v": 3})
    assert count(wm, Part) == 2
    parts = wm.queries.parts(lease.item_id)["parts"]
    assert {p["part_key"]: p["payload"] for p in parts} == {"a": {"v": 3}, "b": {"x": 1}}


def test_part_size_limit(make_wm: Callable[..., WorkManager], database: str) -> None:
    wm = make_wm(
        db=database, backend="database", registry=Registry([Parts()]), max_part_payload_bytes=64
    )
    order_id = wm.propose("test.parts", {})
    lease = lease_one(wm, order_id)
    events = len(event_names(wm, order_id))
    with pytest.raises(PayloadTooLarge) as info:
        wm.agent.submit_part(lease, "b", {"text": "x" * 100})
    assert info.value.details["limit"] == 64 and info.value.details["size"] > 64
    assert count(wm, Part) == 0
    assert len(event_names(wm, order_id)) == events
    wm.agent.submit_part(lease, "b", {"text": "x" * 10})
    assert count(wm, Part) == 1


def test_part_validation_failure_stores_only_the_rejected_part(wm: WorkManager) -> None:
    order_id = wm.propose("test.parts", {})
    lease = lease_one(wm, order_id)
    with pytest.raises(ValidationFailed) as info:
        wm.agent.submit_part(lease, "a", {"v": "not an int"})
    assert [(d["path"], d["validator"]) for d in info.value.details] == [("payload[a].v", "type")]
    assert count(wm, Part) == 1  # stored ``rejected`` (SPEC §13), see the test below
    # A malformed key or seq names no slot: nothing is stored.
    with pytest.raises(ValidationFailed):
        wm.agent.submit_part(lease, "", {"v": 1})
    with pytest.raises(ValidationFailed):
        wm.agent.submit_part(lease, "a", {"v": 1}, seq=-1)
    assert count(wm, Part) == 1


def test_finalize_strict_refuses_missing_parts(wm: WorkManager) -> None:
    order_id = wm.propose("test.parts", {})
    lease = lease_one(wm, order_id)
    with pytest.raises(MissingParts) as info:
        wm.agent.finalize(lease)
    assert info.value.details["missing"] == ["a", "b"]
    wm.agent.submit_part(lease, "a", {"v": 1})
    events = len(event_names(wm, order_id))
    with pytest.raises(MissingParts) as info:
        wm.agent.finalize(lease, mode="strict")
    assert info.value.details["missing"] == ["b"] and info.value.http_status == 422
    (item,) = items_of(wm, order_id)
    assert item["state"] == "leased" and item["leased_by_agent_id"] == "agent-1"
    assert item["assembled_result"] is None
    assert len(event_names(wm, order_id)) == events
    wm.agent.submit_part(lease, "b", {"x": 2})
    outcome = wm.agent.finalize(lease)
    assert outcome.order_submitted
    assert outcome.item["assembled_result"] == {"a": {"v": 1}, "b": {"x": 2}}
    assert outcome.item["leased_by_agent_id"] is None
    assert outcome.item["lease_expires_at"] is None


def test_finalize_best_effort(wm: WorkManager) -> None:
    order_id = wm.propose("test.parts", {})
    lease = lease_one(wm, order_id)
    wm.agent.submit_part(lease, "a", {"v": 1})
    outcome = wm.agent.finalize(lease, mode="best_effort")
    assert outcome.item["state"] == "submitted"
    assert outcome.item["assembled_result"] == {"a": {"v": 1}}
    assert outcome.item["result"] == {"a": {"v": 1}}


def test_finalize_best_effort_with_no_parts_assembles_nothing(wm: WorkManager) -> None:
    # As upstream: best effort needs no part at all (strict still names the missing ones).
    lease = lease_one(wm, wm.propose("test.parts", {}))
    with pytest.raises(MissingParts):
        wm.agent.finalize(lease)
    outcome = wm.agent.finalize(lease, mode="best_effort")
    assert outcome.item["state"] == "submitted" and outcome.item["assembled_result"] == {}


def test_an_invalid_part_is_stored_rejected_with_its_errors(wm: WorkManager) -> None:
    order_id = wm.propose("test.parts", {})
    lease = lease_one(wm, order_id)

    def refused() -> None:
        with pytest.raises(ValidationFailed):
            wm.agent.submit_part(lease, "a", {"v": "x"})

    written = new_events(wm, order_id, refused)
    assert written == ["part_rejected"]
    listed = wm.queries.parts(lease.item_id, status="rejected")
    (part,) = listed["parts"]
    assert part["part_key"] == "a" and part["status"] == "rejected"
    assert part["errors"]["validation"][0]["path"].startswith("payload[a]")
    assert listed["parts_state"]["a"]["status"] == "rejected"
    assert listed["missing_parts"] == ["a", "b"]
    # The same slot, now valid, replaces it; finalize uses only validated parts.
    outcome = wm.agent.submit_part(lease, "a", {"v": 1})
    assert outcome.parts_state["a"]["status"] == "validated" and outcome.missing == ["b"]
    assert wm.queries.parts(lease.item_id, status="rejected")["parts"] == []


def test_finalize_takes_the_latest_validated_part_per_key(wm: WorkManager) -> None:
    order_id = wm.propose("test.parts", {})
    lease = lease_one(wm, order_id)
    wm.agent.submit_part(lease, "a", {"v": 0})  # no seq: the lowest slot
    wm.agent.submit_part(lease, "a", {"v": 2}, seq=2)
    wm.agent.submit_part(lease, "a", {"v": 1}, seq=1)  # later, but a lower seq
    wm.agent.submit_part(lease, "b", {"x": "old"}, seq=0)
    wm.agent.submit_part(lease, "b", {"x": "new"}, seq=0)  # same slot: replaces
    listed = wm.queries.parts(lease.item_id)
    state = listed["parts_state"]  # upstream's map: the latest part submitted per key
    assert state["a"]["seq"] == 1 and state["a"]["status"] == "validated"
    assert set(state["a"]) == {"status", "seq", "checksum", "submitted_at"}
    assert listed["required_parts"] == ["a", "b"] and listed["missing_parts"] == []
    outcome = wm.agent.finalize(lease)
    assert outcome.item["assembled_result"] == {"a": {"v": 2}, "b": {"x": "new"}}
    assert count(wm, Part) == 4


def test_finalize_runs_validate_assembled(wm: WorkManager) -> None:
    order_id = wm.propose("test.parts", {})
    lease = lease_one(wm, order_id)
    wm.agent.submit_part(lease, "a", {"v": 1})
    wm.agent.submit_part(lease, "b", {"bad": True})
    with pytest.raises(ValidationFailed):
        wm.agent.finalize(lease)
    (item,) = items_of(wm, order_id)
    assert item["state"] == "leased" and item["assembled_result"] is None


# --- reject and retry -------------------------------------------------------------------

REASONS = [{"code": "wrong", "message": "the answer is wrong", "field": "answer"}]


def test_reject_with_rework_from_submitted(wm: WorkManager) -> None:
    order_id = wm.propose("test.parts", {})
    lease = lease_one(wm, order_id)
    wm.agent.submit_part(lease, "a", {"v": 1})
    wm.agent.submit_part(lease, "b", {"x": 1})
    wm.agent.finalize(lease)
    assert order_state(wm, order_id) == "submitted"
    written = new_events(
        wm, order_id, lambda: wm.orders.reject(order_id, REASONS, REVIEWER, allow_rework=True)
    )
    assert written == ["rejected", "rejected", "rework", "rework"]
    assert order_state(wm, order_id) == "queued"
    (item,) = items_of(wm, order_id)
    assert item["state"] == "queued" and item["attempts"] == 0
    assert item["result"] is None and item["assembled_result"] is None
    assert item["parts_state"] is None
    assert {p["status"] for p in wm.queries.parts(lease.item_id)["parts"]} == {"rejected"}
    # Rejected parts do not count: the agent must send them again.
    again = lease_one(wm, order_id, "agent-2")
    assert again.fence > lease.fence
    with pytest.raises(MissingParts):
        wm.agent.finalize(again)
    wm.agent.submit_part(again, "a", {"v": 5})
    wm.agent.submit_part(again, "b", {"x": 5})
    assert wm.agent.finalize(again).item["assembled_result"] == {"a": {"v": 5}, "b": {"x": 5}}
    assert order_state(wm, order_id) == "submitted"
    assert counter(wm, "orders_rejected_total") == 1


def test_reject_without_rework(wm: WorkManager) -> None:
    order_id = submitted_order(wm)
    written = new_events(wm, order_id, lambda: wm.orders.reject(order_id, REASONS, REVIEWER))
    assert written == ["rejected", "rejected"]
    order = wm.queries.order(order_id)
    assert order["state"] == "rejected"
    assert order["last_error"] == {"code": "rejected", "errors": REASONS}
    assert [i["state"] for i in order["items"]] == ["rejected"]
    assert order["items"][0]["result"] == {"answer": 42, "ok": True}


def test_reject_needs_reasons_and_a_submitted_order(wm: WorkManager) -> None:
    order_id = wm.propose("test.simple", {"n": 1})
    events = event_names(wm, order_id)
    with pytest.raises(ValidationFailed):
        wm.orders.reject(order_id, [], REVIEWER)
    with pytest.raises(ValidationFailed):
        wm.orders.reject(order_id, [{"code": "x"}], REVIEWER)
    with pytest.raises(IllegalStateTransition):
        wm.orders.reject(order_id, REASONS, REVIEWER, allow_rework=True)
    assert order_state(wm, order_id) == "queued"
    assert event_names(wm, order_id) == events


def test_retry_of_a_failed_order(wm: WorkManager) -> None:
    order_id = wm.propose("test.simple", {"n": 1})
    lease = lease_one(wm, order_id)
    wm.agent.fail(lease, {"code": "boom", "message": "gave up"}, retryable=False)
    order = wm.queries.order(order_id)
    assert order["state"] == "failed" and order["items"][0]["state"] == "failed"
    assert order["items"][0]["error"] == {"code": "boom", "message": "gave up"}
    written = new_events(wm, order_id, lambda: wm.orders.retry(order_id, REVIEWER))
    assert written == ["retried", "retried"]
    order = wm.queries.order(order_id)
    assert order["state"] == "queued" and order["last_error"] is None
    (item,) = order["items"]
    assert item["state"] == "queued" and item["error"] is None and item["attempts"] == 0
    # ... and it can be worked again to completion.
    lease = lease_one(wm, order_id)
    wm.agent.submit(lease, {"answer": 1})
    wm.approve(order_id)
    assert wm.executor.apply(order_id).order["state"] == "completed"


def test_retry_refuses_orders_that_did_not_fail(wm: WorkManager) -> None:
    order_id = submitted_order(wm)
    with pytest.raises(IllegalStateTransition):
        wm.orders.retry(order_id, REVIEWER)
    assert order_state(wm, order_id) == "submitted"


# --- one event per transition -----------------------------------------------------------


def test_every_transition_writes_exactly_one_event(wm: WorkManager) -> None:
    order_id: uuid.UUID | None = None

    def propose() -> None:
        nonlocal order_id
        order_id = wm.propose("test.simple", {"n": 1})

    propose()
    assert order_id is not None
    assert event_names(wm, order_id) == ["proposed", "planned"]
    holder: list[Lease] = []
    steps: list[tuple[Callable[[], Any], list[str]]] = [
        (lambda: holder.append(lease_one(wm, order_id)), ["leased", "in_progress"]),
        (lambda: wm.agent.heartbeat(holder[0]), ["in_progress"]),
        (lambda: wm.agent.heartbeat(holder[0]), []),  # not a transition
        (lambda: wm.agent.submit(holder[0], {"answer": 1}), ["submitted", "submitted"]),
        (lambda: wm.approve(order_id), ["approved"]),
        (
            lambda: wm.executor.apply(order_id),
            ["applied", "accepted", "completed", "completed"],
        ),
        (lambda: wm.executor.apply(order_id), []),  # a finished apply is a no-op
    ]
    for action, expected in steps:
        assert new_events(wm, order_id, action) == expected
    events = wm.queries.events(order_id)
    order_level = [e["event"] for e in events if e["item_id"] is None]
    item_level = [e["event"] for e in events if e["item_id"] is not None]
    assert order_level == [
        "proposed",
        "planned",
        "in_progress",
        "submitted",
        "approved",
        "applied",
        "completed",
    ]
    assert item_level == ["leased", "in_progress", "submitted", "accepted", "completed"]
    applied = next(e for e in events if e["event"] == "applied")
    assert applied["diff"]["changes"] == {"answers": {"type": "added", "value": [{"answer": 1}]}}


def test_illegal_transition_changes_nothing(wm: WorkManager) -> None:
    order_id = completed_flow(wm)
    events = event_names(wm, order_id)
    with pytest.raises(IllegalStateTransition):
        wm.approve(order_id)
    with pytest.raises(IllegalStateTransition):
        wm.orders.reject(order_id, REASONS, REVIEWER)
    # Straight through the transition functions, on a live session: state and log kept.
    with pytest.raises(IllegalStateTransition), wm.db.transaction() as s:
        order = s.get(Order, order_id)
        assert order is not None
        move_order(s, order, "queued", REVIEWER)
    with pytest.raises(IllegalStateTransition), wm.db.transaction() as s:
        item = s.scalars(select(Item).where(Item.order_id == order_id)).one()
        move_item(s, item, "leased", REVIEWER)
    order_now = wm.queries.order(order_id)
    assert order_now["state"] == "completed"
    assert [i["state"] for i in order_now["items"]] == ["completed"]
    assert event_names(wm, order_id) == events


def test_approve_before_submission_is_not_ready(wm: WorkManager) -> None:
    order_id = wm.propose("test.simple", {"n": 1})
    with pytest.raises(NotReadyForApproval):
        wm.approve(order_id)
    lease_one(wm, order_id)
    with pytest.raises(NotReadyForApproval):
        wm.approve(order_id)
    assert "approved" not in event_names(wm, order_id)


# --- apply ------------------------------------------------------------------------------


def test_apply_twice_concurrently_records_once(
    make_wm: Callable[..., WorkManager], database: str
) -> None:
    slow = Slow(delay=0.3)
    registry = Registry([slow])
    wm = make_wm(db=database, backend="database", registry=registry)
    other = make_wm(db=database, backend="database", registry=registry)  # a second worker
    order_id = submitted_order(wm, "test.slow")
    wm.approve(order_id)
    barrier = threading.Barrier(2)
    outcomes: list[Any] = []
    lock = threading.Lock()

    def run(manager: WorkManager) -> None:
        barrier.wait()
        try:
            outcome: Any = manager.executor.apply(order_id)
        except Exception as exc:  # collected and asserted below
            outcome = exc
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=run, args=(m,)) for m in (wm, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    assert sorted(o.recorded for o in outcomes) == [False, True]
    names = event_names(wm, order_id)
    assert names.count("applied") == 1
    assert names.count("completed") == 2  # one for the item, one for the order
    assert count(wm, Event, Event.event == "completed", Event.item_id.is_(None)) == 1
    assert slow.after_calls == 1
    assert slow.apply_calls == 1  # the apply claim: the other run backed off or found it done
    order = wm.queries.order(order_id)
    assert order["state"] == "completed"
    assert order["diff"]["changes"] == {"count": {"type": "modified", "from": 0, "to": 1}}
    for o in outcomes:
        assert o.order["state"] == "completed" or (o.retry_after or 0) > 0, o
    # A third run, after the fact, is a no-op that returns the stored diff.
    late = other.executor.apply(order_id)
    assert not late.recorded and late.diff == order["diff"] and late.retry_after is None
    assert slow.apply_calls == 1 and slow.after_calls == 1


def test_apply_failure_is_recorded_then_fails_the_order(
    make_wm: Callable[..., WorkManager], database: str
) -> None:
    flaky = Flaky(failures=3)
    wm = make_wm(db=database, backend="database", registry=Registry([flaky]), apply_max_retries=2)
    order_id = submitted_order(wm, "test.flaky")
    wm.approve(order_id)
    for attempt in (1, 2):
        with pytest.raises(ApplyFailed) as info:
            wm.executor.apply(order_id)
        assert info.value.details == {
            "exception": "RuntimeError",
            "attempt": attempt,
            "failures": attempt,
            "final": False,
        }
        order = wm.queries.order(order_id)
        assert order["state"] == "approved"
        assert order["last_error"]["code"] == "apply_failed"
        assert order["last_error"]["attempt"] == attempt
    with pytest.raises(ApplyFailed) as info:
        wm.executor.apply(order_id)
    assert info.value.details["final"] is True
    events = wm.queries.events(order_id)
    names = [e["event"] for e in events]
    assert names.count("apply_retrying") == 2 and names.count("apply_failed") == 1
    failed = next(e for e in events if e["event"] == "apply_failed")
    assert failed["payload"]["exception"] == "RuntimeError"
    assert "downstream down (call 3)" in failed["payload"]["message"]
    order = wm.queries.order(order_id)
    assert order["state"] == "failed" and order["diff"] is None
    assert counter(wm, "orders_apply_failed_total") == 1
    assert wm.executor.retry_delay(1) == 10 and wm.executor.retry_delay(3) == 40
    # up to a second short of APPLY_RECOVERY_SECONDS (300): maintenance would send it sooner
    assert wm.executor.retry_delay(6) == 299 and wm.executor.retry_delay(60) == 299
    with pytest.raises(IllegalStateTransition):
        wm.executor.apply(order_id)
    assert flaky.calls == 3
    # Retry puts the fully submitted order back to `submitted`; the next apply succeeds.
    retried = wm.orders.retry(order_id, REVIEWER)
    assert retried["state"] == "submitted" and retried["last_error"] is None
    wm.approve(order_id)
    outcome = wm.executor.apply(order_id)
    assert outcome.recorded and outcome.order["state"] == "completed"
    assert event_names(wm, order_id).count("applied") == 1


def test_apply_requires_an_approved_order(wm: WorkManager) -> None:
    order_id = submitted_order(wm)
    with pytest.raises(IllegalStateTransition):
        wm.executor.apply(order_id)
    assert order_state(wm, order_id) == "submitted"


# --- approval ---------------------------------------------------------------------------


def test_auto_approval_refused_by_can_approve_stays_submitted(wm: WorkManager) -> None:
    order_id = submitted_order(wm, "test.picky", {"ok": False})
    assert wm.orders.check_auto_approval(order_id) is False
    assert order_state(wm, order_id) == "submitted"
    assert "approved" not in event_names(wm, order_id)
    assert wm.dispatcher.approved == []  # type: ignore[attr-defined]
    assert counter(wm, "auto_approval_refused_total") == 1
    # A person can't approve it either while can_approve is false.
    with pytest.raises(NotReadyForApproval):
        wm.approve(order_id)


def test_check_auto_approval_approves_as_system(wm: WorkManager) -> None:
    order_id = submitted_order(wm, "test.picky", {"ok": True})
    assert wm.orders.check_auto_approval(order_id) is True
    events = wm.queries.events(order_id)
    approved = [e for e in events if e["event"] == "approved"]
    assert len(approved) == 1
    assert (approved[0]["actor_type"], approved[0]["actor_id"]) == ("system", "system")
    assert order_state(wm, order_id) == "approved"
    assert wm.dispatcher.approved == [order_id]  # type: ignore[attr-defined]
    assert wm.orders.check_auto_approval(order_id) is False  # no longer submitted
    assert len([e for e in wm.queries.events(order_id) if e["event"] == "approved"]) == 1


def test_check_auto_approval_leaves_manual_types_alone(wm: WorkManager) -> None:
    order_id = submitted_order(wm)
    assert wm.orders.check_auto_approval(order_id) is False
    assert order_state(wm, order_id) == "submitted"


def test_manual_approval_records_the_reviewer(wm: WorkManager) -> None:
    order_id = submitted_order(wm)
    order = wm.orders.approve(order_id, REVIEWER)
    assert order["state"] == "approved"
    approved = [e for e in wm.queries.events(order_id) if e["event"] == "approved"]
    assert [(e["actor_type"], e["actor_id"]) for e in approved] == [("user", "reviewer")]
    assert counter(wm, "orders_approved_total") == 1


def test_no_idempotency_rows_from_domain_calls(wm: WorkManager) -> None:
    completed_flow(wm)
    assert count(wm, IdempotencyKey) == 0


def test_a_plan_with_no_items_is_refused_and_writes_nothing(wm: WorkManager) -> None:
    with pytest.raises(ValidationFailed) as info:
        wm.propose("test.empty", {"nothing": True})
    assert info.value.details[0]["validator"] == "plan"
    assert count(wm, Order) == 0 and count(wm, Event) == 0
    assert len(items_of(wm, wm.propose("test.empty", {}))) == 1


def test_a_raising_can_approve_refuses_approval(wm: WorkManager) -> None:
    order_id = submitted_order(wm, "test.broken")
    assert wm.orders.check_auto_approval(order_id) is False  # logged and counted, not raised
    assert counter(wm, "auto_approval_refused_total") == 1
    assert order_state(wm, order_id) == "submitted"
    with pytest.raises(NotReadyForApproval) as info:
        wm.approve(order_id)
    assert info.value.details["exception"] == "KeyError"
    assert "approved" not in event_names(wm, order_id)


def test_apply_of_an_unregistered_type_is_a_recorded_failure(
    make_wm: Callable[..., WorkManager], database: str
) -> None:
    registry = Registry([Simple()])
    wm = make_wm(db=database, backend="database", registry=registry, apply_max_retries=0)
    order_id = submitted_order(wm)
    wm.approve(order_id)
    worker = make_wm(
        db=database, backend="database", registry=Registry(), apply_max_retries=0
    )  # no types
    with pytest.raises(ApplyFailed) as info:
        worker.executor.apply(order_id)
    assert info.value.details["exception"] == "UnknownOrderType"
    assert order_state(wm, order_id) == "failed"
    assert event_names(wm, order_id)[-1] == "apply_failed"


def test_reads_of_unknown_ids_are_not_found(wm: WorkManager) -> None:
    missing = uuid.uuid4()
    for read in (wm.queries.order, wm.queries.events, wm.queries.item, wm.queries.item_logs):
        with pytest.raises(NotFound):
            read(missing)
    for write in (wm.approve, wm.executor.apply):
        with pytest.raises(NotFound):
            write(missing)
    with pytest.raises(NotFound):
        wm.orders.reject(missing, REASONS, REVIEWER)
    with pytest.raises(NotFound):
        wm.orders.retry(missing, REVIEWER)


def test_concurrent_approvals_approve_once(
    make_wm: Callable[..., WorkManager], database: str
) -> None:
    registry = Registry([Simple()])
    wm = make_wm(db=database, backend="database", registry=registry)
    other = make_wm(db=database, backend="database", registry=registry)
    order_id = submitted_order(wm)
    barrier = threading.Barrier(2)
    outcomes: list[Any] = []

    def approve(manager: WorkManager) -> None:
        barrier.wait()
        try:
            outcomes.append(manager.approve(order_id))
        except Exception as exc:  # collected and asserted below
            outcomes.append(exc)

    threads = [threading.Thread(target=approve, args=(m,)) for m in (wm, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert len(outcomes) == 2 and len(errors) == 1
    assert isinstance(errors[0], IllegalStateTransition)
    assert event_names(wm, order_id).count("approved") == 1
    dispatched = wm.dispatcher.approved + other.dispatcher.approved  # type: ignore[attr-defined]
    assert dispatched == [order_id]


def test_rework_and_retry_announce_the_requeued_items(wm: WorkManager) -> None:
    order_id = submitted_order(wm)
    (item,) = items_of(wm, order_id)
    wm.dispatcher.available.clear()  # type: ignore[attr-defined]
    wm.orders.reject(order_id, REASONS, REVIEWER, allow_rework=True)
    assert wm.dispatcher.available == [("test.simple", [uuid.UUID(item["id"])])]  # type: ignore[attr-defined]
    lease = lease_one(wm, order_id)
    wm.agent.fail(lease, {"code": "x", "message": "y"}, retryable=False)
    wm.dispatcher.available.clear()  # type: ignore[attr-defined]
    wm.orders.retry(order_id, REVIEWER)
    assert wm.dispatcher.available == [("test.simple", [uuid.UUID(item["id"])])]  # type: ignore[attr-defined]


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_falsy_evidence_is_kept_in_the_submitted_event(make_wm: Any, db: str) -> None:
    """Evidence of ``false``, ``0`` or ``{}`` was left out of the ``submitted`` event (a
    truth test, in both stores), as if none had been sent."""
    wm = make_wm(db=db, registry=Registry([Simple()]))
    kept = []
    for evidence in (False, 0, {}):
        order_id = wm.propose("test.simple", {})
        lease = wm.agent.checkout("a", order_id=order_id)
        assert lease is not None
        wm.agent.submit(lease, {"answer": 1}, evidence=evidence)
        events = wm.queries.events(order_id)
        kept += [e["payload"] for e in events if e["event"] == "submitted" and e["item_id"]]
    assert [p.get("evidence", "absent") for p in kept] == [False, 0, {}], kept


def test_an_unstorable_result_is_refused_at_the_path_the_schema_would_name(make_wm) -> None:
    """A NUL in a result (or evidence, or a part's payload) was refused at ``$.result.s``,
    a proposal's at ``$.payload.s``, where a schema's refusal says ``result.s``: two forms
    of path from one route."""
    wm = make_wm(registry=Registry([Simple(), Parts()]))
    lease = wm.agent.checkout("a", order_id=wm.propose("test.simple", {}))
    assert lease is not None
    for call, path in (
        (lambda: wm.agent.submit(lease, {"answer": 1, "s": "a\x00b"}), "result.s"),
        (lambda: wm.agent.submit(lease, {"answer": 1}, evidence={"e": "\x00"}), "evidence.e"),
        (lambda: wm.propose("test.simple", {"s": "\x00"}), "payload.s"),
    ):
        with pytest.raises(ValidationFailed) as raised:
            call()
        assert [d["path"] for d in raised.value.details] == [path], raised.value.details
    parts = wm.agent.checkout("a", order_id=wm.propose("test.parts", {}))
    assert parts is not None
    with pytest.raises(ValidationFailed) as raised:
        wm.agent.submit_part(parts, "a", {"v": 1, "s": "\x00"})
    assert [d["path"] for d in raised.value.details] == ["payload.s"]
