"""The review console under a tenant-bound token (issue 17): signed in with tenant A's token,
every page and form shows and changes nothing of tenant B's. B's order and item pages and
B's ids in A's forms are the same HTML 404 as an unknown id; the queue, the lists and the
dashboard show A's work only; the database is as it was. The API's and MCP's side is
tests/api/test_tenant_isolation.py."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient

from workmanager import AgentInfo, Registry, WorkManager
from workmanager.api import create_app
from workmanager.services.tokens import TokenService

from .test_console import field, sign_in
from .types import register

AGENT = AgentInfo(id="writer-1")
A, B = "acme-t", "globex-t"


def submitted(wm: WorkManager, tenant: str, doc: str) -> tuple[uuid.UUID, uuid.UUID]:
    order_id = wm.propose("ui.title", {"docs": [doc]}, tenant_id=tenant)
    lease = wm.agent.checkout(AGENT, order_id=order_id)
    assert lease is not None
    wm.agent.submit(lease, {"title": f"T-{doc}"}, evidence={"url": "u"}, agent=AGENT)
    return order_id, lease.item_id


def state(wm: WorkManager, *orders: uuid.UUID) -> list[Any]:
    return [wm.queries.order(o) for o in orders]


def test_a_tenants_console_shows_and_changes_nothing_of_another_tenant(make_wm: Any) -> None:
    registry = Registry()
    register(registry)
    wm = make_wm(db="sqlite", backend="database", registry=registry)
    b_order, b_item = submitted(wm, B, "b-doc")
    b_leased = wm.propose("ui.title", {"docs": ["b-held"]}, tenant_id=B)
    lease = wm.agent.checkout(AGENT, order_id=b_leased)
    assert lease is not None
    a_order, _ = submitted(wm, A, "a-doc")
    token, _ = TokenService(wm.ctx).create("acme-operator", "admin", tenant_id=A)
    a = sign_in(TestClient(create_app(wm), follow_redirects=False), token)
    b_ids = [str(b_order), str(b_item), str(b_leased), str(lease.item_id)]

    # Lists, queue and dashboard: A's work only, whatever filter A names.
    queue = a.get("/ui/queue")
    assert queue.status_code == 200 and str(a_order) in queue.text
    pages = ["/ui/queue", "/ui/orders", "/ui/items", "/ui/dashboard", "/ui/dashboard/panel"]
    pages += [f"/ui/orders?filter[tenant_id]={B}", f"/ui/orders?filter[id]={b_order}"]
    for path in pages:
        page = a.get(path)
        assert page.status_code == 200, (path, page.text)
        for seen in [*b_ids, B]:
            assert seen not in page.text, (path, seen)
    assert str(a_order) in a.get("/ui/orders").text

    # B's pages: word for word the 404 of an unknown id.
    unknown_order, unknown_item = uuid.uuid4(), uuid.uuid4()
    for path, other in (
        (f"/ui/orders/{b_order}", f"/ui/orders/{unknown_order}"),
        (f"/ui/items/{b_item}", f"/ui/items/{unknown_item}"),
        (f"/ui/items/{lease.item_id}", f"/ui/items/{unknown_item}"),
    ):
        mine, theirs = a.get(path), a.get(other)
        assert mine.status_code == theirs.status_code == 404, (path, mine.text)
        assert "not_found" in mine.text
        text = mine.text
        for value in b_ids:
            text = text.replace(value, "<id>")
        assert text == theirs.text.replace(str(unknown_order), "<id>").replace(
            str(unknown_item), "<id>"
        ), path

    # B's ids in A's forms (A's own valid CSRF token): 404, nothing changed.
    csrf = field(queue.text, "csrf")
    before = state(wm, b_order, b_leased)
    forms = [
        (f"/ui/orders/{b_order}/approve", {}),
        (f"/ui/orders/{b_order}/reject", {"reason": "no", "allow_rework": "1"}),
        (f"/ui/orders/{b_order}/retry", {}),
        (f"/ui/items/{lease.item_id}/release", {}),
        (f"/ui/items/{lease.item_id}/extend", {"seconds": "600"}),
    ]
    for path, extra in forms:
        answer = a.post(path, data={"csrf": csrf, "key": uuid.uuid4().hex, **extra})
        assert answer.status_code == 404, (path, answer.status_code, answer.text)
        assert "not_found" in answer.text
    assert state(wm, b_order, b_leased) == before

    # A's own order is A's to approve from the console.
    own = a.get(f"/ui/orders/{a_order}").text
    form = {"csrf": field(own, "csrf", "approve-form"), "key": field(own, "key", "approve-form")}
    assert a.post(f"/ui/orders/{a_order}/approve", data=form).status_code == 303
    assert wm.queries.order_state(a_order) == "approved"
