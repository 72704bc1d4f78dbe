"""API tokens and scopes (SPEC §6.4): created once, stored as sha256, revocable.

A token is ``wm_`` + 32 random bytes (url-safe). Only its sha256 is stored; authentication
hashes the presented token and compares digests in constant time. ``last_used_at`` is
written at most once a minute per token, so authentication is a read on the hot path: one
statement (the token, and whether the agent id it acts as belongs to another token: the
request store's ``token``, :mod:`workmanager.db.request_store`), never cached, so a revoked
token is refused from the next request on, in every process.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..db.models import ApiToken
from ..db.request_store import build_request_store
from ..errors import Forbidden, NotFound, Unauthenticated, ValidationFailed
from .context import ServiceContext
from .tenancy import checked_tenant
from .views import iso

SCOPES = ("propose", "view", "checkout", "submit", "approve", "reject", "admin")
TOKEN_PREFIX = "wm_"
_TOUCH_EVERY = timedelta(minutes=1)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's name, its bound agent (if any) and its scopes."""

    name: str
    agent_id: str | None = None
    scopes: frozenset[str] = frozenset()
    #: The tenant a token is bound to: it sees and acts on that tenant's orders only.
    tenant_id: str | None = None

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def require(self, scope: str) -> None:
        """Raise :class:`Forbidden` unless the principal holds ``scope`` (or ``admin``)."""
        if not self.allows(scope):
            raise Forbidden(
                f"this token lacks the {scope!r} scope",
                details={"required_scope": scope, "principal": self.name},
            )


#: The principal when ``WORK_MANAGER_AUTH=none`` (local development only).
ANONYMOUS = Principal("anonymous", None, frozenset({"admin"}))


def parse_scopes(raw: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"a,b"`` or a list → a validated, de-duplicated scope list."""
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    scopes = sorted({s.strip() for s in items if s.strip()})
    unknown = [s for s in scopes if s not in SCOPES]
    if not scopes or unknown:
        message = f"scopes must be some of {', '.join(SCOPES)}; got {unknown or raw}"
        raise ValidationFailed.at("scopes", message, "enum", message)
    return scopes


def token_dict(row: ApiToken) -> dict[str, Any]:
    return {
        "name": row.name,
        "agent_id": row.agent_id,
        "tenant_id": row.tenant_id,
        "scopes": list(row.scopes or []),
        "created_at": iso(row.created_at),
        "last_used_at": iso(row.last_used_at),
        "revoked_at": iso(row.revoked_at),
    }


class TokenService:
    """create · list · revoke · authenticate."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.store = build_request_store(ctx.db)

    def create(
        self,
        name: str,
        scopes: str | list[str],
        agent_id: str | None = None,
        tenant_id: str | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """Store a new token; returns ``(plaintext, row)``. The plaintext is never stored.
        A token bound to ``tenant_id`` proposes, sees, leases and acts on that tenant's
        orders only (services/tenancy.py)."""
        if not name or len(name) > 191:
            raise ValidationFailed.at("name", "1 to 191 characters", "maxLength")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = ApiToken(
            name=name,
            agent_id=agent_id or None,
            tenant_id=checked_tenant(tenant_id),
            scopes=parse_scopes(scopes),
            token_hash=hash_token(token),
            created_at=self.ctx.clock(),
        )
        try:
            with self.ctx.db.transaction() as s:
                s.add(row)
                s.flush()
                return token, token_dict(row)
        except IntegrityError as exc:
            raise ValidationFailed.at("name", f"a token named {name!r} exists", "unique") from exc

    def list(self) -> list[dict[str, Any]]:
        with self.ctx.db.transaction() as s:
            return [token_dict(r) for r in s.scalars(select(ApiToken).order_by(ApiToken.id))]

    def revoke(self, name: str) -> dict[str, Any]:
        with self.ctx.db.transaction() as s:
            row = s.scalar(select(ApiToken).where(ApiToken.name == name))
            if row is None:
                raise NotFound(f"no token named {name!r}")
            row.revoked_at = row.revoked_at or self.ctx.clock()
            return token_dict(row)

    def authenticate(self, token: str | None, claimed_agent: str | None = None) -> Principal:
        """The principal of a presented bearer token, or :class:`Unauthenticated`.

        ``claimed_agent`` is the agent id the request names (``X-Agent-ID``, MCP
        ``agent_id``). An agent id that a token is bound to belongs to that token: any
        other token naming it is :class:`Forbidden`, revoked owners included (revoking a
        token must not free its agent's name for impersonation). An unbound token that
        names no agent acts as its own name (:func:`~.callers.resolve_agent_id`), so that
        name is checked the same way. A bound token naming another agent is refused by
        :func:`~.callers.resolve_agent_id`."""
        if not token:
            raise Unauthenticated("a bearer token is required")
        digest = hash_token(token)
        row = self.store.token(digest, claimed_agent)
        # The lookup is by digest; compare again in constant time so no branch depends
        # on how much of a near-miss matched.
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            raise Unauthenticated("unknown bearer token")
        if row.revoked_at is not None:
            raise Unauthenticated("this token was revoked")
        if row.agent_id is None and row.owner is not None:
            acting_as = claimed_agent or row.name
            raise Forbidden(
                f"agent {acting_as!r} is bound to another token; act as it only with that token",
                details={"agent_id": acting_as},
            )
        now = self.ctx.clock()
        if row.last_used_at is None or now - row.last_used_at >= _TOUCH_EVERY:
            self.store.touch_token(digest, now)
        scopes = frozenset(row.scopes or ())
        return Principal(row.name, row.agent_id, scopes, row.tenant_id)
