"""Request → caller: bearer authentication, scope checks and agent metadata (SPEC §4.7, §6.4).

Routes declare ``caller: Caller = Depends(scope("submit"))``; the dependency authenticates
the bearer token (or takes the anonymous principal when ``WORK_MANAGER_AUTH=none``),
checks the scope, and builds the agent from the ``X-Agent-*`` headers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from ..container import WorkManager
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


def principal(request: Request) -> Principal:
    api = state(request)
    if not api.auth_enabled:
        return ANONYMOUS
    return api.tokens.authenticate(bearer(request), request.headers.get("x-agent-id"))


#: Headers a provenance enricher never sees (credentials).
PRIVATE_HEADERS = frozenset({"authorization", "cookie", "x-lease-token", "proxy-authorization"})


def metadata(request: Request) -> AgentMetadata:
    h = request.headers
    return AgentMetadata(
        agent_id=h.get("x-agent-id"),
        name=h.get("x-agent-name"),
        version=h.get("x-agent-version"),
        model_name=h.get("x-model-name"),
        runtime=h.get("x-runtime"),
        request_id=request.state.request_id,
        ip_address=request.client.host if request.client else None,
        user_agent=h.get("user-agent"),
        headers={k: v for k, v in h.items() if k not in PRIVATE_HEADERS},
    )


def scope(name: str) -> Callable[[Request], Caller]:
    """A dependency: the authenticated caller, refused with 403 unless it holds ``name``,
    and with 429 ``rate_limited`` past the API request rate limits (per agent, per tenant
    of the token; ``workmanager/ratelimit/``)."""

    def dependency(request: Request) -> Caller:
        who = principal(request)
        who.require(name)
        caller = build_caller(who, metadata(request))
        state(request).wm.limits.request(caller.agent.id, who.tenant_id)
        return caller

    dependency.__name__ = f"scope_{name}"
    return dependency


ProposeCaller = Annotated[Caller, Depends(scope("propose"))]
ViewCaller = Annotated[Caller, Depends(scope("view"))]
CheckoutCaller = Annotated[Caller, Depends(scope("checkout"))]
SubmitCaller = Annotated[Caller, Depends(scope("submit"))]
ApproveCaller = Annotated[Caller, Depends(scope("approve"))]
RejectCaller = Annotated[Caller, Depends(scope("reject"))]
