"""The outermost layer of the API: request ids, the body limit and the last-resort 500.

A pure ASGI middleware (no per-request task switching), so it costs little on every call:
it reads the body up front (refusing more than ``max_body_bytes`` with 413, a body not
arrived within ``body_timeout`` seconds with 408, and JSON that is malformed or nested
deeper than ``max_json_depth`` with 400, before any route runs), drops query parameters
whose value is empty (absent, as upstream reads them),
echoes ``X-Request-ID`` (generated when absent) on every response, and turns an exception
nothing else handled into ``500 {"error": {"code": "internal_error"}}`` — the stack trace
goes to the log, never to the client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any
from urllib.parse import unquote_plus

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import (
    MalformedJSON,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    Unavailable,
    WorkManagerError,
)
from ..jsonvalues import loads, raw_depth, too_deep
from ..saying import logged
from .callers import new_request_id

log = logging.getLogger("workmanager.api")
_MAX_REQUEST_ID = 191


def error_body(error: WorkManagerError) -> bytes:
    return json.dumps({"error": error.to_dict()}).encode()


#: What a 503 asks a client to wait before trying again, in seconds.
RETRY_AFTER_SECONDS = 5


def retry_after(error: WorkManagerError) -> int | None:
    """The ``Retry-After`` an error's answer carries (the API's errors and ``/readyz``, the
    work-order guard, the MCP gate): a 503's (the database, Redis or the broker away), a
    429's (its wait); none for the others. The console's pages are for people: none."""
    if isinstance(error, Unavailable):
        return RETRY_AFTER_SECONDS
    if isinstance(error, RateLimited):
        return error.retry_after
    return None


async def send_error(send: Send, error: WorkManagerError, headers: list[Any]) -> None:
    body = error_body(error)
    wait = retry_after(error)
    if wait is not None:
        headers = [*headers, (b"retry-after", str(wait).encode())]
    await send(
        {
            "type": "http.response.start",
            "status": error.http_status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class _Gone(Exception):
    """The client went before its whole body arrived: the request is not acted on (RFC
    9112 §6.3: an incomplete message), and nothing is answered (no one is there)."""


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            # what arrived was acted on: a checkout cut short leased an item of any type
            # to an agent gone, a propose short of its declared length made its order
            raise _Gone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge()
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text: str = value.decode("latin-1").strip()[:_MAX_REQUEST_ID]
            return text or new_request_id()
    return new_request_id()


def _strict_json(body: bytes, max_depth: int) -> MalformedJSON | None:
    """Why ``body`` is refused, if it is: nested deeper than ``max_depth`` (counted first,
    without recursion, so no recursive parser or serialiser ever meets it), not JSON, or
    NaN/Infinity (Python accepts them; no JSON column stores them). Only UTF-8 is read
    (RFC 8259): ``json.loads`` would take UTF-16 or UTF-32 bytes too, whose brackets the
    depth count, reading UTF-8, does not see, and a body nested past the parser's
    recursion limit then answered 500."""
    if raw_depth(body) > max_depth:
        return too_deep(max_depth, "the request body")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        return MalformedJSON("the request body is not UTF-8: send JSON as UTF-8 text")
    try:
        loads(text)
    except ValueError as exc:  # the parser's reason, and where
        return MalformedJSON(f"the request body is not valid JSON: {exc}")
    return None


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _blank(part: bytes) -> bool:
    """``name=`` or ``name``: a parameter with an empty value (``a=b=`` is not one)."""
    sign = part.find(b"=")
    return sign in (-1, len(part) - 1)


def _has_blank(query: bytes) -> bool:
    """Whether a query string holds a parameter with an empty value (``?tenant_id=``)."""
    return any(_blank(part) for part in query.split(b"&"))


def _without_blanks(query: bytes) -> tuple[bytes, tuple[str, ...]]:
    """The query string without its empty-valued parameters, and their names: an empty
    value is an absent one, as upstream's Laravel reads it (empty strings are null, and a
    null filter is no filter); clients built against it send ``?min_priority=`` for
    "any". The names stay known to the routes (:func:`blank_names`): an unknown one is
    still refused."""
    parts = query.split(b"&")
    names = tuple(unquote_plus(p.rstrip(b"=").decode("latin-1")) for p in parts if p and _blank(p))
    return b"&".join(part for part in parts if not _blank(part)), names


def blank_names(scope: Scope) -> tuple[str, ...]:
    """The names of the query parameters :class:`RequestContextMiddleware` dropped for
    their empty values."""
    found: tuple[str, ...] = scope.get("state", {}).get(BLANK_QUERY, ())
    return found


BLANK_QUERY = "blank_query_names"


class RequestContextMiddleware:
    """Request id, body limits, catch-all; see the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        max_json_depth: int,
        body_timeout: float = 60.0,
        form_prefix: str | None = None,
        json_bodies: bool = True,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth
        self.body_timeout = body_timeout
        #: Paths under this prefix (the review console's pages) post HTML forms, not JSON:
        #: their bodies keep the size limit but are not read as JSON.
        self.form_prefix = form_prefix
        #: False in front of the MCP transports: JSON-RPC answers its own parse errors.
        self.json_bodies = json_bodies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        echo = [(b"x-request-id", request_id.encode("latin-1"))]
        if b"%2f" in scope.get("raw_path", b"").lower():
            # Starlette decodes it to a separator: ``<id>%2Freject`` reached reject, past a
            # proxy's rule on the raw path; no route or id holds a slash
            await send_error(send, NotFound("no such route: the path holds an encoded /"), echo)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await send_error(send, self._too_large(), echo)
            return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            try:
                async with asyncio.timeout(self.body_timeout):
                    body = await _read_body(receive, self.max_body_bytes)
            except _TooLarge:
                await send_error(send, self._too_large(), echo)
                return
            except _Gone:
                log.info("%s %s: the client went before its body arrived; not acted on",
                         scope["method"], logged(scope["path"]))  # fmt: skip
                return
            except TimeoutError:
                late = RequestTimeout(
                    f"the request body did not arrive within {self.body_timeout:g} s",
                    details={"timeout_seconds": self.body_timeout},
                )
                await send_error(send, late, [(b"connection", b"close"), *echo])
                return
            form = self.form_prefix is not None and scope["path"].startswith(self.form_prefix)
            strict = body.strip() and self.json_bodies and not form
            refused = _strict_json(body, self.max_json_depth) if strict else None
            if refused is not None:
                await send_error(send, refused, echo)
                return
            receive = _replay(body, receive)
        head = scope["method"] == "HEAD" and self.json_bodies
        await self._call(self._as_read(scope, head), receive, send, echo, head)

    def _as_read(self, scope: Scope, head: bool) -> Scope:
        """The scope the API reads: a HEAD as a GET (its headers without its body: monitors
        probe /healthz so), not a 405; empty query values dropped (see the docstring)."""
        query = scope.get("query_string", b"")
        if self.json_bodies and query and _has_blank(query):
            kept, scope["state"][BLANK_QUERY] = _without_blanks(query)
            scope = {**scope, "query_string": kept}
        return {**scope, "method": "GET"} if head else scope

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"the request body exceeds {self.max_body_bytes} bytes",
            details={"limit_bytes": self.max_body_bytes},
        )

    async def _call(
        self, scope: Scope, receive: Receive, send: Send, echo: list[Any], head: bool = False
    ) -> None:
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), *echo]
            elif head and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception(
                "unhandled error in %s %s", scope.get("method"), logged(scope.get("path"))
            )
            if not started:
                await send_error(send, WorkManagerError("internal error"), echo)
        except asyncio.CancelledError:
            if not STOPPING.is_set():  # not `serve`'s shutdown: a cancellation as any
                raise
            # the server's graceful shutdown ran out (API_SHUTDOWN_GRACE_SECONDS) with this
            # request unfinished: uvicorn answered a plain-text 500 and logged a traceback
            log.warning("%s %s cut off by the server's shutdown", scope.get("method"),
                        logged(scope.get("path")))  # fmt: skip
            if not started:
                await send_error(send, CUT_OFF, echo)


#: Set when ``workmanager serve`` begins to stop: waiting approvals answer 202 at once
#: (surface/operations.py), and a request the grace then cuts off is answered :data:`CUT_OFF`.
STOPPING = threading.Event()

#: The answer to a request the server's shutdown cut off: done or not, nobody knows.
CUT_OFF = Unavailable(
    "the server stopped before this request finished: it may have been done or not",
    hint="retry it; with the same idempotency key, the retry is answered (the outcome, or"
    " run anew) once the key's in-flight lock lapses",
)
