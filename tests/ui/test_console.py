"""The review console over HTTP, in process, on the embedded default (SQLite): sign in,
sessions, CSRF, scopes, the once-per-form actions and every page. The browser tests
(``test_browser.py``) drive the same pages in Chromium against real Celery workers."""

from __future__ import annotations

import re
import time
import uuid
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from workmanager import AgentInfo, Registry, WorkManager
from workmanager.api import create_app
from workmanager.db.models import Event, Provenance, UiSession
from workmanager.services.tokens import TokenService

from .types import register

AGENT = AgentInfo(id="writer-1", version="1.2.0", model_name="gpt-test")


@pytest.fixture
def wm(make_wm: Any) -> WorkManager:
    registry = Registry()
    register(registry)
    made: WorkManager = make_wm(db="sqlite", backend="database", registry=registry)
    return made


@pytest.fixture
def tokens(wm: WorkManager) -> dict[str, str]:
    service = TokenService(wm.ctx)
    made = {}
    for name, scopes in {
        "reviewer": "view,approve,reject",
        "viewer": "view",
        "operator": "admin",
        "proposer": "propose",
    }.items():
        made[name], _ = service.create(name, scopes)
    return made


def client_for(wm: WorkManager) -> TestClient:
    return TestClient(create_app(wm), follow_redirects=False)


def sign_in(client: TestClient, token: str) -> TestClient:
    page = client.get("/ui/login")
    csrf = field(page.text, "csrf")
    answer = client.post("/ui/login", data={"token": token, "csrf": csrf, "next": "/ui/queue"})
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/ui/queue"
    return client


def field(html: str, name: str, form: str | None = None) -> str:
    if form is not None:
        html = html[html.index(f'id="{form}"') :]
    match = re.search(rf'name="{re.escape(name)}" value="([^"]*)"', html)
    assert match, f"no field {name!r}"
    return match.group(1)


def submitted_order(wm: WorkManager, docs: tuple[str, ...] = ("a", "b")) -> uuid.UUID:
    order_id = wm.propose("ui.title", {"docs": list(docs)})
    for _ in docs:
        lease = wm.agent.checkout(AGENT, order_id=order_id)
        assert lease is not None
        wm.agent.submit(
            lease,
            {"title": f"T{lease.item_id.hex[:4]}"},
            evidence={"url": "u"},
            notes="n",
            agent=AGENT,
        )
    assert wm.queries.order_state(order_id) == "submitted"
    return order_id


def count_events(wm: WorkManager, order_id: uuid.UUID, event: str) -> int:
    with wm.db.transaction() as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(Event)
                .where(Event.order_id == order_id, Event.event == event)
            )
            or 0
        )


def test_pages_need_a_session_and_sign_in_sets_a_strict_http_only_cookie(
    wm: WorkManager, tokens: dict[str, str]
) -> None:
    client = client_for(wm)
    answer = client.get("/ui/queue")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/ui/login?next=")
    page = client.get("/ui/login")
    login_csrf = field(page.text, "csrf")
    # a wrong token: back to the form with the reason, no session
    wrong = client.post("/ui/login", data={"token": "wm_nope", "csrf": login_csrf})
    assert wrong.status_code == 303 and "failed=" in wrong.headers["location"]
    # the sign-in form itself carries a CSRF token (double-submitted in its own cookie)
    forged = TestClient(create_app(wm), follow_redirects=False)
    refused = forged.post("/ui/login", data={"token": tokens["reviewer"], "csrf": "x"})
    assert refused.status_code == 403
    # a token without view cannot sign in at all
    page = client.get("/ui/login")
    no_view = client.post(
        "/ui/login", data={"token": tokens["proposer"], "csrf": field(page.text, "csrf")}
    )
    assert "failed=" in no_view.headers["location"]
    page = client.get("/ui/login")
    answer = client.post(
        "/ui/login", data={"token": tokens["reviewer"], "csrf": field(page.text, "csrf")}
    )
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("wm_console="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=" in cookie
    assert "Path=/ui" in cookie
    page = client.get("/ui/queue")
    assert page.status_code == 200
    assert "reviewer" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    with wm.db.transaction() as s:  # only the secret's hash is stored
        row = s.scalars(select(UiSession)).one()
    assert row.id not in cookie and len(row.id) == 64


def test_the_queue_lists_submitted_orders_oldest_first_with_their_agents(
    wm: WorkManager, tokens: dict[str, str]
) -> None:
    first = submitted_order(wm)
    second = submitted_order(wm, ("c",))
    wm.propose("ui.title", {"docs": ["x"]})  # queued: not waiting for review
    page = sign_in(client_for(wm), tokens["viewer"]).get("/ui/queue").text
    assert "2 waiting" in page
    assert page.index(str(first)[:8]) < page.index(str(second)[:8])
    assert "writer-1 · 1.2.0 · gpt-test" in page


def test_approve_runs_once_per_form_and_a_view_token_sees_no_approve(
    wm: WorkManager, tokens: dict[str, str]
) -> None:
    order_id = submitted_order(wm)
    viewer = sign_in(client_for(wm), tokens["viewer"])
    page = viewer.get(f"/ui/orders/{order_id}").text
    assert 'id="approve"' not in page and 'id="reject"' not in page
    assert "Preview: what apply would change" in page  # the type's preview hook
    assert "gpt-test" in page and "evidence" in page
    # the viewer posts an approve form anyway, with its own valid CSRF token: refused
    forged = viewer.post(
        f"/ui/orders/{order_id}/approve",
        data={"csrf": field(page, "csrf"), "key": uuid.uuid4().hex},
    )
    assert forged.status_code == 403
    assert "approve" in forged.text
    assert wm.queries.order_state(order_id) == "submitted"

    reviewer = sign_in(client_for(wm), tokens["reviewer"])
    page = reviewer.get(f"/ui/orders/{order_id}").text
    form = {"csrf": field(page, "csrf", "approve-form"), "key": field(page, "key", "approve-form")}
    no_csrf = reviewer.post(f"/ui/orders/{order_id}/approve", data={"key": form["key"]})
    assert no_csrf.status_code == 403
    assert wm.queries.order_state(order_id) == "submitted"
    for _ in range(2):  # a double click: the same form twice
        # an X-Agent-ID header names no one here: the console acts as the signed-in person
        headers = {"X-Agent-ID": "someone-else-7"}
        answer = reviewer.post(f"/ui/orders/{order_id}/approve", data=form, headers=headers)
        assert answer.status_code == 303
    assert wm.queries.order_state(order_id) == "approved"
    assert count_events(wm, order_id, "approved") == 1
    with wm.db.transaction() as s:
        actors = set(
            s.scalars(
                select(Provenance.agent_id).where(
                    Provenance.order_id == order_id, Provenance.action == "approve"
                )
            )
        )
    assert actors == {"reviewer"}, actors
    wm.executor.apply(order_id)
    page = reviewer.get(f"/ui/orders/{order_id}").text
    assert "What apply changed" in page and "untitled a" in page
    assert 'id="approve"' not in page


def test_reject_with_rework_sends_the_items_back(wm: WorkManager, tokens: dict[str, str]) -> None:
    order_id = submitted_order(wm)
    reviewer = sign_in(client_for(wm), tokens["reviewer"])
    page = reviewer.get(f"/ui/orders/{order_id}").text
    answer = reviewer.post(
        f"/ui/orders/{order_id}/reject",
        data={
            "csrf": field(page, "csrf", "reject-form"),
            "key": field(page, "key", "reject-form"),
            "reason": "titles too long",
            "allow_rework": "1",
        },
    )
    assert answer.status_code == 303
    order = wm.queries.order(order_id)
    assert order["state"] == "queued"
    assert {i["state"] for i in order["items"]} == {"queued"}
    assert count_events(wm, order_id, "rejected") == 3  # the order and its two items
    page = reviewer.get(f"/ui/orders/{order_id}").text
    assert "titles too long" in page


def test_a_forged_post_without_a_session_or_from_another_origin_changes_nothing(
    wm: WorkManager, tokens: dict[str, str]
) -> None:
    order_id = submitted_order(wm)
    stranger = client_for(wm)
    answer = stranger.post(f"/ui/orders/{order_id}/approve", data={"csrf": "x", "key": "k"})
    assert answer.status_code == 401
    reviewer = sign_in(client_for(wm), tokens["reviewer"])
    page = reviewer.get(f"/ui/orders/{order_id}").text
    answer = reviewer.post(
        f"/ui/orders/{order_id}/approve",
        data={"csrf": field(page, "csrf"), "key": field(page, "key", "approve-form")},
        headers={"Origin": "https://evil.example"},
    )
    assert answer.status_code == 403
    assert wm.queries.order_state(order_id) == "submitted"


def test_revoking_the_token_ends_the_session_and_sign_out_too(
    wm: WorkManager, tokens: dict[str, str]
) -> None:
    viewer = sign_in(client_for(wm), tokens["viewer"])
    assert viewer.get("/ui/dashboard").status_code == 200
    TokenService(wm.ctx).revoke("viewer")
    assert viewer.get("/ui/dashboard").status_code == 303
    reviewer = sign_in(client_for(wm), tokens["reviewer"])
    page = reviewer.get("/ui/queue").text
    assert reviewer.post("/ui/logout", data={"csrf": field(page, "csrf")}).status_code == 303
    assert reviewer.get("/ui/queue").status_code == 303


def test_lists_dashboard_and_lease_actions_for_operators_only(
    wm: WorkManager, tokens: dict[str, str]
) -> None:
    order_id = submitted_order(wm)
    other = wm.propose("ui.plain", {"n": 1})
    lease = wm.agent.checkout(AGENT, order_id=other)
    assert lease is not None
    viewer = sign_in(client_for(wm), tokens["viewer"])
    listing = viewer.get("/ui/orders", params={"filter[state]": "submitted"}).text
    assert str(order_id)[:8] in listing and str(other)[:8] not in listing
    assert viewer.get("/ui/orders", params={"filter[nope]": "1"}).status_code == 400
    items = viewer.get("/ui/items", params={"filter[state]": "leased", "sort": "-created_at"})
    assert str(lease.item_id)[:8] in items.text and "writer-1" in items.text
    board = viewer.get("/ui/dashboard").text
    assert 'data-type="ui.plain"' in board and "gpt-test" in board
    assert viewer.get("/ui/dashboard/panel").status_code == 200
    page = viewer.get(f"/ui/items/{lease.item_id}").text
    assert 'id="release"' not in page
    forged = viewer.post(f"/ui/items/{lease.item_id}/release", data={"csrf": field(page, "csrf")})
    assert forged.status_code == 403
    assert wm.queries.item(lease.item_id)["state"] == "leased"

    operator = sign_in(client_for(wm), tokens["operator"])
    page = operator.get(f"/ui/items/{lease.item_id}").text
    assert 'id="release"' in page and 'id="extend"' in page
    before = wm.queries.item(lease.item_id)["lease_expires_at"]
    operator.post(
        f"/ui/items/{lease.item_id}/extend", data={"csrf": field(page, "csrf"), "seconds": "600"}
    )
    assert wm.queries.item(lease.item_id)["lease_expires_at"] > before
    answer = operator.post(f"/ui/items/{lease.item_id}/release", data={"csrf": field(page, "csrf")})
    assert answer.status_code == 303
    assert wm.queries.item(lease.item_id)["state"] == "queued"


def test_unknown_orders_are_an_html_404_and_auth_none_needs_no_token(make_wm: Any) -> None:
    registry = Registry()
    register(registry)
    wm = make_wm(db="sqlite", backend="database", registry=registry, auth="none")
    client = client_for(wm)
    page = client.get("/ui/login")
    assert 'name="token"' not in page.text
    answer = client.post("/ui/login", data={"csrf": field(page.text, "csrf")})
    assert answer.status_code == 303
    assert "anonymous" in client.get("/ui/queue").text
    for path in ("/ui/orders/not-a-uuid", f"/ui/orders/{uuid.uuid4()}", "/ui/items/x"):
        missing = client.get(path)
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("text/html")
        assert "not_found" in missing.text


BACKENDS = [
    ("sqlite", "database"),
    ("sqlite", "memory"),
    pytest.param("postgres", "database", marks=pytest.mark.postgres),
    pytest.param("postgres", "redis", marks=[pytest.mark.postgres, pytest.mark.redis]),
]


@pytest.mark.parametrize(("db", "backend"), BACKENDS)
def test_the_dashboard_shows_the_same_on_every_backend(make_wm: Any, db: str, backend: str) -> None:
    """Queue depth, awaiting review, agents and leases expiring soon, read right whichever
    database and lease backend hold them. With a lock store (memory, Redis) a heartbeat
    extends only the lock (db/store.py lock_only_beat): the row's recorded expiry falls
    behind, and the lease's time left is the lock's, not the row's."""
    registry = Registry()
    register(registry)
    wm = make_wm(db=db, backend=backend, registry=registry, lease_ttl_seconds=2)
    viewer, _ = TokenService(wm.ctx).create("viewer", "view")
    submitted_order(wm)
    held = wm.propose("ui.plain", {"n": 1})
    lease = wm.agent.checkout(AGENT, order_id=held)
    assert lease is not None
    beat = wm.agent.heartbeat(lease)  # leased -> in_progress, on the row
    recorded = wm.queries.item(lease.item_id)["lease_expires_at"]
    deadline = time.monotonic() + 2.6
    while time.monotonic() < deadline:  # beat past the row's recorded expiry
        beat = wm.agent.heartbeat(beat)
        time.sleep(0.25)
    assert beat.expires_at > datetime.fromisoformat(recorded.replace("Z", "+00:00"))

    board = sign_in(client_for(wm), viewer).get("/ui/dashboard").text
    depth = re.search(r'<tr data-type="ui.plain">(.*?)</tr>', board)
    assert depth, board
    # queued, leased, in progress, submitted, failed
    assert re.findall(r"<td>(\d+)</td>", depth.group(1)) == ["0", "0", "1", "0", "0"]
    assert '<b id="awaiting">1</b>' in board
    assert "writer-1" in board and "gpt-test" in board
    expiring = re.search(rf'data-item="{lease.item_id}" data-expires-in="(-?\d+)"', board)
    assert expiring, board
    # the lease is alive with at most its TTL left: never shown as already past its expiry
    assert 0 <= int(expiring.group(1)) <= 2
