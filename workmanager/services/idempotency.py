"""Idempotency keys (SPEC §6.3): replay a stored response, refuse a reused or in-flight key.

The key is scoped by endpoint, target resource and principal, and stored only as a hash,
with a fingerprint of the request body. ``begin`` claims the key (an in-flight marker with
a short lock so a crashed request does not block its key until the TTL), ``complete``
stores the response, ``abandon`` forgets a failed attempt (failures are not stored).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from ..db.models import IdempotencyKey
from ..errors import IdempotencyInFlight, IdempotencyKeyReused
from .context import ServiceContext
from .parts import canonical

if TYPE_CHECKING:
    from .callers import Caller
    from .operations import Answer

IN_FLIGHT, DONE = "in_flight", "done"
#: How long an in-flight marker blocks its key before another request may take it over.
IN_FLIGHT_LOCK = timedelta(minutes=5)


def key_hash(endpoint: str, target: str, principal: str, key: str) -> str:
    raw = "\x1f".join((endpoint, target, principal, key))
    return hashlib.sha256(raw.encode()).hexdigest()


def fingerprint(body: Any) -> str:
    try:
        data = canonical(body)
    except UnicodeEncodeError:  # a lone surrogate: the operation refuses it with a 422
        data = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Replay:
    """A stored response to send again, with ``Idempotent-Replayed: true``."""

    status: int
    body: dict[str, Any]


@dataclass(frozen=True)
class Claim:
    """A claimed key; pass it to ``complete`` or ``abandon``."""

    key_hash: str


class IdempotencyService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def begin(
        self, endpoint: str, target: str, principal: str, key: str, body: Any
    ) -> Claim | Replay:
        hashed, fp = key_hash(endpoint, target, principal, key), fingerprint(body)
        now = self.ctx.clock()
        for _ in range(3):
            try:
                with self.ctx.db.transaction() as s:
                    s.add(
                        IdempotencyKey(
                            key_hash=hashed,
                            endpoint=endpoint,
                            request_fingerprint=fp,
                            status=IN_FLIGHT,
                            locked_until=now + IN_FLIGHT_LOCK,
                            created_at=now,
                            expires_at=now
                            + timedelta(hours=self.ctx.settings.idempotency_ttl_hours),
                        )
                    )
                return Claim(hashed)
            except IntegrityError:
                replay = self._existing(hashed, fp, now)
                if replay is not None:
                    return replay
        raise IdempotencyInFlight(details={"endpoint": endpoint})

    def _existing(self, hashed: str, fp: str, now: datetime) -> Replay | None:
        """The stored response; or None after clearing an expired/abandoned row."""
        with self.ctx.db.transaction() as s:
            row = s.scalar(
                select(IdempotencyKey).where(IdempotencyKey.key_hash == hashed).with_for_update()
            )
            if row is None:
                return None
            stale = row.status == IN_FLIGHT and row.locked_until and row.locked_until <= now
            if row.expires_at <= now or stale:
                s.delete(row)
                return None
            if row.request_fingerprint != fp:
                raise IdempotencyKeyReused(
                    "this idempotency key was used with a different request body"
                )
            if row.status == IN_FLIGHT:
                raise IdempotencyInFlight()
            return Replay(row.response_status or 200, row.response_body or {})

    def complete(self, claim: Claim, status: int, body: dict[str, Any]) -> None:
        """Store the response to replay. A failure (4xx/5xx) is not stored: the key is freed."""
        if status >= 400:
            self.abandon(claim)
            return
        with self.ctx.db.transaction() as s:
            row = s.scalar(select(IdempotencyKey).where(IdempotencyKey.key_hash == claim.key_hash))
            if row is not None:
                row.status, row.response_status, row.response_body = DONE, status, body
                row.locked_until = None

    def abandon(self, claim: Claim) -> None:
        with self.ctx.db.transaction() as s:
            s.execute(delete(IdempotencyKey).where(IdempotencyKey.key_hash == claim.key_hash))

    def once(
        self,
        caller: Caller,
        endpoint: str,
        target: str,
        key: str,
        body: Any,
        operation: Callable[[Caller], Answer],
    ) -> Answer | Replay:
        """Run ``operation`` at most once per key: what every adapter calls with a key.

        The key is scoped by ``endpoint``, ``target``, the caller's principal and the agent
        it acts as (two agents sharing a token, or every stdio MCP session, do not replay
        each other's answers). The first call claims it, runs (its provenance carries the
        key's hash) and stores a success; a later call with the same body gets the
        :class:`Replay`. An error raised or a failure answered frees the key, so the
        request can be retried with it.
        """
        scope = caller.principal.name
        if caller.agent.id is not None:
            scope += "\x1f" + caller.agent.id
        claim = self.begin(endpoint, target, scope, key, body)
        if isinstance(claim, Replay):
            return claim
        agent = dataclasses.replace(caller.agent, idempotency_key_hash=claim.key_hash)
        try:
            status, payload = operation(dataclasses.replace(caller, agent=agent))
        except BaseException:
            self.abandon(claim)
            raise
        self.complete(claim, status, payload)
        return status, payload

    def purge(self, older_than: datetime | None = None) -> int:
        """Delete expired keys (or every key created before ``older_than``)."""
        now = self.ctx.clock()
        cond = (
            IdempotencyKey.created_at < older_than
            if older_than
            else IdempotencyKey.expires_at <= now
        )
        with self.ctx.db.transaction() as s:
            result = s.execute(delete(IdempotencyKey).where(cond))
            return int(getattr(result, "rowcount", 0) or 0)
