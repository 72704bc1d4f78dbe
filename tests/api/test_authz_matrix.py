"""The authorization matrix (issue 11): every route and MCP tool that touches a lease or an
order, called by each kind of token, against a lease held by an agent bound to a token.

Kinds: the owner (the token bound to ``victim``), another bound token, an unbound token,
a viewer and a revoked token. Each non-owner calls twice: once *as itself* and once
*impersonating* the victim (``X-Agent-ID`` / MCP ``agent_id`` naming it), always with the
victim's real lease token, so only identity and scope can stop it. Every refusal has its
expected status and code, and the database is exactly as it was after all of them; then
the owner's calls succeed.
"""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import text

from tests.api.conftest import (
    PREFIX,
    Server,
    base_env,
    free_port,
    idem,
    mcp_http,
    propose,
)
from tests.api.test_mcp import result
from workmanager import Registry, Settings, WorkManager
from workmanager.db.session import Database
from workmanager.errors import Forbidden
from workmanager.services.tokens import TokenService

pytestmark = pytest.mark.postgres

ALL_SCOPES = "checkout,submit,view,propose,approve,reject"


@pytest.fixture(scope="module")
def kinds(api_db_url: str) -> dict[str, str]:
    """Fresh tokens of each kind (names unique per run: tokens survive truncation)."""
    tag = uuid.uuid4().hex[:6]
    wm = WorkManager(Settings(database_url=api_db_url, metrics_driver="null"), registry=Registry())
    service = TokenService(wm.ctx)
    victim, other = f"victim-{tag}", f"other-{tag}"
    made = {
        "owner": service.create(f"owner-{tag}", ALL_SCOPES, victim)[0],
        "other_bound": service.create(f"otherb-{tag}", ALL_SCOPES, other)[0],
        "unbound": service.create(f"unbound-{tag}", ALL_SCOPES)[0],
        "viewer": service.create(f"viewer-{tag}", "view")[0],
        "revoked": service.create(f"revoked-{tag}", ALL_SCOPES)[0],
        "victim": victim,
    }
    service.revoke(f"revoked-{tag}")
    wm.close()
    return made


@pytest.fixture(scope="module")
def srv(server: Server) -> Server:
    """The suite's shared server, on each lease backend (``server`` in conftest)."""
    return server


def client(server: Server, token: str, agent: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"}
    if agent:
        headers["X-Agent-ID"] = agent
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


def snapshot(db_url: str) -> dict[str, Any]:
    """Everything a refused call could have changed."""
    db = Database(db_url)
    with db.engine.connect() as conn:
        out = {
            "orders": conn.execute(
                text("SELECT id, state, updated_at FROM work_orders ORDER BY id")
            ).all(),
            "items": conn.execute(
                text(
                    "SELECT id, state, lease_token, lease_secret_hash, leased_by_agent_id,"
                    " lease_expires_at, attempts, result, updated_at FROM work_items ORDER BY id"
                )
            ).all(),
            "events": conn.execute(text("SELECT count(*) FROM work_events")).scalar(),
            "parts": conn.execute(text("SELECT count(*) FROM work_item_parts")).scalar(),
            "provenance": conn.execute(text("SELECT count(*) FROM work_provenance")).scalar(),
        }
    db.dispose()
    return out


def calls(order_id: str, item_id: str, lease_token: str) -> dict[str, tuple[str, str, Any]]:
    """route name -> (method, path, json body); all carry the victim's lease token."""
    item, order = f"{PREFIX}/items/{item_id}", f"{PREFIX}/orders/{order_id}"
    return {
        "heartbeat": ("POST", f"{item}/heartbeat", {"progress": 0.5}),
        "submit": ("POST", f"{item}/submit", {"result": {"ok": True}}),
        "submit_part": ("POST", f"{item}/parts", {"part_key": "a", "payload": {"v": 1}}),
        "finalize": ("POST", f"{item}/finalize", {}),
        "release": ("POST", f"{item}/release", None),
        "fail": ("POST", f"{item}/fail", {"error": {"code": "x", "message": "y"}}),
        "list_parts": ("GET", f"{item}/parts", None),
        "logs": ("GET", f"{item}/logs", None),
        "order": ("GET", order, None),
        "orders": ("GET", f"{PREFIX}/orders", None),
        "order_checkout": ("POST", f"{order}/checkout", None),
        "approve": ("POST", f"{order}/approve", None),
        "reject": ("POST", f"{order}/reject", {"errors": [{"code": "x", "message": "y"}]}),
        "retry": ("POST", f"{order}/retry", None),
        "propose": ("POST", f"{PREFIX}/propose", {"type": "test.simple", "payload": {}}),
        "checkout": ("POST", f"{PREFIX}/checkout", {}),
    }


LEASE_ROUTES = {"heartbeat", "submit", "submit_part", "finalize", "release", "fail"}
READS = {"list_parts", "logs", "order", "orders"}


def expected(kind: str, impersonating: bool, route: str) -> tuple[int, str | None]:
    """The status (and error code) each kind must get."""
    if kind == "revoked":
        return 401, "unauthenticated"
    if impersonating:  # naming an agent another token owns: refused before anything else
        return 403, "forbidden"
    if kind == "viewer":
        return (200, None) if route in READS else (403, "forbidden")
    # a token acting as itself, with every scope, on someone else's lease / busy order
    if route in LEASE_ROUTES:
        return 403, "forbidden"  # the item is leased by another agent
    if route in READS:
        return 200, None
    if route in {"order_checkout", "checkout"}:
        return 409, "no_items_available"  # the only item is held
    if route in {"approve", "reject", "retry"}:
        # the order is in progress: not submitted, not failed
        return 409, None
    raise AssertionError(route)


def test_the_matrix_over_http(srv: Server, kinds: dict[str, str], api_db_url: str) -> None:
    victim = kinds["victim"]
    owner = client(srv, kinds["owner"], None)
    order = propose(owner, "test.parts")
    r = owner.post(f"{PREFIX}/orders/{order['id']}/checkout")
    assert r.status_code == 200, r.text
    item = r.json()["item"]
    token = item["lease_token"]
    assert isinstance(token, str) and "." in token
    routes = calls(order["id"], item["id"], token)
    routes.pop("propose")  # creates orders by design for anyone with the scope: below
    routes.pop("checkout")
    before = snapshot(api_db_url)
    seen: dict[tuple[str, bool, str], tuple[int, str | None]] = {}
    for kind in ("other_bound", "unbound", "viewer", "revoked"):
        for impersonating in (False, True):
            c = client(srv, kinds[kind], victim if impersonating else None)
            for route, (method, path, body) in routes.items():
                headers = {"X-Lease-Token": token, **idem()}
                resp = c.request(method, path, json=body, headers=headers)
                code = resp.json()["error"]["code"] if resp.status_code >= 400 else None
                want_status, want_code = expected(kind, impersonating, route)
                got = (resp.status_code, code if want_code else None)
                seen[(kind, impersonating, route)] = got
                assert got == (want_status, want_code), (kind, impersonating, route, resp.text)
            c.close()
    assert snapshot(api_db_url) == before, "a refused call changed something"
    # Impersonating on the global routes too: refused, nothing proposed or leased.
    for kind in ("other_bound", "unbound"):
        c = client(srv, kinds[kind], victim)
        for route in ("propose", "checkout"):
            method, path, body = calls(order["id"], item["id"], token)[route]
            resp = c.request(method, path, json=body, headers=idem())
            assert (resp.status_code, resp.json()["error"]["code"]) == (403, "forbidden")
        c.close()
    assert snapshot(api_db_url) == before
    # The owner on the routes that do not end its lease: reads answered, the order's
    # decisions refused by its state, no second item to lease; nothing changed.
    owner_wants: dict[str, tuple[int, str | None]] = {route: (200, None) for route in READS}
    owner_wants |= {route: (409, "no_items_available") for route in ("order_checkout", "checkout")}
    owner_wants |= {route: (409, None) for route in ("approve", "reject", "retry")}
    as_owner = client(srv, kinds["owner"], victim)
    for route, want in owner_wants.items():
        method, path, body = calls(order["id"], item["id"], token)[route]
        resp = as_owner.request(method, path, json=body, headers={"X-Lease-Token": token, **idem()})
        code = resp.json()["error"]["code"] if resp.status_code >= 400 and want[1] else None
        assert (resp.status_code, code) == want, (route, resp.text)
    as_owner.close()
    assert snapshot(api_db_url) == before
    # The owner acts on its lease; naming its own agent is fine, a wrong secret is not.
    named = client(srv, kinds["owner"], victim)
    fence, _ = token.split(".", 1)
    wrong = named.post(
        f"{PREFIX}/items/{item['id']}/heartbeat",
        headers={"X-Lease-Token": f"{fence}.{'x' * 32}"},
    )
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (409, "lease_conflict")
    ok = named.post(f"{PREFIX}/items/{item['id']}/heartbeat", headers={"X-Lease-Token": token})
    assert ok.status_code == 200, ok.text
    for key in ("a", "b"):
        part = named.post(
            f"{PREFIX}/items/{item['id']}/parts",
            json={"part_key": key, "payload": {"v": 1}},
            headers={"X-Lease-Token": token, **idem()},
        )
        assert part.status_code == 202, part.text
    done = named.post(
        f"{PREFIX}/items/{item['id']}/finalize", json={}, headers={"X-Lease-Token": token, **idem()}
    )
    assert done.status_code == 202, done.text
    named.close()
    owner.close()


# --- MCP over streamable HTTP ------------------------------------------------------------
async def mcp_calls(url: str, token: str, args: dict[str, dict[str, Any]]) -> dict[str, Any]:
    import httpx2
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    out: dict[str, Any] = {}
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        for tool, arguments in args.items():
            out[tool] = result(await session.call_tool(tool, arguments))
    return out


def mcp_env(api_db_url: str, srv: Server, running_servers: dict[str, Any]) -> dict[str, str]:
    """The MCP server's environment: the HTTP server's database and lease backend (its
    Redis and key prefix too), so a lease taken over HTTP is the one the tools act on."""
    shared = running_servers[srv.backend]
    extra = {"WORK_MANAGER_LEASE_BACKEND": srv.backend}
    if shared.redis_url:
        extra |= {
            "WORK_MANAGER_REDIS_URL": shared.redis_url,
            "WORK_MANAGER_REDIS_PREFIX": shared.prefix,
        }
    return base_env(api_db_url, **extra)


def test_the_matrix_over_mcp(
    api_db_url: str, srv: Server, kinds: dict[str, str], running_servers: dict[str, Any]
) -> None:
    import subprocess
    import time

    server = srv  # to lease over HTTP; the MCP server shares its lease backend
    port = free_port()
    proc = subprocess.Popen(
        mcp_http(port),
        env=mcp_env(api_db_url, srv, running_servers),
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        victim = kinds["victim"]
        owner = client(server, kinds["owner"], None)
        order = propose(owner, "test.parts")
        item = owner.post(f"{PREFIX}/orders/{order['id']}/checkout").json()["item"]
        lease = {"item_id": item["id"], "lease_token": item["lease_token"]}
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.post(url, json={}, timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        before = snapshot(api_db_url)

        def tools(agent: str) -> dict[str, dict[str, Any]]:
            return {
                "work.heartbeat": {**lease, "agent_id": agent},
                "work.submit": {**lease, "agent_id": agent, "result": {"ok": True}},
                "work.submit_part": {**lease, "agent_id": agent, "part_key": "a", "payload": {}},
                "work.finalize": {**lease, "agent_id": agent},
                "work.release": {**lease, "agent_id": agent},
                "work.fail": {**lease, "agent_id": agent, "error": {"code": "x", "message": "y"}},
                "work.checkout": {"agent_id": agent, "order_id": order["id"]},
                "work.propose": {"type": "test.simple", "payload": {}, "agent_id": agent},
            }

        for kind in ("other_bound", "unbound"):
            seen = anyio.run(mcp_calls, url, kinds[kind], tools(victim))
            for tool, answer in seen.items():
                assert answer["success"] is False and answer["code"] == "forbidden", (
                    kind,
                    tool,
                    answer,
                )
        own = tools("someone-else")
        own.pop("work.propose")  # anyone with the scope may propose: not a refusal
        as_self = anyio.run(mcp_calls, url, kinds["unbound"], own)
        for tool in ("work.heartbeat", "work.submit", "work.release", "work.fail"):
            assert as_self[tool]["code"] == "forbidden", (tool, as_self[tool])
        viewer = anyio.run(mcp_calls, url, kinds["viewer"], tools("viewer-agent"))
        assert all(a["code"] == "forbidden" for a in viewer.values()), viewer
        # The order tools name no agent: each token acts as itself. Reads answer every
        # kind with view; approve and reject are refused by scope (viewer) or by the
        # order's state (in progress), never carried out.
        reads = {
            "work.get": {"order_id": order["id"]},
            "work.list": {},
            "work.list_parts": {"item_id": item["id"]},
            "work.logs": {"item_id": item["id"]},
        }
        decisions = {  # tool -> (arguments, the refusal a token with the scope gets)
            "work.approve": ({"order_id": order["id"]}, "not_ready_for_approval"),
            "work.reject": (
                {"order_id": order["id"], "errors": [{"code": "x", "message": "y"}]},
                "illegal_state_transition",
            ),
        }
        for kind in ("other_bound", "unbound", "viewer"):
            asked = {**reads, **{tool: args for tool, (args, _) in decisions.items()}}
            seen = anyio.run(mcp_calls, url, kinds[kind], asked)
            for tool in reads:
                assert seen[tool]["success"] is not False, (kind, tool, seen[tool])
            for tool, (_, by_state) in decisions.items():
                want = "forbidden" if kind == "viewer" else by_state
                assert (seen[tool]["success"], seen[tool]["code"]) == (False, want), (
                    kind,
                    tool,
                    seen[tool],
                )
        revoked = httpx.post(
            url, json={}, headers={"Authorization": f"Bearer {kinds['revoked']}"}, timeout=5
        )
        assert revoked.status_code == 401
        assert snapshot(api_db_url) == before, "a refused call changed something"
        # The owner's own call, with the token exactly as checkout returned it, works.
        beat = {"work.heartbeat": {**lease, "agent_id": victim}}
        mine = anyio.run(mcp_calls, url, kinds["owner"], beat)
        assert mine["work.heartbeat"]["success"] is True, mine
        owner.close()
    finally:
        proc.terminate()
        proc.wait(10)


def test_an_unbound_token_named_like_a_bound_agent_does_not_become_it(
    api_db_url: str, kinds: dict[str, str]
) -> None:
    """Without X-Agent-ID an unbound token acts as its own name: a name that is another
    token's bound agent id is refused like naming it in the header."""
    wm = WorkManager(Settings(database_url=api_db_url, metrics_driver="null"), registry=Registry())
    service = TokenService(wm.ctx)
    clash = service.create(kinds["victim"], "checkout,view")[0]  # named after the bound agent
    try:
        with pytest.raises(Forbidden):
            service.authenticate(clash)
        with pytest.raises(Forbidden):
            service.authenticate(clash, kinds["victim"])
        assert service.authenticate(clash, "someone-else").name == kinds["victim"]
    finally:
        service.revoke(kinds["victim"])
        wm.close()


def test_revoking_a_bound_token_does_not_free_its_agent_id(api_db_url: str) -> None:
    """docs/security.md: an agent id a token was bound to stays that token's after it is
    revoked, so an unbound token cannot take the name over (and act on its old leases)."""
    tag = uuid.uuid4().hex[:6]
    wm = WorkManager(Settings(database_url=api_db_url, metrics_driver="null"), registry=Registry())
    service = TokenService(wm.ctx)
    agent = f"retired-{tag}"
    service.create(f"retired-owner-{tag}", ALL_SCOPES, agent)
    unbound = service.create(f"taker-{tag}", ALL_SCOPES)[0]
    try:
        assert service.authenticate(unbound, "someone-else").name == f"taker-{tag}"
        service.revoke(f"retired-owner-{tag}")
        with pytest.raises(Forbidden):
            service.authenticate(unbound, agent)
    finally:
        service.revoke(f"taker-{tag}")
        wm.close()
