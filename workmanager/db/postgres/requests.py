"""PostgreSQL's :class:`~workmanager.db.request_store.RequestStore`: each method one named
statement of ``db/sql/queries.sql``, prepared, in autocommit on the raw pool
(:mod:`workmanager.db.raw`): one round trip, its own transaction, no ORM session."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ..raw import RawPostgres, utc_row
from ..request_store import ClaimId, KeyRow, LeaseRow, TokenRow, lease_row
from ..sql import queries
from .sql import ITEM_COLUMNS, ITEM_COLUMNS_SQL
from .values import item_of_row

TOKEN = queries.text("token_by_digest")
TOUCH_TOKEN = queries.text("touch_token")
CLAIM_KEY = queries.text("claim_key")
EXISTING_KEY = queries.text("existing_key")
COMPLETE_KEY = queries.text("complete_key")
ABANDON_KEY = queries.text("abandon_key")
LEASE_ROW = queries.template("lease_row", item_columns=ITEM_COLUMNS_SQL)
#: The item's columns as ``lease_row`` reads them, named by table where a statement reads
#: it beside another row (the token's, the key's claim).
_ITEM_COLUMNS = ", ".join(f"work_items.{column}" for column in ITEM_COLUMNS)
TOKEN_READING = queries.template(
    "token_reading",
    token=TOKEN,
    token_columns=", ".join(f"token.{field} AS token_{field}" for field in TokenRow._fields),
    item_columns=_ITEM_COLUMNS,
)
CLAIM_KEY_READING = queries.template(
    "claim_key_reading", claim_key=CLAIM_KEY, item_columns=_ITEM_COLUMNS
)


def _claim(claim: ClaimId) -> dict[str, Any]:
    key_hash, row_id, created_at = claim
    return {"key_hash": key_hash, "id": row_id, "created_at": created_at}


class PostgresRequestStore:
    def __init__(self, raw: RawPostgres) -> None:
        self.raw = raw

    def _one(self, sql: str, params: dict[str, Any], fetch: bool = True) -> dict[str, Any] | None:
        """The statement's row (datetimes in UTC), or None (none, or ``fetch`` is off)."""
        with self.raw.connection() as conn:
            cur = conn.cursor(row_factory=dict_row).execute(sql, params, prepare=True)
            found = cur.fetchone() if fetch else None
        return utc_row(found) if found is not None else None

    def token(self, digest: str, claimed: str | None) -> TokenRow | None:
        found = self._one(TOKEN, {"digest": digest, "claimed": claimed})
        return TokenRow(**found) if found is not None else None

    def token_reading(
        self, digest: str, claimed: str | None, item_id: uuid.UUID
    ) -> tuple[TokenRow | None, LeaseRow | None]:
        """One statement (``token_reading``): the token and the item in one round trip."""
        found = self._one(TOKEN_READING, {"digest": digest, "claimed": claimed, "item_id": item_id})
        assert found is not None  # the statement always answers one row
        token = {field: found.pop(f"token_{field}") for field in TokenRow._fields}
        row = TokenRow(**token) if token["token_hash"] is not None else None
        return row, (lease_row(item_of_row(found)) if found["id"] is not None else None)

    def touch_token(self, digest: str, now: datetime) -> None:
        self._one(TOUCH_TOKEN, {"digest": digest, "now": now}, fetch=False)

    def claim_key(self, values: dict[str, Any]) -> int | None:
        found = self._one(CLAIM_KEY, values)
        return int(found["id"]) if found is not None else None

    def claim_key_reading(
        self, values: dict[str, Any], item_id: uuid.UUID
    ) -> tuple[int | None, LeaseRow | None]:
        """One statement (``claim_key_reading``): one round trip, without a pipeline's
        Python (a pipeline of the two statements cost ~0.1 ms more of a request's CPU)."""
        found = self._one(CLAIM_KEY_READING, values | {"item_id": item_id})
        assert found is not None  # the statement always answers one row
        claim = found.pop("claim_id")
        read = lease_row(item_of_row(found)) if found["id"] is not None else None
        return (int(claim) if claim is not None else None), read

    def existing_key(self, key_hash: str, now: datetime) -> KeyRow | None:
        found = self._one(EXISTING_KEY, {"key_hash": key_hash, "now": now})
        return KeyRow(**found) if found is not None else None

    def complete_key(
        self, claim: ClaimId, status: int, body: dict[str, Any], expires_at: datetime
    ) -> None:
        params = _claim(claim) | {"status": status, "body": Jsonb(body), "expires_at": expires_at}
        self._one(COMPLETE_KEY, params, fetch=False)

    def abandon_key(self, claim: ClaimId, expires_at: datetime) -> None:
        self._one(ABANDON_KEY, _claim(claim) | {"expires_at": expires_at}, fetch=False)

    def lease_row(self, item_id: uuid.UUID) -> LeaseRow | None:
        found = self._one(LEASE_ROW, {"id": item_id})
        return lease_row(item_of_row(found)) if found is not None else None
