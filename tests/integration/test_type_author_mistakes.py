"""Mistakes an order type's author makes, found by an adversarial pass (session 16), each
met as early as it can be: at registration (start-up) for what the type declares, and as
a ``hook_error`` naming the hook for what a hook answers. Nothing of the type's mistake
is stored or applied."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from tests.support.types import Parts, Simple
from workmanager import Diff, ItemSpec, OrderType, Registry, WorkManager
from workmanager.errors import (
    ConfigurationError,
    NotReadyForApproval,
    ValidationFailed,
    WorkManagerError,
)
from workmanager.services.parts import PART_KEYS_RULE
from workmanager.types import JSON, Actor, ItemView, OrderView


class Ported(OrderType):
    """upstream's shouldAutoApprove() ported as a method: a bound method is truthy."""

    type = "test.ported"

    def auto_approve(self, order: Any) -> bool:  # type: ignore[override]
        return False

    def apply(self, order: OrderView, ctx: Any) -> Diff:
        return Diff.empty()


def declared(**attributes: Any) -> OrderType:
    cls = type("Declared", (Simple,), {"type": "test.declared", **attributes})
    order_type = cls.__new__(cls)
    Simple.__init__(order_type)
    for name, value in attributes.items():  # Simple's __init__ sets auto_approve
        object.__setattr__(order_type, name, value)
    return order_type


@pytest.mark.parametrize(
    ("order_type", "says"),
    [
        (Ported(), "auto_approve must be True or False, got method"),
        (declared(auto_approve="false"), "auto_approve must be True or False, got str"),
        (declared(requires_evidence=1), "requires_evidence must be True or False"),
        (declared(type="x" * 300), "is not a type name"),
        (declared(type="bad\x00name"), "is not a type name"),
        (declared(max_attempts=0), "max_attempts must be a whole number from 1"),
        (declared(max_attempts=-1), "max_attempts must be a whole number from 1"),
        (declared(max_attempts=2.5), "max_attempts must be a whole number from 1"),
    ],
)
def test_what_a_type_declares_is_checked_when_it_is_registered(
    order_type: OrderType, says: str
) -> None:
    """A method or the string "false" as ``auto_approve`` approved and applied every
    order with no review; a 300-character name was stored on SQLite and refused by
    PostgreSQL at each propose; ``max_attempts`` of 0 became the default and -1 failed
    items at their first retry."""
    with pytest.raises(ConfigurationError, match=says):
        Registry([order_type])


def test_a_ported_auto_approve_is_told_where_the_decision_goes() -> None:
    with pytest.raises(ConfigurationError) as refused:
        Registry([Ported()])
    assert refused.value.hint is not None and "can_approve(order)" in refused.value.hint


def test_a_schema_ref_that_resolves_nowhere_stops_registration() -> None:
    """It registered, then every propose failed with ``PointerToNowhere``."""

    class Dangling(Simple):
        type = "test.dangling"

        def schema(self) -> JSON:
            return {"type": "object", "properties": {"a": {"$ref": "#/$defs/nope"}}}

    with pytest.raises(ConfigurationError, match="'#/\\$defs/nope' resolves nowhere"):
        Registry([Dangling()])


class Stamping(Simple):
    """A validation hook that changes what it checks."""

    type = "test.stamping"

    def validate_submission(self, item: ItemView, result: JSON) -> None:
        result["checked_at"] = datetime(2026, 1, 1)  # not JSON: was a 500 from the driver
        result["answer"] = "changed"


class Rejecting(Simple):
    """The JSON Schema that accepts nothing, as the result schema."""

    type = "test.rejecting"

    def result_schema(self, item: ItemView) -> Any:
        return False


class Forgetful(Simple):
    type = "test.forgetful"

    def can_approve(self, order: OrderView) -> bool:
        order.payload.get("ready")  # forgot the return: None
        return None  # type: ignore[return-value]


@pytest.fixture
def wm(make_wm: Callable[..., WorkManager], database: str) -> WorkManager:
    types = [Stamping(), Rejecting(), Forgetful(), Parts(), NoKeys(), Letters()]
    return make_wm(db=database, backend="database", registry=Registry(types))


def test_a_hook_that_changes_the_value_changes_neither_what_is_stored_nor_the_callers(
    wm: WorkManager,
) -> None:
    order_id = wm.propose("test.stamping", {})
    lease = wm.agent.checkout("a", order_id=order_id)
    assert lease is not None
    result = {"answer": 42}
    sent = copy.deepcopy(result)
    wm.agent.submit(lease, result)
    assert result == sent  # the caller's own dict, untouched
    assert wm.queries.item(lease.item_id)["result"] == {"answer": 42}


def test_a_false_result_schema_refuses_every_result(wm: WorkManager) -> None:
    """``False`` was taken for "no schema" and accepted everything."""
    order_id = wm.propose("test.rejecting", {})
    lease = wm.agent.checkout("a", order_id=order_id)
    assert lease is not None
    with pytest.raises(ValidationFailed):
        wm.agent.submit(lease, {"answer": 1})
    assert wm.queries.item(lease.item_id)["state"] == "leased"


def test_can_approve_that_returns_none_is_named_not_a_plain_refusal(wm: WorkManager) -> None:
    order_id = wm.propose("test.forgetful", {})
    lease = wm.agent.checkout("a", order_id=order_id)
    assert lease is not None
    wm.agent.submit(lease, {"answer": 1})
    with pytest.raises(NotReadyForApproval, match="returned NoneType: it must return True"):
        wm.orders.approve(order_id, Actor("user", "reviewer"))
    assert wm.queries.order(order_id)["state"] == "submitted"


class NoKeys(Parts):
    type = "test.no-keys"

    def required_parts(self, item: ItemView) -> list[str]:
        list(item.parts_required)  # forgot the return
        return None  # type: ignore[return-value]


class Letters(Parts):
    type = "test.letters"

    def required_parts(self, item: ItemView) -> list[str]:
        return "intro"  # type: ignore[return-value]


@pytest.mark.parametrize(("order_type", "got"), [("test.no-keys", "NoneType"),
                                                 ("test.letters", "str")])  # fmt: skip
def test_required_parts_that_answers_no_keys_is_the_types_hook_error(
    wm: WorkManager, order_type: str, got: str
) -> None:
    """None was HTTP 500 on submit-part and finalize; a string was required letter by
    letter ("missing parts: i, n, t, r, o") and failed the item."""
    order_id = wm.propose(order_type, {})
    lease = wm.agent.checkout("a", order_id=order_id)
    assert lease is not None
    for call in (
        lambda: wm.agent.submit_part(lease, "intro", {"text": "x"}),
        lambda: wm.agent.finalize(lease),
    ):
        with pytest.raises(ValidationFailed) as refused:
            call()
        [problem] = refused.value.details
        assert problem["validator"] == "hook_error" and problem["path"] == "parts"
        said = f"required_parts() must return {PART_KEYS_RULE}, got {got}"
        assert said in problem["message"]
    assert wm.queries.item(lease.item_id)["state"] == "leased"


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: Diff(None, {"a": 1}), "Diff.before must be a dict, got NoneType"),  # type: ignore[arg-type]
        (lambda: Diff({}, [1]), "Diff.after must be a dict, got list"),  # type: ignore[arg-type]
        (lambda: Diff({}, {}, 3), "Diff.summary must be a string"),  # type: ignore[arg-type]
    ],
)
def test_a_diff_that_cannot_be_compared_is_refused_when_made(
    make: Callable[[], Diff], says: str
) -> None:
    """It failed later, in the apply's recording, with "'NoneType' object has no
    attribute 'keys'"."""
    with pytest.raises(TypeError, match=says):
        make()


def test_an_item_spec_and_a_type_declaration_share_one_rule() -> None:
    """The rule of ``ItemSpec.max_attempts`` is the rule of ``OrderType.max_attempts``."""
    from workmanager.order_types import is_attempts

    for value in (0, -1, 2.5, True, 2**31):
        assert not is_attempts(value)
        with pytest.raises(ConfigurationError):
            Registry([declared(max_attempts=value)])
    assert ItemSpec(max_attempts=3).max_attempts == 3 and is_attempts(3)


@pytest.mark.parametrize(
    "schema",
    [
        {"examples": [{"$ref": "#/components/schemas/Pet"}]},  # data, not a reference
        {"properties": {"a": {"const": {"$ref": "#/nowhere"}}}},
        {"$ref": "https://json-schema.org/draft/2020-12/schema"},  # the meta-schema
        {"$id": "https://example.test/s", "$defs": {"a": {}}, "$ref": "#/$defs/a"},
        {"$defs": {"a~b": {"type": "string"}}, "properties": {"x": {"$ref": "#/$defs/a~0b"}}},
    ],
)
def test_references_jsonschema_resolves_are_not_refused(schema: JSON) -> None:
    """Found reviewing the check above: a ``$ref`` inside ``examples`` or ``const`` is
    data, and the draft's meta-schema resolves without fetching it."""

    class Fine(Simple):
        type = "test.fine-refs"

        def schema(self) -> JSON:
            return schema

    Registry([Fine()])


class _SaysDates(OrderType):
    """Refuses with details JSON has no word for: a datetime, a set, an object key."""

    type = "test.says_dates"

    def plan(self, order: OrderView) -> list[ItemSpec]:
        if order.payload.get("refuse"):
            raise ValidationFailed({"missing_since": datetime(2026, 1, 1), 3: {"a", "b"}})
        return [ItemSpec(input={})]

    def validate_submission(self, item: ItemView, result: JSON) -> None:
        if result.get("bad"):
            raise ValidationFailed([{"path": "result.tags", "message": {"dup"}, "validator": "x"}])

    def can_approve(self, order: OrderView) -> bool:
        raise ValidationFailed({"checked_at": datetime(2026, 1, 2)})

    def apply(self, order: OrderView, ctx: Any) -> Diff:
        return Diff.empty()


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_refusal_whose_details_are_not_json_is_said_and_recorded(
    make_wm: Callable[..., WorkManager], database: str
) -> None:
    """Found by an order-type authoring pass: a hook's ``ValidationFailed`` holding a
    datetime or a set was a 500 over HTTP (its envelope could not be written) and, through
    Celery, a lost order (its refusal could not be recorded: the producer's id named
    nothing). Such details are said as their text."""
    import json
    import uuid

    from workmanager.api.errors import error_response

    wm = make_wm(db=database, registry=Registry([_SaysDates()]))
    with pytest.raises(ValidationFailed) as refused:
        wm.propose("test.says_dates", {"refuse": True})
    assert error_response(refused.value).status_code == 422  # its envelope can be written
    assert "2026-01-01 00:00:00" in json.dumps(refused.value.details)
    order_id = uuid.uuid4()  # the create task's record of the refusal, under the producer's id
    wm.orders.refuse(refused.value, "test.says_dates", {"refuse": True}, order_id=order_id)
    assert wm.queries.order_state(order_id) == "failed"
    wm.propose("test.says_dates", {})
    lease = wm.agent.checkout("a1")
    assert lease is not None
    with pytest.raises(ValidationFailed) as bad_result:
        wm.agent.submit(lease, {"bad": 1})
    assert error_response(bad_result.value).status_code == 422
    wm.agent.submit(lease, {"ok": 1})
    with pytest.raises(WorkManagerError) as not_ready:  # can_approve refuses, with a date
        wm.approve(uuid.UUID(str(lease.order_id)))
    assert error_response(not_ready.value).status_code == not_ready.value.http_status
