"""Order-type checks: the schema and the custom hook both run, and a crashing hook is a
422 that changes nothing (SPEC §4.1, §6.1)."""

from __future__ import annotations

import pytest

from workmanager import ApplyContext, Diff, ItemSpec, OrderType, OrderView, Registry
from workmanager.errors import ValidationFailed
from workmanager.types import JSON, ItemView


class Strict(OrderType):
    type = "test.strict"
    hook_calls = 0

    def plan(self, order: OrderView) -> list[ItemSpec]:
        return [ItemSpec(input={}, parts_required=["a"])]

    def result_schema(self, item: ItemView) -> JSON:
        return {"type": "object", "required": ["answer"]}

    def validate_submission(self, item: ItemView, result: JSON) -> None:
        type(self).hook_calls += 1
        if "source" not in result:
            raise ValidationFailed(
                [{"path": "result.source", "message": "cite a source", "validator": "custom"}]
            )

    def validate_part(self, item: ItemView, part_key: str, payload: JSON, seq: int | None) -> None:
        _ = payload["required_key"]  # a bug in the order type: KeyError on bad input

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        return Diff.empty()


def test_schema_and_hook_errors_are_reported_together(make_wm, database) -> None:
    wm = make_wm(db=database, registry=Registry([Strict()]))
    wm.propose("test.strict", {})
    lease = wm.agent.checkout("agent-1")
    with pytest.raises(ValidationFailed) as caught:
        wm.agent.submit(lease, {"wrong": 1})
    paths = {e["path"] for e in caught.value.details}
    assert paths == {"result", "result.source"}  # schema (missing answer) and hook, both
    assert Strict.hook_calls >= 1
    assert wm.queries.item(lease.item_id)["state"] == "leased"
    wm.agent.submit(lease, {"answer": 1, "source": "10-K"})


def test_a_crashing_hook_is_a_validation_error_and_stores_nothing(make_wm, database) -> None:
    wm = make_wm(db=database, registry=Registry([Strict()]))
    wm.propose("test.strict", {})
    lease = wm.agent.checkout("agent-1")
    with pytest.raises(ValidationFailed) as caught:
        wm.agent.submit_part(lease, "a", {"other": 1})
    [error] = caught.value.details
    assert error["validator"] == "hook_error" and "KeyError" in error["message"]
    assert wm.queries.parts(lease.item_id)["parts"] == []
    wm.agent.submit_part(lease, "a", {"required_key": 1})
    assert wm.agent.finalize(lease).item["state"] == "submitted"
