"""Who is calling an adapter: the principal, and the agent it acts as (SPEC §4.7, §6.4).

HTTP headers and MCP arguments both end up here, so the rules are the same everywhere:
a token bound to an agent acts as that agent (naming another is 403); otherwise the
``X-Agent-ID`` the caller names, else the token's name. An agent id that some token is
bound to can only be named through that token: ``TokenService.authenticate`` refuses any
other token naming it (403), before the request does anything. What the caller says
about itself is checked as a Python caller's is (``services.inputs.check_agent_metadata``).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..db.request_store import LeaseRow
from ..errors import Forbidden
from ..services.inputs import check_agent_metadata
from ..services.tokens import Principal
from ..types import JSON, AgentInfo


@dataclass(frozen=True)
class AgentMetadata:
    """What the caller says about itself (headers or tool arguments), before checking."""

    agent_id: str | None = None
    name: str | None = None
    version: str | None = None
    model_name: str | None = None
    runtime: str | None = None
    request_id: str | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    extra: JSON = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Caller:
    """A principal and the agent it acts as; what every adapter operation receives."""

    principal: Principal
    agent: AgentInfo
    #: The row of the item whose lease the request presents, read in the same round trip
    #: as its token (``TokenService.authenticate_reading``) or its idempotency key's
    #: claim (``IdempotencyService.once``); ``None`` when not.
    read: LeaseRow | None = None


def new_request_id() -> str:
    """32 random hex digits, as ``uuid4().hex`` but from ``random`` (re-seeded in a forked
    child): a correlation id, not a secret. ``uuid4`` reads ``os.urandom``, a system call
    that gives up the GIL, and this runs on the server's event loop for every request:
    under load the loop then waited for the GIL (~7 % of the busy server's samples)."""
    return f"{random.getrandbits(128):032x}"


def resolve_agent_id(principal: Principal, named: str | None) -> str:
    """The bound agent wins (another name is 403); else the named one; else the token name."""
    if principal.agent_id:
        if named and named != principal.agent_id:
            raise Forbidden(
                "this token is bound to another agent",
                details={"bound_agent_id": principal.agent_id, "agent_id": named},
            )
        return principal.agent_id
    return named or principal.name


def build_caller(
    principal: Principal,
    meta: AgentMetadata,
    idempotency_key_hash: str | None = None,
    read: LeaseRow | None = None,
) -> Caller:
    """Check the metadata and build the :class:`AgentInfo` recorded in provenance
    (``read``: the presented lease's row, read with the token)."""
    check_agent_metadata(meta.agent_id, meta)  # the one rule (services/inputs.py)
    agent = AgentInfo(
        id=resolve_agent_id(principal, meta.agent_id),
        name=meta.name,
        version=meta.version,
        model_name=meta.model_name,
        runtime=meta.runtime,
        request_id=meta.request_id or new_request_id(),
        ip_address=meta.ip_address,
        user_agent=meta.user_agent,
        principal=principal.name,
        idempotency_key_hash=idempotency_key_hash,
        extra=dict(meta.extra),
        headers=meta.headers,
        # chosen by the caller: X-Agent-ID (an MCP argument) under an unbound token; a
        # token's own name, the operator's, is not (it was reported as `other`)
        self_named=principal.agent_id is None and bool(meta.agent_id),
    )
    return Caller(principal, agent, read)
