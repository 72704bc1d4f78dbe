"""An HTTP lease call on PostgreSQL takes the store's one-statement path (issue 18).

The lease an HTTP request presents is read whole, so it carries the item's view, as a
Python agent's lease from its own checkout does: submit, fail and a part validate against
it and write in one guarded statement that also marks the request's idempotency key. The
locked path (``BEGIN``, the item locked and read, then the write) is patched to fail the
test, so taking it is seen; so is a lease read of its own (the lease is read with the
key's claim, in the same round trip).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.support.types import Simple
from workmanager import Registry, WorkManager
from workmanager.api import create_app
from workmanager.db.models import IdempotencyKey
from workmanager.db.postgres import endings, parts, submit
from workmanager.db.postgres.requests import PostgresRequestStore

PREFIX = "/agent/work"

pytestmark = pytest.mark.postgres


@pytest.fixture(
    params=[
        pytest.param("database", id="database"),
        pytest.param("redis", id="redis", marks=pytest.mark.redis),
    ]
)
def wm(request: pytest.FixtureRequest, make_wm: Any) -> WorkManager:
    return make_wm(  # type: ignore[no-any-return]
        db="postgres", backend=request.param, registry=Registry([Simple()]), auth="none"
    )


def _no_locked_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("the locked path was taken")

    for module in (endings, parts, submit):
        monkeypatch.setattr(module, "lock_item", refuse)
    # and the lease was read with the key's claim, not on its own
    monkeypatch.setattr(PostgresRequestStore, "lease_row", refuse)


CALLS = {
    "submit": ("submit", {"result": {"answer": 1}}, 202, "submitted"),
    "fail": ("fail", {"error": {"code": "x", "message": "y"}}, 200, "queued"),
    "part": ("parts", {"part_key": "a", "payload": {"v": 1}}, 202, "leased"),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_keyed_http_lease_call_writes_in_one_statement(
    wm: WorkManager, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    client = TestClient(create_app(wm), headers={"X-Agent-ID": "agent-1"})
    wm.orders.propose("test.simple", {})
    item = client.post(PREFIX + "/checkout", json={}).json()["item"]
    _no_locked_path(monkeypatch)
    path, body, status, state = CALLS[call]
    answer = client.post(
        f"{PREFIX}/items/{item['id']}/{path}",
        json=body,
        headers={"X-Lease-Token": str(item["lease_token"]), "X-Idempotency-Key": "k1"},
    )
    assert answer.status_code == status, answer.text
    assert wm.queries.item(uuid.UUID(item["id"]))["state"] == state
    with wm.db.transaction() as s:
        (row,) = s.scalars(select(IdempotencyKey).where(IdempotencyKey.endpoint != "checkout"))
        assert row.status == "done" and row.response_status == status


@pytest.mark.parametrize("call", sorted(CALLS))
def test_an_ended_lease_is_refused_as_a_lease_error_first(wm: WorkManager, call: str) -> None:
    """The request's read of the row shows an ended lease (released here): the lease is
    checked before the item's state or the part's hooks, as SPEC §4.4 has it (409
    ``lease_expired``, not ``illegal_state_transition``)."""
    client = TestClient(create_app(wm), headers={"X-Agent-ID": "agent-1"})
    wm.orders.propose("test.simple", {})
    item = client.post(PREFIX + "/checkout", json={}).json()["item"]
    headers = {"X-Lease-Token": str(item["lease_token"])}
    released = client.post(f"{PREFIX}/items/{item['id']}/release", headers=headers)
    assert released.status_code == 200, released.text
    path, body, _, _ = CALLS[call]
    answer = client.post(
        f"{PREFIX}/items/{item['id']}/{path}",
        json=body,
        headers={**headers, "X-Idempotency-Key": "k2"},
    )
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"]["code"] == "lease_expired", answer.text
    assert wm.queries.item(uuid.UUID(item["id"]))["state"] == "queued"


@pytest.mark.parametrize("call", sorted(CALLS))
def test_an_http_lease_call_reads_its_lease_with_its_token(
    make_wm: Any, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    """With authentication on, a lease call's token and the lease it presents are read in
    one statement (``token_reading``): an unkeyed heartbeat is two round trips with its
    write, and a keyed call's claim reads no lease again. A revoked token is still
    refused on the next request."""
    from workmanager.services.tokens import TokenService

    wm = make_wm(db="postgres", backend="database", registry=Registry([Simple()]))
    tokens = TokenService(wm.ctx)
    secret, _ = tokens.create("agent-token", ["checkout", "submit"], agent_id="agent-1")
    client = TestClient(create_app(wm), headers={"Authorization": f"Bearer {secret}"})
    wm.orders.propose("test.simple", {})
    item = client.post(PREFIX + "/checkout", json={}).json()["item"]
    path, body, status, state = CALLS[call]
    url, lease = f"{PREFIX}/items/{item['id']}", {"X-Lease-Token": str(item["lease_token"])}
    read_alone: list[int] = []
    monkeypatch.setattr(
        PostgresRequestStore, "lease_row", lambda *_: read_alone.append(1)
    )  # reading the lease on its own is seen
    beat = client.post(url + "/heartbeat", json={}, headers=lease)
    assert beat.status_code == 200, beat.text
    keyed = lease | {"X-Idempotency-Key": "k1"}
    answer = client.post(f"{url}/{path}", json=body, headers=keyed)
    assert answer.status_code == status, answer.text
    assert read_alone == []
    beaten = "in_progress" if state == "leased" else state  # a part leaves it as the beat did
    assert wm.queries.item(uuid.UUID(item["id"]))["state"] == beaten
    tokens.revoke("agent-token")
    refused = client.post(url + "/heartbeat", json={}, headers=lease)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthenticated"


def test_an_mcp_lease_tool_reads_its_lease_with_its_token(
    make_wm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same over MCP's HTTP transport: a lease tool names its item to ``Tools.call``,
    whose authentication reads the token and the item in one statement."""
    from types import SimpleNamespace

    from workmanager.mcp.calls import Tools
    from workmanager.services.tokens import TokenService
    from workmanager.surface.callers import AgentMetadata

    wm = make_wm(db="postgres", backend="database", registry=Registry([Simple()]))
    secret, _ = TokenService(wm.ctx).create("mcp-agent", ["checkout"], agent_id="agent-1")
    wm.orders.propose("test.simple", {})
    lease = wm.agent.checkout("agent-1")
    assert lease is not None
    tools = Tools(wm, require_token=True)
    ctx: Any = SimpleNamespace(headers={"authorization": f"Bearer {secret}"})
    read_alone: list[int] = []
    monkeypatch.setattr(PostgresRequestStore, "lease_row", lambda *_: read_alone.append(1))
    item_id = str(lease.item_id)
    beat = tools.call(
        ctx,
        AgentMetadata("agent-1"),
        lambda c: tools.ops.heartbeat(c, item_id, lease.token),
        lease=item_id,
    )
    assert beat.get("success", True) is not False and "lease_expires_at" in beat, beat
    assert read_alone == []
    assert wm.queries.item(lease.item_id)["state"] == "in_progress"
