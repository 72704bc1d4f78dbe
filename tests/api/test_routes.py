"""Every route of SPEC §6 on a real server, both lease backends: success shapes."""

from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy import select

from tests.api.conftest import PREFIX, Server, checkout, idem, lease_headers, propose
from workmanager.db.models import Provenance
from workmanager.db.session import Database

LEASE_KEYS = {
    "id",
    "order_id",
    "type",
    "input",
    "lease_token",
    "lease_expires_at",
    "heartbeat_every_seconds",
    "max_attempts",
    "current_attempt",
}


def test_health_ready_and_openapi(server: Server) -> None:
    c = server.client(None)
    assert c.get("/healthz").json() == {"status": "ok"}
    ready = c.get("/readyz")
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert checks["database"] == "ok"
    assert ("redis" in checks) == (server.backend == "redis")
    spec = c.get("/openapi.json").json()
    paths = set(spec["paths"])
    for path in (
        "/propose",
        "/orders",
        "/orders/{order_id}",
        "/checkout",
        "/orders/{order_id}/checkout",
        "/items/{item_id}/heartbeat",
        "/items/{item_id}/submit",
        "/items/{item_id}/parts",
        "/items/{item_id}/finalize",
        "/items/{item_id}/release",
        "/items/{item_id}/fail",
        "/orders/{order_id}/approve",
        "/orders/{order_id}/reject",
        "/orders/{order_id}/retry",
        "/items/{item_id}/logs",
    ):
        assert PREFIX + path in paths


def test_head_answers_as_get_without_a_body(server: Server) -> None:
    """``HEAD`` on a ``GET`` route was 405 ``method_not_allowed`` but on ``/healthz`` and
    ``/readyz``, which declared their own."""
    anonymous, admin = server.client(None), server.client()
    for client, path, status in (
        (anonymous, "/healthz", 200),
        (anonymous, "/readyz", 200),
        (admin, f"{PREFIX}/orders", 200),
        (anonymous, f"{PREFIX}/orders", 401),
    ):
        got, head = client.get(path), client.head(path)
        assert (head.status_code, got.status_code) == (status, status), (path, head.text)
        assert head.content == b"" and got.content != b""
        assert head.headers["content-type"] == got.headers["content-type"]
    assert anonymous.head(f"{PREFIX}/propose").status_code == 405  # a POST route is not a GET


def test_whole_cycle_with_wait_and_provenance(server: Server, api_db_url: str) -> None:
    admin = server.client()
    agent = server.client("agent-a", "research-agent-42")
    r = admin.post(
        f"{PREFIX}/propose",
        json={"type": "test.simple", "payload": {"n": 1}, "priority": 5, "dedupe_key": "d-1"},
        headers=idem(),
    )
    assert r.status_code == 201
    order = r.json()["order"]
    assert order["state"] == "queued" and order["priority"] == 5
    again = admin.post(
        f"{PREFIX}/propose",
        json={"type": "test.simple", "payload": {"n": 1}, "dedupe_key": "d-1"},
        headers=idem(),
    )
    assert again.status_code == 200 and again.json()["order"]["id"] == order["id"]

    meta = {
        "X-Agent-Name": "Research",
        "X-Agent-Version": "1.2.3",
        "X-Model-Name": "claude-x",
        "X-Runtime": "python",
        "X-Request-ID": "req-123",
    }
    r = agent.post(f"{PREFIX}/checkout", json={"min_priority": 1}, headers=meta)
    assert r.status_code == 200 and r.headers["X-Request-ID"] == "req-123"
    item = r.json()["item"]
    assert set(item) == LEASE_KEYS and item["order_id"] == order["id"]
    assert item["current_attempt"] == 1

    r = agent.post(
        f"{PREFIX}/items/{item['id']}/heartbeat",
        json={"progress": 0.5, "checkpoint": {"page": 2}},
        headers=lease_headers(item),
    )
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"lease_expires_at", "heartbeat_every_seconds"}
    assert r.headers["X-Request-ID"]

    r = agent.post(
        f"{PREFIX}/items/{item['id']}/submit",
        json={"result": {"answer": 42}, "notes": "done"},
        headers=lease_headers(item, **meta),
    )
    assert r.status_code == 202, r.text
    assert r.json()["state"] == "submitted" and r.json()["item"]["result"] == {"answer": 42}

    shown = admin.get(f"{PREFIX}/orders/{order['id']}").json()["order"]
    assert shown["state"] == "submitted" and len(shown["items"]) == 1 and shown["events"]

    logs = admin.get(f"{PREFIX}/items/{item['id']}/logs", params={"limit": 5}).json()["events"]
    assert 1 <= len(logs) <= 5 and logs[0]["id"] > logs[-1]["id"]

    r = admin.post(f"{PREFIX}/orders/{order['id']}/approve?wait=10", headers=idem())
    assert r.status_code == 200, r.text
    assert r.json()["order"]["state"] == "completed"
    assert r.json()["diff"]["after"] == {"answers": [{"answer": 42}]}

    db = Database(api_db_url)
    with db.transaction() as s:
        rows = list(
            s.scalars(select(Provenance).where(Provenance.item_id == uuid.UUID(item["id"])))
        )
    db.dispose()
    submit = next(p for p in rows if p.action == "submit")
    assert submit.agent_id == "research-agent-42" and submit.agent_type == "research-agent"
    assert submit.model_name == "claude-x" and submit.agent_version == "1.2.3"
    assert submit.principal == "agent-a" and submit.request_id == "req-123"
    assert submit.idempotency_key_hash and submit.ip_address == "127.0.0.1"
    listed = admin.get(
        f"{PREFIX}/orders",
        params={"filter[model_name]": "claude-x", "filter[agent_id]": "research-agent-42"},
    ).json()
    assert [o["id"] for o in listed["data"]] == [order["id"]]
    by_ip = admin.get(f"{PREFIX}/orders", params={"filter[ip_address]": "10.9.9.9,127.0.0.1"})
    assert order["id"] in [o["id"] for o in by_ip.json()["data"]]
    elsewhere = admin.get(f"{PREFIX}/orders", params={"filter[ip_address]": "10.9.9.9"})
    assert elsewhere.status_code == 200 and elsewhere.json()["data"] == []


def test_approve_without_wait_is_202_then_applied(server: Server) -> None:
    admin = server.client()
    agent = server.client("agent-a", "agent-approve")
    order = propose(admin)
    item = checkout(agent, order["id"])
    agent.post(
        f"{PREFIX}/items/{item['id']}/submit",
        json={"result": {"answer": 1}},
        headers=lease_headers(item),
    )
    r = admin.post(f"{PREFIX}/orders/{order['id']}/approve", headers=idem())
    assert r.status_code == 202 and r.json()["order"]["state"] == "approved"
    deadline = time.monotonic() + 10
    while admin.get(f"{PREFIX}/orders/{order['id']}").json()["order"]["state"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_parts_finalize_release_fail_reject_retry(server: Server) -> None:
    admin = server.client()
    agent = server.client("agent-a", "parts-agent")
    order = propose(admin, "test.parts")
    item = checkout(agent, order["id"])
    base = f"{PREFIX}/items/{item['id']}"
    r = agent.post(
        f"{base}/parts", json={"part_key": "a", "payload": {"v": 1}}, headers=lease_headers(item)
    )
    assert r.status_code == 202, r.text
    assert set(r.json()["part"]) == {"id", "part_key", "seq", "status"}
    assert "item_parts_state" in r.json()
    r = agent.post(f"{base}/finalize", json={}, headers=lease_headers(item))
    assert r.status_code == 422 and r.json()["error"]["code"] == "missing_parts"
    agent.post(
        f"{base}/parts",
        json={"part_key": "b", "payload": {"x": 1}, "seq": 0},
        headers=lease_headers(item),
    )
    parts = agent.get(f"{base}/parts").json()
    assert {p["part_key"] for p in parts["parts"]} == {"a", "b"} and "parts_state" in parts
    assert [
        p["part_key"] for p in agent.get(f"{base}/parts", params={"part_key": "a"}).json()["parts"]
    ] == ["a"]
    r = agent.post(f"{base}/finalize", json={"mode": "strict"}, headers=lease_headers(item))
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["item"]["state"] == "submitted" and body["order_state"] == "submitted"
    assert body["item"]["assembled_result"] == {"a": {"v": 1}, "b": {"x": 1}}

    r = admin.post(
        f"{PREFIX}/orders/{order['id']}/reject",
        json={"errors": [{"code": "bad", "message": "redo", "field": "a"}], "allow_rework": True},
        headers=idem(),
    )
    assert r.status_code == 200 and r.json()["order"]["state"] == "queued"

    item = checkout(agent, order["id"])
    r = agent.post(f"{base}/release", headers=lease_headers(item))
    assert r.status_code == 200 and r.json()["item"]["state"] == "queued"

    item = checkout(agent, order["id"])
    r = agent.post(
        f"{base}/fail",
        json={"error": {"code": "boom", "message": "no"}, "retryable": False},
        headers=lease_headers(item),
    )
    assert r.status_code == 200 and r.json()["item"]["state"] == "failed"
    r = admin.post(f"{PREFIX}/orders/{order['id']}/retry")
    assert r.status_code == 200 and r.json()["order"]["state"] == "queued"


def test_listing_filters_sorts_pages(server: Server) -> None:
    admin = server.client()
    tag = uuid.uuid4().hex[:8]
    ids = [
        propose(admin, "test.multi", payload={"count": n}, priority=n, meta={"tag": tag})["id"]
        for n in (1, 2, 3)
    ]
    base = {"filter[meta]": f"tag:{tag}"}
    r = admin.get(f"{PREFIX}/orders", params=base)
    assert r.status_code == 200
    assert [o["id"] for o in r.json()["data"]] == ids[::-1]  # -priority by default
    assert r.json()["meta"] == {"current_page": 1, "per_page": 50, "total": 3, "last_page": 1}
    r = admin.get(
        f"{PREFIX}/orders",
        params={**base, "sort": "items_count", "page[size]": 2, "page[number]": 2},
    )
    assert [o["id"] for o in r.json()["data"]] == [ids[2]]
    assert r.json()["data"][0]["items_count"] == 3
    assert r.json()["meta"]["last_page"] == 2
    r = admin.get(
        f"{PREFIX}/orders", params={**base, "filter[priority]": ">=2", "sort": "-created_at"}
    )
    assert [o["id"] for o in r.json()["data"]] == [ids[2], ids[1]]
    r = admin.get(
        f"{PREFIX}/orders", params={**base, "filter[id]": f"{ids[0]},{ids[1]}", "state": "queued"}
    )
    assert {o["id"] for o in r.json()["data"]} == {ids[0], ids[1]}
    # upstream's bare filters (its controller turns them into filter[...]): were 400
    by = admin.get(f"{PREFIX}/orders/{ids[2]}").json()["order"]["requested_by_type"]
    bare = {**base, "id": ids[2], "requested_by_type": by}
    r = admin.get(f"{PREFIX}/orders", params=bare)
    assert r.status_code == 200, r.text
    assert [o["id"] for o in r.json()["data"]] == [ids[2]]
    r = admin.get(f"{PREFIX}/orders", params={**base, "requested_by_id": "nobody-at-all"})
    assert r.status_code == 200 and r.json()["data"] == []
    r = admin.get(
        f"{PREFIX}/orders", params={**base, "filter[has_available_items]": "true", "limit": 500}
    )
    assert r.json()["meta"]["per_page"] == 100 and r.json()["meta"]["total"] == 3
    r = admin.get(f"{PREFIX}/orders", params={**base, "filter[items.state]": "leased"})
    assert r.json()["data"] == []
    r = admin.get(
        f"{PREFIX}/orders",
        params={**base, "filter[created_at]": ">2000-01-01T00:00:00Z", "type": "test.multi"},
    )
    assert r.json()["meta"]["total"] == 3


def test_the_routes_mount_at_the_root_with_a_prefix_of_slash(make_wm) -> None:
    """``WORK_MANAGER_API_PREFIX=/`` was refused ("expected a path starting with '/', got
    '/'"); it mounts the routes at the root, beside the probes."""
    from fastapi.testclient import TestClient

    from tests.support.types import Simple
    from workmanager import Registry
    from workmanager.api import create_app

    # ``Settings.from_env`` reads "/" as "" (tests/unit/test_settings.py)
    wm = make_wm(db="sqlite", registry=Registry([Simple()]), auth="none", api_prefix="")
    with TestClient(create_app(wm)) as client:
        body = {"type": "test.simple", "payload": {}}
        made = client.post("/propose", json=body, headers={"X-Idempotency-Key": "root-1"})
        assert made.status_code == 201, made.text
        assert client.get(f"/orders/{made.json()['order']['id']}").status_code == 200
        assert client.get("/healthz").status_code == 200


def test_a_prefix_that_begins_a_probes_name_is_no_prefix_of_it(make_wm) -> None:
    """``WORK_MANAGER_API_PREFIX=/h`` (or ``/health``, ``/r``, ``/m``): the OpenAPI
    document took ``/healthz`` for one of the API's routes and answered 500."""
    from fastapi.testclient import TestClient

    from tests.support.types import Simple
    from workmanager import Registry
    from workmanager.api import create_app
    from workmanager.errors import ConfigurationError
    from workmanager.settings import Settings

    for prefix in ("/h", "/health", "/r", "/m"):
        wm = make_wm(db="sqlite", registry=Registry([Simple()]), auth="none", api_prefix=prefix)
        with TestClient(create_app(wm)) as client:
            spec = client.get("/openapi.json")
            assert spec.status_code == 200, (prefix, spec.text[:300])
            assert f"{prefix}/orders" in spec.json()["paths"] and "/healthz" in spec.json()["paths"]
        wm.close()
    # where the server answers itself: the API's JSON on /ui/orders hid the console's page
    for taken in ("/ui", "/ui/api", "/metrics"):
        with pytest.raises(ConfigurationError, match="answers"):
            Settings.from_env({"WORK_MANAGER_API_PREFIX": taken})
