"""Request → caller: bearer authentication, scope checks and agent metadata (SPEC §4.7, §6.4).

Routes declare ``auth: SubmitAuth`` (``Depends(scope("submit"))``) and call
``auth.caller()`` first: it authenticates the bearer token (or takes the anonymous
principal when ``WORK_MANAGER_AUTH=none``), checks the scope, and builds the agent from the
``X-Agent-*`` headers, in the route's own worker thread (one thread-pool hop a request).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from ..container import WorkManager
from ..db.request_store import LeaseRow
from ..errors import InvalidAgentMetadata
from ..services.inputs import presented_item
from ..services.tokens import ANONYMOUS, Principal, TokenService
from ..surface.callers import AgentMetadata, Caller, build_caller
from ..surface.operations import Operations


@dataclass(frozen=True)
class ApiState:
    """What the routes share, kept on ``app.state.api``."""

    wm: WorkManager
    ops: Operations
    tokens: TokenService
    auth_enabled: bool


def state(request: Request) -> ApiState:
    api: ApiState = request.app.state.api
    return api


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


#: The headers naming the agent, and the field each is refused as.
NAMING_HEADERS = {
    "x-agent-id": "agent_id",
    "x-agent-name": "name",
    "x-agent-version": "agent_version",
    "x-model-name": "model_name",
    "x-runtime": "runtime",
}


def naming(request: Request, header: str) -> str | None:
    """A header naming the agent, as text: its bytes read as UTF-8, which is what curl and
    most clients send (Starlette reads headers as Latin-1: ``agënt`` was recorded as
    ``agÃ«nt``, a name no MCP or Python caller could match). Bytes that are not UTF-8 are
    refused, not guessed at."""
    value = request.headers.get(header)
    if value is None or value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        field = NAMING_HEADERS[header]
        raise InvalidAgentMetadata(
            "invalid agent metadata",
            details=[{"field": field, "message": "must be UTF-8 text"}],
        ) from None


def principal(request: Request) -> Principal:
    api = state(request)
    if not api.auth_enabled:
        return ANONYMOUS
    return api.tokens.authenticate(bearer(request), naming(request, "x-agent-id"))


def principal_reading(
    request: Request, item_id: uuid.UUID | None
) -> tuple[Principal, LeaseRow | None]:
    """:func:`principal`, and for a lease call (``item_id``, authentication on) the row of
    the item it presents, read with the token in one round trip."""
    api = state(request)
    if not api.auth_enabled or item_id is None:
        return principal(request), None
    claimed = naming(request, "x-agent-id")
    return api.tokens.authenticate_reading(bearer(request), claimed, item_id)


#: Headers a provenance enricher never sees (credentials).
PRIVATE_HEADERS = frozenset({"authorization", "cookie", "x-lease-token", "proxy-authorization"})


def metadata(request: Request) -> AgentMetadata:
    h = request.headers
    return AgentMetadata(
        agent_id=naming(request, "x-agent-id"),
        name=naming(request, "x-agent-name"),
        version=naming(request, "x-agent-version"),
        model_name=naming(request, "x-model-name"),
        runtime=naming(request, "x-runtime"),
        request_id=request.state.request_id,
        ip_address=request.client.host if request.client else None,
        user_agent=h.get("user-agent"),
        headers={k: v for k, v in h.items() if k not in PRIVATE_HEADERS},
    )


@dataclass(frozen=True)
class Auth:
    """A request's credentials and the scope its route requires, not yet checked.

    The route's dependency only builds it (on the event loop, no database); the route
    calls :meth:`caller` first thing, in the worker thread it runs in anyway, so a request
    takes one thread-pool hop, not one for the dependency and another for the route.
    Nothing the route does comes before :meth:`caller`. A request FastAPI refuses before
    the route runs (a body or query that fails validation) is checked by the validation
    handler (:mod:`.errors`) first, so a bad token still answers 401/403 before a 422."""

    request: Request
    scope: str

    @contextmanager
    def checkout_caller(self) -> Iterator[Caller]:
        """:meth:`caller` for a checkout route, around its work: its request tokens are
        taken with its checkout's tokens, all or none, or when the route ends before its
        checkout's take (a filter refused, a replay): ``ratelimit/limiter.py``."""
        with state(self.request).wm.limits.settling():
            yield self.caller(checkout=True)

    def caller(self, lease_item_id: str | None = None, *, checkout: bool = False) -> Caller:
        """The authenticated caller, refused with 401/403 unless its token is good, holds
        the scope and may act as the agent it names, with 400 for bad agent metadata and
        with 429 ``rate_limited`` past the API request rate limits (per agent, per tenant
        of the token; ``workmanager/ratelimit/``). ``lease_item_id``: the item a lease
        call presents, read with the token (``Caller.read``). ``checkout``: through
        :meth:`checkout_caller` only."""
        request = self.request
        who, read = principal_reading(request, presented_item(lease_item_id))
        who.require(self.scope)
        caller = build_caller(who, metadata(request), read=read)
        state(request).wm.limits.request(caller.agent.id, who.tenant_id, checkout=checkout)
        return caller


#: Where the route's :class:`Auth` waits on ``request.state`` for the validation handler.
PENDING_AUTH = "pending_auth"


def scope(name: str) -> Callable[[Request], Awaitable[Auth]]:
    """A dependency: the request's :class:`Auth` for ``name`` (checked by the route)."""

    async def dependency(request: Request) -> Auth:
        auth = Auth(request, name)
        setattr(request.state, PENDING_AUTH, auth)
        return auth

    dependency.__name__ = f"scope_{name}"
    return dependency


ProposeAuth = Annotated[Auth, Depends(scope("propose"))]
ViewAuth = Annotated[Auth, Depends(scope("view"))]
CheckoutAuth = Annotated[Auth, Depends(scope("checkout"))]
SubmitAuth = Annotated[Auth, Depends(scope("submit"))]
ApproveAuth = Annotated[Auth, Depends(scope("approve"))]
RejectAuth = Annotated[Auth, Depends(scope("reject"))]
AdminAuth = Annotated[Auth, Depends(scope("admin"))]
