"""Size mistakes get an answer, not a hang or an out-of-memory, on both databases:
how many items a plan may make, how big an order is as stored, how big a part is, how
long a refusal's list of problems gets. Each refusal changes nothing."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.support.types import Parts
from workmanager import ItemSpec, OrderType, Registry, WorkManager
from workmanager.db.models import Order, Part
from workmanager.diff import Diff
from workmanager.errors import MAX_DETAILS, PayloadTooLarge, ValidationFailed
from workmanager.types import ApplyContext, OrderView


class Planned(OrderType):
    """Plans what its payload's ``how`` says: ``count`` items (with an input of their
    own, or copies of the payload), an endless generator, ``None``, or a generator that
    raises after two items."""

    type = "test.planned"

    def plan(self, order: OrderView) -> Any:
        how = order.payload["how"]
        if how == "count":
            own = order.payload.get("own", True)
            return [ItemSpec(input={"i": i} if own else None) for i in range(order.payload["n"])]
        if how == "endless":
            return (ItemSpec(input={"i": i}) for i in itertools.count())
        if how == "none":
            return None
        return self._breaks()

    def _breaks(self) -> Iterator[ItemSpec]:
        yield ItemSpec(input={"i": 0})
        yield ItemSpec(input={"i": 1})
        raise RuntimeError("planner broke")

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        return Diff.empty()


@pytest.fixture
def limited(make_wm: Callable[..., WorkManager], database: str) -> WorkManager:
    return make_wm(
        db=database,
        backend="database",
        registry=Registry([Planned(), Parts()]),
        max_items_per_order=5,
        max_order_bytes=2_000,
        max_part_payload_bytes=200,
    )


def rows(wm: WorkManager, model: Any) -> int:
    with wm.db.transaction() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def orders(wm: WorkManager) -> int:
    return rows(wm, Order)


def test_a_plan_of_more_items_than_the_limit_is_413(limited: WorkManager) -> None:
    assert limited.propose("test.planned", {"how": "count", "n": 5})  # at the limit
    with pytest.raises(PayloadTooLarge) as raised:
        limited.propose("test.planned", {"how": "count", "n": 6})
    assert raised.value.http_status == 413
    assert raised.value.details == {"limit": 5, "setting": "WORK_MANAGER_MAX_ITEMS_PER_ORDER"}
    assert orders(limited) == 1


def test_an_endless_plan_is_read_up_to_the_limit_and_refused(limited: WorkManager) -> None:
    """Was: the generator read into memory until the process died."""
    with pytest.raises(PayloadTooLarge):
        limited.propose("test.planned", {"how": "endless"})
    assert orders(limited) == 0


@pytest.mark.parametrize("how", ["none", "breaks"])
def test_a_plan_that_is_no_list_or_breaks_while_read_is_a_hook_error(
    limited: WorkManager, how: str
) -> None:
    """Was a TypeError (a 500 over HTTP): only the call to plan() was guarded, not the
    reading of what it returned."""
    with pytest.raises(ValidationFailed) as raised:
        limited.propose("test.planned", {"how": how})
    [problem] = raised.value.details
    assert problem["path"] == "plan" and problem["validator"] == "hook_error"
    assert orders(limited) == 0


def test_an_order_bigger_than_the_limit_as_stored_is_413(limited: WorkManager) -> None:
    """Items planned without an input store a copy of the payload: 600 bytes of payload
    in 4 such items is 3,000 bytes stored, over the 2,000 allowed, though the payload
    alone is well under."""
    payload = {"how": "count", "n": 4, "own": False, "pad": "x" * 560}
    with pytest.raises(PayloadTooLarge) as raised:
        limited.propose("test.planned", payload)
    assert raised.value.details["setting"] == "WORK_MANAGER_MAX_ORDER_BYTES"
    assert orders(limited) == 0
    assert limited.propose("test.planned", {**payload, "n": 2})  # 3 x ~600 bytes


def test_an_orders_meta_counts_towards_its_size(limited: WorkManager) -> None:
    """Was: only the payload and the items' inputs were measured, so a Celery message's
    260 MB meta reached PostgreSQL, which refused it (retried as an outage for ever)."""
    small = {"how": "count", "n": 1}
    with pytest.raises(PayloadTooLarge) as raised:
        limited.propose("test.planned", small, meta={"pad": "m" * 2_000})
    assert raised.value.details["setting"] == "WORK_MANAGER_MAX_ORDER_BYTES"
    assert orders(limited) == 0
    assert limited.propose("test.planned", small, meta={"pad": "m" * 100})


def test_a_parts_notes_and_evidence_count_towards_its_size(limited: WorkManager) -> None:
    """Was: only the payload was measured, so notes of any size were stored."""
    order_id = limited.propose("test.parts", {})
    lease = limited.agent.checkout("a", order_id=order_id)
    assert lease is not None
    for extra in ({"notes": "n" * 300}, {"evidence": {"e": "e" * 300}}):
        with pytest.raises(PayloadTooLarge):
            limited.agent.submit_part(lease, "b", {"x": 1}, **extra)
    assert rows(limited, Part) == 0
    limited.agent.submit_part(lease, "b", {"x": 1}, notes="short")


def test_a_refusal_lists_at_most_max_details_problems(limited: WorkManager) -> None:
    """A payload with 10,000 unstorable values: the first problems in document order,
    then one entry saying more were found (was every one, ten times the request)."""
    payload = {"how": "count", "n": 1, "bad": ["\x00"] * 10_000}
    with pytest.raises(ValidationFailed) as raised:
        limited.propose("test.planned", payload)
    details = raised.value.details
    assert len(details) == MAX_DETAILS + 1
    assert [d["path"] for d in details[:3]] == [
        "payload.bad[0]",
        "payload.bad[1]",
        "payload.bad[2]",
    ]
    assert details[-1]["validator"] == "truncated"


def test_keys_that_are_not_strings_are_refused_where_they_are(limited: WorkManager) -> None:
    """Was: a tuple key passed the check and failed in the driver (SQLAlchemy's error
    and its SQL)."""
    with pytest.raises(ValidationFailed) as raised:
        limited.propose("test.planned", {"how": "count", "n": 1, "k": {(1, 2): 3}})
    [problem] = raised.value.details
    assert problem["path"] == "payload.k" and "keys must be strings" in problem["message"]
    # Nor numbers: json would write 1 beside "1" as one key twice (the client refuses too).
    with pytest.raises(ValidationFailed):
        limited.propose("test.planned", {"how": "count", "n": 1, "k": {1: "a", "1": "b"}})


def test_a_refused_proposal_too_large_is_recorded_without_its_payload(
    limited: WorkManager,
) -> None:
    """The worker records a proposal it refuses under the producer's id; a Celery message
    has no body limit, so an oversized payload refused was stored anyway. The record keeps
    the error and leaves the payload out."""
    import uuid

    order_id = uuid.uuid4()
    payload = {"how": "count", "n": 1, "pad": "x" * 3_000}
    with pytest.raises(PayloadTooLarge) as raised:
        limited.propose("test.planned", payload)
    limited.orders.refuse(raised.value, "test.planned", payload, order_id=order_id)
    order = limited.queries.order(order_id)
    assert order["state"] == "failed" and order["payload"] == {}
    assert order["last_error"]["code"] == "payload_too_large"


def test_a_priority_no_database_column_holds_is_refused_alike(limited: WorkManager) -> None:
    """Found by an adversarial pass: 10**12 was stored on SQLite and refused by
    PostgreSQL's integer column; the Python API (and generate) refuse it as HTTP does."""
    with pytest.raises(ValidationFailed) as raised:
        limited.propose("test.planned", {"how": "count", "n": 1}, priority=10**12)
    assert raised.value.details[0]["path"] == "priority"
    assert orders(limited) == 0


def test_a_payloads_tenant_is_checked_as_a_named_one(limited: WorkManager) -> None:
    """The reviewer's find: the payload's tenant_id (the legacy fallback) took " acme "
    (another tenant than "acme") and "" (a tenant named nothing); a number is kept as its
    digits, as before."""
    for bad in (" acme ", "", "x" * 300):
        with pytest.raises(ValidationFailed) as raised:
            limited.propose("test.planned", {"how": "count", "n": 1, "tenant_id": bad})
        assert raised.value.details[0]["path"] == "payload.tenant_id"
    order_id = limited.propose("test.planned", {"how": "count", "n": 1, "tenant_id": 42})
    assert limited.queries.order(order_id)["tenant_id"] == "42"
