"""An order type's own mistakes, met while an agent's work is checked: a 422
``hook_error`` naming where (as any of the type's hooks that fails), never a 500."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support.types import Simple
from workmanager import Registry, WorkManager
from workmanager.errors import ValidationFailed


class BadResultSchema(Simple):
    type = "test.bad-result-schema"

    def result_schema(self, item: Any) -> Any:
        return {"type": "nonsense"}  # not a JSON Schema type


class DanglingRef(Simple):
    type = "test.dangling-ref"

    def result_schema(self, item: Any) -> Any:
        return {"$ref": "#/$defs/missing"}  # valid as a schema; fails only when used


class BadEvidenceSchema(Simple):
    type = "test.bad-evidence-schema"

    def evidence_schema(self, item: Any) -> Any:
        return {"required": "source"}  # must be a list


@pytest.mark.parametrize(
    ("order_type", "path", "extra"),
    [
        ("test.bad-result-schema", "result", {}),
        ("test.dangling-ref", "result", {}),
        ("test.bad-evidence-schema", "evidence", {"evidence": {"source": "x"}}),
    ],
)
def test_a_schema_that_is_not_one_is_the_types_hook_error(
    make_wm: Callable[..., WorkManager], order_type: str, path: str, extra: dict[str, Any]
) -> None:
    """Found by an adversarial pass: an invalid evidence schema was HTTP 500
    ``configuration_error`` on every submit (SPEC: a 5xx other than 503 is a bug)."""
    wm = make_wm(registry=Registry([BadResultSchema(), DanglingRef(), BadEvidenceSchema()]))
    order_id = wm.propose(order_type, {})
    lease = wm.agent.checkout("a", order_id=order_id)
    assert lease is not None
    with pytest.raises(ValidationFailed) as raised:
        wm.agent.submit(lease, {"answer": 1}, **extra)
    assert raised.value.http_status == 422
    [problem] = raised.value.details
    assert problem["path"] == path and problem["validator"] == "hook_error"
    assert "schema is invalid" in problem["message"]
    assert wm.queries.item(lease.item_id)["state"] == "leased"  # nothing changed
