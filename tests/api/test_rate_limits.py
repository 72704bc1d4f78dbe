"""Rate limits over HTTP (SPEC §13, issue 17): 429 ``rate_limited`` with ``Retry-After``,
the bucket's rate and burst seen through the checkout route, and the per-agent limit on
API requests as a whole. A real uvicorn server on PostgreSQL, buckets on the database."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from tests.api.conftest import PREFIX, free_port
from tests.support.buckets import assert_within, hammer
from tests.support.types import Simple
from workmanager import Registry
from workmanager.api import create_app
from workmanager.ratelimit.rate import Rate

pytestmark = pytest.mark.postgres


@pytest.fixture
def serve(make_wm: Any) -> Iterator[Callable[..., str]]:
    """Start a server over a WorkManager with these settings; returns its base URL."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(**settings: Any) -> str:
        wm = make_wm(
            db="postgres",
            backend="database",
            registry=Registry([Simple()]),
            auth="none",
            idempotency_enforce_on=(),
            **settings,
        )
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(wm), port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{port}{PREFIX}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


def test_checkout_burst_and_rate_over_http(serve: Callable[..., str]) -> None:
    """20/s, burst 20, hammered for 1.5 s by 4 clients: accepted (here: 409, the queue is
    empty, but a token was taken) ~ 20 + 20 * elapsed, between the bounds the calls' own
    times give (``tests/support/buckets.py``); the rest 429 with ``Retry-After: 1`` and
    the envelope."""
    url = serve(rate_limit_checkout_per_agent=Rate(20, 1), rate_limit_burst=20)
    refusals: list[httpx.Response] = []
    others: list[httpx.Response] = []
    local, clients = threading.local(), []

    def take() -> bool:
        if not hasattr(local, "client"):  # one client (one connection) per thread
            local.client = httpx.Client(base_url=url, headers={"X-Agent-ID": "burst"}, timeout=10)
            clients.append(local.client)
        r = local.client.post("/checkout")
        if r.status_code == 429:
            refusals.append(r)
            return False
        if r.status_code != 409:
            others.append(r)
        return True

    calls = hammer(take, 1.5)
    for client in clients:
        client.close()
    assert not others, [(r.status_code, r.text) for r in others[:3]]
    assert_within(calls, capacity=20, rate=20)
    for r in refusals[:20]:
        assert r.headers["Retry-After"] == "1"
        error = r.json()["error"]
        assert error["code"] == "rate_limited"
        assert error["details"] == {"retry_after": 1, "limit": "checkout"}


def test_requests_per_agent_limit_every_route(serve: Callable[..., str]) -> None:
    """2 requests a minute per agent: the third is 429 on any route, with ``Retry-After``
    near 30 s; another agent has its own bucket; health checks are not counted."""
    url = serve(rate_limit_requests_per_agent=Rate(2, 60))
    with httpx.Client(base_url=url, headers={"X-Agent-ID": "r1"}, timeout=10) as client:
        assert client.get("/orders").status_code == 200
        assert (
            client.post("/propose", json={"type": "test.simple", "payload": {}}).status_code == 201
        )
        refused = client.get("/orders")
        assert refused.status_code == 429
        assert 25 <= int(refused.headers["Retry-After"]) <= 30
        assert refused.json()["error"]["details"]["limit"] == "requests"
        assert client.get(url.removesuffix(PREFIX) + "/healthz").status_code == 200
    with httpx.Client(base_url=url, headers={"X-Agent-ID": "r2"}, timeout=10) as other:
        assert other.get("/orders").status_code == 200


def test_checkouts_count_as_requests_without_a_checkout_limit(serve: Callable[..., str]) -> None:
    """A mutation pass: with only a requests limit set, checkouts could go uncounted (their
    deferred request tokens dropped) and no test noticed. Two checkouts spend the two
    requests a minute; the third request is 429."""
    url = serve(rate_limit_requests_per_agent=Rate(2, 60))
    with httpx.Client(base_url=url, headers={"X-Agent-ID": "c1"}, timeout=10) as client:
        for _ in range(2):
            assert client.post("/checkout").status_code != 429
        refused = client.get("/orders")
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["details"]["limit"] == "requests"


def test_a_checkout_the_checkout_limit_refuses_takes_no_request_token(
    serve: Callable[..., str],
) -> None:
    """Both limits set: each checkout refused by the checkout limit still took a request
    token, and an agent polling for work spent the budget its lease's heartbeats needed
    (a rate-limit pass). The two are taken together, all or none."""
    url = serve(
        rate_limit_checkout_per_agent=Rate(1, 3600),
        rate_limit_requests_per_agent=Rate(4, 60),
        rate_limit_burst=None,
    )
    with httpx.Client(base_url=url, headers={"X-Agent-ID": "poller"}, timeout=10) as client:
        assert client.post("/propose", json={"type": "test.simple", "payload": {}}).status_code
        taken = client.post("/checkout")  # request 2 of 4, checkout 1 of 1
        assert taken.status_code == 200, taken.text
        for _ in range(5):
            refused = client.post("/checkout")
            assert refused.status_code == 429
            assert refused.json()["error"]["details"]["limit"] == "checkout"
        item = taken.json()["item"]
        beat = client.post(
            f"/items/{item['id']}/heartbeat", headers={"X-Lease-Token": item["lease_token"]}
        )
        assert beat.status_code == 200, beat.text  # request 3 of 4


def test_a_checkout_refused_before_its_take_still_counts_as_a_request(
    serve: Callable[..., str],
) -> None:
    """Its request tokens deferred to the checkout's take, a checkout that ended before
    it (a filter refused, a replay) took none, and was never refused by the request limit
    (a review of the change above)."""
    url = serve(
        rate_limit_checkout_per_agent=Rate(1000, 1),
        rate_limit_requests_per_agent=Rate(3, 3600),
        rate_limit_burst=None,
    )
    with httpx.Client(base_url=url, headers={"X-Agent-ID": "filters"}, timeout=10) as client:
        statuses = [
            client.post("/checkout", params={"order_id": "x"}).status_code for _ in range(5)
        ]
    assert statuses == [422, 422, 422, 429, 429], statuses


def test_mcp_checkout_answers_rate_limited(make_wm: Any) -> None:
    """The MCP tool answers the refusal as a failure result with ``retry_after``."""
    from tests.api.test_mcp_idempotency import Call, session

    wm = make_wm(registry=Registry([Simple()]), rate_limit_checkout_per_agent=Rate(1, 60))

    async def script(call: Call) -> dict[str, Any]:
        await call("work.propose", type="test.simple", payload={})
        first = await call("work.checkout", agent_id="mcp-rl")
        return {"first": first, "second": await call("work.checkout", agent_id="mcp-rl")}

    seen = session(wm, script)
    assert seen["first"]["success"]
    second = seen["second"]
    assert (second["success"], second["code"]) == (False, "rate_limited")
    assert 55 <= second["details"]["retry_after"] <= 60


def test_requests_per_tenant_limit_is_shared_by_the_tenants_tokens(make_wm: Any) -> None:
    """``WORK_MANAGER_RATE_LIMIT_REQUESTS_PER_TENANT``: every token bound to one tenant
    draws on one bucket; another tenant has its own; a token bound to no tenant is not
    counted per tenant."""
    from fastapi.testclient import TestClient

    from workmanager.services.tokens import TokenService

    wm = make_wm(
        db="postgres",
        backend="database",
        registry=Registry([Simple()]),
        idempotency_enforce_on=(),
        rate_limit_requests_per_tenant=Rate(2, 60),
    )
    tokens = TokenService(wm.ctx)
    made = {
        "acme-1": tokens.create("acme-1", "view", tenant_id="acme")[0],
        "acme-2": tokens.create("acme-2", "view", tenant_id="acme")[0],
        "globex": tokens.create("globex", "view", tenant_id="globex")[0],
        "unbound": tokens.create("unbound", "view")[0],
    }
    http = TestClient(create_app(wm))

    def status(who: str) -> int:
        answer = http.get(f"{PREFIX}/orders", headers={"Authorization": f"Bearer {made[who]}"})
        if answer.status_code == 429:
            assert answer.json()["error"]["details"]["limit"] == "requests", answer.text
            assert 25 <= int(answer.headers["Retry-After"]) <= 30
        return answer.status_code

    assert [status("acme-1"), status("acme-2")] == [200, 200]
    assert [status("acme-1"), status("acme-2")] == [429, 429]  # one bucket for acme
    assert [status("globex"), status("globex"), status("globex")] == [200, 200, 429]
    assert [status("unbound") for _ in range(4)] == [200] * 4
