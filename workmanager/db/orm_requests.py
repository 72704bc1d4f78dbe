"""SQLite's :class:`~workmanager.db.request_store.RequestStore` (the embedded default): each
method one SQLAlchemy transaction (``BEGIN IMMEDIATE``); on PostgreSQL
:class:`~workmanager.db.postgres.requests.PostgresRequestStore` runs instead, never this."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import String, bindparam, case, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from .claims import COMMITTED, DONE, IN_FLIGHT, row_of
from .models import ApiToken, IdempotencyKey, Item
from .request_store import ClaimId, KeyRow, LeaseRow, TokenRow, lease_row
from .session import Database

_OWNER = aliased(ApiToken)
#: the token bound to the agent id an unbound token acts as (the one it names, else its own)
_OWNS = select(_OWNER.name).where(
    _OWNER.agent_id == func.coalesce(bindparam("claimed", type_=String()), ApiToken.name)
)
_TOKEN = select(
    *(getattr(ApiToken, column) for column in TokenRow._fields[:-1]),
    case((ApiToken.agent_id.is_(None), _OWNS.limit(1).scalar_subquery())),
).where(ApiToken.token_hash == bindparam("digest"))


class OrmRequestStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def token(self, digest: str, claimed: str | None) -> TokenRow | None:
        with self.db.transaction() as s:
            found = s.execute(_TOKEN, {"digest": digest, "claimed": claimed}).first()
        return TokenRow._make(found) if found is not None else None

    def token_reading(
        self, digest: str, claimed: str | None, item_id: uuid.UUID
    ) -> tuple[TokenRow | None, LeaseRow | None]:
        token = self.token(digest, claimed)
        live = token is not None and token.revoked_at is None  # else refused: no item read
        return token, (self.lease_row(item_id) if live else None)

    def touch_token(self, digest: str, now: datetime) -> None:
        with self.db.transaction() as s:
            s.execute(
                update(ApiToken).where(ApiToken.token_hash == digest).values(last_used_at=now)
            )

    def claim_key(self, values: dict[str, Any]) -> int | None:
        try:
            with self.db.transaction() as s:
                row = IdempotencyKey(**values)
                s.add(row)
                s.flush()
                return row.id
        except IntegrityError:
            return None

    def claim_key_reading(
        self, values: dict[str, Any], item_id: uuid.UUID
    ) -> tuple[int | None, LeaseRow | None]:
        return self.claim_key(values), self.lease_row(item_id)

    def existing_key(self, key_hash: str, now: datetime) -> KeyRow | None:
        with self.db.transaction() as s:
            row = s.scalar(
                select(IdempotencyKey).where(IdempotencyKey.key_hash == key_hash).with_for_update()
            )
            if row is None:
                return None
            locked = row.locked_until is not None and row.locked_until > now
            if not locked and (row.expires_at <= now or row.status == IN_FLIGHT):
                s.delete(row)
                return None
            return KeyRow(
                row.request_fingerprint,
                row.status,
                row.response_status,
                row.response_body,
                row.locked_until,
            )

    def complete_key(
        self, claim: ClaimId, status: int, body: dict[str, Any], expires_at: datetime
    ) -> None:
        with self.db.transaction() as s:
            row = s.scalar(select(IdempotencyKey).where(row_of(*claim)))
            if row is not None:
                row.status, row.response_status, row.response_body = DONE, status, body
                row.locked_until, row.expires_at = None, expires_at

    def abandon_key(self, claim: ClaimId, expires_at: datetime) -> None:
        with self.db.transaction() as s:
            s.execute(
                delete(IdempotencyKey).where(row_of(*claim), IdempotencyKey.status == IN_FLIGHT)
            )
            s.execute(
                update(IdempotencyKey)
                .where(row_of(*claim), IdempotencyKey.status == COMMITTED)
                .values(locked_until=None, expires_at=expires_at)
            )

    def lease_row(self, item_id: uuid.UUID) -> LeaseRow | None:
        with self.db.transaction() as s:
            item = s.get(Item, item_id)
            if item is None:
                return None
            return lease_row(item)
