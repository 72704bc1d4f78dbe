"""Idempotency keys (SPEC §6.3): replay a stored response, refuse a reused or in-flight key.

The key is scoped by endpoint, target resource and principal, and stored only as a hash,
with a fingerprint of the request body and the lease token presented. ``begin`` claims the
key (an in-flight marker with a short lock so a request that crashed before its operation
committed does not block its key until the TTL), ``complete`` stores the response,
``abandon`` forgets a failed attempt (failures are not stored).

Through :meth:`IdempotencyService.once` the operation's own transaction also marks the key
``committed`` (:mod:`workmanager.db.claims`): a key whose operation committed is never taken
over or run again, even when its response was never stored (the process died in between);
while its in-flight lock lasts a request with the key is told the first is still running,
after it the key answers from the current state of what the operation touched
(:meth:`_recovered`).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import and_, delete, or_, true

from ..db import claims
from ..db.models import IdempotencyKey
from ..db.predicates import count_rows
from ..db.request_store import KeyRow, LeaseRow, build_request_store
from ..errors import (
    IdempotencyInFlight,
    IdempotencyKeyReused,
    NotFound,
    WorkManagerError,
)
from ..jsonvalues import canonical
from ..patience import Patience
from ..reads.queries import Queries
from .context import ServiceContext
from .inputs import presented_item

if TYPE_CHECKING:
    from ..surface.callers import Caller
    from ..surface.operations import Answer

IN_FLIGHT, COMMITTED, DONE = claims.IN_FLIGHT, claims.COMMITTED, claims.DONE
#: How long an in-flight marker blocks its key before another request may take it over.
IN_FLIGHT_LOCK = timedelta(minutes=5)
#: How a committed key whose answer could not be stored is unlocked while the database is
#: away (services/idempotency.py ``_unlock``).
UNLOCKING = Patience("unlock")
log = logging.getLogger("workmanager.idempotency")


def key_hash(endpoint: str, target: str, principal: str, key: str) -> str:
    """The key's row id: scoped by endpoint, target resource, principal. A target that is an
    id is hashed in its canonical spelling (the routes accept an id in upper case or
    without dashes as the same resource, so a retry spelled so replays)."""
    named = presented_item(target)
    raw = "\x1f".join((endpoint, str(named) if named else target, principal, key))
    return hashlib.sha256(raw.encode()).hexdigest()


#: The endpoints whose key is scoped by the part too, as upstream's
#: (``submit-part:item:{id}:{part_key}:{seq}``): an agent may send every part of an item
#: under one key, and a retry of each part still replays only that part.
PART_ENDPOINTS = frozenset({"submit-part", "work.submit_part"})


def _within(endpoint: str, key: str, body: Any) -> str:
    """``key`` narrowed to the part its request names, on :data:`PART_ENDPOINTS`."""
    if endpoint not in PART_ENDPOINTS or not isinstance(body, dict):
        return key
    return "\x1f".join((key, str(body.get("part_key")), str(body.get("seq"))))


def fingerprint(body: Any, lease_token: object = None) -> str:
    """The request's fingerprint: its body and, when one was presented, the lease token
    (an opaque string: the same body under another lease is another request)."""
    if lease_token is not None:
        body = {"body": body, "lease_token": str(lease_token)}
    try:
        data = canonical(body)
    except UnicodeEncodeError:  # a lone surrogate: the operation refuses it with a 422
        data = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()


#: A stored checkout answer's lease token: ``<fence>.sealed:<secret XOR pad, base64>``.
SEALED = "sealed:"


def _pad(key: str, length: int) -> bytes:
    """A keystream from the raw idempotency key, which is never stored (only its hash)."""
    out, counter = b"", 0
    while len(out) < length:
        block = f"lease-secret\x1f{counter}".encode()
        out += hmac.new(key.encode(), block, hashlib.sha256).digest()
        counter += 1
    return out[:length]


def sealed_lease(body: dict[str, Any], key: str, *, open_: bool = False) -> dict[str, Any]:
    """``body`` with its lease token's secret sealed (or, ``open_``, unsealed) under the
    raw idempotency key: a checkout's stored answer must not hand a live lease to whoever
    reads the database or a backup, while its replay gives the caller, who sends the key
    again, the very token it got. Bodies without an ``item.lease_token`` pass unchanged."""
    item = body.get("item")
    token = item.get("lease_token") if isinstance(item, dict) else None
    if not isinstance(token, str) or "." not in token:
        return body
    fence, secret = token.split(".", 1)
    if open_:
        if not secret.startswith(SEALED):
            return body
        raw = base64.urlsafe_b64decode(secret[len(SEALED) :].encode())
        plain = bytes(a ^ b for a, b in zip(raw, _pad(key, len(raw)), strict=True)).decode()
        secret_out = plain
    else:
        data = secret.encode()
        mixed = bytes(a ^ b for a, b in zip(data, _pad(key, len(data)), strict=True))
        secret_out = SEALED + base64.urlsafe_b64encode(mixed).decode()
    assert isinstance(item, dict)
    return {**body, "item": {**item, "lease_token": f"{fence}.{secret_out}"}}


@dataclass(frozen=True)
class Replay:
    """A stored response to send again, with ``Idempotent-Replayed: true``."""

    status: int
    body: dict[str, Any]


class Claim(NamedTuple):
    """A claimed key: its hash, its row and when it was claimed (a row taken over later,
    which SQLite may give the same id, was claimed later); pass it to ``complete`` or
    ``abandon``."""

    key_hash: str
    row_id: int
    claimed_at: datetime


def _still_locked(row: KeyRow, now: datetime) -> bool:
    """A committed key whose first request has not stored its answer and whose in-flight
    lock is still on: that request is running (it stores the answer next); once the lock
    ran out with no answer, its server died and the key is answered as recovered."""
    return row.locked_until is not None and row.locked_until > now


class IdempotencyService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        #: the key's row: claimed, read, completed, abandoned (one statement each)
        self.store = build_request_store(ctx.db)

    def begin(
        self,
        endpoint: str,
        target: str,
        principal: str,
        key: str,
        body: Any,
        lease_token: object = None,
        reads: uuid.UUID | None = None,
    ) -> tuple[Claim | Replay, LeaseRow | None]:
        """Claim the key, or the answer to replay. ``reads``: the item whose lease the
        request presents, read with the key's first claim (one round trip) and returned
        beside it (``None`` otherwise)."""
        hashed = key_hash(endpoint, target, principal, key)
        fp = fingerprint(body, lease_token)
        now = self.ctx.clock()
        values = {
            "key_hash": hashed,
            "endpoint": endpoint,
            "request_fingerprint": fp,
            "status": IN_FLIGHT,
            "locked_until": now + IN_FLIGHT_LOCK,
            "created_at": now,
            "expires_at": now + timedelta(hours=self.ctx.settings.idempotency_ttl_hours),
        }
        read: LeaseRow | None = None
        for _ in range(3):
            if reads is None:
                row_id = self.store.claim_key(values)
            else:
                row_id, read = self.store.claim_key_reading(values, reads)
                reads = None  # read once
            if row_id is not None:
                return Claim(hashed, row_id, now), read
            replay = self._existing(hashed, fp, now)
            if replay is not None:
                return replay, None
        raise IdempotencyInFlight(details={"endpoint": endpoint})

    def _existing(self, hashed: str, fp: str, now: datetime) -> Replay | None:
        """The stored response; or None after clearing an expired/abandoned row. A row
        marked committed is never cleared before it expires (its operation is done)."""
        row = self.store.existing_key(hashed, now)
        if row is None:
            return None
        if row.request_fingerprint != fp:
            raise IdempotencyKeyReused()
        if row.status == IN_FLIGHT:
            raise IdempotencyInFlight()
        if row.status == COMMITTED and row.response_status is None and _still_locked(row, now):
            # committed, its answer not stored yet: the first request is still running
            raise IdempotencyInFlight()
        if row.status != COMMITTED or row.response_status is not None:
            return Replay(row.response_status or 200, row.response_body or {})
        return self._recovered(dict(row.response_body or {}))

    def _recovered(self, refs: dict[str, Any]) -> Replay:
        """The answer to a key whose operation committed but whose response was never
        stored: 200 ``{"replayed": true, "outcome": "committed"}`` with the ids the
        operation's provenance named and the current state of its item (or else its
        order). Deterministic, and nothing runs again."""
        body: dict[str, Any] = {"replayed": True, "outcome": "committed", **refs}
        queries = Queries(self.ctx)
        try:
            if "item_id" in refs:
                body["item"] = queries.item(uuid.UUID(refs["item_id"]))
            elif "order_id" in refs:
                body["order"] = queries.order(uuid.UUID(refs["order_id"]))
        except NotFound:
            pass  # deleted since: the ids still say what was done
        return Replay(200, body)

    def complete(
        self, claim: Claim, status: int, body: dict[str, Any], *, committed: bool = False
    ) -> None:
        """Store the response to replay. A failure (4xx/5xx) that changed nothing is not
        stored: the key is freed. One the operation answered after committing (``committed``:
        a part stored as ``rejected`` and refused with 422) is stored like a success, so a
        retry with the key gets the same refusal, not a second attempt."""
        if status >= 400 and not committed:
            self.abandon(claim)
            return
        self.store.complete_key(claim, status, body, self._expiry())

    def abandon(self, claim: Claim) -> None:
        """Free a claim whose operation did not commit; a committed one stays marked, its
        lock dropped (its answer will not be stored: the key answers as recovered)."""
        self.store.abandon_key(claim, self._expiry())

    def _expiry(self) -> datetime:
        """A key's answer is kept for the TTL from when it is known, not from the claim:
        a request that ran longer than a short TTL was run again by its retry."""
        return self.ctx.clock() + timedelta(hours=self.ctx.settings.idempotency_ttl_hours)

    def once(
        self,
        caller: Caller,
        endpoint: str,
        target: str,
        key: str,
        body: Any,
        operation: Callable[[Caller], Answer],
        lease_token: object = None,
    ) -> Answer | Replay:
        """Run ``operation`` at most once per key: what every adapter calls with a key.

        The key is scoped by ``endpoint``, ``target``, the caller's principal and the agent
        it acts as (two agents sharing a token, or every stdio MCP session, do not replay
        each other's answers); ``body`` and the ``lease_token`` presented (if any) are its
        fingerprint. The first call claims it and runs (its provenance carries the key's
        hash; its transaction marks the key committed, :mod:`workmanager.db.claims`), then
        stores a success; a later call with the same body and token gets the
        :class:`Replay`. An error raised or a failure answered before anything committed
        frees the key, so the request can be retried with it.
        """
        scope = caller.principal.name
        if caller.agent.id is not None:
            scope += "\x1f" + caller.agent.id
        key = _within(endpoint, key, body)
        reads = presented_item(target) if lease_token else None
        if reads is not None and caller.read is not None and caller.read.item.id == reads:
            reads = None  # read with the token already
        claim, read = self.begin(endpoint, target, scope, key, body, lease_token, reads)
        read = read if read is not None else caller.read
        if isinstance(claim, Replay):
            return Replay(claim.status, sealed_lease(claim.body, key, open_=True))
        agent = dataclasses.replace(caller.agent, idempotency_key_hash=claim.key_hash)
        try:
            with claims.holding(claim) as active:
                status, payload = operation(dataclasses.replace(caller, agent=agent, read=read))
        except WorkManagerError as exc:
            if active.marked and exc.http_status < 500:
                # it committed, then refused (a part stored as rejected): that refusal is
                # the answer. A transient error after the commit keeps the bare mark,
                # unlocked by abandon: a retry gets the recovered answer at once.
                self.complete(claim, exc.http_status, {"error": exc.to_dict()}, committed=True)
            else:
                self.abandon(claim)
            raise
        except BaseException:
            self.abandon(claim)
            raise
        try:
            self.complete(claim, status, sealed_lease(payload, key))
        except Exception as exc:  # the answer cannot be stored (the database went away):
            # the operation committed, so its answer is sent all the same (a checkout's
            # holds the lease token, which no later answer can give back: a 503 here left
            # the agent a lease it could not use until its TTL); a retry with the key, if
            # the answer is lost on its way, is answered as recovered, not "in flight"
            log.warning("the answer of %s could not be stored for its key: %s", endpoint, exc)
            self._unlock(claim)
        except BaseException:  # the process is ending (SystemExit, KeyboardInterrupt)
            self._unlock(claim)  # no answer goes out: a retry is answered as recovered
            raise
        return status, payload

    def _unlock(self, claim: Claim) -> None:
        """Unlock a committed claim whose answer could not be stored: now, or (the
        database still away) from a thread trying again while it comes back. Left
        locked, a retry with the key was "in flight" for the lock's 5 minutes."""
        try:
            self.abandon(claim)
            return
        except Exception:
            pass

        def unlock() -> None:
            try:
                UNLOCKING.call(lambda: self.abandon(claim), "an idempotency key", log)
            except Exception as exc:  # given up: the lock runs out by itself
                log.warning("an idempotency key stays locked until its lock ends: %s", exc)

        threading.Thread(target=unlock, name="idempotency-unlock", daemon=True).start()

    def mark(self, endpoint: str, target: str) -> bool:
        """Note that ``target`` went through ``endpoint`` (a key of the system's own, no
        request to replay, kept for the idempotency TTL): True the first time, one insert.
        The create task marks a message delivered again before it plans (``tasks/orders``)."""
        now = self.ctx.clock()
        values = {
            "key_hash": key_hash(endpoint, target, "system", "mark"),
            "endpoint": endpoint[:64],
            "request_fingerprint": "",
            "status": DONE,
            "locked_until": None,
            "created_at": now,
            "expires_at": now + timedelta(hours=self.ctx.settings.idempotency_ttl_hours),
        }
        return self.store.claim_key(values) is not None

    def purge(
        self, older_than: datetime | None = None, *, dry_run: bool = False, force: bool = False
    ) -> int:
        """Delete expired keys, or (an operator's cutoff) the answered keys created before
        ``older_than``: never one whose request is still in flight or whose answer is not
        stored yet, nor (unless ``force``) one whose answer is still replayed (its TTL runs
        from when it was stored): the retry it guards would run again. ``dry_run``: count
        them only."""
        now = self.ctx.clock()
        unlocked = or_(IdempotencyKey.locked_until.is_(None), IdempotencyKey.locked_until <= now)
        cond = (
            and_(
                IdempotencyKey.created_at < older_than,
                IdempotencyKey.status == DONE,
                true() if force else IdempotencyKey.expires_at <= now,
            )
            if older_than
            else and_(IdempotencyKey.expires_at <= now, unlocked)  # not a request still running
        )
        with self.ctx.db.transaction() as s:
            if dry_run:
                return count_rows(s, IdempotencyKey, cond)
            result = s.execute(delete(IdempotencyKey).where(cond))
            return int(getattr(result, "rowcount", 0) or 0)
