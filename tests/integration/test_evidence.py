"""Evidence standards (issue 17): ``evidence_schema`` / ``part_evidence_schema`` and
``requires_evidence`` checked on submit and submit-part through the one rule of
``workmanager/checks.py`` (schemas first, the hook only when all passed), on SQLite (the
ORM path) and on PostgreSQL (the SQL path), with the lease carrying its item and without."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import pytest

from workmanager import ApplyContext, Diff, ItemSpec, OrderType, OrderView, Registry
from workmanager.errors import ValidationFailed
from workmanager.types import JSON, ItemView, Lease

EVIDENCE = {
    "type": "object",
    "required": ["source"],
    "properties": {"source": {"type": "string", "format": "uri"}},
}


class Proven(OrderType):
    """Every result and part must carry evidence of a fixed shape."""

    type = "test.proven"
    requires_evidence = True
    calls: ClassVar[dict[str, int]] = {}

    def plan(self, order: OrderView) -> list[ItemSpec]:
        return [ItemSpec(input={}, parts_required=["a"])]

    def result_schema(self, item: ItemView) -> JSON:
        return {"type": "object", "required": ["answer"]}

    def evidence_schema(self, item: ItemView) -> JSON:
        return EVIDENCE

    def validate_submission(self, item: ItemView, result: JSON) -> None:
        self.calls["submission"] = self.calls.get("submission", 0) + 1

    def part_evidence_schema(self, item: ItemView, part_key: str) -> JSON:
        return {"type": "object", "required": ["page"], "properties": {"page": {"type": "integer"}}}

    def validate_part(self, item: ItemView, part_key: str, payload: JSON, seq: int | None) -> None:
        self.calls["part"] = self.calls.get("part", 0) + 1

    def apply(self, order: OrderView, ctx: ApplyContext) -> Diff:
        return Diff.empty()


class Optional_(Proven):
    """The same schemas, evidence optional: its schema applies only when some is sent."""

    type = "test.proven-optional"
    requires_evidence = False


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def wm(request: pytest.FixtureRequest, make_wm: Any) -> Any:
    Proven.calls = {}
    registry = Registry([Proven(), Optional_()])
    return make_wm(db=request.param, backend="database", registry=registry)


def refused(call: Any) -> list[tuple[str, str]]:
    with pytest.raises(ValidationFailed) as caught:
        call()
    return [(e["path"], e["validator"]) for e in caught.value.details]


def without_view(lease: Lease) -> Lease:
    """The lease as an HTTP caller presents it (no item carried): the locked path."""
    return dataclasses.replace(lease, item=None)


def test_submit_checks_evidence_beside_the_result(wm: Any) -> None:
    wm.propose("test.proven", {})
    lease = wm.agent.checkout("agent-1")
    for presented in (lease, without_view(lease)):
        assert refused(lambda p=presented: wm.agent.submit(p, {"answer": 1})) == [
            ("evidence", "required")
        ]
        assert refused(
            lambda p=presented: wm.agent.submit(p, {"answer": 1}, evidence={"source": 5})
        ) == [("evidence.source", "type")]
        # both refused: both sets of errors, and the hook never ran
        assert refused(lambda p=presented: wm.agent.submit(p, {}, evidence={})) == [
            ("result", "required"),
            ("evidence", "required"),
        ]
    assert Proven.calls == {}
    assert wm.queries.item(lease.item_id)["state"] == "leased"
    beat = wm.agent.heartbeat(lease)  # a renewal carries the item too: the hot path again
    assert refused(lambda: wm.agent.submit(beat, {"answer": 1})) == [("evidence", "required")]
    proof = {"source": "https://example.org/doc"}
    outcome = wm.agent.submit(beat, {"answer": 1}, evidence=proof, notes="checked")
    assert outcome.item["state"] == "submitted" and Proven.calls == {"submission": 1}
    events = wm.queries.events(lease.order_id)
    [event] = [e for e in events if e["event"] == "submitted" and e["item_id"]]
    assert event["payload"]["evidence"] == proof


def test_submit_part_stores_a_part_whose_evidence_is_refused_as_rejected(wm: Any) -> None:
    wm.propose("test.proven", {})
    lease = wm.agent.checkout("agent-1")
    assert refused(lambda: wm.agent.submit_part(lease, "a", {"x": 1})) == [("evidence", "required")]
    assert refused(lambda: wm.agent.submit_part(lease, "a", {"x": 1}, evidence={"page": "2"})) == [
        ("evidence.page", "type")
    ]
    assert Proven.calls == {}
    [part] = wm.queries.parts(lease.item_id)["parts"]
    assert part["status"] == "rejected" and part["evidence"] == {"page": "2"}
    wm.agent.submit_part(lease, "a", {"x": 1}, evidence={"page": 2})
    [part] = wm.queries.parts(lease.item_id)["parts"]
    assert part["status"] == "validated" and part["evidence"] == {"page": 2}
    assert Proven.calls == {"part": 1}
    assert wm.agent.finalize(lease).item["state"] == "submitted"  # finalize takes none


def test_optional_evidence_is_checked_only_when_sent(wm: Any) -> None:
    wm.propose("test.proven-optional", {})
    lease = wm.agent.checkout("agent-1")
    assert refused(lambda: wm.agent.submit(lease, {"answer": 1}, evidence={"source": 1})) == [
        ("evidence.source", "type")
    ]
    wm.agent.submit_part(lease, "a", {"x": 1})  # none sent: fine
    assert wm.agent.submit(lease, {"answer": 1}).item["state"] == "submitted"


def test_orders_show_and_the_console_show_the_evidence(make_wm: Any) -> None:
    import json

    from click.testing import CliRunner
    from fastapi.testclient import TestClient

    from tests.ui.test_console import sign_in
    from workmanager.api import create_app
    from workmanager.cli.app import Env, cli
    from workmanager.services.tokens import TokenService

    wm = make_wm(db="sqlite", backend="database", registry=Registry([Proven()]))
    order_id = wm.propose("test.proven", {})
    lease = wm.agent.checkout("agent-1")
    wm.agent.submit_part(lease, "a", {"x": 1}, evidence={"page": 41}, notes="part-note")
    wm.agent.submit(lease, {"answer": 1}, evidence={"source": "https://e.org/p"}, notes="n-1")

    def show(*extra: str) -> str:
        result = CliRunner().invoke(cli, ["orders", "show", str(order_id), *extra], obj=Env(wm))
        assert result.exit_code == 0, result.output
        return result.output

    text = show()
    assert "evidence" in text and "https://e.org/p" in text and "41" in text
    assert "part a" in text and "part-note" in text
    rows = json.loads(show("--json"))["evidence"]
    assert [(r["source"], r["evidence"]) for r in rows] == [
        ("part a (validated)", {"page": 41}),
        ("result", {"source": "https://e.org/p"}),
    ]
    token, _ = TokenService(wm.ctx).create("viewer", "view")
    page = sign_in(TestClient(create_app(wm), follow_redirects=False), token)
    html = page.get(f"/ui/orders/{order_id}").text
    assert "https://e.org/p" in html and "part-note" in html
    assert html.count('class="evidence"') == 2  # the result's and the part's


def test_http_and_mcp_answer_422_with_the_evidence_errors(make_wm: Any) -> None:
    import anyio
    from fastapi.testclient import TestClient
    from mcp import Client

    from tests.api.test_mcp_idempotency import result
    from workmanager.api import create_app
    from workmanager.mcp.server import build_server
    from workmanager.services.tokens import TokenService

    wm = make_wm(db="sqlite", backend="database", registry=Registry([Proven()]))
    wm.propose("test.proven", {})
    wm.propose("test.proven", {})
    token, _ = TokenService(wm.ctx).create("bot", "checkout,submit")
    http = TestClient(create_app(wm))
    auth = {"Authorization": f"Bearer {token}", "X-Agent-ID": "bot-1"}
    leased = http.post("/agent/work/checkout", headers={**auth, "Idempotency-Key": "c1"}).json()
    headers = {**auth, "X-Lease-Token": leased["item"]["lease_token"], "Idempotency-Key": "s1"}
    body = {"result": {"answer": 1}, "evidence": {"source": 7}}
    answer = http.post(
        f"/agent/work/items/{leased['item']['id']}/submit", json=body, headers=headers
    )
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "validation_failed"
    assert [(d["path"], d["validator"]) for d in error["details"]] == [("evidence.source", "type")]

    async def main() -> dict[str, Any]:
        async with Client(build_server(wm)) as client:
            got = result(await client.call_tool("work.checkout", {"agent_id": "mcp-a"}))
            lease = {"item_id": got["item"]["id"], "lease_token": got["item"]["lease_token"]}
            args = {**lease, "agent_id": "mcp-a", "result": {"answer": 1}}
            return result(await client.call_tool("work.submit", args))

    refused_ = anyio.run(main)
    assert refused_["success"] is False and refused_["code"] == "validation_failed"
    assert [d["path"] for d in refused_["details"]] == ["evidence"]
