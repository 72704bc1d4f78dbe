"""A repeated dedupe key (SPEC §13, "Dedupe keys"): the same proposal finds its order, another
type or payload is 422 ``dedupe_key_reused`` and changes nothing, on SQLite (the ORM path)
and on PostgreSQL (the SQL path)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.support.types import Multi, Simple
from workmanager import Registry, WorkManager
from workmanager.db.models import Event, Item, Order
from workmanager.errors import DedupeKeyReused, UnknownOrderType, ValidationFailed
from workmanager.types import JSON

PATHS = [
    pytest.param(("sqlite", "database"), id="sqlite"),
    pytest.param(("postgres", "database"), id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=PATHS)
def wm(request: pytest.FixtureRequest, make_wm: Callable[..., WorkManager]) -> WorkManager:
    db, backend = request.param
    return make_wm(db=db, backend=backend, registry=Registry([Simple(), Multi()]))


def rows(wm: WorkManager) -> tuple[int, int, int]:
    with wm.db.transaction() as s:
        return tuple(  # type: ignore[return-value]
            int(s.scalar(select(func.count()).select_from(m)) or 0) for m in (Order, Item, Event)
        )


def test_the_same_proposal_finds_its_order(wm: WorkManager) -> None:
    first = wm.orders.propose("test.simple", {"n": 1, "s": "é"}, dedupe_key="job-1")
    again = wm.orders.propose(
        "test.simple", {"s": "é", "n": 1}, dedupe_key="job-1", priority=3, meta={"x": 1}
    )
    assert first.created and not again.created
    assert again.order["id"] == first.order["id"] and again.order["state"] == "queued"
    assert rows(wm) == (1, 1, 2)


@pytest.mark.parametrize(
    ("type", "payload"),
    [
        ("test.simple", {"n": 2, "x": 1}),  # another payload
        ("test.simple", {"n": 1, "x": True}),  # equal in Python (True == 1), not in JSON
        ("test.simple", {"n": 1, "x": 1, "extra": None}),
        ("test.multi", {"n": 1, "x": 1}),  # another type
    ],
)
def test_another_proposal_under_a_known_key_is_refused(
    wm: WorkManager, type: str, payload: Any
) -> None:
    first = wm.orders.propose("test.simple", {"n": 1, "x": 1}, dedupe_key="job-1")
    before = rows(wm)
    with pytest.raises(DedupeKeyReused) as info:
        wm.orders.propose(type, payload, dedupe_key="job-1")
    assert info.value.code == "dedupe_key_reused" and info.value.http_status == 422
    assert info.value.details == {"dedupe_key": "job-1"}
    assert first.order["id"] not in info.value.message  # nothing about the order leaks
    assert rows(wm) == before
    with pytest.raises(DedupeKeyReused):  # the library's propose raises too
        wm.propose(type, payload, dedupe_key="job-1")
    order = wm.queries.order(uuid.UUID(first.order["id"]))
    assert order["payload"] == {"n": 1, "x": 1} and order["type"] == "test.simple"


def test_a_known_order_id_with_another_payload_is_refused(wm: WorkManager) -> None:
    """The id ``enqueue_order`` picks (or a create task's redelivery) follows the same rule."""
    order_id = uuid.uuid4()
    wm.orders.propose("test.simple", {"n": 1}, order_id=order_id)
    assert not wm.orders.propose("test.simple", {"n": 1}, order_id=order_id).created
    with pytest.raises(DedupeKeyReused):
        wm.orders.propose("test.simple", {"n": 2}, order_id=order_id)
    assert rows(wm) == (1, 1, 2)


def test_a_dead_lettered_refusal_still_gives_its_key_to_the_corrected_proposal(
    make_wm: Any, database: str
) -> None:
    """A refused proposal's record (failed) gave its id and dedupe key to the corrected
    proposal, as the refusal's hint says; once maintenance dead-lettered it (48 h by
    default) the corrected proposal was dedupe_key_reused, the key blocked for good."""
    from datetime import timedelta

    from workmanager.errors import ValidationFailed
    from workmanager.services.proposals import order_id_for

    wm = make_wm(db=database, registry=Registry([Simple()]), dead_letter_after_hours=1)
    key = "dl-key"
    refused = ValidationFailed.at("payload.n", "must be an integer", "type")
    wm.orders.refuse(refused, "test.simple", {"n": "x"}, order_id=order_id_for(key))
    with wm.db.transaction() as s:  # refused two hours ago: past the dead-letter age
        order = s.get(Order, order_id_for(key))
        assert order is not None and order.state == "failed"
        order.last_transitioned_at = order.last_transitioned_at - timedelta(hours=2)
    assert wm.maintenance.run().dead_lettered_orders == 1
    assert wm.queries.order_state(order_id_for(key)) == "dead_lettered"
    assert wm.orders.repeated("test.simple", {"n": 1}, key) is None  # the CLI's check
    corrected = wm.propose("test.simple", {"n": 1}, dedupe_key=key)
    assert corrected == order_id_for(key)
    order = wm.queries.order(corrected)
    assert (order["state"], order["payload"], order["last_error"]) == ("queued", {"n": 1}, None)


def test_a_corrected_proposal_sent_at_once_finds_one_order(wm: WorkManager) -> None:
    """Found by a pass racing the control plane: the same corrected proposal sent by many
    callers at once over a refused proposal's record was told ``dedupe_key_reused`` (it
    was compared with the record another caller had dropped meanwhile) or got the raw
    unique violation (a 500: the row that took the key was gone before it was read).
    Each gets the one order, made by one of them."""
    import threading

    from workmanager.errors import ValidationFailed
    from workmanager.services.proposals import order_id_for

    for round_ in range(6):
        key = f"race-{round_}"
        refused = ValidationFailed.at("payload.n", "must be an integer", "type")
        wm.orders.refuse(refused, "test.simple", {"n": "x"}, order_id=order_id_for(key))
        start = threading.Barrier(8)
        with ThreadPoolExecutor(8) as pool:
            answers = [pool.submit(_proposed, wm, key, start) for _ in range(8)]
        answers = [answer.result() for answer in answers]
        assert answers == [order_id_for(key)] * 8
        order = wm.queries.order(order_id_for(key))
        assert (order["state"], order["payload"], len(order["items"])) == ("queued", {"n": 1}, 1)


def _proposed(wm: WorkManager, key: str, start: Any) -> object:
    start.wait()
    try:
        return wm.propose("test.simple", {"n": 1}, dedupe_key=key)
    except Exception as exc:  # every answer is looked at
        return exc


def test_a_refusal_under_a_taken_key_is_noted_once_in_its_own_tenants_order(
    make_wm: Any, database: str
) -> None:
    """The worker's note of a proposal refused for a taken key (dedupe_key_reused): in
    the order the producer's id names, once per message, never in another tenant's order
    (a key used there shows nothing of it) and never for an order that does not exist."""
    from workmanager import Actor
    from workmanager.services.proposals import order_id_for
    from workmanager.services.refusals import note_reused_key

    wm = make_wm(db=database, registry=Registry([Simple()]))
    mine = wm.propose("test.simple", {"n": 1}, dedupe_key="k", tenant_id="A")
    theirs = wm.propose("test.simple", {"n": 1}, dedupe_key="t", tenant_id="B")
    refused = DedupeKeyReused("dedupe key 'k' already names an order")

    def note(order_id: uuid.UUID, key: str, tenant: str, task: str) -> bool:
        proposal = {"type": "test.simple", "payload": {"n": 2}, "tenant_id": tenant,
                    "requested_by": Actor.system(), "task_id": task}  # fmt: skip
        return note_reused_key(wm.ctx, wm.orders.store, order_id, key, refused, proposal)

    assert note(mine, "k", "A", "task-1") is True
    assert note(mine, "k", "A", "task-1") is False  # the same message redelivered
    assert note(theirs, "t", "A", "task-2") is False  # another tenant's order
    assert note(order_id_for("nobody"), "nobody", "A", "task-3") is False  # no such order
    with wm.db.transaction() as s:
        notes = (
            s.execute(select(Event.order_id).where(Event.event == "proposal_refused"))
            .scalars()
            .all()
        )
    assert notes == [mine]


def test_a_refusal_recorded_in_a_tenant_names_no_registered_type(
    make_wm: Any, database: str
) -> None:
    """A Celery create of an unknown type with a tenant was recorded with the registry's
    message, which lists every registered type: the tenant's tokens read them there (a
    checkout or proposal of theirs is told none). Without a tenant it keeps the list."""
    import uuid

    from workmanager.errors import UnknownOrderType

    wm = make_wm(db=database, registry=Registry([Simple()]))
    for tenant in ("t1", None):
        try:
            wm.registry.get("nope.type")
        except UnknownOrderType as exc:
            refused = exc
        order_id = uuid.uuid4()
        wm.orders.refuse(refused, "nope.type", {}, order_id=order_id, tenant_id=tenant)
        said = wm.queries.order(order_id)["last_error"]["message"]
        assert ("test.simple" in said) is (tenant is None), said


def test_a_refused_proposals_record_is_given_up_to_its_own_tenant_only(
    make_wm: Any, database: str
) -> None:
    """A tenant audit: a proposal refused in tenant A left its record under the id its
    producer got; tenant B's proposal under the same dedupe key deleted it and took the
    id (A's token then read 404, and A's corrected proposal was refused). B is refused
    (dedupe_key_reused) and A's record stays, for A's corrected proposal to replace."""
    from workmanager.errors import ValidationFailed
    from workmanager.services.proposals import order_id_for

    wm = make_wm(db=database, registry=Registry([Simple()]))
    key = "invoice-123"
    refused = ValidationFailed.at("payload.n", "must be at least 0", "minimum")
    wm.orders.refuse(refused, "test.simple", {"n": -1}, order_id=order_id_for(key), tenant_id="A")
    with pytest.raises(DedupeKeyReused):
        wm.propose("test.simple", {"n": 1}, dedupe_key=key, tenant_id="B")
    with pytest.raises(DedupeKeyReused):  # what `orders create` asks first: the same answer
        wm.orders.repeated("test.simple", {"n": 1}, key, "B")
    kept = wm.queries.order(order_id_for(key))
    assert (kept["state"], kept["tenant_id"], kept["payload"]) == ("failed", "A", {"n": -1})
    corrected = wm.propose("test.simple", {"n": 1}, dedupe_key=key, tenant_id="A")
    assert corrected == order_id_for(key)
    order = wm.queries.order(corrected)
    assert (order["state"], order["tenant_id"]) == ("queued", "A")
    # a record filed under no tenant (its tenant could not be one) is any tenant's to take
    wm.orders.refuse(refused, "test.simple", {"n": -1}, order_id=order_id_for("k2"))
    assert wm.orders.repeated("test.simple", {"n": 1}, "k2", "A") is None
    assert wm.propose("test.simple", {"n": 1}, dedupe_key="k2", tenant_id="A") == order_id_for("k2")


def test_a_refusal_goes_into_its_payloads_tenant_as_its_order_would(
    make_wm: Any, database: str
) -> None:
    """An order proposed with no tenant takes its payload's ``tenant_id``; its refused
    record was filed under no tenant, so that tenant's tokens could not read why."""
    from workmanager.errors import ValidationFailed

    wm = make_wm(db=database, registry=Registry([Simple()]))
    order_id = uuid.uuid4()
    refused = ValidationFailed.at("payload.n", "must be at least 0", "minimum")
    wm.orders.refuse(refused, "test.simple", {"n": -1, "tenant_id": "A"}, order_id=order_id)
    assert wm.queries.order(order_id)["tenant_id"] == "A"


def test_a_refusal_delivered_twice_is_recorded_and_counted_once(make_wm, database) -> None:
    """A metrics pass: a refused create message delivered again (a worker died after the
    refusal committed) found the failed order already there, yet counted
    ``orders_refused_total`` a second time."""
    from workmanager.errors import ValidationFailed

    wm = make_wm(db=database, registry=Registry([Simple()]))
    refused = ValidationFailed.at("payload.n", "must be an integer", "type")
    order_id = uuid.uuid4()
    for _ in range(2):
        wm.orders.refuse(refused, "test.simple", {"n": "x"}, order_id=order_id)
    assert wm.queries.order_state(order_id) == "failed"
    counted = wm.metrics.driver.total("work_manager.orders_refused_total")
    assert counted == 1, counted


class Stricter(Simple):
    """``test.simple`` after its schema changed: a payload now needs ``m``."""

    def schema(self) -> JSON:
        return {"type": "object", "required": ["m"]}


@pytest.mark.parametrize("now", ["stricter", "removed"])
@pytest.mark.parametrize(
    "db", [pytest.param(p.values[0][0], id=p.id, marks=p.marks) for p in PATHS]
)
def test_a_proposal_made_before_its_type_changed_finds_its_order(
    make_wm: Callable[..., WorkManager], now: str, db: str
) -> None:
    """An order-type evolution pass: a producer retrying a proposal across a deploy that
    changed (or removed) its type was told 422 ``validation_failed`` (or
    ``unknown_order_type``) while its order, made before, was queued: the type's checks ran
    before the key was looked up. SPEC §4.3: a known key returns the existing order."""
    before = make_wm(db=db, backend="database", registry=Registry([Simple()]))
    first = before.orders.propose("test.simple", {"n": 9}, dedupe_key="job-9")
    after = make_wm(
        db=db, backend="database", registry=Registry([Stricter()] if now == "stricter" else [])
    )
    again = after.orders.propose("test.simple", {"n": 9}, dedupe_key="job-9")
    assert (again.created, again.order["id"]) == (False, first.order["id"])
    by_id = after.orders.propose("test.simple", {"n": 9}, order_id=first.order["id"])
    assert by_id.order["id"] == first.order["id"]
    refused = ValidationFailed if now == "stricter" else UnknownOrderType
    with pytest.raises(refused):  # another payload under the key: the type's refusal
        after.orders.propose("test.simple", {"n": 8}, dedupe_key="job-9")
    with pytest.raises(refused):  # a new key: the type's checks, as before
        after.orders.propose("test.simple", {"n": 9}, dedupe_key="job-10")
    # a proposal at fault whatever its type: its own refusal, never a look at the key
    # (a review: a lone surrogate under the known key was a UnicodeEncodeError, a 500)
    for payload, meta in (({"n": 9, "s": "\ud800"}, None), ({"n": 9}, ["not", "an", "object"])):
        with pytest.raises(refused):
            after.orders.propose("test.simple", payload, meta=meta, dedupe_key="job-9")
    assert rows(after)[0] == 1
