"""One MCP tool call: the caller authenticated (a bearer token over HTTP; over stdio, whoever
started the server, with every scope), then the operation run, once per idempotency key
when the call carries one, its answer or error as the tool's result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mcp.server.mcpserver import Context

from ..container import WorkManager
from ..db.request_store import LeaseRow
from ..errors import WorkManagerError
from ..services.idempotency import IdempotencyService
from ..services.inputs import presented_item
from ..services.tokens import Principal, TokenService
from ..surface.callers import AgentMetadata, Caller, build_caller
from ..surface.operations import Answer, Operations
from . import results
from .results import Result

STDIO_PRINCIPAL = Principal("mcp-stdio", None, frozenset({"admin"}))
JSONObj = dict[str, Any]


@dataclass(frozen=True)
class Once:
    """An optional idempotency key, with what it is scoped to (the tool and its target)
    and what it fingerprints (the arguments and the lease token presented, if any)."""

    key: str | None
    endpoint: str
    target: str
    body: JSONObj
    lease_token: str | None = None


class Tools:
    """Authenticates each call and hands it to the operations."""

    def __init__(self, wm: WorkManager, require_token: bool) -> None:
        self.ops = Operations(wm)
        self.tokens = TokenService(wm.ctx)
        self.idempotency: IdempotencyService = wm.idempotency
        self.require_token = require_token and wm.settings.auth != "none"
        self.page_size = wm.settings.default_page_size_mcp

    def principal(
        self, ctx: Context | None, claimed_agent: str | None = None, lease: str | None = None
    ) -> tuple[Principal, LeaseRow | None]:
        """The call's principal; for a lease tool (``lease``: its item id) over HTTP, the
        row of the item it presents, read with the token in one round trip."""
        if not self.require_token:
            return STDIO_PRINCIPAL, None
        headers = (ctx.headers if ctx is not None else None) or {}
        scheme, _, token = str(headers.get("authorization", "")).partition(" ")
        bearer = token.strip() if scheme.lower() == "bearer" else None
        item_id = presented_item(lease)
        if item_id is None:
            return self.tokens.authenticate(bearer, claimed_agent), None
        return self.tokens.authenticate_reading(bearer, claimed_agent, item_id)

    def refused(
        self, ctx: Context | None, scope: str, claimed_agent: str | None
    ) -> WorkManagerError | None:
        """What the call's credentials alone refuse (no token, a bad one, an agent the
        token may not act as, ``scope`` lacking), if anything."""
        try:
            who, _ = self.principal(ctx, claimed_agent)
            who.require(scope)
        except WorkManagerError as exc:
            return exc
        return None

    def caller(self, ctx: Context | None, meta: AgentMetadata, lease: str | None = None) -> Caller:
        who, read = self.principal(ctx, meta.agent_id, lease)
        return build_caller(who, meta, read=read)

    def call(
        self,
        ctx: Context | None,
        meta: AgentMetadata,
        fn: Callable[[Caller], Answer],
        once: Once | None = None,
        lease: str | None = None,
    ) -> Result:
        """Authenticate and run ``fn`` (once per key with ``once``); ``lease``: the item
        whose lease a lease tool presents."""
        try:
            caller = self.caller(ctx, meta, lease)
        except WorkManagerError as exc:
            return results.failure(exc)
        if once is None or not once.key:
            return results.run(lambda: fn(caller))
        key = once.key
        return results.run(
            lambda: self.idempotency.once(
                caller, once.endpoint, once.target, key, once.body, fn, once.lease_token
            )
        )


#: What an MCP client is told at ``initialize``: the work loop, in the words of the tools.
INSTRUCTIONS = """workmanager: typed work orders, planned into items that agents lease and submit.

The loop: work.checkout (optionally by order or type) leases the next item and answers a
lease token; send work.heartbeat with that token before the lease expires (every
heartbeat_every_seconds); then work.submit the whole result, or work.submit_part one part
at a time and work.finalize; or work.release the item, or work.fail it. The token is a
string: pass it back exactly as checkout returned it. Orders are proposed with
work.propose, read with work.get, work.list and work.logs, and approved or rejected with
work.approve and work.reject when the token's scopes allow it.

Every tool that changes something (heartbeat aside) takes an optional idempotency_key: a
call retried with the same key and arguments runs once and answers the stored result again,
with "replayed": true. Errors answer success: false with a code (validation_failed,
lease_conflict, lease_expired, not_found, forbidden, ...), the message as error, and
details."""
