"""The review console over HTTP, in process, on the embedded default (SQLite): sign in,
sessions, CSRF, scopes, the once-per-form actions and every page. The browser tests
(``test_browser.py``) drive the same pages in Chromium against real Celery workers."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from workmanager import AgentInfo, Registry, WorkManager
from workmanager.api import create_app
from workmanager.db.models import Event, Provenance, UiSession
from workmanager.errors import ApplyFailed
from workmanager.services.tokens import TokenService
from workmanager.ui.sessions import SESSION_LIFETIME

from .types import FailingTitles, register

AGENT = AgentInfo(id="writer-1", version="1.2.0", model_name="gpt-test")


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
    # a wrong token: the form again with the reason, no session
    wrong = client.post("/ui/login", data={"token": "wm_nope", "csrf": login_csrf})
    assert wrong.status_code == 401 and "unknown bearer token" in wrong.text
    assert 'id="login-form"' in wrong.text and "wm_console=" not in str(wrong.headers)
    # the sign-in form itself carries a CSRF token (double-submitted in its own cookie)
    forged = TestClient(create_app(wm), follow_redirects=False)
    refused = forged.post("/ui/login", data={"token": tokens["reviewer"], "csrf": "x"})
    assert refused.status_code == 403
    # a token without view cannot sign in at all
    page = client.get("/ui/login")
    no_view = client.post(
        "/ui/login", data={"token": tokens["proposer"], "csrf": field(page.text, "csrf")}
    )
    assert no_view.status_code == 403 and 'id="login-failed"' in no_view.text
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


def test_a_trailing_slash_is_no_route_and_no_redirect(wm: WorkManager) -> None:
    """Found by a pass at the HTTP protocol's level: ``POST /agent/work/checkout/`` was
    Starlette's 307 with a ``Location`` built from the request's ``Host`` (``evil.example``
    was echoed). It is the 404 envelope; the console's ``/ui`` still leads in."""
    client = client_for(wm)
    for path in ("/agent/work/checkout/", "/healthz/"):
        r = client.post(path, json={}, headers={"Host": "evil.example"}, follow_redirects=False)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        assert "location" not in r.headers
    for path in ("/ui", "/ui/"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].endswith("/ui/queue")


def test_the_sign_in_page_says_only_what_the_console_wrote(
    wm: WorkManager, tokens: dict[str, str]
) -> None:
    """The page that asks for a token shows no text from its URL (``?failed=`` put anyone's
    words there), and an order page's "Done: …" only what an action writes."""
    client = client_for(wm)
    page = client.get("/ui/login?failed=The+console+moved%3A+sign+in+at+https%3A%2F%2Fevil")
    assert "evil" not in page.text and 'id="login-failed"' not in page.text
    order_id = submitted_order(wm)
    reviewer = sign_in(client_for(wm), tokens["reviewer"])
    assert "evil" not in reviewer.get(f"/ui/orders/{order_id}?done=go+to+evil").text
    assert "Done: approved." in reviewer.get(f"/ui/orders/{order_id}?done=approved").text


def test_two_tabs_on_the_sign_in_page_both_sign_in(wm: WorkManager, tokens: dict[str, str]) -> None:
    """Each sign-in page wrote a new form cookie, so the tab opened first was refused as
    "expired": the live cookie is kept for every page opened while it lives."""
    client = client_for(wm)
    first = field(client.get("/ui/login?next=/ui/dashboard").text, "csrf")
    second = field(client.get("/ui/login").text, "csrf")
    answer = client.post(
        "/ui/login",
        data={"token": tokens["reviewer"], "csrf": first, "next": "/ui/dashboard"},
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/dashboard"
    assert first == second


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


@pytest.mark.parametrize("multipart", [False, True])
def test_a_form_field_over_a_mebibyte_is_too_large_and_changes_nothing(
    wm: WorkManager, tokens: dict[str, str], multipart: bool
) -> None:
    """Starlette refuses a form field over 1 MiB (under the body limit) with a 400; the
    console says 413 ``payload_too_large`` (SPEC §6.1), not ``malformed_json``."""
    order_id = submitted_order(wm)
    reviewer = sign_in(client_for(wm), tokens["reviewer"])
    page = reviewer.get(f"/ui/orders/{order_id}").text
    fields = {
        "csrf": field(page, "csrf", "reject-form"),
        "key": field(page, "key", "reject-form"),
        "reason": "r" * (1024 * 1024 + 1),
    }
    if multipart:
        answer = reviewer.post(
            f"/ui/orders/{order_id}/reject", files={k: (None, v) for k, v in fields.items()}
        )
    else:
        answer = reviewer.post(f"/ui/orders/{order_id}/reject", data=fields)
    assert answer.status_code == 413, answer.text[:300]
    assert "payload_too_large" in answer.text and "exceeded maximum size" in answer.text
    assert wm.queries.order_state(order_id) == "submitted"


def test_a_csrf_value_of_any_characters_is_refused_not_a_500(
    wm: WorkManager, tokens: dict[str, str]
) -> None:
    """``hmac.compare_digest`` takes ASCII ``str`` only: ``csrf=é`` was a 500."""
    order_id = submitted_order(wm)
    stranger = client_for(wm)
    stranger.get("/ui/login")
    assert stranger.post("/ui/login", data={"token": "x", "csrf": "é"}).status_code == 403
    reviewer = sign_in(client_for(wm), tokens["reviewer"])
    page = reviewer.get(f"/ui/orders/{order_id}").text
    answer = reviewer.post(
        f"/ui/orders/{order_id}/approve",
        data={"csrf": "é", "key": field(page, "key", "approve-form")},
    )
    assert answer.status_code == 403
    assert wm.queries.order_state(order_id) == "submitted"


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


def test_a_session_whose_name_is_bound_to_another_token_acts_no_more(
    wm: WorkManager, tokens: dict[str, str]
) -> None:
    """The session re-checks its token as the API does: once another token is bound to
    the agent id the session's token acts as (its name), the API refuses that token with
    403, and the open session ends (it approved, recorded as the other token's agent; then
    it was stuck on 403, sign-out included)."""
    order_id = submitted_order(wm)
    reviewer = sign_in(client_for(wm), tokens["reviewer"])
    page = reviewer.get(f"/ui/orders/{order_id}").text
    TokenService(wm.ctx).create("bot", ["submit"], agent_id="reviewer")
    answer = reviewer.post(
        f"/ui/orders/{order_id}/approve",
        data={"csrf": field(page, "csrf"), "key": field(page, "key", "approve-form")},
    )
    assert answer.status_code == 401, answer.text  # the session ended: sign in again
    assert "bound to another token" in answer.text
    assert wm.queries.order_state(order_id) == "submitted"
    assert count_events(wm, order_id, "approved") == 0
    page = reviewer.get("/ui/queue")  # not stuck on 403: the sign-in page, with next
    assert page.status_code == 303 and page.headers["location"].startswith("/ui/login")


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
    csrf = field(page, "csrf")
    # mistakes answer an HTML page and change nothing: seconds past ten years (was a 500
    # from an OverflowError), an unknown item (was "no live lease"), a form field over
    # its size (was the API's JSON)
    for seconds in ("99999999999999999999999", str(2**63), "315360001"):
        refused = operator.post(
            f"/ui/items/{lease.item_id}/extend", data={"csrf": csrf, "seconds": seconds}
        )
        assert refused.status_code in (400, 422), (seconds, refused.text[:300])
        assert refused.headers["content-type"].startswith("text/html"), seconds
    for action in ("release", "extend"):
        unknown = operator.post(f"/ui/items/{uuid.uuid4()}/{action}", data={"csrf": csrf})
        assert unknown.status_code == 404 and "text/html" in unknown.headers["content-type"]
    huge = operator.post(
        f"/ui/orders/{order_id}/reject", data={"csrf": csrf, "reason": "x" * 2_000_000}
    )
    assert huge.status_code == 413 and "text/html" in huge.headers["content-type"], huge.text
    assert wm.queries.item(lease.item_id)["lease_expires_at"] == before
    assert wm.queries.order(order_id)["state"] == "submitted"
    operator.post(f"/ui/items/{lease.item_id}/extend", data={"csrf": csrf, "seconds": "600"})
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
    pytest.param("postgres", "redis-cluster", marks=[pytest.mark.postgres, pytest.mark.redis]),
]


@pytest.mark.parametrize(("db", "backend"), BACKENDS)
def test_the_dashboard_shows_the_same_on_every_backend(make_wm: Any, db: str, backend: str) -> None:
    """Queue depth, awaiting review, agents and leases expiring soon, read right whichever
    database and lease backend hold them. With a lock store (memory, Redis) a heartbeat
    extends only the lock (db/store.py lock_only_beat): the row's recorded expiry falls
    behind, and the lease's time left is the lock's, not the row's (the dashboard's and
    the item page's)."""
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
    row_expiry = datetime.fromisoformat(recorded.replace("Z", "+00:00"))
    assert beat.expires_at > row_expiry

    client = sign_in(client_for(wm), viewer)
    board = client.get("/ui/dashboard").text
    fetched = datetime.now(UTC)
    depth = re.search(r'<tr data-type="ui.plain">(.*?)</tr>', board)
    assert depth, board
    # queued, leased, in progress, submitted, failed
    assert re.findall(r"<td>(\d+)</td>", depth.group(1)) == ["0", "0", "1", "0", "0"]
    assert '<b id="awaiting">1</b>' in board
    assert "writer-1" in board and "gpt-test" in board
    expiring = re.search(rf'data-item="{lease.item_id}" data-expires-in="(-?\d+)"', board)
    assert expiring, board
    # the time left is the lock's (at most its TTL), not the row's, which is past: on a
    # loaded machine the page may come late, so it is judged against the lock's expiry
    # as of when the page was fetched, not against 0
    left_at_fetch = (beat.expires_at - fetched).total_seconds()
    assert int(left_at_fetch) - 1 <= int(expiring.group(1)) <= 2
    # and so on the item's page, where an operator decides whether to release it
    page = client.get(f"/ui/items/{lease.item_id}").text
    shown = re.search(r'id="lease-expires">([^<]+)<', page)
    assert shown, page
    expires = datetime.fromisoformat(shown.group(1).replace("Z", "+00:00"))
    assert expires > row_expiry and abs((expires - beat.expires_at).total_seconds()) < 1


def _failed_order(make_wm: Any) -> tuple[WorkManager, uuid.UUID]:
    """A ``ui.title`` order whose apply failed for good (its type raised, no retries)."""
    registry = Registry()
    register(registry)
    registry.register(FailingTitles())  # not in register(): the Celery workers need it not
    wm: WorkManager = make_wm(
        db="sqlite", backend="database", registry=registry, apply_max_retries=0
    )
    order_id = wm.propose("ui.failing", {"docs": ["a"]})
    lease = wm.agent.checkout(AGENT, order_id=order_id)
    assert lease is not None
    wm.agent.submit(lease, {"title": "T"}, agent=AGENT)
    wm.approve(order_id)
    with pytest.raises(ApplyFailed):
        wm.executor.apply(order_id)
    assert wm.queries.order_state(order_id) == "failed"
    return wm, order_id


def test_retry_a_failed_order_once_per_form(make_wm: Any) -> None:
    wm, order_id = _failed_order(make_wm)
    service = TokenService(wm.ctx)
    viewer = sign_in(client_for(wm), service.create("viewer", "view")[0])
    page = viewer.get(f"/ui/orders/{order_id}").text
    assert 'id="retry"' not in page and "downstream down" in page  # the last error shown
    reviewer = sign_in(client_for(wm), service.create("reviewer", "view,approve")[0])
    page = reviewer.get(f"/ui/orders/{order_id}").text
    assert 'id="retry"' in page
    form = {"csrf": field(page, "csrf", "retry-form"), "key": field(page, "key", "retry-form")}
    for _ in range(2):  # a double click: the same form twice retries once, no 409 page
        answer = reviewer.post(f"/ui/orders/{order_id}/retry", data=form)
        assert answer.status_code == 303, answer.text
    assert wm.queries.order_state(order_id) == "submitted"
    assert count_events(wm, order_id, "retried") == 1


def test_every_action_is_refused_without_its_scope_or_the_csrf_token(make_wm: Any) -> None:
    """Each form the console posts: with the session's CSRF token but without the scope
    (403), and with the scope but without the CSRF token (403); nothing changes."""
    wm, failed = _failed_order(make_wm)
    waiting = submitted_order(wm, ("w",))
    held = wm.propose("ui.plain", {"n": 1})
    lease = wm.agent.checkout(AGENT, order_id=held)
    assert lease is not None
    service = TokenService(wm.ctx)
    viewer = sign_in(client_for(wm), service.create("viewer", "view")[0])
    operator = sign_in(client_for(wm), service.create("operator", "admin")[0])
    viewer_csrf = field(viewer.get("/ui/queue").text, "csrf")

    def snapshot() -> tuple[Any, ...]:
        item = wm.queries.item(lease.item_id)
        return (
            wm.queries.order_state(failed),
            wm.queries.order_state(waiting),
            item["state"],
            item["lease_expires_at"],
        )

    before = snapshot()
    actions = [
        (f"/ui/orders/{waiting}/approve", {}),
        (f"/ui/orders/{waiting}/reject", {"reason": "no", "allow_rework": "1"}),
        (f"/ui/orders/{failed}/retry", {}),
        (f"/ui/items/{lease.item_id}/release", {}),
        (f"/ui/items/{lease.item_id}/extend", {"seconds": "600"}),
    ]
    for path, extra in actions:
        key = {"key": uuid.uuid4().hex}
        refused = viewer.post(path, data={**extra, **key, "csrf": viewer_csrf})
        assert refused.status_code == 403, (path, refused.status_code)
        assert "forbidden" in refused.text
        no_csrf = operator.post(path, data={**extra, **key})
        assert no_csrf.status_code == 403, (path, no_csrf.status_code)
        assert "CSRF" in no_csrf.text
        assert snapshot() == before, path
    # sign-out is a form too: without the token it signs no one out
    assert operator.post("/ui/logout", data={}).status_code == 403
    assert operator.get("/ui/queue").status_code == 200


def test_the_order_page_shows_parts_checksums_and_the_agents_request_ids(
    wm: WorkManager, tokens: dict[str, str]
) -> None:
    """Through the HTTP API as an agent would: parts with their SHA-256 checksums and the
    request id of each call, then the review page shows both."""
    agent_token, _ = TokenService(wm.ctx).create("agent", "checkout,submit,view")
    api = TestClient(create_app(wm))
    api.headers.update({"Authorization": f"Bearer {agent_token}", "X-Agent-ID": "parts-agent"})
    api.headers["X-Model-Name"] = "m-7"
    order_id = wm.propose("ui.parts", {})
    leased = api.post(f"/agent/work/orders/{order_id}/checkout", headers={"X-Request-ID": "req-co"})
    assert leased.status_code == 200, leased.text
    item = leased.json()["item"]
    base = f"/agent/work/items/{item['id']}"
    evidence = {"a": {"src": "a.txt"}, "b": 0}  # 0 is evidence (hidden as falsy once)
    for key, request_id in (("a", "req-part-a"), ("b", "req-part-b")):
        answer = api.post(
            f"{base}/parts",
            json={"part_key": key, "payload": {"v": key}, "evidence": evidence[key]},
            headers={
                "X-Lease-Token": str(item["lease_token"]),
                "X-Idempotency-Key": uuid.uuid4().hex,
                "X-Request-ID": request_id,
            },
        )
        assert answer.status_code == 202, answer.text
    done = api.post(
        f"{base}/finalize",
        json={},
        headers={
            "X-Lease-Token": str(item["lease_token"]),
            "X-Idempotency-Key": uuid.uuid4().hex,
            "X-Request-ID": "req-fin",
        },
    )
    assert done.status_code == 202, done.text
    checksums = [p["checksum"] for p in api.get(f"{base}/parts").json()["parts"]]
    assert len(checksums) == 2 and all(len(c) == 64 for c in checksums)

    page = sign_in(client_for(wm), tokens["viewer"]).get(f"/ui/orders/{order_id}").text
    for checksum in checksums:
        assert checksum in page
    for request_id in ("req-co", "req-part-a", "req-part-b", "req-fin"):
        assert request_id in page, request_id
    assert "parts-agent" in page and "m-7" in page and "a.txt" in page
    assert '<pre class="evidence">0</pre>' in page
    # the token each call came with, beside the agent it named (an unbound token names
    # any agent id it likes: the reviewer sees whose token it was)
    assert page.count('<td class="principal">agent</td>') >= 4


def test_the_lists_sort_and_page_like_the_api(wm: WorkManager, tokens: dict[str, str]) -> None:
    made = [wm.propose("ui.plain", {"n": n}, priority=n) for n in range(5)]
    viewer = sign_in(client_for(wm), tokens["viewer"])

    def ids(html: str, what: str) -> list[str]:
        return re.findall(rf'<a href="/ui/{what}/([0-9a-f-]{{36}})"', html)

    first = viewer.get("/ui/orders", params={"sort": "-priority", "page[size]": "2"}).text
    assert ids(first, "orders") == [str(made[4]), str(made[3])]
    assert "page 1 of 3" in first
    following = re.search(r'<a href="([^"]+)" id="next"', first)
    assert following, first
    second = viewer.get("/ui/orders" + following.group(1).replace("&amp;", "&")).text
    assert ids(second, "orders") == [str(made[2]), str(made[1])]  # same sort, next page
    ascending = viewer.get("/ui/orders", params={"sort": "priority", "page[size]": "2"}).text
    assert ids(ascending, "orders") == [str(made[0]), str(made[1])]

    items = viewer.get("/ui/items", params={"sort": "-priority", "page[size]": "2"}).text
    assert "page 1 of 3" in items
    order_of = {str(wm.queries.order(o)["items"][0]["id"]): o for o in made}
    shown = ids(items, "items")
    assert [order_of[i] for i in shown] == [made[4], made[3]]
    assert viewer.get("/ui/items", params={"sort": "nope"}).status_code == 400


def test_a_session_ends_at_its_expiry(wm: WorkManager, tokens: dict[str, str]) -> None:
    viewer = sign_in(client_for(wm), tokens["viewer"])
    assert viewer.get("/ui/queue").status_code == 200
    later = wm.ctx.clock() + SESSION_LIFETIME + timedelta(seconds=1)
    wm.ctx.clock = lambda: later
    answer = viewer.get("/ui/queue")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/ui/login")


def test_the_pages_load_nothing_from_outside_the_package() -> None:
    """No CDN: every script, stylesheet and image a template names is the console's own."""
    root = Path(__file__).resolve().parents[2] / "workmanager" / "ui"
    for template in (root / "templates").glob("*.html"):
        text = template.read_text()
        for ref in re.findall(r'(?:src|href)="([^"]*)"', text):
            assert not re.match(r"(?i)(https?:)?//", ref), (template.name, ref)
    assert {p.name for p in (root / "static").iterdir()} >= {"console.js", "console.css"}


def test_the_queue_row_shows_type_age_items_and_producers(
    wm: WorkManager, tokens: dict[str, str]
) -> None:
    order_id = submitted_order(wm, ("a", "b", "c"))
    later = wm.ctx.clock() + timedelta(minutes=5)
    wm.ctx.clock = lambda: later  # waited five minutes
    page = sign_in(client_for(wm), tokens["viewer"]).get("/ui/queue").text
    row = re.search(rf'<tr data-order="{order_id}">(.*?)</tr>', page, re.S)
    assert row, page
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td.*?</td>", row.group(1))]
    assert cells[1:4] == ["ui.title", "5m 00s", "3"], cells
    assert cells[4] == "writer-1 · 1.2.0 · gpt-test"


def test_the_preview_shows_nothing_without_the_hook_and_its_error_when_it_raises(
    wm: WorkManager, tokens: dict[str, str]
) -> None:
    plain = wm.propose("ui.plain", {"n": 1})
    lease = wm.agent.checkout(AGENT, order_id=plain)
    assert lease is not None
    wm.agent.submit(lease, {"x": 1}, agent=AGENT)
    viewer = sign_in(client_for(wm), tokens["viewer"])
    assert 'id="preview"' not in viewer.get(f"/ui/orders/{plain}").text
    broken = submitted_order(wm, ("boom",))
    page = viewer.get(f"/ui/orders/{broken}")
    assert page.status_code == 200
    assert 'id="preview"' in page.text and "No preview: KeyError" in page.text
    wrong = viewer.get(f"/ui/orders/{submitted_order(wm, ('dict',))}")
    assert wrong.status_code == 200
    assert "No preview: TypeError: preview() returned dict, not a Diff or None" in wrong.text
    deep = viewer.get(f"/ui/orders/{submitted_order(wm, ('deep',))}")
    assert deep.status_code == 200 and "No preview: MalformedJSON" in deep.text


def test_large_values_are_cut_on_the_pages_with_where_to_find_them_whole(
    wm: WorkManager, tokens: dict[str, str]
) -> None:
    """Found by a volume pass: an item of 100 parts of 1 MiB printed every part, and the
    assembled result, whole: an order page of 210 MB that took 10 s. Each value is cut."""
    order_id = wm.propose("ui.parts", {})
    lease = wm.agent.checkout(AGENT, order_id=order_id)
    assert lease is not None
    big = {"text": "x" * 200_000}
    for key in ("a", "b"):
        wm.agent.submit_part(lease, key, big)
    wm.agent.finalize(lease)
    client = sign_in(client_for(wm), tokens["viewer"])
    for page in (f"/ui/orders/{order_id}", f"/ui/items/{lease.item_id}"):
        answer = client.get(page)
        assert answer.status_code == 200
        assert len(answer.text) < 200_000, (page, len(answer.text))  # 3 values of 200 KB
        assert "characters shown; the whole value: `workmanager orders show ID --json`" in (
            answer.text
        ), page
    small = client.get(f"/ui/orders/{submitted_order(wm)}").text
    assert "cut here" not in small


def test_a_form_posted_again_while_its_first_submission_runs_says_so(
    wm: WorkManager, tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A double click whose first submission was still waiting (on a lock another
    reviewer's reject held) answered "Done: approved." although the approval then lost:
    the second submission did nothing and cannot know; it says the first still runs."""
    from workmanager.errors import IdempotencyInFlight

    order_id = submitted_order(wm)
    reviewer = sign_in(client_for(wm), tokens["reviewer"])
    page = reviewer.get(f"/ui/orders/{order_id}").text
    form = {"csrf": field(page, "csrf", "approve-form"), "key": field(page, "key", "approve-form")}

    def still_running(*_: object, **__: object) -> None:
        raise IdempotencyInFlight()

    monkeypatch.setattr(wm.idempotency, "once", still_running)
    answer = reviewer.post(f"/ui/orders/{order_id}/approve", data=form)
    assert answer.status_code == 303 and answer.headers["location"].endswith("?done=pending")
    shown = reviewer.get(answer.headers["location"]).text
    assert "still running: reload the page" in shown and "Done:" not in shown
    assert wm.queries.order_state(order_id) == "submitted"


def test_a_big_order_page_shows_its_items_a_page_at_a_time(
    wm: WorkManager, tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An order of 10,000 items printed them all, with their evidence and provenance, on
    one page (12 MB, 4 s), and showed the provenance of the order's first 500 rows only:
    an item past them had none. Now 50 items a page (``?items_page=N``), each with its
    own provenance and evidence, and the newest events, saying how many there are."""
    from workmanager.reads import overview

    monkeypatch.setattr(overview, "EVENTS_SHOWN", 10)
    order_id = submitted_order(wm, tuple(f"d{n}" for n in range(120)))
    items = wm.queries.order(order_id)["items"]
    c = sign_in(client_for(wm), tokens["viewer"])

    def shown(page: str) -> list[str]:
        return re.findall(r'data-item="([0-9a-f-]+)"', page)

    first = c.get(f"/ui/orders/{order_id}").text
    assert shown(first) == [i["id"] for i in items[:50]]
    assert "items 1\u201350 of 120 (page 1 of 3)" in first and 'id="items-next"' in first
    last = c.get(f"/ui/orders/{order_id}", params={"items_page": "3"}).text
    assert shown(last) == [i["id"] for i in items[100:]]
    assert 'id="items-prev"' in last and 'id="items-next"' not in last
    # the last item's own submission and provenance, though the order has 360 rows
    assert last.count('class="evidence"') == 20 and last.count("gpt-test") >= 20
    assert (
        c.get(f"/ui/orders/{order_id}", params={"items_page": "9"}).text.count('data-item="') == 20
    )  # past the last page: the last
    refused = c.get(f"/ui/orders/{order_id}", params={"items_page": "two"})
    assert refused.status_code == 400 and "items_page must be a page number from 1 to 3" in (
        refused.text
    )
    assert first.count('class="event"') == 10
    total = count_events(wm, order_id, "submitted") + count_events(wm, order_id, "leased")
    assert re.search(r"the newest 10 of (\d+) events", first)
    assert int(re.search(r"the newest 10 of (\d+) events", first).group(1)) > total
