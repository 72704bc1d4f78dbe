"""The console's routes: sign in/out, items and their lease actions, the dashboard (the
review queue and orders are :mod:`.reviews`'), over the services the HTTP API uses (no
business rule here). What a scope does not allow is not shown (the templates ask
``can(...)``) and, when posted anyway, is refused by the operation itself
(``Principal.require``). What every page shares is :mod:`.pages`'.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from ..api.deps import ApiState
from ..errors import Forbidden, NotFound, Unauthenticated
from ..reads.expiry import expired
from ..reads.item_listing import ItemListing
from ..reads.leases import fence_of
from ..reads.overview import Overview
from ..services.lease_admin import DEFAULT_EXTEND_SECONDS
from . import reviews  # noqa: F401  (its routes, on the shared router)
from .pages import (
    COOKIE,
    HERE,
    LEASE_ENDED,
    LOGIN_COOKIE,
    NO_LIVE_LEASE,
    PREFIX,
    Console,
    ConsoleRoute,
    Signed,
    back,
    caller_of,
    checked_form,
    console,
    flash_of,
    local_target,
    pages_link,
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


# --- items --------------------------------------------------------------------------------
@router.get("/items", include_in_schema=False)
def items(request: Request, sess: Signed) -> HTMLResponse:
    params = [(k, v) for k, v in request.query_params.multi_items() if v != ""]
    page = console(request).items.list(params, tenant=sess.principal.tenant_id)
    return render(
        request, "items.html", sess, page=page, params=dict(params), pages=pages_link(params)
    )


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
        fence=fence_of(c.api.wm.ctx, iid),
        events=logs["events"],
        parts=parts,
        provenance=c.overview.provenance(c.overview.item_order(iid), [iid]).get(str(iid), []),
        flash=flash_of(request.query_params.get("done")),
    )


@router.post("/items/{item_id}/release", include_in_schema=False)
def release(
    request: Request,
    item_id: str,
    sess: Signed,
    csrf: str = Form(""),
    fence: int | None = Form(None),
) -> Response:
    caller = checked_form(request, sess, csrf)
    _, result = console(request).api.ops.release_lease(caller, item_id, fence)
    return back(f"/items/{item_id}", done=_outcome(result, fence))


@router.post("/items/{item_id}/extend", include_in_schema=False)
def extend(
    request: Request,
    item_id: str,
    sess: Signed,
    csrf: str = Form(""),
    seconds: int = Form(DEFAULT_EXTEND_SECONDS),
    fence: int | None = Form(None),
) -> Response:
    caller = checked_form(request, sess, csrf)
    _, result = console(request).api.ops.extend_lease(caller, item_id, seconds, fence)
    return back(f"/items/{item_id}", done=_outcome(result, fence))


def _outcome(result: Mapping[str, Any], fence: int | None) -> str:
    counts = result.get("counts") or {}
    if not counts:
        return NO_LIVE_LEASE if fence is None else LEASE_ENDED
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))


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
    app.include_router(fallback, prefix=PREFIX)  # last: only what nothing else serves


#: Any other path under /ui: the console's "not found" page, not the API's JSON envelope.
fallback = APIRouter(route_class=ConsoleRoute)


@fallback.api_route("/{rest:path}", methods=["GET", "POST"], include_in_schema=False)
def unknown(rest: str) -> Response:
    raise NotFound(f"the console has no page at /ui/{rest[:200]}")
