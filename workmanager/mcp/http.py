"""The HTTP transports (streamable HTTP, SSE), behind a bearer-token check on every request."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp, Receive, Scope, Send

from ..container import WorkManager
from ..errors import WorkManagerError
from ..services.tokens import TokenService


class BearerGate:
    """Refuse (401/JSON) an HTTP request without a valid token before MCP sees it."""

    def __init__(self, app: ASGIApp, tokens: TokenService) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers", ()))
            scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
            presented = token.strip() if scheme.lower() == "bearer" else None
            try:
                await anyio.to_thread.run_sync(self.tokens.authenticate, presented)
            except WorkManagerError as exc:
                from ..api.middleware import send_error

                await send_error(send, exc, [(b"www-authenticate", b"Bearer")])
                return
        await self.app(scope, receive, send)


#: What a browser client of the MCP transports sends and must read (CORS).
CORS_HEADERS = ["Authorization", "Content-Type", "Mcp-Session-Id", "Mcp-Protocol-Version"]


def http_app(wm: WorkManager, server: MCPServer[Any], transport: str = "http") -> ASGIApp:
    """The MCP server over streamable HTTP (``/mcp``) or SSE (``/sse`` + ``/messages/``),
    behind the bearer gate, with CORS for the origins of ``WORK_MANAGER_MCP_CORS_ORIGINS``
    outermost (a browser's preflight carries no token)."""
    if transport == "sse":
        app: ASGIApp = server.sse_app()
    else:
        app = server.streamable_http_app(streamable_http_path="/mcp")
    if wm.settings.auth != "none":
        app = BearerGate(app, TokenService(wm.ctx))
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
