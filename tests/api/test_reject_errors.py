"""A reject's ``errors`` refused alike on every surface (an approvals pass): the CLI and MCP
said "must be a list of at least one {code, message, field?} (minItems)" at ``errors`` for a
list holding one entry with an empty code, where HTTP names ``errors.0.code``. The
services' check now names each wrong field as HTTP's body check does."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.types import Simple
from workmanager import Registry
from workmanager.api import create_app
from workmanager.errors import ValidationFailed
from workmanager.services.inputs import reject_errors
from workmanager.services.tokens import TokenService

BAD: list[Any] = [
    [{"code": ""}],
    [{"code": "x", "message": 5}],
    [],
    "x",
    [5],
    [{"code": "x", "message": "m", "field": 3}],
    [{"code": "ok", "message": "fine"}, {"message": "no code"}],
]


def test_each_wrong_field_is_named_as_http_names_it(make_wm: Any) -> None:
    wm = make_wm(db="sqlite", registry=Registry([Simple()]))
    token, _ = TokenService(wm.ctx).create("reviewer", "reject,view")
    order_id = wm.propose("test.simple", {})
    lease = wm.agent.checkout("agent-1", order_id=order_id)
    wm.agent.submit(lease, {"answer": 1})
    http = TestClient(create_app(wm))
    for n, bad in enumerate(BAD):
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": f"k{n}"}
        answer = http.post(
            f"/agent/work/orders/{order_id}/reject", json={"errors": bad}, headers=headers
        )
        assert answer.status_code == 422, answer.text
        over_http = [d["path"] for d in answer.json()["error"]["details"]]
        with pytest.raises(ValidationFailed) as refused:
            reject_errors(bad)  # what the CLI, MCP and the library call
        assert [d["path"] for d in refused.value.details] == over_http, bad
    assert wm.queries.order(order_id)["state"] == "submitted"  # nothing was rejected
    assert reject_errors([{"code": "c", "message": "m", "field": None, "x": 1}]) == [
        {"code": "c", "message": "m"}
    ]


@pytest.mark.parametrize("code", ["   ", "a\nb", "tab\there", "\x1b[31mred"])
def test_a_blank_or_unprintable_error_code_is_refused_on_fail_and_reject(
    make_wm: Any, code: str
) -> None:
    """A parts-and-fail pass: ``fail`` with ``error.code`` ``"   "`` or a line break in it
    was stored on the item and the order and counted as a code; the reject's codes too."""
    wm = make_wm(db="sqlite", registry=Registry([Simple()]))
    order_id = wm.propose("test.simple", {})
    lease = wm.agent.checkout("agent-1", order_id=order_id)
    with pytest.raises(ValidationFailed) as refused:
        wm.agent.fail(lease, {"code": code, "message": "m"})
    assert refused.value.details[0]["path"] == "error"
    assert wm.queries.item(lease.item_id)["state"] == "leased"  # nothing changed
    with pytest.raises(ValidationFailed) as refused:
        reject_errors([{"code": code, "message": "m"}])
    assert refused.value.details[0]["path"] == "errors.0.code"
    wm.agent.fail(lease, {"code": "rate limited", "message": "m"})  # spaces inside are text
