"""The console's routes: sign in/out, review queue, orders, items, dashboard.

Every page needs a live session whose token still holds ``view``; every form carries the
session's CSRF token, and a POST without it (or from another origin) is refused before
anything runs. What a scope does not allow is not shown (the templates ask ``can(...)``)
and, when posted anyway, is refused by the operation itself (``Principal.require``).
Approve, reject and retry run once per rendered form: each form carries an idempotency key
of its own, passed to the idempotency service as the HTTP API's header would be.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import secrets
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from ..api.deps import ApiState, metadata
from ..errors import Forbidden, IdempotencyInFlight, InvalidQuery, Unauthenticated, WorkManagerError
from ..reads.listing import ItemListing
from ..reads.overview import Overview
from ..surface.callers import Caller, build_caller
from ..surface.operations import Answer, parse_id
from .sessions import SESSION_LIFETIME, ConsoleSession, SessionService

HERE = Path(__file__).parent
PREFIX = "/ui"
COOKIE = "wm_console"
LOGIN_COOKIE = "wm_console_login"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Console:
    """What the pages share, kept on ``app.state.console``."""

    api: ApiState
    sessions: SessionService
    overview: Overview
    items: ItemListing
    templates: Jinja2Templates


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["pretty"] = _pretty
    templates.env.filters["age"] = _age
    return templates


def console(request: Request) -> Console:
    value: Console = request.app.state.console
    return value


# --- errors: pages, not JSON ------------------------------------------------------------
def error_page(request: Request, error: WorkManagerError) -> Response:
    if isinstance(error, Unauthenticated) and request.method == "GET":
        target = urlencode({"next": _local(str(request.url.path) + _query(request))})
        return RedirectResponse(f"{PREFIX}/login?{target}", 303)
    c = console(request)
    response = c.templates.TemplateResponse(
        request,
        "error.html",
        {"error": error, "session": None, "can": lambda scope: False},
        status_code=error.http_status,
    )
    response.headers.update(SECURITY_HEADERS)
    return response


def _query(request: Request) -> str:
    return f"?{request.url.query}" if request.url.query else ""


def _local(target: str | None) -> str:
    """Only a path inside the console is a place to go back to (no open redirect)."""
    if not target or not target.startswith(PREFIX + "/") or target.startswith("//"):
        return f"{PREFIX}/queue"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else f"{PREFIX}/queue"


class ConsoleRoute(APIRoute):
    """Errors of the console's routes become HTML pages (and, for a GET without a
    session, a redirect to the sign-in page) instead of the API's JSON envelope."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                response = await original(request)
            except WorkManagerError as exc:
                return error_page(request, exc)
            except RequestValidationError as exc:
                return error_page(request, InvalidQuery(f"the form is incomplete: {exc}"))
            response.headers.update(SECURITY_HEADERS)
            return response

        return handler


router = APIRouter(route_class=ConsoleRoute)


# --- sessions and callers ---------------------------------------------------------------
def session(request: Request) -> ConsoleSession:
    """The request's live session (or ``Unauthenticated``); its token must still hold view."""
    found = console(request).sessions.resolve(request.cookies.get(COOKIE))
    found.principal.require("view")
    return found


Signed = Annotated[ConsoleSession, Depends(session)]


def caller_of(request: Request, sess: ConsoleSession) -> Caller:
    """The console acts as the signed-in person, never as an agent a header names (the
    bound-agent rule is checked at sign-in, where no agent is named)."""
    meta = dataclasses.replace(metadata(request), agent_id=None)
    return build_caller(sess.principal, meta)


def checked_form(request: Request, sess: ConsoleSession, csrf: str) -> Caller:
    """The caller of a POST, after the CSRF token and the origin were checked."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        host = request.headers.get("host", "")
        if urlsplit(origin).netloc != host:
            raise Forbidden("this form was posted from another site", details={"origin": origin})
    if not sess.csrf_ok(csrf):
        raise Forbidden("the form's CSRF token is missing or wrong; reload the page")
    return caller_of(request, sess)


def render(request: Request, name: str, sess: ConsoleSession, **context: Any) -> HTMLResponse:
    principal = sess.principal
    return console(request).templates.TemplateResponse(
        request,
        name,
        {
            "session": sess,
            "principal": principal,
            "can": principal.allows,
            "csrf": sess.csrf_token,
            "new_key": lambda: uuid.uuid4().hex,
            **context,
        },
    )


def once(
    request: Request,
    caller: Caller,
    endpoint: str,
    target: str,
    key: str,
    body: Any,
    operation: Callable[[Caller], Answer],
) -> None:
    """Run ``operation`` once per form key (a double click, a resubmitted form: once)."""
    if not key:
        raise InvalidQuery("the form has no idempotency key; reload the page")
    # A replay (the form posted again) did its work the first time; one in flight is the
    # first submission still running: it is the one.
    with contextlib.suppress(IdempotencyInFlight):
        console(request).api.wm.idempotency.once(caller, endpoint, target, key, body, operation)


def back(path: str, **flash: str) -> RedirectResponse:
    query = f"?{urlencode(flash)}" if flash else ""
    return RedirectResponse(f"{PREFIX}{path}{query}", 303)


# --- sign in and out --------------------------------------------------------------------
@router.get("/", include_in_schema=False)
def home() -> RedirectResponse:
    return back("/queue")


@router.get("/login", include_in_schema=False)
def login_page(request: Request, next: str | None = None, failed: str | None = None) -> Response:
    c = console(request)
    login_csrf = secrets.token_urlsafe(32)
    response = c.templates.TemplateResponse(
        request,
        "login.html",
        {
            "session": None,
            "can": lambda scope: False,
            "csrf": login_csrf,
            "next": _local(next),
            "failed": failed,
            "auth_enabled": c.api.auth_enabled,
        },
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
    if not expected or not secrets.compare_digest(expected, csrf):
        raise Forbidden("the sign-in form expired; reload the page and sign in again")
    try:
        secret, _ = console(request).sessions.sign_in(token.strip() or None)
    except (Unauthenticated, Forbidden) as exc:
        query = urlencode({"failed": exc.message, "next": _local(next)})
        return RedirectResponse(f"{PREFIX}/login?{query}", 303)
    response = RedirectResponse(_local(next), 303)
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
    parts = {
        item["id"]: c.api.ops.list_parts(caller, item["id"])[1]
        for item in view["items"]
        if item.get("parts_required") or item.get("parts_state")
    }
    return render(
        request,
        "order.html",
        sess,
        order=view,
        events=c.api.wm.queries.events(oid),
        provenance=c.overview.provenance(oid),
        submissions=c.overview.submissions(oid),
        parts=parts,
        preview=c.overview.preview(oid),
        flash=request.query_params.get("done"),
    )


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
    once(request, caller, "approve", order_id, key, {}, lambda c: ops.approve(c, order_id))
    return back(f"/orders/{order_id}", done="approved")


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
    errors: list[Any] = [{"code": "rejected_in_review", "message": message}]
    body = {"errors": errors, "allow_rework": rework}
    once(
        request,
        caller,
        "reject",
        order_id,
        key,
        body,
        lambda c: ops.reject(c, order_id, errors, allow_rework=rework),
    )
    return back(f"/orders/{order_id}", done="reworked" if rework else "rejected")


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
    once(request, caller, "retry", order_id, key, {}, lambda c: ops.retry(c, order_id))
    return back(f"/orders/{order_id}", done="retried")


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
        lease_expires=c.overview.lease_expiry(iid, found.get("lease_expires_at")),
        events=logs["events"],
        parts=parts,
        provenance=c.overview.provenance(c.overview.item_order(iid)).get(str(iid), []),
        flash=request.query_params.get("done"),
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
    seconds: int = Form(60),
) -> Response:
    caller = checked_form(request, sess, csrf)
    _, result = console(request).api.ops.extend_lease(caller, item_id, seconds)
    return back(f"/items/{item_id}", done=_outcome(result))


def _outcome(result: Mapping[str, Any]) -> str:
    counts = result.get("counts") or {}
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "no live lease"


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
        templates=_templates(),
    )
    app.include_router(router, prefix=PREFIX)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=str(HERE / "static")), name="ui-static")
