"""The HTTP transports (streamable HTTP, SSE), behind a bearer-token check on every request
and the API's body limits."""

from __future__ import annotations

import math
import re
import time
from collections import Counter, OrderedDict
from typing import Any
from urllib.parse import parse_qsl

import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..container import WorkManager
from ..errors import NotFound, RateLimited, WorkManagerError
from ..services.tokens import TokenService
from ..surface.middleware import RequestContextMiddleware, send_error


class BearerGate:
    """Refuse (401/JSON) an HTTP request without a valid token before MCP sees it, and
    keep each session to the token's principal that opened it: a streamable-HTTP session
    (its ``Mcp-Session-Id``) and an SSE one (the ``session_id`` its stream announced, which
    each POST to ``/messages/`` names). Another token presenting a session's id (to call
    in it, or to end it), an id this gate did not see opened, or two ids at once, is told
    the session is not found, as for one that never was."""

    #: Sessions remembered (the oldest forgotten first); the SDK ends idle ones itself.
    MAX_SESSIONS = 10_000
    #: Sessions one principal may hold open: one token opening sessions and never ending
    #: them filled the SDK's 10,000 in two minutes, and every client, of every token, was
    #: refused new ones (a bare 503) until they idled out, 30 minutes later.
    MAX_SESSIONS_PER_PRINCIPAL = 100

    def __init__(self, app: ASGIApp, tokens: TokenService, sse: bool = False) -> None:
        self.app = app
        self.tokens = tokens
        #: SSE: a POST names its session in the query (streamable HTTP reads only the
        #: header, and a query a proxy adds must not be taken for one)
        self.sse = sse
        #: each session's principal and when its last request ended, least recent first
        self.owners: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        #: the sessions with requests running (never idle meanwhile), how many each
        self.busy: Counter[bytes] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = scope.get("headers", ())
        headers = dict(raw)
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        presented = token.strip() if scheme.lower() == "bearer" else None
        try:
            principal = await anyio.to_thread.run_sync(self.tokens.authenticate, presented)
        except WorkManagerError as exc:  # a 401 names the scheme; a 503 says when to retry
            challenge = [(b"www-authenticate", b"Bearer")] if exc.http_status == 401 else []
            await send_error(send, exc, challenge)
            return
        named = [value for name, value in raw if name == SESSION_HEADER]
        if self.sse:
            named += _query_sessions(scope)
        session = named[0] if named else None
        now = time.monotonic()
        self._forget_idle(now)
        # one id (the SDK reads the first, a check of the last was got round), and one this
        # gate saw opened by the same principal: an unknown one is not anyone's to use
        owner = self.owners.get(session) if session is not None else None
        if named and (len(named) > 1 or owner is None or owner[0] != principal.name):
            await send_error(send, NotFound("session not found"), [])
            return
        if session is None:  # a request that may open one
            if (full := self._full(principal.name)) is not None:
                await send_error(send, full, [])
                return
        elif owner is not None and owner[1] != math.inf:  # in use: not idle while it runs
            self.busy[session] += 1
        streamed: list[bytes] = []  # the SSE session this request's stream announced
        try:
            await self.app(
                scope, receive, self._noting(scope, send, session, principal.name, streamed)
            )
        finally:
            for key in streamed:  # the SSE stream is over: so is its session
                self.owners.pop(key, None)
            if session is not None and session in self.busy:
                self._done(session, principal.name)

    def _done(self, session: bytes, owner: str) -> None:
        """A request in ``session`` ended: its idle time starts when the last one ends
        (a client's open GET stream keeps it in use, as the SDK counts it)."""
        self.busy[session] -= 1
        if self.busy[session] <= 0:
            del self.busy[session]
        if session in self.owners:
            self.owners[session] = (owner, time.monotonic())
            self.owners.move_to_end(session)

    def _opened(self, key: bytes, owner: str, seen: float | None = None) -> None:
        self.owners[key] = (owner, time.monotonic() if seen is None else seen)
        while len(self.owners) > self.MAX_SESSIONS:
            self.owners.popitem(last=False)

    def _forget_idle(self, now: float) -> None:
        """Forget the sessions unused for :data:`SESSION_IDLE_SECONDS`: the SDK has ended
        them (it is given the same time), so they count against no one."""
        streams = 0  # an SSE session lives as long as its stream (the end pops it)
        while len(self.owners) > streams:
            key, (_, seen) = next(iter(self.owners.items()))
            if seen == math.inf or key in self.busy:
                self.owners.move_to_end(key)
                streams += 1
            elif now - seen < SESSION_IDLE_SECONDS:
                return
            else:
                self.owners.popitem(last=False)

    def _full(self, principal: str) -> RateLimited | None:
        """The refusal of one more session for ``principal`` (its own cap, or the gate's),
        in the error envelope with ``Retry-After``; ``None`` when it may open one."""
        held = sum(1 for owner, _ in self.owners.values() if owner == principal)
        if held < self.MAX_SESSIONS_PER_PRINCIPAL and len(self.owners) < self.MAX_SESSIONS:
            return None
        whose = "this token's" if held >= self.MAX_SESSIONS_PER_PRINCIPAL else "the server's"
        return RateLimited(
            f"{whose} MCP sessions are all open ({held} of this token's): end one"
            " (DELETE /mcp with its Mcp-Session-Id), or wait until one has been idle"
            f" {SESSION_IDLE_SECONDS // 60} minutes",
            retry_after=60,
            details={"retry_after": 60, "limit": "sessions", "open": held},
        )

    def _noting(
        self, scope: Scope, send: Send, session: bytes | None, owner: str, streamed: list[bytes]
    ) -> Send:
        """``send``, noting the sessions the answer opens (a streamable-HTTP session's id
        header, an SSE stream's endpoint event: ``owner``'s) and ends."""

        async def noting(message: Message) -> None:
            if message["type"] == "http.response.start":
                if session is None:
                    key = dict(message.get("headers", ())).get(SESSION_HEADER)
                    if key is not None:  # the session this request opened: its principal's
                        self._opened(key, owner)
                elif scope["method"] == "DELETE" or message["status"] == 404:
                    self.owners.pop(session, None)  # ended, or the SDK has forgotten it
            elif message["type"] == "http.response.body" and session is None and not streamed:
                announced = _SSE_ENDPOINT.search(message.get("body", b""))
                if announced is not None:  # an SSE stream's endpoint event
                    streamed.append(announced.group(1))
                    self._opened(announced.group(1), owner, math.inf)
            await send(message)

        return noting


#: The ``endpoint`` event an SSE stream opens with: ``data: /messages/?session_id=<hex>``.
_SSE_ENDPOINT = re.compile(rb"^data: [^\r\n]*[?&]session_id=([0-9a-fA-F]+)", re.MULTILINE)


def _query_sessions(scope: Scope) -> list[bytes]:
    """The ``session_id`` values of the query string (an SSE client's POST names its
    session there)."""
    # decoded as the SDK's reading decodes it (``session%5Fid`` is ``session_id``)
    pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    return [value.encode("latin-1") for name, value in pairs if name == "session_id"]


class UpstreamPaths:
    """Upstream's MCP addresses: its ``--transport=http`` served SSE at ``GET /mcp/sse``
    (and ``POST /mcp/message?clientId=``). On the SSE transport ``/mcp/sse`` is ``/sse``
    (its stream announces where to post, as every SSE client reads it); elsewhere they are
    404s that say which transport and address serve the client (the SDK's is a bare
    "Not Found")."""

    SSE, MESSAGE = "/mcp/sse", "/mcp/message"

    def __init__(self, app: ASGIApp, sse: bool) -> None:
        self.app, self.sse = app, sse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path") if scope["type"] == "http" else None
        if path == self.SSE and self.sse:
            scope = {**scope, "path": "/sse", "raw_path": b"/sse"}
        elif path in (self.SSE, self.MESSAGE):
            hint = (
                "post to the address this server's SSE stream announced (/messages/?session_id=…)"
                if self.sse
                else "this server speaks streamable HTTP at /mcp; upstream's SSE address"
                " (GET /mcp/sse) is served by `workmanager mcp --transport sse`"
            )
            await send_error(send, NotFound(f"no MCP endpoint at {path}: {hint}"), [])
            return
        await self.app(scope, receive, send)


SESSION_HEADER = b"mcp-session-id"
#: How long an unused session lives (the SDK's default, given to it so the gate agrees).
SESSION_IDLE_SECONDS = 30 * 60


#: What a browser client of the MCP transports sends and must read (CORS).
CORS_HEADERS = ["Authorization", "Content-Type", "Mcp-Session-Id", "Mcp-Protocol-Version"]


def http_app(wm: WorkManager, server: MCPServer[Any], transport: str = "http") -> ASGIApp:
    """The MCP server over streamable HTTP (``/mcp``) or SSE (``/sse``, upstream's
    ``/mcp/sse`` too, + ``/messages/``),
    behind the bearer gate, with CORS for the origins of ``WORK_MANAGER_MCP_CORS_ORIGINS``
    outermost (a browser's preflight carries no token)."""
    limit = wm.settings.max_body_bytes
    if transport == "sse":
        app: ASGIApp = server.sse_app(max_request_body_size=limit)
    else:
        app = server.streamable_http_app(
            streamable_http_path="/mcp",
            max_request_body_size=limit,
            session_idle_timeout=SESSION_IDLE_SECONDS,
        )
    if wm.settings.auth != "none":
        app = BearerGate(app, TokenService(wm.ctx), sse=transport == "sse")
    app = UpstreamPaths(app, sse=transport == "sse")
    # As the API's: a body over MAX_BODY_BYTES is a 413 in the error envelope (the SDK's
    # own is plain text), a body too slow a 408, an X-Request-ID echoed.
    app = RequestContextMiddleware(
        app,
        max_body_bytes=limit,
        max_json_depth=wm.settings.max_json_depth,
        body_timeout=wm.settings.api_body_timeout_seconds,
        json_bodies=False,
    )
    origins = list(wm.settings.mcp_cors_origins)
    if origins:
        from starlette.middleware.cors import CORSMiddleware

        app = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=CORS_HEADERS,
            expose_headers=["Mcp-Session-Id"],
        )
    return app
