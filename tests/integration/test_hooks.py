"""Order-type checks: the schema first, then the custom hook on every value the schema
passed (never on one it refused); a crashing hook is a 422 that changes nothing."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from workmanager import ApplyContext, Diff, ItemSpec, OrderType, OrderView, Registry
from workmanager.errors import ValidationFailed
from workmanager.types import JSON, ItemView


class Strict(OrderType):
    """Hooks written as the README's example is: they rely on what their schema requires
    (a ``KeyError`` if they ever ran on a value the schema refused)."""

    type = "test.strict"
    calls: ClassVar[dict[str, int]] = {}

    def plan(self, order: OrderView) -> list[ItemSpec]:
        return [ItemSpec(input={}, parts_required=["a"])]

    def result_schema(self, item: ItemView) -> JSON:
        return {"type": "object", "required": ["answer"]}

    def validate_submission(self, item: ItemView, result: JSON) -> None:
        self.calls["submission"] = self.calls.get("submission", 0) + 1
        if result["answer"] == 0:
            raise ValidationFailed(
                [{"path": "result.answer", "message": "must not be 0", "validator": "custom"}]
            )

    def part_schema(self, item: ItemView, part_key: str) -> JSON:
        return {"type": "object", "required": ["required_key"]}

    def validate_part(self, item: ItemView, part_key: str, payload: JSON, seq: int | None) -> None:
        self.calls["part"] = self.calls.get("part", 0) + 1
        _ = payload["required_key"]["nested"]  # a bug: crashes on a value its schema allows

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        return Diff.empty()


def test_a_value_the_schema_refused_never_reaches_the_hook(make_wm, database) -> None:
    Strict.calls = {}
    wm = make_wm(db=database, registry=Registry([Strict()]))
    wm.propose("test.strict", {})
    lease = wm.agent.checkout("agent-1")
    with pytest.raises(ValidationFailed) as caught:
        wm.agent.submit(lease, {"wrong": 1})
    [error] = caught.value.details  # the schema's error alone, no KeyError from the hook
    assert (error["path"], error["validator"]) == ("result", "required"), error
    with pytest.raises(ValidationFailed) as caught:
        wm.agent.submit_part(lease, "a", {"other": 1})
    assert [e["validator"] for e in caught.value.details] == ["required"]
    assert Strict.calls == {}
    # a value the schema passed always reaches the hook
    with pytest.raises(ValidationFailed) as caught:
        wm.agent.submit(lease, {"answer": 0})
    assert [(e["path"], e["validator"]) for e in caught.value.details] == [
        ("result.answer", "custom")
    ]
    assert Strict.calls == {"submission": 1}
    assert wm.queries.item(lease.item_id)["state"] == "leased"
    assert wm.agent.submit(lease, {"answer": 1}).order_submitted
    assert Strict.calls == {"submission": 2}


def test_a_crashing_hook_is_a_validation_error_and_stores_nothing(make_wm, database) -> None:
    wm = make_wm(db=database, registry=Registry([Strict()]))
    wm.propose("test.strict", {})
    lease = wm.agent.checkout("agent-1")
    with pytest.raises(ValidationFailed) as caught:
        wm.agent.submit_part(lease, "a", {"required_key": 1})
    [error] = caught.value.details
    assert error["validator"] == "hook_error" and "TypeError" in error["message"]
    stored = wm.queries.parts(lease.item_id)["parts"]
    assert all(part["status"] == "rejected" for part in stored), stored  # none validated
    wm.agent.submit_part(lease, "a", {"required_key": {"nested": 1}})
    assert wm.agent.finalize(lease).item["state"] == "submitted"


def test_a_hook_calling_sys_exit_is_a_hook_error_not_a_server_error(make_wm, database) -> None:
    """``sys.exit()`` in a validation hook passed ``except Exception``: a plain-text HTTP
    500 (a type author's pass)."""

    class Exits(Strict):
        def validate_submission(self, item: ItemView, result: JSON) -> None:
            raise SystemExit(1)

    wm = make_wm(db=database, registry=Registry([Exits()]))
    wm.propose("test.strict", {})
    lease = wm.agent.checkout("agent-1")
    with pytest.raises(ValidationFailed) as caught:
        wm.agent.submit(lease, {"answer": 1})
    [error] = caught.value.details
    assert error["validator"] == "hook_error" and "SystemExit" in error["message"]


def test_an_assemble_returning_a_list_is_the_types_hook_error(make_wm, database) -> None:
    """It was ``assembled_result: must be an object`` (validator ``type``): the agent's
    mistake, so a consumer agent failed the item and its order for good without naming
    ``assemble()`` (a type author's pass)."""
    from tests.support.types import Parts

    class Listing(Parts):
        def assemble(self, item: ItemView, parts: list[Any]) -> JSON:
            return list(parts)  # type: ignore[return-value]

    wm = make_wm(db=database, registry=Registry([Listing()]))
    wm.propose("test.parts", {})
    lease = wm.agent.checkout("agent-1")
    wm.agent.submit_part(lease, "a", {"v": 1})
    wm.agent.submit_part(lease, "b", {})
    with pytest.raises(ValidationFailed) as caught:
        wm.agent.finalize(lease)
    [error] = caught.value.details
    assert error["validator"] == "hook_error" and "assemble() returned list" in error["message"]


def test_a_crashing_plan_is_named_in_the_error(make_wm, database, caplog) -> None:
    """It was "the order type's check raised KeyError", whichever hook it was."""

    class Plans(Strict):
        def plan(self, order: OrderView) -> list[ItemSpec]:
            return [ItemSpec(input=order.payload["company"])]

    wm = make_wm(db=database, registry=Registry([Plans()]))
    with pytest.raises(ValidationFailed) as caught:
        wm.propose("test.strict", {})
    assert caught.value.message == "the order type's plan() raised KeyError"
    assert "order-type hook plan() failed at plan" in caplog.text


class Plain(OrderType):
    """Hooks that refuse as the README's example does: ``ValidationFailed("why")`` alone,
    or at ``$.field`` of the value they were given."""

    type = "test.plain"

    def plan(self, order: OrderView) -> list[ItemSpec]:
        return [ItemSpec(input={}, parts_required=["p"])]

    def validate_submission(self, item: ItemView, result: JSON) -> None:
        raise ValidationFailed("the answer must cite a source")

    def validate_part(self, item: ItemView, part_key: str, payload: JSON, seq: int | None) -> None:
        if payload.get("veto"):
            raise ValidationFailed.at("$.veto", "part vetoed", "custom")

    def validate_assembled(self, item: ItemView, assembled: JSON) -> None:
        raise ValidationFailed("not enough")

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        return Diff.empty()


def test_a_hooks_plain_refusal_says_where_the_value_stands(make_wm) -> None:
    """A hook's ``ValidationFailed("why")`` was detailed at ``$`` under the message "in
    payload[p]": the details now say where the value stands in the request, as the
    schema's errors do (``$.veto`` of a part's payload is ``payload[p].veto``)."""
    wm = make_wm(db="sqlite", registry=Registry([Plain()]))
    wm.propose("test.plain", {})
    lease = wm.agent.checkout("agent-1")
    refusals = {
        "result": lambda: wm.agent.submit(lease, {"answer": 1}),
        "payload[p].veto": lambda: wm.agent.submit_part(lease, "p", {"veto": True}),
    }
    for path, call in refusals.items():
        with pytest.raises(ValidationFailed) as caught:
            call()
        assert [e["path"] for e in caught.value.details] == [path], caught.value.details
    wm.agent.submit_part(lease, "p", {"veto": False})
    with pytest.raises(ValidationFailed) as caught:
        wm.agent.finalize(lease)
    assert [e["path"] for e in caught.value.details] == ["assembled_result"]
