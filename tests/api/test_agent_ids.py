"""An agent id reads as what it is, on every way in (HTTP, MCP, Python, ``tokens
create``): found by an isolation pass, ``X-Agent-ID: agentA1`` + a zero-width space was
accepted from an unbound token and shown on the console as the bound agent ``agentA1``;
an idempotency pass found that ``\\x1f`` (the key hash's separator) in an MCP agent id
made two agents' keys one, the second answered with the first's sealed lease (a 500)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.test_mcp_idempotency import Call, session
from tests.support.types import Simple
from workmanager import Registry, WorkManager
from workmanager.api import create_app
from workmanager.errors import InvalidAgentMetadata, ValidationFailed
from workmanager.services.tokens import TokenService

UNREADABLE = [
    "agentA1\u200b",  # zero-width space
    "\u202eagentA1",  # right-to-left override
    "agent-a\x1fX",  # the unit separator
    "agent\tb",
    "agent\ue000",  # private use
    "agentA1\u3164",  # a Hangul filler: a letter that draws nothing
    "agentA1\u2800",  # the braille blank
    "agent\u00a0A1",  # a no-break space
]
WHY = (
    "no control, format (zero-width, bidi), blank, unassigned or private-use characters,"
    " and no space but the plain one"
)


def build(make_wm: Any) -> WorkManager:
    wm: WorkManager = make_wm(registry=Registry([Simple()]))
    return wm


@pytest.mark.parametrize("agent_id", UNREADABLE)
def test_every_way_in_refuses_an_id_that_does_not_read_as_it_is(
    make_wm: Any, agent_id: str
) -> None:
    wm = build(make_wm)
    order_id = wm.propose("test.simple", {})
    with pytest.raises(InvalidAgentMetadata) as python:
        wm.agent.checkout(agent_id, order_id=order_id)
    assert python.value.details == [{"field": "agent_id", "message": WHY}]
    tokens = TokenService(wm.ctx)
    for named in ({"name": agent_id}, {"name": "t-ok", "agent_id": agent_id}):
        with pytest.raises(ValidationFailed) as refused:
            tokens.create(scopes="checkout", **named)
        assert WHY in refused.value.details[0]["message"], refused.value.details
        assert WHY in refused.value.message  # the one line the CLI prints says why too
    token, _ = tokens.create("unbound", "checkout,view")
    http = TestClient(create_app(wm))
    headers = [
        ("Authorization", f"Bearer {token}"),
        ("X-Idempotency-Key", "k-1"),
        ("X-Agent-ID", agent_id.encode()),
    ]
    if "\t" not in agent_id and "\x1f" not in agent_id:  # h11 refuses those in headers
        answer = http.post(f"/agent/work/orders/{order_id}/checkout", headers=headers)
        assert answer.status_code == 400, answer.text
        said = answer.json()["error"]
        assert said["code"] == "invalid_agent_metadata"
        assert said["details"] == [{"field": "agent_id", "message": WHY}]

    async def script(call: Call) -> dict[str, Any]:
        return await call("work.checkout", agent_id=agent_id, idempotency_key="K")

    said = session(wm, script)
    assert said["code"] == "invalid_agent_metadata", said
    assert wm.queries.order(order_id)["items"][0]["state"] == "queued"  # nothing leased


def test_ids_in_any_script_and_with_spaces_inside_still_work(make_wm: Any) -> None:
    from workmanager.types import agent_id_problem

    assert (
        agent_id_problem(" agent-a")
        == agent_id_problem("agent-a ")
        == ("no spaces at its start or end")
    )
    wm = build(make_wm)
    for agent_id in ("агент-7", "エージェント", "my agent 1", "a.b@c/d", "café-é", "नमस्ते"):
        order_id = wm.propose("test.simple", {})
        lease = wm.agent.checkout(agent_id, order_id=order_id)
        assert lease is not None and lease.agent_id == agent_id
        TokenService(wm.ctx).create(f"t-{agent_id}", "checkout", agent_id=agent_id)
