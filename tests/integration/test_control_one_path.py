"""One path per database for the control plane (issue 12): on PostgreSQL the order store of
``db/postgres/control.py`` and ``order_admin.py`` (``PostgresOrderStore``) is the only
implementation of propose's insert, a refused proposal's record, approval, an event alone,
reject, rework, unblock, retry (of an order, of an item), apply (claim, record, failure),
dead-lettering and pruning; the ORM store (``db/orm_orders.py``, ``OrmOrderStore``) serves
SQLite. No call reaches the ORM store on PostgreSQL — not while a listener is registered,
not while an idempotency key is pending, not when a statement's guard matched nothing and
the outcome must be named — and every scenario here ends the same on both databases."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from tests.support.types import Broken, Flaky, Multi, Picky, Simple
from workmanager import ApplyContext, Diff, OrderType, OrderView, Registry, WorkManager, events
from workmanager.db import orm_orders
from workmanager.db.models import Event, IdempotencyKey, Item, Order, Provenance
from workmanager.db.orm_orders import OrmOrderStore
from workmanager.db.postgres.control import PostgresOrderStore
from workmanager.errors import (
    ApplyFailed,
    DedupeKeyReused,
    IdempotencyInFlight,
    IllegalStateTransition,
    NotFound,
    ValidationFailed,
    WorkManagerError,
)
from workmanager.services.admin import ItemAdmin, OrderAdmin
from workmanager.services.housekeeping import Housekeeping
from workmanager.services.idempotency import IN_FLIGHT_LOCK
from workmanager.services.tokens import Principal
from workmanager.states import OPEN_ORDER_STATES
from workmanager.surface.callers import AgentMetadata, Caller, build_caller
from workmanager.surface.operations import Answer, Operations
from workmanager.types import Actor, AgentInfo

WM = Callable[..., WorkManager]


class Thief(OrderType):
    """Its apply succeeds, but meanwhile another run takes the order's claim (its own
    lapsed): the record step must find the claim gone and record nothing."""

    type = "test.thief"

    def __init__(self) -> None:
        self.wm: WorkManager | None = None

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        assert self.wm is not None
        with self.wm.db.transaction() as s:
            s.execute(update(Order).where(Order.id == order.id).values(apply_claim="another-run"))
        return Diff({}, {"stolen": True}, "stolen")


def registry() -> Registry:
    return Registry([Simple(auto=True), Multi(), Picky(), Broken(), Thief(), Flaky(failures=2)])


def build(
    make_wm: WM, database: str, monkeypatch: pytest.MonkeyPatch, **settings: Any
) -> WorkManager:
    """A WorkManager on ``database``; on PostgreSQL the ORM store of these operations fails
    the test if any of its methods (or its read of a refused insert's holder) is ever
    reached, by any instance."""
    wm = make_wm(db=database, backend="database", registry=registry(), **settings)
    thief = wm.registry.get("test.thief")
    assert isinstance(thief, Thief)
    thief.wm = wm
    if database == "sqlite":
        assert isinstance(wm.orders.store, OrmOrderStore)
        assert isinstance(wm.executor.store, OrmOrderStore)
        return wm
    assert isinstance(wm.orders.store, PostgresOrderStore)
    assert isinstance(wm.executor.store, PostgresOrderStore)

    def orm(name: str) -> Callable[..., Any]:
        def reached(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError(f"the ORM code {name} ran on PostgreSQL")

        return reached

    for method in (
        "create_order",
        "_create_tx",
        "refuse",
        "_refuse_tx",
        "drop_refused",
        "_drop_tx",
        "record_event",
        "approve",
        "_approve_tx",
        "reject",
        "_reject_tx",
        "rework",
        "_rework_tx",
        "unblock",
        "_unblock_tx",
        "retry",
        "_retry_tx",
        "start_apply",
        "_start_tx",
        "record_apply",
        "_record_tx",
        "retry_item",
        "_retry_item_tx",
        "fail_apply",
        "_fail_tx",
        "dead_letter",
        "_dead_letter_tx",
        "prune",
        "_prune_tx",
        "prune_audit",
        "touch_queued",
        "claim_stuck_applies",
        "claim_stuck_auto_approvals",
        "_claim_stale",
    ):
        monkeypatch.setattr(OrmOrderStore, method, orm(f"OrmOrderStore.{method}"))
    # The ORM's insert reads the holder of a known id or key after the refusal; the
    # PostgreSQL store reads it on its own connection.
    monkeypatch.setattr(orm_orders, "find_order", orm("orm_orders.find_order"))
    return wm


def submitted(wm: WorkManager, type: str, payload: dict[str, Any]) -> uuid.UUID:
    """An order of ``type`` with every item submitted."""
    order_id = wm.propose(type, payload)
    while (lease := wm.agent.checkout("agent-1", order_id=order_id)) is not None:
        wm.agent.submit(lease, {"answer": 1})
    assert wm.queries.order_state(order_id) == "submitted"
    return order_id


def event_names(wm: WorkManager, order_id: uuid.UUID) -> list[str]:
    return [e["event"] for e in wm.queries.events(order_id)]


# --- listeners hear the same events from both databases ---------------------------------


@pytest.fixture
def heard() -> Iterator[list[events.Event]]:
    seen: list[events.Event] = []
    events.listen(events.ANY, seen.append)
    yield seen
    events.clear()


def listened_flow(wm: WorkManager, heard: list[events.Event]) -> list[tuple[Any, ...]]:
    """Propose, auto-approve (plain and with a ``can_approve``), approve by hand, apply,
    plus calls that change nothing; what the listeners heard, ids and clocks aside."""
    heard.clear()
    plain = submitted(wm, "test.simple", {"n": 1})
    picky = submitted(wm, "test.picky", {"ok": True})
    manual = submitted(wm, "test.multi", {"count": 2})
    refused = submitted(wm, "test.picky", {"ok": False})
    assert wm.orders.check_auto_approval(plain) is True
    assert wm.orders.check_auto_approval(plain) is False  # already approved: nothing heard
    assert wm.orders.check_auto_approval(picky) is True  # the locked path
    assert wm.orders.check_auto_approval(manual) is False
    assert wm.orders.check_auto_approval(refused) is False
    wm.approve(manual)
    for order_id in (plain, picky, manual):
        assert wm.executor.apply(order_id).recorded
    assert not wm.executor.apply(plain).recorded  # a redelivery: nothing heard
    again = wm.orders.propose("test.simple", {"n": 2}, dedupe_key="dk")
    assert again.created
    assert not wm.orders.propose("test.simple", {"n": 2}, dedupe_key="dk").created
    labels = {plain: "plain", picky: "picky", manual: "manual", refused: "refused"}
    labels[uuid.UUID(again.order["id"])] = "keyed"
    items: dict[uuid.UUID, str] = {}
    out = []
    for e in heard:
        assert isinstance(e.created_at, datetime) and e.created_at.tzinfo is not None, e
        assert isinstance(e.order_id, uuid.UUID), e
        if e.item_id is not None:
            assert isinstance(e.item_id, uuid.UUID), e
            items.setdefault(e.item_id, f"item-{len(items)}")
        out.append(
            (
                e.name,
                e.event,
                labels[e.order_id],
                items.get(e.item_id) if e.item_id else None,
                e.actor_type,
                e.actor_id,
                dict(e.payload),
            )
        )
    return out


@pytest.mark.postgres
def test_listeners_hear_the_same_events_from_both_databases(
    make_wm: WM, monkeypatch: pytest.MonkeyPatch, heard: list[events.Event]
) -> None:
    lite = listened_flow(build(make_wm, "sqlite", monkeypatch), heard)
    pg = listened_flow(build(make_wm, "postgres", monkeypatch), heard)
    assert pg == lite
    names = [(e[0], e[2]) for e in pg]
    for label in ("plain", "picky", "manual"):
        mine = [n for n, o in names if o == label]
        assert mine[:2] == ["WorkOrderProposed", "WorkOrderPlanned"], (label, mine)
        assert mine[-3:] == ["WorkOrderApproved", "WorkOrderApplied", "WorkOrderCompleted"]
    assert [n for n, o in names if o == "refused"][-1] == "WorkItemSubmitted"
    assert [n for n, o in names if o == "keyed"] == ["WorkOrderProposed", "WorkOrderPlanned"]


@pytest.mark.postgres
def test_the_hot_statements_announce_only_after_their_commit(
    make_wm: WM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listener that reads the database when it hears an event finds the change
    committed (it runs on another connection)."""
    wm = build(make_wm, "postgres", monkeypatch)
    seen: list[tuple[str, str | None]] = []

    def look(event: events.Event) -> None:
        assert event.order_id is not None
        seen.append((event.name, wm.queries.order_state(event.order_id)))

    events.listen(events.ORDER_PROPOSED, look)
    events.listen(events.ORDER_APPROVED, look)
    events.listen(events.ORDER_COMPLETED, look)
    try:
        order_id = submitted(wm, "test.simple", {"n": 1})
        assert wm.orders.check_auto_approval(order_id)
        wm.executor.apply(order_id)
    finally:
        events.clear()
    assert seen == [
        ("WorkOrderProposed", "queued"),
        ("WorkOrderApproved", "approved"),
        ("WorkOrderCompleted", "completed"),
    ]


# --- a guard that matched nothing: the outcome is named from the row ---------------------


DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("database", DATABASES)
def test_auto_approval_decides_from_the_row(
    make_wm: WM, monkeypatch: pytest.MonkeyPatch, database: str
) -> None:
    wm = build(make_wm, database, monkeypatch)
    assert wm.orders.check_auto_approval(uuid.uuid4()) is False  # no such order
    queued = wm.propose("test.simple", {"n": 1})
    assert wm.orders.check_auto_approval(queued) is False  # not submitted: nothing to do
    assert event_names(wm, queued) == ["proposed", "planned"]
    manual = submitted(wm, "test.multi", {"count": 1})
    assert wm.orders.check_auto_approval(manual) is False
    assert wm.queries.order_state(manual) == "submitted"
    assert "auto_approval_refused" not in event_names(wm, manual)
    for type, payload, exception in (
        ("test.picky", {"ok": False}, None),
        ("test.broken", {}, "KeyError"),
    ):
        order_id = submitted(wm, type, payload)
        assert wm.orders.check_auto_approval(order_id) is False
        assert wm.queries.order_state(order_id) == "submitted"
        (refusal,) = [
            e for e in wm.queries.events(order_id) if e["event"] == "auto_approval_refused"
        ]
        assert refusal["payload"]["code"] == "not_ready_for_approval"
        assert (exception or "can_approve") in refusal["payload"]["message"]
    picky = submitted(wm, "test.picky", {"ok": True})
    assert wm.orders.check_auto_approval(picky) is True
    assert wm.queries.order_state(picky) == "approved"
    assert event_names(wm, picky)[-1] == "approved"
    assert wm.orders.check_auto_approval(picky) is False  # approved already
    assert event_names(wm, picky)[-1] == "approved"


@pytest.mark.parametrize("database", DATABASES)
def test_apply_names_every_outcome_from_the_row(
    make_wm: WM, monkeypatch: pytest.MonkeyPatch, database: str
) -> None:
    wm = build(make_wm, database, monkeypatch)
    with pytest.raises(NotFound) as missing:
        wm.executor.apply(uuid.uuid4())
    assert missing.value.details["order_id"]
    queued = wm.propose("test.simple", {"n": 1})
    with pytest.raises(IllegalStateTransition):
        wm.executor.apply(queued)
    # Claimed by a live run: this one backs off, counting no attempt.
    claimed = submitted(wm, "test.simple", {"n": 2})
    wm.approve(claimed)
    until = wm.ctx.clock() + timedelta(seconds=90)
    with wm.db.transaction() as s:
        s.execute(
            update(Order)
            .where(Order.id == claimed)
            .values(apply_claim="live-run", apply_claim_expires_at=until)
        )
    backed_off = wm.executor.apply(claimed)
    assert not backed_off.recorded and backed_off.diff is None
    assert backed_off.retry_after is not None and 60 < backed_off.retry_after <= 90
    assert backed_off.order["state"] == "approved"
    # Done already: what was recorded, recorded once.
    done = submitted(wm, "test.simple", {"n": 3})
    wm.approve(done)
    first = wm.executor.apply(done)
    again = wm.executor.apply(done)
    assert first.recorded and not again.recorded and again.retry_after is None
    assert again.order["state"] == "completed" and again.diff == first.diff
    assert event_names(wm, done).count("applied") == 1
    # The claim taken while the body ran: nothing recorded, the order left approved.
    stolen = submitted(wm, "test.thief", {})
    wm.approve(stolen)
    outcome = wm.executor.apply(stolen)
    assert not outcome.recorded and outcome.diff is None
    assert outcome.order["state"] == "approved"
    assert "applied" not in event_names(wm, stolen)
    with wm.db.transaction() as s:
        order = s.get(Order, stolen)
        assert order is not None
        assert (order.apply_claim, order.apply_attempts) == ("another-run", 1)


@pytest.mark.parametrize("database", DATABASES)
def test_a_known_id_or_key_finds_its_order_on_the_same_path(
    make_wm: WM, monkeypatch: pytest.MonkeyPatch, database: str
) -> None:
    wm = build(make_wm, database, monkeypatch)
    first = wm.orders.propose("test.simple", {"n": 1}, dedupe_key="k")
    first_id = uuid.UUID(first.order["id"])
    again = wm.orders.propose("test.simple", {"n": 1}, dedupe_key="k")
    by_id = wm.orders.propose("test.simple", {"n": 1}, order_id=first_id)
    assert first.created and not again.created and not by_id.created
    assert again.order == by_id.order == first.order
    with pytest.raises(DedupeKeyReused):
        wm.orders.propose("test.simple", {"n": 2}, dedupe_key="k")
    with pytest.raises(DedupeKeyReused):
        wm.orders.propose("test.multi", {"n": 1}, order_id=first_id)
    assert event_names(wm, first_id) == ["proposed", "planned"]
    # A refused proposal's record gives its id to the corrected proposal.
    refused_id = uuid.uuid4()
    error = ValidationFailed([{"path": "$.n", "message": "too small", "validator": "minimum"}])
    wm.orders.refuse(error, "test.simple", {"n": -1}, order_id=refused_id)
    assert wm.queries.order_state(refused_id) == "failed"
    corrected = wm.orders.propose("test.simple", {"n": 1}, order_id=refused_id)
    assert corrected.created and corrected.order["id"] == str(refused_id)
    assert wm.queries.order_state(refused_id) == "queued"
    assert event_names(wm, refused_id) == ["proposed", "planned"]


# --- the admin changes: the same trail on both databases ---------------------------------


REVIEWER = Actor("user", "reviewer")
REASONS = [{"code": "wrong", "message": "the answer is wrong"}]


def admin_flow(wm: WorkManager, heard: list[events.Event]) -> dict[str, Any]:
    """Approve by hand, reject (with and without rework), requeue (rework and unblock),
    retry (to queued and, after a failed apply, to submitted; an item alone), a failed
    apply (retrying, then final), maintenance's touches, dead-lettering, pruning, and the
    refusals named from the row: every store method of the admin changes. Returns what
    they left, ids and clocks aside."""
    heard.clear()
    agent = AgentInfo("agent-7", name="reviewer-bot")
    admin = OrderAdmin(wm.ctx, wm.orders)
    refusals: list[tuple[str, str, Any]] = []

    def refused(label: str, call: Callable[[], Any]) -> None:
        with pytest.raises(WorkManagerError) as caught:
            call()
        refusals.append((label, caught.value.code, caught.value.message))

    approved = submitted(wm, "test.multi", {"count": 2})
    queued = wm.propose("test.multi", {"count": 1})
    wm.orders.approve(approved, REVIEWER, agent)
    refused("approve twice", lambda: wm.orders.approve(approved, REVIEWER))
    refused("approve queued", lambda: wm.orders.approve(queued, REVIEWER))

    rejected = submitted(wm, "test.multi", {"count": 2})
    wm.orders.reject(rejected, REASONS, REVIEWER, agent=agent)
    refused("reject twice", lambda: wm.orders.reject(rejected, REASONS, REVIEWER))
    refused("retry rejected", lambda: wm.orders.retry(rejected, REVIEWER))
    admin.requeue(rejected, REVIEWER)  # rework

    reworked = submitted(wm, "test.multi", {"count": 2})
    wm.orders.reject(reworked, REASONS, REVIEWER, allow_rework=True)
    later = wm.ctx.clock() + timedelta(hours=1)
    with wm.db.transaction() as s:
        s.execute(update(Item).where(Item.order_id == reworked).values(available_at=later))
    admin.requeue(reworked, REVIEWER)  # queued: the backoff cleared

    failed = wm.propose("test.multi", {"count": 2})
    lease = wm.agent.checkout("agent-1", order_id=failed)
    assert lease is not None
    wm.agent.fail(lease, {"code": "broken", "message": "no"}, retryable=False)
    wm.orders.retry(failed, REVIEWER)  # to queued, the failed item with it

    single = wm.propose("test.multi", {"count": 2})
    lease = wm.agent.checkout("agent-1", order_id=single)
    assert lease is not None
    wm.agent.fail(lease, {"code": "broken", "message": "no"}, retryable=False)
    item_admin, retried = ItemAdmin(wm.ctx), lease.item_id
    item_admin.retry(retried, REVIEWER)  # the item back, its failed order with it
    refused("retry a queued item", lambda: item_admin.retry(retried, REVIEWER))

    flaky = submitted(wm, "test.flaky", {})
    wm.approve(flaky)
    for _ in range(2):  # apply_retrying, then (retries spent) apply_failed
        with pytest.raises(ApplyFailed):
            wm.executor.apply(flaky)
    wm.orders.retry(flaky, REVIEWER)  # every item submitted: back to submitted

    auto = submitted(wm, "test.simple", {"n": 2})  # its auto-approval never asked for
    maintenance = (
        wm.maintenance.announce_queued(queued),
        wm.maintenance.announce_queued(older_than=0),
        wm.maintenance.stuck_applies(),
        wm.maintenance.stuck_auto_approvals(),
    )

    dead = wm.propose("test.simple", {"n": 1})
    lease = wm.agent.checkout("agent-1", order_id=dead)
    assert lease is not None
    wm.agent.fail(lease, {"code": "broken", "message": "no"}, retryable=False)
    report = wm.maintenance.run(check_stale=False, purge_keys=False, recover_applies=False)
    assert (report.dead_lettered_orders, report.dead_lettered_items) == (1, 1)

    labels = {
        approved: "approved",
        queued: "queued",
        rejected: "rejected",
        reworked: "reworked",
        failed: "failed",
        single: "single",
        flaky: "flaky",
        auto: "auto",
        dead: "dead",
    }
    with wm.db.transaction() as s:
        items = {i.id: i for i in s.scalars(select(Item))}
        names: dict[Any, str] = {str(k): v for k, v in labels.items()}
        names |= {str(i.id): f"{labels[i.order_id]}:{i.input}" for i in items.values()}

        def plain(value: Any) -> Any:  # ids named, so both runs compare
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, list):
                return [plain(v) for v in value]
            return names.get(value, value) if isinstance(value, str) else value

        def item(item_id: Any) -> str | None:
            return names[str(item_id)] if item_id else None

        trail = by_run(
            [
                (labels[e.order_id], item(e.item_id), e.event, e.actor_id, plain(e.payload))
                for e in s.scalars(select(Event).order_by(Event.id))
            ]
        )
        orders = sorted(
            (labels[o.id], o.state, plain(o.last_error), o.apply_attempts, o.apply_claim)
            for o in s.scalars(select(Order))
        )
        item_rows = sorted(
            (names[str(i.id)], i.state, i.attempts, plain(i.error), i.available_at is None)
            for i in items.values()
        )
        provenance = [
            (names[str(p.order_id)], p.action, p.agent_id)
            for p in s.scalars(select(Provenance).order_by(Provenance.id))
            if p.action in ("approve", "reject")
        ]
    dry = Housekeeping(wm.ctx).prune(timedelta(0), dry_run=True).to_dict()
    pruned = Housekeeping(wm.ctx).prune(timedelta(0)).to_dict()
    with wm.db.transaction() as s:
        kept = sorted(labels[o] for o in s.scalars(select(Order.id)))
        open_orders = select(Order.id).where(Order.state.in_(sorted(OPEN_ORDER_STATES)))
        left = (  # events of settled orders (all old: pruned), of orders under way (kept)
            s.scalar(select(func.count()).where(Event.order_id.not_in(open_orders))),
            s.scalar(select(func.count()).where(Event.order_id.in_(open_orders))),
        )
    prune = {k: v for k, v in dry.items() if k != "cutoff"}
    prune |= {f"{k}_pruned": v for k, v in pruned.items() if k not in ("cutoff", "dry_run")}
    listened = by_run([(names[str(e.order_id)], item(e.item_id), e.name) for e in heard])
    return {
        "trail": trail,
        "orders": orders,
        "items": item_rows,
        "provenance": provenance,
        "refusals": refusals,
        "heard": listened,
        "prune": (prune, kept, left),
        "maintenance": (*maintenance[:2], *([labels[o] for o in m] for m in maintenance[2:])),
    }


def by_run(trail: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``trail`` with each run of one event of one order over several items sorted by
    item: the store writes them by item id, which differs from run to run."""
    out: list[tuple[Any, ...]] = []
    run: list[tuple[Any, ...]] = []
    for entry in [*trail, None]:
        key = entry and (entry[0], *entry[2:])
        if run and (entry is None or entry[1] is None or key != (run[0][0], *run[0][2:])):
            out += sorted(run, key=str)
            run = []
        if entry is not None and entry[1] is not None:
            run.append(entry)
        elif entry is not None:
            out.append(entry)
    return out


@pytest.mark.postgres
def test_the_admin_changes_leave_the_same_trail_on_both_databases(
    make_wm: WM, monkeypatch: pytest.MonkeyPatch, heard: list[events.Event]
) -> None:
    settings = {"apply_max_retries": 1, "dead_letter_after_hours": 0, "apply_recovery_seconds": 0}
    pg = admin_flow(build(make_wm, "postgres", monkeypatch, **settings), heard)  # truncated
    monkeypatch.undo()  # the ORM store is SQLite's
    lite = admin_flow(build(make_wm, "sqlite", monkeypatch, **settings), heard)
    for key in lite:
        assert pg[key] == lite[key], key
    assert [r[:2] for r in lite["refusals"]] == [
        ("approve twice", "illegal_state_transition"),
        ("approve queued", "not_ready_for_approval"),
        ("reject twice", "illegal_state_transition"),
        ("retry rejected", "illegal_state_transition"),
        ("retry a queued item", "illegal_state_transition"),
    ]
    assert "'rejected' to 'rejected'" in lite["refusals"][2][2]
    assert lite["provenance"] == [
        ("approved", "approve", "agent-7"),
        ("rejected", "reject", "agent-7"),
    ]
    assert ("rejected", None, "rework", "reviewer", None) in lite["trail"]
    states = {o[0]: o[1] for o in lite["orders"]}
    assert states == {
        "approved": "approved",
        "queued": "queued",
        "rejected": "queued",
        "reworked": "queued",
        "failed": "queued",
        "single": "queued",
        "flaky": "submitted",
        "auto": "submitted",
        "dead": "dead_lettered",
    }
    flaky = [e[2] for e in lite["trail"] if e[0] == "flaky"][-4:]
    assert flaky == ["approved", "apply_retrying", "apply_failed", "retried"]
    assert all(available for _, state, _, _, available in lite["items"] if state == "queued")
    dry, kept, left = lite["prune"]
    assert kept == [
        "approved",
        "auto",
        "failed",
        "flaky",
        "queued",
        "rejected",
        "reworked",
        "single",
    ]
    assert (dry["orders"], dry["items"], dry["orders_pruned"], dry["items_pruned"]) == (1, 1, 1, 1)
    # every order kept is still under way here: its history stays, however old
    assert dry["events"] == dry["events_pruned"] == 0
    assert left[0] == 0 and left[1] > 0, left
    assert lite["maintenance"] == (1, 9, ["approved"], ["auto"])  # 9: every queued item
    for heard_one in (
        ("approved", None, events.ORDER_APPROVED),
        ("rejected", None, events.ORDER_REJECTED),
        ("reworked", None, events.ORDER_REJECTED),
        ("flaky", None, events.ORDER_APPROVED),
    ):
        assert heard_one in lite["heard"]


# --- a pending idempotency key is marked by the statement's own transaction --------------


def caller() -> Caller:
    return build_caller(Principal("token-a", None, frozenset({"admin"})), AgentMetadata("a-1"))


class Died(BaseException):
    """The process "dies" after the operation committed, before its response is stored."""


@pytest.mark.parametrize("database", DATABASES)
def test_a_keyed_propose_marks_its_key_in_its_own_transaction(
    make_wm: WM, monkeypatch: pytest.MonkeyPatch, database: str
) -> None:
    wm = build(make_wm, database, monkeypatch)
    ops = Operations(wm)
    body = {"type": "test.simple", "payload": {"n": 1}}

    def propose(c: Caller) -> Answer:
        return ops.propose(c, "test.simple", {"n": 1})

    def die(*_: Any) -> None:
        raise Died()

    with monkeypatch.context() as m:
        m.setattr(wm.idempotency, "complete", die)
        m.setattr(wm.idempotency, "abandon", die)  # a dead process does no more
        with pytest.raises(Died):
            wm.idempotency.once(caller(), "propose", "", "k", body, propose)
    with wm.db.transaction() as s:
        (order_id,) = s.scalars(select(Order.id))
        (row,) = s.scalars(select(IdempotencyKey))
        assert row.status == "committed" and row.locked_until is not None
        assert row.response_body == {"order_id": str(order_id)}
    with pytest.raises(IdempotencyInFlight):  # until its in-flight lock runs out
        wm.idempotency.once(caller(), "propose", "", "k", body, propose)
    later = datetime.now(UTC) + IN_FLIGHT_LOCK + timedelta(seconds=1)
    monkeypatch.setattr(wm.ctx, "clock", lambda: later)
    replay = wm.idempotency.once(caller(), "propose", "", "k", body, propose)
    assert not isinstance(replay, tuple) and replay.body["order_id"] == str(order_id)
    # A known dedupe key under another idempotency key: the insert fails in the
    # transaction that would have marked the key, and the order holding it is found.
    first = ops.propose(caller(), "test.simple", {"n": 2}, dedupe_key="dk")
    assert first[0] == 201

    def propose_known(c: Caller) -> Answer:
        return ops.propose(c, "test.simple", {"n": 2}, dedupe_key="dk")

    found = wm.idempotency.once(caller(), "propose", "", "k2", {"dk": 1}, propose_known)
    assert isinstance(found, tuple) and found[0] == 200
    assert found[1]["order"]["id"] == first[1]["order"]["id"]


@pytest.mark.parametrize("database", DATABASES)
def test_a_keyed_change_the_guard_refuses_leaves_its_key_free(
    make_wm: WM, monkeypatch: pytest.MonkeyPatch, database: str
) -> None:
    """A refused reject (the order is not submitted) writes nothing, so its key is not
    marked: the 409 is not stored, and a retry with the key runs again (both databases;
    PostgreSQL once marked the key in the refused statement's transaction)."""
    wm = build(make_wm, database, monkeypatch)
    ops = Operations(wm)
    created = ops.propose(caller(), "test.simple", {"n": 1})
    order_id = created[1]["order"]["id"]
    errors = [{"code": "bad", "message": "no"}]

    def reject(c: Caller) -> Answer:
        return ops.reject(c, order_id, errors)

    for _ in range(2):
        with pytest.raises(IllegalStateTransition):
            wm.idempotency.once(caller(), "reject", order_id, "rk", {"e": 1}, reject)
        with wm.db.transaction() as s:
            assert list(s.scalars(select(IdempotencyKey))) == []
    assert wm.queries.order_state(uuid.UUID(order_id)) == "queued"


@pytest.mark.parametrize("database", DATABASES)
def test_a_propose_whose_key_was_taken_over_does_not_commit(
    make_wm: WM, monkeypatch: pytest.MonkeyPatch, database: str
) -> None:
    wm = build(make_wm, database, monkeypatch)
    ops = Operations(wm)

    def taken_then_propose(c: Caller) -> Answer:
        with wm.db.engine.begin() as conn:  # another request took the key meanwhile
            conn.execute(update(IdempotencyKey).values(status="done"))
        return ops.propose(c, "test.simple", {"n": 1})

    with pytest.raises(IdempotencyInFlight):
        wm.idempotency.once(caller(), "propose", "", "tk", {}, taken_then_propose)
    with wm.db.transaction() as s:
        assert list(s.scalars(select(Order.id))) == []


def test_event_rows_are_typed_as_the_orm_queues_them() -> None:
    """The ``events`` column's JSON, as the listeners get it: UUIDs and aware datetimes
    (``created_at`` in UTC whatever the session's time zone)."""
    from workmanager.db.postgres.order_rows import event_rows

    order, item = uuid.uuid4(), uuid.uuid4()
    text = (
        f'[{{"id": 1, "order_id": "{order}", "item_id": null, "event": "applied",'
        ' "actor_type": "system", "actor_id": null, "payload": {"a": 1},'
        ' "created_at": "2030-01-01T13:00:00.5+01:00"},'
        f' {{"id": 2, "order_id": "{order}", "item_id": "{item}", "event": "accepted",'
        ' "actor_type": "system", "actor_id": null, "payload": null,'
        ' "created_at": "2030-01-01T12:00:00.5+00:00"}]'
    )
    first, second = event_rows(text)
    when = datetime(2030, 1, 1, 12, 0, 0, 500000, tzinfo=UTC)
    assert first["order_id"] == order and first["item_id"] is None
    assert first["created_at"] == when and first["created_at"].utcoffset() == timedelta(0)
    assert second["item_id"] == item and second["payload"] is None
    assert [e.name for e in events.of_row(first)] == [events.ORDER_APPLIED]


@pytest.mark.parametrize("database", DATABASES)
def test_a_dedupe_key_is_looked_up_through_the_store(
    make_wm: WM, monkeypatch: pytest.MonkeyPatch, database: str
) -> None:
    """``OrderService.repeated`` (``orders create --dedupe-key`` asks it before sending):
    the key's order for the same proposal, ``dedupe_key_reused`` for another, ``None``
    for a key no order holds; through the order store, so PostgreSQL's SQL answers."""
    wm = build(make_wm, database, monkeypatch)
    first = wm.orders.propose("test.simple", {"n": 1}, dedupe_key="dk-1")
    same = wm.orders.repeated("test.simple", {"n": 1}, "dk-1")
    assert same is not None and same["id"] == first.order["id"]
    with pytest.raises(DedupeKeyReused):
        wm.orders.repeated("test.simple", {"n": 2}, "dk-1")
    assert wm.orders.repeated("test.simple", {"n": 1}, "dk-unused") is None
