"""The console's routes: sign in/out, review queue, orders, items, dashboard, over the
services the HTTP API uses (no business rule here). What a scope does not allow is not
shown (the templates ask ``can(...)``) and, when posted anyway, is refused by the
operation itself (``Principal.require``). What every page shares is :mod:`.pages`'.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from ..api.deps import ApiState
from ..errors import Forbidden, InvalidQuery, Unauthenticated
from ..reads.expiry import expired
from ..reads.item_listing import ItemListing
from ..reads.overview import Overview
from ..services.lease_admin import DEFAULT_EXTEND_SECONDS
from ..services.orders import REVIEWER_REJECTION
from ..surface.operations import parse_id
from .pages import (
    COOKIE,
    HERE,
    LOGIN_COOKIE,
    PREFIX,
    Console,
    Signed,
    back,
    caller_of,
    checked_form,
    console,
    local_target,
    once,
    render,
    router,
    templates,
)
from .sessions import SESSION_LIFETIME, SessionService, same_text


# --- sign in and out --------------------------------------------------------------------
@router.get("/", include_in_schema=False)
def home() -> RedirectResponse:
    return back("/queue")


@router.get("/login", include_in_schema=False)
def login_page(request: Request, next: str | None = None) -> Response:
    return _login_form(request, next, None, 200)


def _login_form(request: Request, next: str | None, failed: str | None, status: int) -> Response:
    """The sign-in page; ``failed``: why the last attempt was refused, rendered by the
    POST itself (never read from the query string, where anyone could write a message on
    the page that asks for a token). Its form's CSRF cookie is kept while it lives, so
    two tabs opened on the page both sign in."""
    c = console(request)
    login_csrf = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)
    response = c.templates.TemplateResponse(
        request,
        "login.html",
        {
            "session": None,
            "can": lambda scope: False,
            "csrf": login_csrf,
            "next": local_target(next),
            "failed": failed,
            "auth_enabled": c.api.auth_enabled,
        },
        status_code=status,
    )
    _set_cookie(request, response, LOGIN_COOKIE, login_csrf, 600)
    return response


@router.post("/login", include_in_schema=False)
def login(
    request: Request,
    token: str = Form(""),
    csrf: str = Form(""),
    next: str = Form(""),
) -> Response:
    expected = request.cookies.get(LOGIN_COOKIE)
    if not expected or not same_text(expected, csrf):
        raise Forbidden("the sign-in form expired; reload the page and sign in again")
    try:
        secret, _ = console(request).sessions.sign_in(token.strip() or None)
    except (Unauthenticated, Forbidden) as exc:
        return _login_form(request, next, exc.message, exc.http_status)
    response = RedirectResponse(local_target(next), 303)
    _set_cookie(request, response, COOKIE, secret, int(SESSION_LIFETIME.total_seconds()))
    response.delete_cookie(LOGIN_COOKIE, path=PREFIX)
    return response


@router.post("/logout", include_in_schema=False)
def logout(request: Request, sess: Signed, csrf: str = Form("")) -> Response:
    checked_form(request, sess, csrf)
    console(request).sessions.sign_out(request.cookies.get(COOKIE))
    response = back("/login")
    response.delete_cookie(COOKIE, path=PREFIX)
    return response


def _set_cookie(request: Request, response: Response, name: str, value: str, age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=age,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


# --- the review queue and orders --------------------------------------------------------
@router.get("/queue", include_in_schema=False)
def queue(request: Request, sess: Signed) -> HTMLResponse:
    tenant = sess.principal.tenant_id
    queue = console(request).overview.review_queue(tenant=tenant)
    return render(request, "queue.html", sess, queue=queue)


@router.get("/orders", include_in_schema=False)
def orders(request: Request, sess: Signed) -> HTMLResponse:
    params = [(k, v) for k, v in request.query_params.multi_items() if v != ""]
    _, page = console(request).api.ops.list_orders(caller_of(request, sess), params)
    return render(
        request, "orders.html", sess, page=page, params=dict(params), pages=_pages(params)
    )


@router.get("/orders/{order_id}", include_in_schema=False)
def order(request: Request, order_id: str, sess: Signed) -> HTMLResponse:
    c = console(request)
    caller = caller_of(request, sess)
    _, body = c.api.ops.get_order(caller, order_id)
    view = body["order"]
    oid = parse_id(order_id, "order")
    shown, pager = _items_page(view["items"], request.query_params.get("items_page"))
    ids = [uuid.UUID(item["id"]) for item in shown]
    parts = {
        item["id"]: c.api.ops.list_parts(caller, item["id"])[1]
        for item in shown
        if item.get("parts_required") or item.get("parts_state")
    }
    events, total_events = c.overview.timeline(oid)
    return render(
        request,
        "order.html",
        sess,
        order=view,
        shown=shown,
        items_pager=pager,
        events=events,
        total_events=total_events,
        provenance=c.overview.provenance(oid, ids),
        submissions=c.overview.submissions(oid, ids),
        parts=parts,
        preview=c.overview.preview(oid),
        flash=flash_of(request.query_params.get("done")),
    )


#: Items one order page shows (``?items_page=N`` for the others): an order of 10,000
#: items printed them all, a page of 12 MB that took 4 s to make.
ITEMS_SHOWN = 50


def _items_page(
    items: list[dict[str, Any]], asked: str | None
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The items of page ``asked`` (1 when not given; past the last: the last) and the
    pager's figures."""
    last = max(1, -(-len(items) // ITEMS_SHOWN))
    if asked is None:
        number = 1
    elif asked.isdigit() and int(asked) >= 1:
        number = min(int(asked), last)
    else:
        raise InvalidQuery(
            f"items_page must be a page number from 1 to {last}, got {asked[:40]!r}",
            details={"parameter": "items_page"},
        )
    start = (number - 1) * ITEMS_SHOWN
    pager = {"current_page": number, "last_page": last, "from": start + 1, "total": len(items)}
    return items[start : start + ITEMS_SHOWN], pager


@router.post("/orders/{order_id}/approve", include_in_schema=False)
def approve(
    request: Request,
    order_id: str,
    sess: Signed,
    csrf: str = Form(""),
    key: str = Form(""),
) -> Response:
    caller = checked_form(request, sess, csrf)
    ops = console(request).api.ops
    ran = once(request, caller, "approve", order_id, key, {}, lambda c: ops.approve(c, order_id))
    return back(f"/orders/{order_id}", done="approved" if ran else PENDING)


@router.post("/orders/{order_id}/reject", include_in_schema=False)
def reject(
    request: Request,
    order_id: str,
    sess: Signed,
    csrf: str = Form(""),
    key: str = Form(""),
    reason: str = Form(""),
    allow_rework: str = Form(""),
) -> Response:
    caller = checked_form(request, sess, csrf)
    ops = console(request).api.ops
    rework = allow_rework in ("1", "on", "true")
    message = reason.strip() or "rejected in the review console"
    errors: list[Any] = [{"code": REVIEWER_REJECTION, "message": message}]
    body = {"errors": errors, "allow_rework": rework}
    ran = once(
        request,
        caller,
        "reject",
        order_id,
        key,
        body,
        lambda c: ops.reject(c, order_id, errors, allow_rework=rework),
    )
    done = ("reworked" if rework else "rejected") if ran else PENDING
    return back(f"/orders/{order_id}", done=done)


@router.post("/orders/{order_id}/retry", include_in_schema=False)
def retry(
    request: Request,
    order_id: str,
    sess: Signed,
    csrf: str = Form(""),
    key: str = Form(""),
) -> Response:
    caller = checked_form(request, sess, csrf)
    ops = console(request).api.ops
    ran = once(request, caller, "retry", order_id, key, {}, lambda c: ops.retry(c, order_id))
    return back(f"/orders/{order_id}", done="retried" if ran else PENDING)


# --- items --------------------------------------------------------------------------------
@router.get("/items", include_in_schema=False)
def items(request: Request, sess: Signed) -> HTMLResponse:
    params = [(k, v) for k, v in request.query_params.multi_items() if v != ""]
    page = console(request).items.list(params, tenant=sess.principal.tenant_id)
    return render(request, "items.html", sess, page=page, params=dict(params), pages=_pages(params))


@router.get("/items/{item_id}", include_in_schema=False)
def item(request: Request, item_id: str, sess: Signed) -> HTMLResponse:
    c = console(request)
    caller = caller_of(request, sess)
    iid = c.api.ops.item_id(caller, item_id)  # another tenant's item: 404
    found = c.api.wm.queries.item(iid)
    _, logs = c.api.ops.logs(caller, item_id)
    _, parts = c.api.ops.list_parts(caller, item_id)
    return render(
        request,
        "item.html",
        sess,
        item=found,
        # the lock's expiry on Redis and memory leases (reads/expiry.py, in queries.item)
        lease_expired=expired(found, c.api.wm.ctx.clock()),
        extend_default=DEFAULT_EXTEND_SECONDS,
        events=logs["events"],
        parts=parts,
        provenance=c.overview.provenance(c.overview.item_order(iid), [iid]).get(str(iid), []),
        flash=flash_of(request.query_params.get("done")),
    )


@router.post("/items/{item_id}/release", include_in_schema=False)
def release(request: Request, item_id: str, sess: Signed, csrf: str = Form("")) -> Response:
    caller = checked_form(request, sess, csrf)
    _, result = console(request).api.ops.release_lease(caller, item_id)
    return back(f"/items/{item_id}", done=_outcome(result))


@router.post("/items/{item_id}/extend", include_in_schema=False)
def extend(
    request: Request,
    item_id: str,
    sess: Signed,
    csrf: str = Form(""),
    seconds: int = Form(DEFAULT_EXTEND_SECONDS),
) -> Response:
    caller = checked_form(request, sess, csrf)
    _, result = console(request).api.ops.extend_lease(caller, item_id, seconds)
    return back(f"/items/{item_id}", done=_outcome(result))


NO_LIVE_LEASE = "no live lease"


def _outcome(result: Mapping[str, Any]) -> str:
    counts = result.get("counts") or {}
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or NO_LIVE_LEASE


#: What the order page's actions say they did (``?done=``); the item page's say the
#: counts of their outcomes (``released: 1``) or that there was no live lease.
ORDER_OUTCOMES = frozenset({"approved", "rejected", "reworked", "retried"})
_COUNTS = re.compile(r"[a-z_]{1,20}: \d{1,6}(, [a-z_]{1,20}: \d{1,6}){0,5}")


#: ``?done=`` of an order action whose form was posted again while its first submission
#: still ran (a double click): this one did nothing, and the first may yet be refused.
PENDING = "pending"


def flash_of(done: str | None) -> str | None:
    """``?done=`` as the page says it ("Done: …."), or nothing for a text no action
    writes: the query string is anyone's to write, the page's words are ours."""
    if done == PENDING:
        return (
            "An earlier submission of this form is still running: reload the page to see"
            " how it ended."
        )
    if done is None:
        return None
    if done in ORDER_OUTCOMES or done == NO_LIVE_LEASE or _COUNTS.fullmatch(done):
        return f"Done: {done}."
    return None


def _pages(params: list[tuple[str, str]]) -> Callable[[int], str]:
    """A link to page ``n`` with the same filters and sort."""
    kept = [(k, v) for k, v in params if k not in ("page", "page[number]")]

    def link(n: int) -> str:
        return "?" + urlencode([*kept, ("page[number]", str(n))])

    return link


# --- the dashboard ------------------------------------------------------------------------
@router.get("/dashboard", include_in_schema=False)
def dashboard(request: Request, sess: Signed) -> HTMLResponse:
    board = console(request).overview.dashboard(tenant=sess.principal.tenant_id)
    return render(request, "dashboard.html", sess, board=board)


@router.get("/dashboard/panel", include_in_schema=False)
def dashboard_panel(request: Request, sess: Signed) -> HTMLResponse:
    board = console(request).overview.dashboard(tenant=sess.principal.tenant_id)
    return render(request, "_dashboard_panel.html", sess, board=board)


def mount(app: FastAPI, api: ApiState) -> None:
    """Serve the console under ``/ui`` on ``app``, over the API's services."""
    ctx = api.wm.ctx
    app.state.console = Console(
        api=api,
        sessions=SessionService(ctx, api.tokens, api.auth_enabled),
        overview=Overview(ctx),
        items=ItemListing(ctx),
        templates=templates(),
    )
    app.include_router(router, prefix=PREFIX)
    app.add_api_route(PREFIX, home, include_in_schema=False)  # /ui as /ui/ (no slash redirects)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=str(HERE / "static")), name="ui-static")
