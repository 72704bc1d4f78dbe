"""The lease token presented is part of an idempotency key's fingerprint (issue 11, item 8).

The same key and body under another lease token is another request: 422
``idempotency_key_reused``, never a replay of the first answer. In-process, over HTTP
(``X-Lease-Token``) and MCP (``lease_token``), on SQLite and on PostgreSQL's hot path, with
database and Redis leases.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.test_mcp_idempotency import Call, session
from tests.support.types import Simple
from workmanager import Registry, WorkManager
from workmanager.api import create_app

PREFIX = "/agent/work"
REWORK = {"errors": [{"code": "redo", "message": "again"}], "allow_rework": True}


PATHS = [
    pytest.param(("sqlite", "database"), id="sqlite-database"),
    pytest.param(("sqlite", "redis"), id="sqlite-redis", marks=pytest.mark.redis),
    pytest.param(("postgres", "database"), id="postgres-database", marks=pytest.mark.postgres),
    pytest.param(
        ("postgres", "redis"), id="postgres-redis", marks=[pytest.mark.postgres, pytest.mark.redis]
    ),
]


@pytest.fixture(params=PATHS)
def wm(request: pytest.FixtureRequest, make_wm: Any) -> WorkManager:
    db, backend = request.param
    return make_wm(  # type: ignore[no-any-return]
        db=db, backend=backend, registry=Registry([Simple()]), auth="none"
    )


def key(value: str | None = None) -> dict[str, str]:
    return {"X-Idempotency-Key": value or uuid.uuid4().hex}


def test_http_same_key_and_body_under_another_lease_token_is_refused(wm: WorkManager) -> None:
    client = TestClient(create_app(wm), headers={"X-Agent-ID": "agent-1"})
    proposed = client.post(
        PREFIX + "/propose", json={"type": "test.simple", "payload": {}}, headers=key()
    )
    order_id = proposed.json()["order"]["id"]

    def checkout() -> tuple[str, str]:
        item = client.post(PREFIX + "/checkout", json={}).json()["item"]
        return item["id"], str(item["lease_token"])

    def submit(item_id: str, token: str, idem: str) -> Any:
        return client.post(
            f"{PREFIX}/items/{item_id}/submit",
            json={"result": {"answer": 1}},
            headers={"X-Lease-Token": token, **key(idem)},
        )

    item_id, first_token = checkout()
    first = submit(item_id, first_token, "K")
    assert first.status_code == 202, first.text
    replay = submit(item_id, first_token, "K")
    assert replay.status_code == 202 and replay.headers.get("Idempotent-Replayed") == "true"
    wrong = submit(item_id, first_token + "0", "K")
    assert wrong.status_code == 422 and "Idempotent-Replayed" not in wrong.headers
    assert wrong.json()["error"]["code"] == "idempotency_key_reused"

    rejected = client.post(f"{PREFIX}/orders/{order_id}/reject", json=REWORK, headers=key())
    assert rejected.status_code == 200, rejected.text
    again_id, second_token = checkout()
    assert again_id == item_id and second_token != first_token
    stale = submit(item_id, second_token, "K")  # the old key, the new lease
    assert stale.status_code == 422, stale.text
    assert stale.json()["error"]["code"] == "idempotency_key_reused"
    fresh = submit(item_id, second_token, "K2")
    assert fresh.status_code == 202 and fresh.json()["state"] == "submitted"


def test_mcp_same_key_and_arguments_under_another_lease_token_are_refused(
    wm: WorkManager,
) -> None:
    async def script(call: Call) -> dict[str, Any]:
        order = (await call("work.propose", type="test.simple", payload={}))["order"]
        item = (await call("work.checkout", agent_id="mcp-a"))["item"]
        args = {"item_id": item["id"], "agent_id": "mcp-a", "result": {"answer": 1}}
        token = str(item["lease_token"])
        first = await call("work.submit", lease_token=token, idempotency_key="K", **args)
        wrong = await call("work.submit", lease_token=token + "0", idempotency_key="K", **args)
        await call("work.reject", order_id=order["id"], **REWORK)
        again = (await call("work.checkout", agent_id="mcp-a"))["item"]
        new = str(again["lease_token"])
        stale = await call("work.submit", lease_token=new, idempotency_key="K", **args)
        fresh = await call("work.submit", lease_token=new, idempotency_key="K2", **args)
        return {"first": first, "wrong": wrong, "stale": stale, "fresh": fresh, "new": new}

    out = session(wm, script)
    assert out["first"]["success"] and "replayed" not in out["first"]
    for name in ("wrong", "stale"):
        assert out[name]["success"] is False, out[name]
        assert out[name]["code"] == "idempotency_key_reused"
    assert out["fresh"]["success"] and out["fresh"]["state"] == "submitted"
