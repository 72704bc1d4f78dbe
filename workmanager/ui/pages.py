"""What every console page shares: the session a request carries, the caller it acts as,
the CSRF and origin check of a form, rendering, once-per-form actions, and errors shown as
pages (a GET without a session: the sign-in page) instead of the API's JSON envelope.

Every page needs a live session whose token still holds ``view``; every form carries the
session's CSRF token, and a POST without it (or from another origin) is refused before
anything runs. Approve, reject and retry run once per rendered form: each form carries an
idempotency key of its own, passed to the idempotency service as the HTTP API's header
would be. The routes are :mod:`.app`'s.
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from starlette.exceptions import HTTPException

from ..api.deps import ApiState, metadata
from ..api.errors import http_error
from ..display import shown
from ..errors import Forbidden, IdempotencyInFlight, InvalidQuery, Unauthenticated, WorkManagerError
from ..reads.item_listing import ItemListing
from ..reads.overview import Overview
from ..surface.callers import Caller, build_caller
from ..surface.operations import Answer
from .sessions import ConsoleSession, SessionService

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


#: Characters of one value a page shows (a result, a part, a payload): an item may hold 100
#: parts of 1 MiB, and printing them whole made an order page of 210 MB that took 10 s.
SHOWN_CHARS = 16_384


#: What a name-like value shows (a diff's key, its summary, a preview's error) before it
#: is cut: a 30,000-character key pushed every row's before and after off the screen.
SHOWN_NAME_CHARS = 500


#: Where a value cut on a page is whole.
WHOLE = "the whole value: `workmanager orders show ID --json`, or the HTTP API"


def _cut(value: Any, limit: int = SHOWN_CHARS, whole: str = WHOLE) -> str:
    """Text cut at ``limit`` with a line saying so and where the whole value is (an
    event's message, a note: agents and reviewers write them, up to megabytes)."""
    text = "" if value is None else str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n… cut here: {limit:,} of {len(text):,} characters shown; {whole}"


def _cut_name(value: Any) -> str:
    return _cut(value, SHOWN_NAME_CHARS)


def _cut_preview_error(value: Any) -> str:
    """A preview's error: made for the page alone, logged whole by the server."""
    return _cut(value, SHOWN_NAME_CHARS, "the whole error: the server's log (its traceback)")


def _pretty(value: Any) -> str:
    """A value as indented JSON, cut (:func:`_cut`)."""
    return _cut(json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False))


def _compact(value: Any) -> str:
    """A value as JSON on one line (an event's details), cut (:func:`_cut`); other
    scripts as they are, not as ``\\u`` escapes."""
    return _cut(json.dumps(value, sort_keys=True, default=str, ensure_ascii=False))


def _finalize(value: Any) -> Any:
    """Every value a template prints, its control and bidi characters escaped
    (:func:`workmanager.display.shown`) before HTML escaping."""
    if isinstance(value, Markup):  # already HTML: its escapes hold no HTML character
        return Markup(shown(str(value)))
    return shown(value) if isinstance(value, str) else value


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


def templates() -> Jinja2Templates:
    loaded = Jinja2Templates(directory=str(HERE / "templates"))
    loaded.env.finalize = _finalize
    loaded.env.filters["pretty"] = _pretty
    loaded.env.filters["compact"] = _compact
    loaded.env.filters["cut"] = _cut
    loaded.env.filters["cut_name"] = _cut_name
    loaded.env.filters["cut_preview_error"] = _cut_preview_error
    loaded.env.filters["age"] = _age
    return loaded


def console(request: Request) -> Console:
    value: Console = request.app.state.console
    return value


# --- errors: pages, not JSON ------------------------------------------------------------
def error_page(request: Request, error: WorkManagerError, typed: str | None = None) -> Response:
    """The error as a page; ``typed``: the reason a refused form carried, shown back so the
    reviewer need not type it again (the page it came from is drawn afresh)."""
    if isinstance(error, Unauthenticated) and request.method == "GET":
        target = urlencode({"next": local_target(str(request.url.path) + _query(request))})
        return RedirectResponse(f"{PREFIX}/login?{target}", 303)
    c = console(request)
    back = _page_of(str(request.url.path)) if request.method == "POST" else None
    response = c.templates.TemplateResponse(
        request,
        "error.html",
        {
            "error": error,
            "session": None,
            "can": lambda scope: False,
            "back": back,
            "typed": typed,
        },
        status_code=error.http_status,
    )
    response.headers.update(SECURITY_HEADERS)
    return response


def _page_of(path: str) -> str | None:
    """The order's or item's page a refused form was posted from (``/ui/orders/<id>/…``),
    to go back to it from the error."""
    found = _FORM_PAGE.match(path)
    return found.group(1) if found else None


_FORM_PAGE = re.compile(rf"^({re.escape(PREFIX)}/(?:orders|items)/[0-9a-fA-F-]{{36}})/[a-z]+$")


def _query(request: Request) -> str:
    return f"?{request.url.query}" if request.url.query else ""


def local_target(target: str | None) -> str:
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
                return error_page(request, exc, await _typed_reason(request))
            except RequestValidationError as exc:
                return error_page(request, _form_refused(exc))
            except HTTPException as exc:  # a form Starlette could not read (too large)
                return error_page(request, http_error(exc))
            response.headers.update(SECURITY_HEADERS)
            return response

        return handler


async def _typed_reason(request: Request) -> str | None:
    """The reason a refused form carried (a rejection's): the form was read before the
    route ran, so this reads Starlette's parsed copy."""
    if request.method != "POST":
        return None
    try:
        value = (await request.form()).get("reason")
    except HTTPException:
        return None
    return value.strip() or None if isinstance(value, str) else None


router = APIRouter(route_class=ConsoleRoute)


def _form_refused(exc: RequestValidationError) -> InvalidQuery:
    """A form field the route could not read, named with pydantic's reason (the
    exception's own text held the server's file path and line)."""
    said = "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in exc.errors() if e.get("loc"))
    return InvalidQuery(f"the form was not filled in as expected: {said or 'reload the page'}")


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
) -> bool:
    """Run ``operation`` once per form key (a double click, a resubmitted form: once).
    False when the form's first submission is still running: that one is the action, and
    it may yet be refused (this one cannot say it was done)."""
    if not key:
        raise InvalidQuery("the form has no idempotency key; reload the page")
    # A replay (the form posted again) did its work the first time.
    try:
        console(request).api.wm.idempotency.once(caller, endpoint, target, key, body, operation)
    except IdempotencyInFlight:
        return False
    return True


def back(path: str, **flash: str) -> RedirectResponse:
    query = f"?{urlencode(flash)}" if flash else ""
    return RedirectResponse(f"{PREFIX}{path}{query}", 303)


# --- what an action says it did, and the lists' pager --------------------------------
NO_LIVE_LEASE = "no live lease"
#: ``?done=`` of a lease action whose page showed a lease that has ended since (the item
#: may be another agent's now): nothing was done.
LEASE_ENDED = "lease ended"

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
    if done == LEASE_ENDED:
        return (
            "Nothing was done: the lease this page showed has ended since (the item may be"
            " held by another agent now). Here is the item as it is."
        )
    if done is None:
        return None
    if done in ORDER_OUTCOMES or done == NO_LIVE_LEASE or _COUNTS.fullmatch(done):
        return f"Done: {done}."
    return None


def pages_link(params: list[tuple[str, str]]) -> Callable[[int], str]:
    """A link to page ``n`` with the same filters and sort."""
    kept = [(k, v) for k, v in params if k not in ("page", "page[number]")]

    def link(n: int) -> str:
        return "?" + urlencode([*kept, ("page[number]", str(n))])

    return link
