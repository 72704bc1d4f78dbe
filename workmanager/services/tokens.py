"""API tokens and scopes (SPEC §6.4): created once, stored as sha256, revocable.

A token is ``wm_`` + 32 random bytes (url-safe). Only its sha256 is stored; authentication
hashes the presented token and compares digests in constant time. ``last_used_at`` is
written at most once a minute per token, so authentication is a read on the hot path: one
statement (the token, and whether the agent id it acts as belongs to another token: the
request store's ``token``, :mod:`workmanager.db.request_store`), never cached, so a revoked
token is refused from the next request on, in every process.

**Tenants**: this module is the one place where a token bound to a tenant is kept inside it.

An order belongs to the tenant named when it was proposed (``work_orders.tenant_id``); its
items inherit it (``work_items.tenant_id``). A token bound to a tenant
(``tokens create --tenant T``) proposes into, sees, leases and acts on that tenant's
orders and items only. Another tenant's id is answered exactly as an unknown id (404
``not_found``), so ids do not leak; lists and checkout are narrowed to the tenant. A token
bound to no tenant (and ``WORK_MANAGER_AUTH=none``) sees every tenant, as an operator's.

:class:`~workmanager.surface.operations.Operations` resolves every id through
:func:`require_order` / :func:`require_item` and forces the tenant of checkout and of the
listings (:mod:`workmanager.reads.listing`); every adapter (HTTP, MCP, console) goes
through it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..db.models import ApiToken, Item, Order
from ..db.request_store import LeaseRow, TokenRow, build_request_store
from ..db.session import Database
from ..errors import Forbidden, NotFound, Unauthenticated, Unavailable, ValidationFailed
from ..jsonvalues import json_value
from ..saying import Throttled
from ..types import agent_id_problem
from .context import ServiceContext
from .views import iso

log = logging.getLogger("workmanager.auth")
#: a database outage fails every request alike: said once in a while (workmanager/saying.py)
_outage = Throttled(log)

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
        show: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """Store a new token; returns ``(plaintext, row)``. The plaintext is never stored.
        A token bound to ``tenant_id`` proposes, sees, leases and acts on that tenant's
        orders only (**Tenants**, above). ``show(plaintext, row)`` runs before the commit:
        a token it could not show (its error raised) is not stored, never lost unseen."""
        why = agent_id_problem(name)  # a token's name is its agent id when none is given
        if why is not None:
            said = f"the token's name: {why} (it is the agent id of an unbound token)"
            raise ValidationFailed.at("name", why, "pattern", said)
        why = None if agent_id is None else agent_id_problem(agent_id)
        if why is not None:  # an empty one would make an unbound token, not a bound one
            said = f"the agent id to bind the token to: {why}"
            raise ValidationFailed.at("agent_id", f"a non-empty id: {why}", "type", said)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = ApiToken(
            name=name,
            agent_id=agent_id,
            tenant_id=checked_tenant(tenant_id),
            scopes=parse_scopes(scopes),
            token_hash=hash_token(token),
            created_at=self.ctx.clock(),
        )
        try:
            with self.ctx.db.transaction() as s:
                _one_tenant_per_agent(s, agent_id, row.tenant_id)
                s.add(row)
                s.flush()
                made = token_dict(row)
                if show is not None:
                    show(token, made)
                return token, made
        except IntegrityError as exc:
            raise ValidationFailed.at(
                "name",
                f"a token named {name!r} exists (a revoked token keeps its name): choose"
                " another name",
                "unique",
                f"a token named {name!r} exists",
            ) from exc

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
        return self.authenticate_digest(_digest(token), claimed_agent)

    def authenticate_digest(self, digest: str, claimed_agent: str | None = None) -> Principal:
        """:meth:`authenticate` of a token known by its stored digest (a console session
        names its token): the same checks, read afresh."""
        try:
            row = self.store.token(digest, claimed_agent)
        except Unavailable as exc:
            raise unidentified(exc) from exc
        return self._principal(digest, row, claimed_agent)

    def authenticate_reading(
        self, token: str | None, claimed_agent: str | None, item_id: uuid.UUID
    ) -> tuple[Principal, LeaseRow | None]:
        """:meth:`authenticate`, and the row of the item whose lease the request presents,
        read in the same round trip (``RequestStore.token_reading``): a lease call's first
        two reads as one. Nothing of the row is used unless the token is accepted."""
        digest = _digest(token)
        try:
            row, read = self.store.token_reading(digest, claimed_agent, item_id)
        except Unavailable as exc:
            raise unidentified(exc) from exc
        return self._principal(digest, row, claimed_agent), read

    def _principal(self, digest: str, row: TokenRow | None, claimed_agent: str | None) -> Principal:
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


def unidentified(exc: Unavailable) -> Unavailable:
    """The database failing while the caller is still unknown (its token not yet read):
    the same 503 and kind, without the driver's text, which names hosts, ports and users
    (docs/security.md: an anonymous caller does not see it); the log has it."""
    _outage.warning("tokens", "authentication could not read the tokens: %s", exc)
    kind = type(exc)
    hint = kind.hint if kind.hint is not Unavailable.hint else "try again shortly"
    return kind("the database is unavailable; the server's log says why", hint=hint)


def _digest(token: str | None) -> str:
    """The stored form of a presented token; :class:`Unauthenticated` when none is."""
    if not token:
        raise Unauthenticated("a bearer token is required")
    return hash_token(token)


MAX_TENANT_LENGTH = 191


def checked_tenant(value: Any, path: str = "tenant_id") -> str | None:
    """A tenant id as given (``None``: no tenant); a string of 1..191 chars that every
    database stores (no NUL: PostgreSQL refuses it, SQLite would keep it). An empty one,
    or one with spaces around it, is refused, not read as "no tenant" or as another
    tenant: ``--tenant "$TENANT"`` with the variable unset made an unbound token, one
    that sees every tenant."""
    if value is None:
        return None
    expected = f"a string of 1 to {MAX_TENANT_LENGTH} characters, no spaces around it"
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TENANT_LENGTH:
        raise ValidationFailed.at(path, expected, "type")
    if value != value.strip():
        raise ValidationFailed.at(path, expected, "pattern")
    return str(json_value(value, path))


def _one_tenant_per_agent(s: Session, agent_id: str | None, tenant: str | None) -> None:
    """An agent id bound to a live token of another tenant is refused: two tenants'
    tokens acting as one agent shared its lease limit, rate bucket and provenance (a
    second token of the same tenant, to rotate one, is fine)."""
    if agent_id is None:
        return
    acts_as = or_(  # a token bound to no agent acts as its own name
        ApiToken.agent_id == agent_id, and_(ApiToken.agent_id.is_(None), ApiToken.name == agent_id)
    )
    live = select(ApiToken.tenant_id).where(acts_as, ApiToken.revoked_at.is_(None))
    others = {t for t in s.scalars(live) if t != tenant}
    if others:
        raise ValidationFailed.at(
            "agent_id",
            f"agent {agent_id!r} is bound to a token of another tenant already: one agent id"
            " acts for one tenant (revoke that token first, or bind another id)",
            "unique",
        )


def proposal_tenant(bound: str | None, requested: Any) -> str | None:
    """The tenant a proposal goes into: the token's (naming another one is 403
    ``forbidden``: it is the caller's own input, nothing is revealed), else the one the
    body names."""
    named = checked_tenant(requested)
    if bound is None or named is None or named == bound:
        return bound or named
    raise Forbidden(
        "this token proposes into its own tenant only",
        details={"tenant_id": named},
    )


def checkout_tenant(bound: str | None, requested: Any) -> tuple[str | None, bool]:
    """The tenant filter of a checkout and whether anything can match: a bound token's
    checkout is always narrowed to its tenant; asking it for another tenant finds
    nothing (the same answer as an empty queue)."""
    named = checked_tenant(requested)
    if bound is None:
        return named, True
    return bound, named is None or named == bound


def order_tenant(tenant_id: str | None, payload: Any) -> str | None:
    """The tenant an order belongs to: the one the proposal names, else its payload's."""
    return tenant_id or payload_tenant(payload)


def payload_tenant(payload: Any) -> str | None:
    """The tenant an order gets when the proposal names none: its payload's ``tenant_id``
    key (how items were given a tenant before orders had one; kept for compatibility). A
    number is written as its digits, as before; a string is checked as a named tenant is
    (an empty or padded one was another tenant, or tenant ""), and so is anything else."""
    value = payload.get("tenant_id") if isinstance(payload, dict) else None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return checked_tenant(value, "payload.tenant_id")


def require_order(db: Database, order_id: uuid.UUID, tenant: str | None) -> None:
    """For a token bound to ``tenant``: the order must exist in it, else 404 (an order of
    another tenant is answered as an unknown one). Unbound: nothing to check here (the
    service says 404 for an unknown id itself)."""
    _require(db, Order, order_id, tenant, "order")


def require_item(db: Database, item_id: uuid.UUID, tenant: str | None) -> None:
    """:func:`require_order` for an item (its own, inherited, ``tenant_id``)."""
    _require(db, Item, item_id, tenant, "item")


def _require(db: Database, model: Any, id_: uuid.UUID, tenant: str | None, kind: str) -> None:
    if tenant is None:
        return
    with db.transaction() as s:
        found = s.scalar(select(model.tenant_id).where(model.id == id_))
    if found != tenant:
        raise NotFound(f"{kind} {id_} not found", details={f"{kind}_id": str(id_)})


def item_visible(item_tenant: str | None, tenant: str | None) -> bool:
    """Whether a token bound to ``tenant`` (``None``: unbound) may see an item of
    ``item_tenant``."""
    return tenant is None or item_tenant == tenant
