"""Edges found in review: retry only from failed, unstorable values, an apply whose diff
cannot be stored, refused auto-approvals, and lost item announcements."""

from __future__ import annotations

import math
import uuid
from collections import UserList
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.support.types import Multi, Picky, Simple
from workmanager import Actor, AgentInfo, ApplyContext, Diff, OrderType, OrderView, Registry
from workmanager.db.models import Order, Provenance, utcnow
from workmanager.errors import (
    ApplyFailed,
    IllegalStateTransition,
    NotFound,
    Unavailable,
    ValidationFailed,
)
from workmanager.order_types import ItemSpec
from workmanager.provenance import anonymize_ip
from workmanager.reads.listing import OrderListing
from workmanager.services.admin import ItemAdmin


class BadDiff(OrderType):
    type = "test.bad_diff"

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        return Diff({}, {"at": datetime.now()}, "not JSON")  # a datetime cannot be stored


def events(wm, order_id) -> list[str]:
    return [e["event"] for e in wm.queries.events(order_id) if not e["item_id"]]


def test_retry_refuses_orders_that_are_not_failed(make_wm, database) -> None:
    wm = make_wm(db=database, registry=Registry([Simple()]))
    order_id = wm.propose("test.simple", {"n": 1})
    lease = wm.agent.checkout("agent-1")
    with pytest.raises(IllegalStateTransition):
        wm.orders.retry(order_id, Actor("user", "ops"))  # in progress
    assert wm.queries.order(order_id)["state"] == "in_progress"
    wm.agent.submit(lease, {"answer": 1})
    wm.orders.reject(order_id, [{"code": "bad", "message": "no"}], Actor("user", "ops"))
    with pytest.raises(IllegalStateTransition):
        wm.orders.retry(order_id, Actor("user", "ops"))  # rejected
    assert wm.queries.order(order_id)["state"] == "rejected"


def test_item_retry_refuses_items_that_are_not_failed(make_wm, database) -> None:
    wm = make_wm(db=database, registry=Registry([Simple()]))
    wm.propose("test.simple", {"n": 1})
    lease = wm.agent.checkout("agent-1")
    with pytest.raises(IllegalStateTransition):
        ItemAdmin(wm.ctx).retry(lease.item_id, Actor("user", "ops"))
    assert wm.queries.item(lease.item_id)["state"] == "leased"


def test_item_retry_refuses_while_the_order_has_other_failed_items(make_wm, database) -> None:
    """Retrying one of two failed items would reopen an order that could never be
    submitted (its other item stays failed) and that ``orders retry`` then refuses."""
    wm = make_wm(db=database, registry=Registry([Multi()]), default_max_attempts=1)
    order_id = wm.propose("test.multi", {"count": 2})
    leases = [wm.agent.checkout(f"agent-{n}") for n in (1, 2)]
    for lease in leases:
        assert lease is not None
        wm.agent.fail(lease, {"code": "boom", "message": "x"}, retryable=False)
    admin, ops = ItemAdmin(wm.ctx), Actor("user", "ops")
    with pytest.raises(IllegalStateTransition) as refused:
        admin.retry(leases[0].item_id, ops)
    assert refused.value.details["other_failed_items"] == [str(leases[1].item_id)]
    assert wm.queries.order(order_id)["state"] == "failed"  # nothing changed
    assert {i["state"] for i in wm.queries.order(order_id)["items"]} == {"failed"}
    wm.orders.retry(order_id, ops)  # the whole order, as the error says
    assert {i["state"] for i in wm.queries.order(order_id)["items"]} == {"queued"}


@pytest.mark.parametrize(
    "payload",
    [{"n": math.nan}, {"n": math.inf}, {"name": "a\x00b"}, {"a\x00": 1}, {"n": 10**5000}],
)
def test_unstorable_values_are_refused_and_nothing_is_written(make_wm, database, payload) -> None:
    wm = make_wm(db=database, registry=Registry([Simple()]))
    with pytest.raises(ValidationFailed):
        wm.propose("test.simple", payload)
    with wm.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(Order)) == 0


def test_unstorable_result_is_refused_and_the_lease_stays(make_wm, database) -> None:
    wm = make_wm(db=database, registry=Registry([Simple()]))
    wm.propose("test.simple", {"n": 1})
    lease = wm.agent.checkout("agent-1")
    with pytest.raises(ValidationFailed):
        wm.agent.submit(lease, {"answer": float("nan")})
    # an integer past Python's 4,300 digits: every encoder raised a raw ValueError
    with pytest.raises(ValidationFailed, match="not storable"):
        wm.agent.submit(lease, {"answer": 10**5000})
    with pytest.raises(ValidationFailed):
        wm.agent.heartbeat(lease, checkpoint={"n": -(10**5000)})
    assert wm.queries.item(lease.item_id)["state"] == "leased"
    assert wm.agent.submit(lease, {"answer": 1}).item["state"] == "submitted"


def test_apply_whose_diff_cannot_be_stored_is_a_recorded_failure(make_wm, database) -> None:
    wm = make_wm(db=database, registry=Registry([BadDiff()]), apply_max_retries=1)
    order_id = wm.propose("test.bad_diff", {})
    wm.agent.submit(wm.agent.checkout("agent-1"), {"x": 1})
    wm.approve(order_id)
    for attempt, final in ((1, False), (2, True)):
        with pytest.raises(ApplyFailed) as caught:
            wm.executor.apply(order_id)
        assert caught.value.details == {
            "exception": "ValidationFailed",
            "attempt": attempt,
            "failures": attempt,  # no run was cut short
            "final": final,
        }
    assert events(wm, order_id)[-2:] == ["apply_retrying", "apply_failed"]
    assert wm.queries.order(order_id)["state"] == "failed"


def test_refused_auto_approval_is_not_asked_again(make_wm, database) -> None:
    wm = make_wm(db=database, registry=Registry([Picky()]), apply_recovery_seconds=60)
    order_id = wm.propose("test.picky", {"ok": False})
    wm.agent.submit(wm.agent.checkout("agent-1"), {"x": 1})
    assert wm.orders.check_auto_approval(order_id) is False
    assert "auto_approval_refused" in events(wm, order_id)
    wm.ctx.clock = lambda: utcnow() + timedelta(seconds=61)
    assert wm.maintenance.run().recovered_auto_approvals == []


def test_an_unreachable_database_during_auto_approval_is_retried_not_refused(
    make_wm, database, monkeypatch
) -> None:
    """Found by an outage pass: a database connection dropped while the auto-approval
    ran was recorded as a refusal (``auto_approval_refused``, code ``unavailable``), which
    maintenance never asks again: the order stayed ``submitted`` for good. It is raised
    for the task to retry, and nothing is recorded."""
    wm = make_wm(db=database, registry=Registry([Simple(auto=True)]))
    order_id = wm.propose("test.simple", {"n": 1})
    wm.agent.submit(wm.agent.checkout("agent-1"), {"answer": 1})
    approve = wm.orders.store.approve

    def dropped(*args: Any, **kwargs: Any) -> Any:
        raise Unavailable("database unavailable: server closed the connection unexpectedly")

    monkeypatch.setattr(wm.orders.store, "approve", dropped)
    with pytest.raises(Unavailable):
        wm.orders.check_auto_approval(order_id)
    assert "auto_approval_refused" not in events(wm, order_id)
    monkeypatch.setattr(wm.orders.store, "approve", approve)
    assert wm.orders.check_auto_approval(order_id) is True  # the task's retry
    assert wm.queries.order_state(order_id) == "approved"


def test_lost_item_announcements_are_sent_again_once_per_window(make_wm, database) -> None:
    wm = make_wm(db=database, registry=Registry([Multi()]), reannounce_after_seconds=600)
    order_id = wm.propose("test.multi", {"count": 3})
    wm.agent.checkout("agent-1")  # one item held: only the two queued ones are re-sent
    wm.dispatcher.available.clear()
    assert wm.maintenance.run().reannounced_items == 0  # too recent
    wm.ctx.clock = lambda: utcnow() + timedelta(seconds=601)
    assert wm.maintenance.run().reannounced_items == 2
    [(order_type, ids)] = wm.dispatcher.available
    assert order_type == "test.multi" and len(ids) == 2
    assert wm.maintenance.run().reannounced_items == 0  # touched: not again this window
    wm.agent.fail(wm.agent.checkout("agent-2"), {"code": "x", "message": "y"}, retryable=False)
    wm.ctx.clock = lambda: utcnow() + timedelta(seconds=1300)
    assert wm.maintenance.run().reannounced_items == 0  # the order failed: nothing to do
    assert wm.queries.order_state(order_id) == "failed"


@pytest.mark.parametrize("anonymize", [False, True])
def test_the_ip_filter_matches_addresses_as_the_enricher_stores_them(
    make_wm, database, anonymize
) -> None:
    """filter[ip_address] takes any spelling of an address, and with anonymisation on a
    full address finds the rows stored anonymised."""
    wm = make_wm(db=database, registry=Registry([Simple()]), provenance_anonymize_ip=anonymize)
    v4, v6 = wm.propose("test.simple", {"n": 1}), wm.propose("test.simple", {"n": 2})
    stored = {v4: anonymize_ip("10.1.2.3"), v6: anonymize_ip("2001:db8::7")}
    if not anonymize:
        stored = {v4: "10.1.2.3", v6: "2001:db8::7"}
    with wm.db.transaction() as s:
        for order_id, ip in stored.items():
            s.add(Provenance(order_id=order_id, action="propose", ip_address=ip))
    listing = OrderListing(wm.ctx)

    def found(value: str) -> list[str]:
        return [o["id"] for o in listing.list([("filter[ip_address]", value)])["data"]]

    assert found("10.1.2.3") == [str(v4)]
    assert found("2001:0db8:0000::0007") == [str(v6)]  # another spelling of the same address
    assert set(found("10.1.2.3,2001:db8::7")) == {str(v4), str(v6)}
    assert found("10.9.9.9") == [] and found("not-an-ip") == []
    assert found("10.1.2.99") == ([str(v4)] if anonymize else [])  # same /24 when anonymised


def test_has_available_items_lists_only_orders_a_checkout_would_take(make_wm, database) -> None:
    """The filter had its own copy of the checkout's rule without the order's state: an
    order failed by one item's refusal still showed its other queued item as available,
    which no checkout hands out. One predicate now (db/predicates.leasable)."""
    wm = make_wm(db=database, registry=Registry([Multi()]))
    failed, open_ = wm.propose("test.multi", {"count": 2}), wm.propose("test.multi", {"count": 1})
    lease = wm.agent.checkout(AgentInfo(id="a"), order_id=failed)
    assert lease is not None
    wm.agent.fail(lease, {"code": "bad", "message": "no"}, retryable=False)
    assert wm.queries.order_state(failed) == "failed"
    listing = OrderListing(wm.ctx)

    def available(flag: str) -> set[str]:
        rows = listing.list([("filter[has_available_items]", flag)])["data"]
        return {o["id"] for o in rows}

    assert available("true") == {str(open_)}
    assert available("false") == {str(failed)}
    assert wm.agent.checkout(AgentInfo(id="b"), order_id=failed) is None


def test_limits_hold_for_every_caller_not_only_http(make_wm, database) -> None:
    """The HTTP schemas bounded an error code (1..191), a reject code (not empty), a part's
    seq (32 bits) and checkout's type; the services did not, so MCP and Python callers got
    them accepted (SQLite) or a driver's "integer out of range" naming no field
    (PostgreSQL). The services hold the rule now (services/inputs.py), on every store."""
    from tests.support.types import Parts

    wm = make_wm(db=database, registry=Registry([Multi(), Parts()]))
    agent = AgentInfo(id="limits")
    wm.propose("test.parts", {})
    lease = wm.agent.checkout(agent, type="test.parts")
    assert lease is not None
    with pytest.raises(ValidationFailed) as seq:
        wm.agent.submit_part(lease, "a", {"v": 1}, seq=2**40)
    assert seq.value.details[0]["path"] == "seq"
    with pytest.raises(ValidationFailed) as code:
        wm.agent.fail(lease, {"code": "x" * 192, "message": "m"})
    assert code.value.details[0]["path"] == "error"
    with pytest.raises(ValidationFailed) as type_:
        wm.agent.checkout(agent, type="")
    assert type_.value.details[0]["path"] == "type"
    order_id = wm.propose("test.multi", {"count": 1})
    other = wm.agent.checkout(agent, order_id=order_id)
    assert other is not None
    wm.agent.submit(other, {"answer": 1})
    with pytest.raises(ValidationFailed) as empty:
        wm.orders.reject(order_id, [{"code": "", "message": "m"}], Actor.system())
    assert empty.value.details[0]["path"] == "errors.0.code"  # the field, as HTTP names it
    assert wm.queries.order_state(order_id) == "submitted"  # nothing changed
    assert wm.queries.item(lease.item_id)["state"] == "leased"


BAD_SPECS = [
    pytest.param(ItemSpec(input=[1, 2]), "plan.input", id="input-list"),  # type: ignore[arg-type]
    pytest.param(ItemSpec(parts_required="abc"), "plan.parts_required", id="parts-str"),
    pytest.param(ItemSpec(parts_required=[1, 2]), "plan.parts_required", id="parts-ints"),  # type: ignore[list-item]
    pytest.param(ItemSpec(max_attempts=0), "plan.max_attempts", id="attempts-0"),
    pytest.param(ItemSpec(max_attempts=2.7), "plan.max_attempts", id="attempts-float"),  # type: ignore[arg-type]
    pytest.param(ItemSpec(max_attempts=10**30), "plan.max_attempts", id="attempts-huge"),
    pytest.param(ItemSpec(type=5), "plan.type", id="type-int"),  # type: ignore[arg-type]
    pytest.param(ItemSpec(type="x\ud800"), "plan.type", id="type-surrogate"),
    pytest.param(ItemSpec(parts_required=["a\x00"]), "plan.parts_required", id="parts-nul"),
    pytest.param(ItemSpec(parts_required=[" "]), "plan.parts_required", id="parts-blank"),
]


@pytest.mark.parametrize(("spec", "path"), BAD_SPECS)
def test_an_item_spec_that_cannot_be_stored_is_the_plans_error(
    make_wm, database, spec, path
) -> None:
    """Each was stored as given, changed, or a raw TypeError/OverflowError, differently on
    SQLite and PostgreSQL; now the proposal is refused naming the field, nothing written."""

    class Planned(OrderType):
        type = "test.planned"

        def plan(self, order: OrderView) -> list[ItemSpec]:
            return [spec]

        def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
            return Diff({}, {}, "")

    wm = make_wm(db=database, registry=Registry([Planned()]))
    with pytest.raises(ValidationFailed) as refused:
        wm.propose("test.planned", {})
    assert [d["path"] for d in refused.value.details] == [path]
    assert refused.value.details[0]["validator"] == "hook_error"
    with wm.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(Order)) == 0


def test_the_agent_api_refuses_what_is_not_a_lease_naming_it(make_wm, database) -> None:
    """An item id, a token string or None (checkout found nothing) passed as the lease
    raised AttributeError from inside, or "an agent id is required"; a retryable of the
    wrong type requeued ("no") or failed (None) the item for good."""
    wm = make_wm(db=database, registry=Registry([Simple()]))
    wm.propose("test.simple", {"n": 1})
    lease = wm.agent.checkout("agent-1")
    assert lease is not None
    for wrong in (lease.item_id, lease.token, None):
        with pytest.raises(ValidationFailed) as refused:
            wm.agent.submit(wrong, {"answer": 1})
        assert refused.value.details[0]["path"] == "lease"
    with pytest.raises(ValidationFailed, match="check for None"):
        wm.agent.heartbeat(None)
    for retryable in ("no", None, 0):
        with pytest.raises(ValidationFailed) as refused:
            wm.agent.fail(lease, {"code": "x", "message": "m"}, retryable=retryable)
        assert refused.value.details[0]["path"] == "retryable"
    assert wm.queries.item(lease.item_id)["state"] == "leased"


class Judging(OrderType):
    """validate_submission as users write it wrong: returning False or a list, or making
    ValidationFailed as every other error is made (message first, details by keyword)."""

    type = "test.judging"

    def validate_submission(self, item: Any, result: Any) -> None:
        verdict = result.get("verdict")
        if verdict == "raise":
            detail = {"path": "result.verdict", "message": "not good", "validator": "custom"}
            raise ValidationFailed("nope", details=[detail])
        if verdict == "false":
            return False  # type: ignore[return-value]
        if verdict == "list":
            return ["summary missing"]  # type: ignore[return-value]
        return None

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        return Diff({}, {}, "")


def test_a_check_returning_a_verdict_refuses_and_validation_failed_takes_details(
    make_wm, database
) -> None:
    """Returning False or a list from validate_submission was an acceptance (the item
    submitted); ValidationFailed("nope", details=[...]) was a TypeError reported as the
    hook's crash. Both now say what they meant."""
    wm = make_wm(db=database, registry=Registry([Judging()]))
    wm.propose("test.judging", {})
    lease = wm.agent.checkout("agent-1")
    assert lease is not None
    with pytest.raises(ValidationFailed) as raised:
        wm.agent.submit(lease, {"verdict": "raise"})
    assert raised.value.details == [
        {"path": "result.verdict", "message": "not good", "validator": "custom"}
    ]
    for verdict in ("false", "list"):
        with pytest.raises(ValidationFailed) as returned:
            wm.agent.submit(lease, {"verdict": verdict})
        (detail,) = returned.value.details
        assert detail["validator"] == "hook_error" and "return None to accept" in detail["message"]
    assert wm.queries.item(lease.item_id)["state"] == "leased"
    assert wm.agent.submit(lease, {"verdict": "ok"}).item["state"] == "submitted"


@pytest.mark.parametrize(
    "keys",
    [lambda: ("a", "b"), lambda: UserList(["a", "b"]), lambda: (k for k in ("a", "b"))],
    ids=["tuple", "userlist", "generator"],
)
def test_part_keys_may_come_as_any_sequence_or_iterable(make_wm, database, keys) -> None:
    class Planned(OrderType):
        type = "test.planned"

        def plan(self, order: OrderView) -> list[ItemSpec]:
            return [ItemSpec(parts_required=keys())]

        def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
            return Diff({}, {}, "")

    wm = make_wm(db=database, registry=Registry([Planned()]))
    (item,) = wm.queries.order(wm.propose("test.planned", {}))["items"]
    assert item["parts_required"] == ["a", "b"]


class Assembling(OrderType):
    """One part ``a``; assemble() returns what it is told to in the part's payload."""

    type = "test.assembling"

    def plan(self, order: OrderView) -> list[ItemSpec]:
        return [ItemSpec(parts_required=["a"])]

    def assemble(self, item: Any, parts: list[Any]) -> Any:
        return {"n": 10**5000} if parts[0].payload.get("huge") else {"n": math.nan}

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        return Diff({}, {}, "")


@pytest.mark.parametrize("huge", [True, False])
def test_an_assembled_result_that_cannot_be_stored_is_the_types_error(
    make_wm, database, huge
) -> None:
    """finalize stored assemble()'s value unchecked: a raw StatementError or ValueError (a
    500 over HTTP), the item left leased. Now the type's hook_error, the item still held."""
    wm = make_wm(db=database, registry=Registry([Assembling()]))
    wm.propose("test.assembling", {})
    lease = wm.agent.checkout("agent-1")
    assert lease is not None
    wm.agent.submit_part(lease, "a", {"huge": huge})
    with pytest.raises(ValidationFailed) as refused:
        wm.agent.finalize(lease)
    (detail,) = refused.value.details
    assert detail["path"] == "assembled_result.n" and detail["validator"] == "hook_error"
    assert wm.queries.item(lease.item_id)["state"] == "leased"


class SaysNul(OrderType):
    """Its code's words hold what PostgreSQL stores nowhere: a NUL, a lone surrogate (a
    file name ``os.listdir`` decoded with ``surrogateescape``)."""

    type = "test.says_nul"

    def plan(self, order: OrderView) -> list[ItemSpec]:
        return [ItemSpec(input=order.payload, parts_required=["a"])]

    def validate_part(self, item: Any, part_key: str, payload: Any, seq: Any) -> None:
        raise ValidationFailed.at("payload.x", "the tool said: a\x00b", "custom")

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        raise FileNotFoundError("cannot open r-\x00.txt")  # lone surrogates: test_jsonvalues


def test_what_user_code_says_is_stored_even_with_a_nul_in_it(make_wm, database) -> None:
    """Found by an adversarial pass: an apply whose exception said a NUL (or a lone
    surrogate) recorded nothing on PostgreSQL — the record refused whole, the claim held,
    the order ``approved`` with no error for minutes — and a validation hook's refusal
    saying one was 422 "a value cannot be stored" there while SQLite stored the part
    ``rejected``. The words are stored, each such character as U+FFFD."""
    wm = make_wm(db=database, registry=Registry([SaysNul()]), apply_max_retries=0)
    order_id = wm.propose("test.says_nul", {})
    lease = wm.agent.checkout("agent-1")
    assert lease is not None
    with pytest.raises(ValidationFailed) as refused:
        wm.agent.submit_part(lease, "a", {"x": 1})
    assert refused.value.details[0]["message"] == "the tool said: a\ufffdb"
    [stored] = wm.queries.parts(lease.item_id)["parts"]
    assert stored["status"] == "rejected", stored
    with wm.db.transaction() as s:  # approve without the parts: apply is what is tested
        s.execute(Order.__table__.update().where(Order.id == order_id).values(state="approved"))
    with pytest.raises(ApplyFailed):
        wm.executor.apply(order_id)
    order = wm.queries.order(order_id)
    assert order["state"] == "failed" and events(wm, order_id)[-1] == "apply_failed"
    assert order["last_error"]["message"] == "cannot open r-\ufffd.txt", order["last_error"]


class RequiredRaises(SaysNul):
    type = "test.required_raises"

    def required_parts(self, item: Any) -> list[str]:
        raise KeyError("config")


def test_a_read_of_parts_does_not_fail_on_a_raising_required_parts(make_wm, database) -> None:
    """Found by an adversarial pass: a type's ``required_parts()`` that raised made ``GET
    /items/{id}/parts`` answer 422 (no such error is declared for it) and the console's
    order page fail. The read shows the parts without the hook's answer."""
    wm = make_wm(db=database, registry=Registry([RequiredRaises()]))
    wm.propose("test.required_raises", {})
    lease = wm.agent.checkout("agent-1")
    assert lease is not None
    answer = wm.queries.parts(lease.item_id)
    assert answer["parts"] == [] and "required_parts" not in answer


def test_include_events_count_counts_in_the_database(make_wm, database) -> None:
    """Found by a volume pass: ``include=eventsCount`` read every event of each order on
    the page to count them (3 s and the whole history in memory for a busy order). The
    count is the database's; ``include=events`` still carries its own count."""
    wm = make_wm(db=database, registry=Registry([Multi()]))
    busy = wm.propose("test.multi", {"count": 3})
    quiet = wm.propose("test.multi", {"count": 1})
    for _ in range(3):
        wm.agent.release(wm.agent.checkout("agent-1", order_id=busy))
    listing = OrderListing(wm.ctx)
    expected = {str(busy): len(wm.queries.events(busy)), str(quiet): len(wm.queries.events(quiet))}
    assert expected[str(busy)] > expected[str(quiet)] > 0
    for include in ("eventsCount", "events_count"):
        rows = listing.list([("include", include)])["data"]
        assert {r["id"]: r["events_count"] for r in rows} == expected
        assert all("events" not in r for r in rows)
    rows = listing.list([("include", "events")])["data"]
    assert {r["id"]: (r["events_count"], len(r["events"])) for r in rows} == {
        k: (v, v) for k, v in expected.items()
    }


def test_numbers_postgresql_rewrites_compare_as_they_were_sent(make_wm, database) -> None:
    """Found by an adversarial pass: PostgreSQL's jsonb gives ``1e+23`` back as the integer
    ``100000000000000000000000`` and ``-0.0`` as ``0.0``; a proposal repeated under its
    dedupe key was then refused ``dedupe_key_reused`` on PostgreSQL (SQLite found its
    order), and a part's checksum no longer matched its stored payload. Canonical JSON
    writes such numbers as jsonb does, so both stores compare them alike."""
    from workmanager.services.parts import checksum

    wm = make_wm(db=database, registry=Registry([Simple()]))
    payload = {"n": 1, "big": 1e23, "zero": -0.0, "small": 1.5e-7, "huge": 1.7976931348623157e308}
    first = wm.orders.propose("test.simple", payload, dedupe_key="floats")
    again = wm.orders.propose("test.simple", dict(payload), dedupe_key="floats")
    assert first.created and not again.created and again.order["id"] == first.order["id"]
    stored = wm.queries.order(uuid.UUID(first.order["id"]))["payload"]
    assert checksum(stored) == checksum(payload)


def test_a_meta_filter_reads_values_alike_on_both_stores(make_wm, database) -> None:
    """Found by an adversarial pass: ``filter[meta]=k:v`` compared PostgreSQL's text of the
    value with SQLite's SQL value: ``flag:true`` found nothing on SQLite, and ``n:1``
    found both the number 1 and ``true`` there."""
    wm = make_wm(db=database, registry=Registry([Simple()]))
    metas = {
        "flag": {"flag": True},
        "off": {"flag": False},
        "one": {"n": 1},
        "text-one": {"n": "1"},
        "true-n": {"n": True},
        "half": {"n": 1.5},
        "dotted": {"a.b": "x"},
        # a JSON-text pass: found on PostgreSQL, never on SQLite
        "non-ascii": {"名前": "x", "ü": 2},
        "quoted": {'a"b': "v"},
        "huge": {"ext": 18446744073709551615},
    }
    ids = {
        name: str(wm.propose("test.simple", {"n": 1}, meta=meta)) for name, meta in metas.items()
    }
    listing = OrderListing(wm.ctx)

    def found(value: str) -> set[str]:
        rows = listing.list([("filter[meta]", value)])["data"]
        return {name for name, oid in ids.items() if oid in {r["id"] for r in rows}}

    assert found("flag:true") == {"flag"} and found("flag:false") == {"off"}
    assert found("n:1") == {"one", "text-one"} and found("n:true") == {"true-n"}
    assert found("n:1.5") == {"half"} and found("a.b:x") == {"dotted"}
    assert found("missing:x") == set()
    assert found("名前:x") == {"non-ascii"} and found("ü:2") == {"non-ascii"}
    assert found('a"b:v') == {"quoted"} and found("ext:18446744073709551615") == {"huge"}


@pytest.mark.parametrize("agent_id", ["a\x00b", "x" * 192, "a\ud800", 5])
def test_the_python_api_checks_agent_ids_as_http_does(make_wm, database, agent_id) -> None:
    """Found by an adversarial pass: the Python agent API took ids HTTP and MCP refuse —
    SQLite stored ``"a\\x00b"`` and 192-character ids PostgreSQL's driver refused; a lone
    surrogate was a raw ``UnicodeEncodeError``; an integer left a lease held by "5"."""
    from workmanager.errors import InvalidAgentMetadata

    wm = make_wm(db=database, registry=Registry([Simple()]))
    wm.propose("test.simple", {"n": 1})
    with pytest.raises(InvalidAgentMetadata):
        wm.agent.checkout(agent_id)
    with pytest.raises(InvalidAgentMetadata):
        wm.agent.checkout(AgentInfo(id=agent_id))
    assert wm.agent.checkout("agent-ok") is not None  # nothing was held by the refused


@pytest.mark.parametrize(
    ("meta", "field"),
    [
        ({"version": "abc"}, "agent_version"),
        ({"model_name": "m" * 300}, "model_name"),
        ({"name": "a\x00b"}, "name"),
        ({"principal": "p" * 192}, "principal"),
        ({"model_name": 5}, "model_name"),
        ({"version": 1}, "agent_version"),
    ],
)
def test_the_python_api_checks_agent_metadata_as_http_does(make_wm, database, meta, field) -> None:
    """A same-mistake-every-surface pass: HTTP and MCP refuse a version that is not
    semver, a 300-character model name and a NUL (400 ``invalid_agent_metadata``); the
    Python API stored them on SQLite, and PostgreSQL's driver refused them as a vague
    ``validation_failed`` at ``$``. One rule now (``services.inputs.check_agent_metadata``)."""
    from workmanager.errors import InvalidAgentMetadata

    wm = make_wm(db=database, registry=Registry([Simple()]))
    wm.propose("test.simple", {"n": 1})
    with pytest.raises(InvalidAgentMetadata) as refused:
        wm.agent.checkout(AgentInfo(id="agent-m", **meta))
    assert [d["field"] for d in refused.value.details] == [field]
    lease = wm.agent.checkout(AgentInfo(id="agent-m", version="1.2.3", model_name="m"))
    assert lease is not None  # nothing was held by the refused
    with pytest.raises(InvalidAgentMetadata):
        wm.agent.heartbeat(lease, agent=AgentInfo(id="agent-m", **meta))
    # proposing, approving and rejecting as an agent: the same rule (a review pass found
    # them unchecked, a principal of any length and a number where text goes everywhere)
    bad = AgentInfo(id="agent-m", **meta)
    with pytest.raises(InvalidAgentMetadata):
        wm.orders.propose("test.simple", {"n": 2}, agent=bad)
    wm.agent.submit(lease, {"answer": 1}, agent="agent-m")
    with pytest.raises(InvalidAgentMetadata):
        wm.orders.approve(lease.order_id, Actor("user", "u"), agent=bad)
    with pytest.raises(InvalidAgentMetadata):
        wm.orders.reject(
            lease.order_id, [{"code": "x", "message": "y"}], Actor("user", "u"), agent=bad
        )
    assert wm.queries.order_state(lease.order_id) == "submitted"  # nothing was done
    with wm.db.transaction() as s:  # the refused proposal stored nothing
        assert s.scalar(select(func.count()).select_from(Order)) == 1


@pytest.mark.parametrize("order_id", ["xyz", 5, ""])
def test_a_producer_s_order_id_is_a_uuid_or_its_text(make_wm, database, order_id) -> None:
    """A review pass: ``wm.propose(..., order_id=<text>)`` was a raw ``StatementError`` on
    SQLite (stored as given on PostgreSQL), ``5`` a raw driver error."""
    from workmanager.errors import ValidationFailed

    wm = make_wm(db=database, registry=Registry([Simple()]))
    chosen = uuid.uuid4()
    assert wm.propose("test.simple", {"n": 1}, order_id=str(chosen)) == chosen
    assert wm.propose("test.simple", {"n": 1}, order_id=str(chosen)) == chosen  # the same one
    with pytest.raises(ValidationFailed) as refused:
        wm.propose("test.simple", {"n": 2}, order_id=order_id)
    assert refused.value.details[0]["path"] == "order_id"


def test_the_python_api_takes_ids_as_text_and_finds_nothing_for_others(make_wm, database) -> None:
    """The same pass: the answers give ids as text, yet ``wm.approve``, ``wm.orders.
    reject/retry``, ``wm.queries.order`` and a ``Lease`` built from them raised
    SQLAlchemy's ``StatementError`` on SQLite (outside the project's exception tree) and
    a "cannot be stored" ``validation_failed`` on PostgreSQL for ``"xyz"``. Every surface
    now takes a UUID's text and answers ``not_found`` for anything else."""
    from workmanager.types import Lease

    wm = make_wm(db=database, registry=Registry([Simple()]))
    order_id = str(wm.propose("test.simple", {}))
    assert wm.queries.order(order_id)["id"] == order_id
    lease = wm.agent.checkout("agent-s", order_id=order_id)
    assert lease is not None
    texted = Lease(
        str(lease.item_id), str(lease.order_id), lease.agent_id, lease.token,
        lease.expires_at, lease.heartbeat_every_seconds,
    )  # fmt: skip
    assert texted.item_id == lease.item_id
    wm.agent.submit(texted, {"answer": 1})
    assert wm.queries.item(str(lease.item_id))["state"] == "submitted"
    assert wm.queries.parts(str(lease.item_id))["parts"] == []
    assert wm.approve(order_id)["state"] == "approved"
    who = Actor("user", "ops")
    for bad in ("xyz", 42, "", None):
        with pytest.raises(NotFound):
            wm.queries.order(bad)
        with pytest.raises(NotFound):
            wm.approve(bad)
        with pytest.raises(NotFound):
            wm.orders.reject(bad, [{"code": "x", "message": "y"}], who)
        with pytest.raises(NotFound):
            wm.orders.retry(bad, who)
        with pytest.raises(NotFound):
            wm.orders.check_auto_approval(bad)
        with pytest.raises(NotFound):
            wm.queries.parts(bad)
        with pytest.raises(NotFound):
            Lease(bad, order_id, "a", "1.x", lease.expires_at, 5)


def test_python_submit_refuses_notes_that_are_not_text(make_wm, database) -> None:
    """A data-extremes pass: ``submit(notes={"a": 1})`` was stored by the Python API where
    HTTP, MCP and parts refuse it (notes are text)."""
    wm = make_wm(db=database, registry=Registry([Simple()]))
    wm.propose("test.simple", {})
    lease = wm.agent.checkout("agent-a")
    with pytest.raises(ValidationFailed) as refused:
        wm.agent.submit(lease, {"answer": 1}, notes={"a": 1})  # type: ignore[arg-type]
    assert refused.value.details == [
        {"path": "notes", "message": "must be a string", "validator": "type"}
    ]
    assert wm.queries.item(lease.item_id)["state"] == "leased"
    wm.agent.submit(lease, {"answer": 1}, notes="fine")


def test_floats_written_out_past_the_limit_are_refused_and_change_nothing(
    make_wm, database
) -> None:
    """A JSON-values pass: PostgreSQL's jsonb reads ``1e308`` back as 309 digits, so a
    3.6 MB submit of them made every read of the order 186 MB (SQLite: 4 MB). Refused
    alike on both stores, before anything is written."""
    from workmanager.errors import ValidationFailed
    from workmanager.jsonvalues import MAX_SPELLED_OUT

    wm = make_wm(db=database, registry=Registry([Simple()]))
    huge = {"x": [1e308] * (MAX_SPELLED_OUT // 303 + 1)}  # each gains 303 written out
    with pytest.raises(ValidationFailed):
        wm.propose("test.simple", huge)
    order_id = wm.propose("test.simple", {"n": 1})
    lease = wm.agent.checkout("agent-f", order_id=order_id)
    assert lease is not None
    with pytest.raises(ValidationFailed) as refused:
        wm.agent.submit(lease, {"answer": huge})
    assert refused.value.details[0]["path"].startswith("result")
    assert wm.queries.item(lease.item_id)["state"] == "leased"
    wm.agent.submit(lease, {"answer": 1.5e-300})  # one such float is a number like any
    assert wm.queries.order_state(order_id) == "submitted"


def test_who_acts_is_an_actor_or_an_agent_s_id_else_a_refusal(make_wm, database) -> None:
    """A library pass: ``agent="a1"`` (as the agent calls take it) and ``actor="me"`` on
    propose, approve, reject and retry were ``AttributeError``s deep inside."""
    from workmanager.errors import ValidationFailed

    wm = make_wm(db=database, registry=Registry([Simple()]))
    proposal = wm.orders.propose("test.simple", {"n": 1}, agent="agent-text")
    order_id = uuid.UUID(proposal.order["id"])
    assert proposal.order["requested_by_id"] == "agent-text"
    with pytest.raises(ValidationFailed) as refused:
        wm.orders.propose("test.simple", {"n": 2}, requested_by="me")  # type: ignore[arg-type]
    assert refused.value.details[0]["path"] == "requested_by"
    lease = wm.agent.checkout("agent-text", order_id=order_id)
    assert lease is not None
    wm.agent.submit(lease, {"answer": 1})
    for call in (
        lambda: wm.approve(order_id, actor="me"),  # type: ignore[arg-type]
        lambda: wm.orders.reject(order_id, [{"code": "x", "message": "y"}], "me"),  # type: ignore[arg-type]
        lambda: wm.orders.retry(order_id, "me"),  # type: ignore[arg-type]
    ):
        with pytest.raises(ValidationFailed) as refused:
            call()
        assert refused.value.details[0]["path"] == "actor"
    assert wm.queries.order_state(order_id) == "submitted"
    assert (
        wm.orders.approve(order_id, Actor("user", "u"), agent="agent-text")["state"] == "approved"
    )
