"""Tenant isolation (issue 17): tenant A's token against every route and MCP tool with
tenant B's ids, on a real server over PostgreSQL and both lease backends. Each call
carries B's real lease token, so only the tenant can stop it: every one is 404
``not_found`` (as an unknown id, so B's ids do not leak), lists and checkout show nothing
of B's, and the database is exactly as it was. Modelled on test_authz_matrix.py."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from tests.api.conftest import (
    PREFIX,
    Server,
    base_env,
    free_port,
    idem,
    mcp_http,
    start_server,
)
from tests.api.test_authz_matrix import calls, client, mcp_calls, snapshot
from workmanager import Registry, Settings, WorkManager
from workmanager.services.tokens import TokenService

pytestmark = pytest.mark.postgres

SCOPES = "admin"


@pytest.fixture(scope="module")
def tenants(api_db_url: str) -> dict[str, str]:
    """An all-scopes token bound to each tenant (names unique per run)."""
    tag = uuid.uuid4().hex[:6]
    wm = WorkManager(Settings(database_url=api_db_url, metrics_driver="null"), registry=Registry())
    service = TokenService(wm.ctx)
    made = {
        "a": service.create(f"tenant-a-{tag}", SCOPES, tenant_id=f"acme-{tag}")[0],
        "b": service.create(f"tenant-b-{tag}", SCOPES, tenant_id=f"globex-{tag}")[0],
        "b_tenant": f"globex-{tag}",
        "a_tenant": f"acme-{tag}",
    }
    wm.close()
    return made


@pytest.fixture(scope="module", params=["database", "redis"])
def srv(request: pytest.FixtureRequest, api_db_url: str, tokens: dict[str, str]) -> Iterator[Any]:
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    server = start_server(api_db_url, tokens, request.param, redis_url)
    yield server
    server.close()


def b_world(c: httpx.Client) -> dict[str, Any]:
    """B's orders: one with a leased item (its lease token in hand), one submitted, one
    queued (so an unscoped checkout would find it)."""
    out: dict[str, Any] = {}
    for name in ("leased", "submitted", "queued"):
        r = c.post(f"{PREFIX}/propose", json={"type": "test.simple", "payload": {}}, headers=idem())
        assert r.status_code == 201, r.text
        out[name] = r.json()["order"]
    for name in ("leased", "submitted"):
        r = c.post(f"{PREFIX}/orders/{out[name]['id']}/checkout")
        assert r.status_code == 200, r.text
        out[f"{name}_item"] = r.json()["item"]
    item = out["submitted_item"]
    r = c.post(
        f"{PREFIX}/items/{item['id']}/submit",
        json={"result": {"answer": 1}},
        headers={"X-Lease-Token": item["lease_token"], **idem()},
    )
    assert r.status_code == 202, r.text
    return out


def _ids_out(text: str, ids: Any) -> str:
    for value in ids:
        text = text.replace(value, "<id>")
    return text


def test_tenant_a_sees_and_changes_nothing_of_tenant_b_over_http(
    srv: Server, tenants: dict[str, str], api_db_url: str
) -> None:
    b = client(srv, tenants["b"], "agent-b")
    world = b_world(b)
    assert world["leased"]["tenant_id"] == tenants["b_tenant"]
    leased, item = world["leased"], world["leased_item"]
    a = client(srv, tenants["a"], "agent-b")  # even naming B's agent
    before = snapshot(api_db_url)
    targets = [calls(leased["id"], item["id"], item["lease_token"])]
    targets.append(calls(world["submitted"]["id"], world["submitted_item"]["id"], "1.x"))
    nobody = (str(uuid.uuid4()), str(uuid.uuid4()))
    unknown = calls(*nobody, item["lease_token"])
    for ids, routes in zip(
        [(leased["id"], item["id"]), (world["submitted"]["id"], world["submitted_item"]["id"])],
        targets,
        strict=True,
    ):
        for listing in ("propose", "checkout", "orders"):  # no id of B's: checked below
            routes.pop(listing, None)
        for route, (method, path, body) in routes.items():
            headers = {"X-Lease-Token": item["lease_token"], **idem()}
            resp = a.request(method, path, json=body, headers=headers)
            assert resp.status_code == 404, (route, resp.text)
            assert resp.json()["error"]["code"] == "not_found", (route, resp.text)
            # Word for word what an unknown id gets: nothing tells B's ids apart.
            m, p, bd = unknown[route]
            other = a.request(m, p, json=bd, headers={**headers, **idem()})
            assert _ids_out(resp.text, ids) == _ids_out(other.text, nobody), route
    # Lists and checkout: nothing of B's, whatever A asks for.
    for params in ({}, {"filter[tenant_id]": tenants["b_tenant"]}, {"filter[id]": leased["id"]}):
        page = a.get(f"{PREFIX}/orders", params=params).json()
        assert page["data"] == [] and page["meta"]["total"] == 0, (params, page)
    for body in ({}, {"tenant_id": tenants["b_tenant"]}):
        resp = a.post(f"{PREFIX}/checkout", json=body, headers=idem())
        assert (resp.status_code, resp.json()["error"]["code"]) == (409, "no_items_available")
    # Proposing into B is refused; nothing is created.
    resp = a.post(
        f"{PREFIX}/propose",
        json={"type": "test.simple", "payload": {}, "tenant_id": tenants["b_tenant"]},
        headers=idem(),
    )
    assert (resp.status_code, resp.json()["error"]["code"]) == (403, "forbidden")
    # A type no one registered: refused without the deployment's types (as a checkout
    # is told nothing of them); an unbound token is told them.
    resp = a.post(f"{PREFIX}/propose", json={"type": "nope.x", "payload": {}}, headers=idem())
    assert (resp.status_code, resp.json()["error"]["code"]) == (422, "unknown_order_type")
    assert "test.simple" not in resp.text and "known:" not in resp.text, resp.text
    # Forgetting B's agent (whose records span tenants) is refused before anything is
    # looked at: not the 409 of B's live lease, which would tell A that agent is working.
    resp = a.post(f"{PREFIX}/provenance/forget", json={"agent_id": "agent-b"}, headers=idem())
    assert (resp.status_code, resp.json()["error"]["code"]) == (403, "forbidden"), resp.text
    assert snapshot(api_db_url) == before, "a call of tenant A changed something of B's"
    # B still sees its own, and A's proposals land in A and are A's to lease.
    assert b.get(f"{PREFIX}/orders/{leased['id']}").status_code == 200
    mine = a.post(f"{PREFIX}/propose", json={"type": "test.simple", "payload": {}}, headers=idem())
    assert mine.json()["order"]["tenant_id"] == tenants["a_tenant"]
    got = a.post(f"{PREFIX}/checkout", json={}, headers=idem())
    assert got.status_code == 200 and got.json()["item"]["order_id"] == mine.json()["order"]["id"]
    listed = a.get(f"{PREFIX}/orders").json()["data"]
    assert [o["id"] for o in listed] == [mine.json()["order"]["id"]]
    a.close()
    b.close()


#: What the HTTP test above calls: the id routes of ``calls()``, the lists, checkout,
#: propose and the forget route. Health, readiness and /metrics carry no tenant's data
#: but /metrics' ``tenant`` label (an operator's scrape target, docs/operations.md#metrics).
CALLED = {
    ("POST", "/items/{item_id}/heartbeat"),
    ("POST", "/items/{item_id}/submit"),
    ("POST", "/items/{item_id}/parts"),
    ("GET", "/items/{item_id}/parts"),
    ("POST", "/items/{item_id}/finalize"),
    ("POST", "/items/{item_id}/release"),
    ("POST", "/items/{item_id}/fail"),
    ("GET", "/items/{item_id}/logs"),
    ("GET", "/orders/{order_id}"),
    ("POST", "/orders/{order_id}/checkout"),
    ("POST", "/orders/{order_id}/approve"),
    ("POST", "/orders/{order_id}/reject"),
    ("POST", "/orders/{order_id}/retry"),
    ("GET", "/orders"),
    ("POST", "/checkout"),
    ("POST", "/propose"),
    ("POST", "/provenance/forget"),
}
UNSCOPED = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")}
TOOLS_CALLED = {
    "work.get",
    "work.approve",
    "work.reject",
    "work.checkout",
    "work.heartbeat",
    "work.submit",
    "work.submit_part",
    "work.finalize",
    "work.release",
    "work.fail",
    "work.list_parts",
    "work.logs",
    "work.list",
    "work.propose",
}


def test_the_isolation_tests_call_every_route_and_tool(make_wm: Any) -> None:
    """A route or tool added later fails here until the tests above call it."""
    from workmanager.api import create_app
    from workmanager.mcp.server import build_server

    wm = make_wm(db="sqlite", backend="database", registry=Registry())
    paths = create_app(wm).openapi()["paths"]
    routes = {
        (method.upper(), path.removeprefix(PREFIX))
        for path, operations in paths.items()
        for method in operations
    }
    assert routes == CALLED | UNSCOPED

    async def tools() -> set[str]:
        return {tool.name for tool in await build_server(wm).list_tools()}

    assert anyio.run(tools) == TOOLS_CALLED


def test_tenant_a_sees_and_changes_nothing_of_tenant_b_over_mcp(
    api_db_url: str, tokens: dict[str, str], tenants: dict[str, str]
) -> None:
    server = start_server(api_db_url, tokens, "database", None)  # to set B up over HTTP
    port = free_port()
    proc = subprocess.Popen(
        mcp_http(port),
        env=base_env(api_db_url),
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        b = client(server, tenants["b"], "agent-b")
        world = b_world(b)
        order, item = world["leased"], world["leased_item"]
        lease = {"item_id": item["id"], "lease_token": item["lease_token"], "agent_id": "agent-b"}
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.post(url, json={}, timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        before = snapshot(api_db_url)
        submitted = world["submitted"]["id"]
        refused = {
            "work.get": {"order_id": order["id"]},
            "work.approve": {"order_id": submitted},
            "work.reject": {"order_id": submitted, "errors": [{"code": "x", "message": "y"}]},
            "work.checkout": {"agent_id": "agent-b", "order_id": world["queued"]["id"]},
            "work.heartbeat": lease,
            "work.submit": {**lease, "result": {"answer": 1}},
            "work.submit_part": {**lease, "part_key": "a", "payload": {}},
            "work.finalize": lease,
            "work.release": lease,
            "work.fail": {**lease, "error": {"code": "x", "message": "y"}},
            "work.list_parts": {"item_id": item["id"]},
            "work.logs": {"item_id": item["id"]},
        }
        seen = anyio.run(mcp_calls, url, tenants["a"], refused)
        for tool, answer in seen.items():
            assert answer["success"] is False and answer["code"] == "not_found", (tool, answer)
        into_b: dict[str, Any] = {
            "type": "test.simple",
            "payload": {},
            "tenant_id": tenants["b_tenant"],
        }
        proposed = anyio.run(mcp_calls, url, tenants["a"], {"work.propose": into_b})
        assert proposed["work.propose"]["code"] == "forbidden", proposed
        order_logs = anyio.run(
            mcp_calls, url, tenants["a"], {"work.logs": {"order_id": order["id"]}}
        )
        assert order_logs["work.logs"]["code"] == "not_found", order_logs
        lists = {
            "work.list": {"tenantId": tenants["b_tenant"]},
            "work.checkout": {"agent_id": "agent-a", "tenantId": tenants["b_tenant"]},
        }
        seen = anyio.run(mcp_calls, url, tenants["a"], lists)
        assert seen["work.list"]["count"] == 0, seen
        assert seen["work.checkout"]["code"] == "no_items_available", seen
        everything = anyio.run(mcp_calls, url, tenants["a"], {"work.list": {}})
        assert order["id"] not in str(everything), everything
        assert snapshot(api_db_url) == before, "a tool call of tenant A changed something"
        b.close()
    finally:
        proc.terminate()
        proc.wait(10)
        server.close()
