"""The request path's port: what an API request reads and writes besides its operation.

Authentication's token lookup and ``last_used_at`` touch (:mod:`workmanager.services.tokens`),
an idempotency key's claim, replay, stored response and release
(:mod:`workmanager.services.idempotency`), and the item row a presented lease is rebuilt
from (:mod:`workmanager.surface.operations`): the :class:`RequestStore`, chosen once by
:func:`build_request_store`, never a fallback for each other —
:class:`workmanager.db.postgres.requests.PostgresRequestStore` (each method one named
statement of ``db/sql/queries.sql``, prepared, in autocommit on the raw pool: one round
trip, its own transaction) or :class:`workmanager.db.orm_requests.OrmRequestStore`
(SQLite, the embedded default: one SQLAlchemy transaction each). The rules that name an
outcome stay in the services.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from ..types import ItemView
from .session import Database

#: A claimed key's row: ``(key_hash, id, created_at)`` (a row taken over later, which
#: SQLite may give the same id, was created later).
ClaimId = tuple[str, int, datetime]


class TokenRow(NamedTuple):
    """A token by its digest, and ``owner``: for a token bound to no agent, the name of the
    token bound to the agent id it acts as (the one it names, else its own name)."""

    name: str
    agent_id: str | None
    tenant_id: str | None
    scopes: list[str] | None
    token_hash: str
    revoked_at: datetime | None
    last_used_at: datetime | None
    owner: str | None


class KeyRow(NamedTuple):
    """An idempotency key's row as a later request with the key reads it."""

    request_fingerprint: str
    status: str
    response_status: int | None
    response_body: dict[str, Any] | None
    #: the in-flight lock, kept when the key is marked committed (until its answer is stored)
    locked_until: datetime | None


class LeaseRow(NamedTuple):
    """The item's columns a presented lease is rebuilt from, and the item as read (no
    lock): the view the lease carries, as a checkout's does. A store's write on it guards
    on the row still being what the view shows, or reads it again (locked)."""

    order_id: uuid.UUID
    leased_by_agent_id: str | None
    lease_token: int
    lease_secret_hash: str | None
    tenant_id: str | None
    item: ItemView


def lease_row(item: Any) -> LeaseRow:
    """The :class:`LeaseRow` of an item read whole (an ORM row or an ``ItemRow``)."""
    from ..services.views import item_view

    return LeaseRow(
        item.order_id,
        item.leased_by_agent_id,
        item.lease_token,
        item.lease_secret_hash,
        item.tenant_id,
        item_view(item),
    )


class RequestStore(Protocol):
    """One statement per method, its own transaction (nothing is cached)."""

    def token(self, digest: str, claimed: str | None) -> TokenRow | None:
        """The token whose sha256 is ``digest`` with its ``owner`` (``claimed``: the agent
        id the request names), read afresh: a revocation or a new binding holds from the
        next request on, in every process."""
        ...

    def token_reading(
        self, digest: str, claimed: str | None, item_id: uuid.UUID
    ) -> tuple[TokenRow | None, LeaseRow | None]:
        """:meth:`token`, and :meth:`lease_row` of ``item_id`` with it (in the same round
        trip where the database allows): a lease call's token and the lease it presents.
        No row is read when no unrevoked token has the digest (the request can only be
        refused); the caller discards the row when the token is refused otherwise."""
        ...

    def touch_token(self, digest: str, now: datetime) -> None:
        """The token's ``last_used_at`` = ``now``."""
        ...

    def claim_key(self, values: dict[str, Any]) -> int | None:
        """Insert a key's in-flight row (``values``: its columns); its id, or None when the
        key has a row already (nothing is written)."""
        ...

    def claim_key_reading(
        self, values: dict[str, Any], item_id: uuid.UUID
    ) -> tuple[int | None, LeaseRow | None]:
        """:meth:`claim_key`, and :meth:`lease_row` of ``item_id`` with it (in the same
        round trip where the database allows): a lease call's key and the lease it
        presents, read as the key is claimed."""
        ...

    def existing_key(self, key_hash: str, now: datetime) -> KeyRow | None:
        """The key's row, read under its lock; None when there is none, or after deleting
        it when it expired or is an in-flight marker whose lock ran out. A row marked
        committed is never deleted before it expires (its operation is done)."""
        ...

    def complete_key(
        self, claim: ClaimId, status: int, body: dict[str, Any], expires_at: datetime
    ) -> None:
        """The claim's row ``done`` with the response to replay until ``expires_at``, its
        lock cleared (a row of the key claimed later is not touched)."""
        ...

    def abandon_key(self, claim: ClaimId, expires_at: datetime) -> None:
        """Delete the claim's row while it is in flight; unlock a committed one (it stays
        marked, and answers as recovered from now on, until ``expires_at``)."""
        ...

    def lease_row(self, item_id: uuid.UUID) -> LeaseRow | None:
        """What a presented lease is rebuilt from (no lock)."""
        ...


def build_request_store(db: Database) -> RequestStore:
    """PostgreSQL's statements on PostgreSQL; the ORM's otherwise (SQLite)."""
    if db.is_postgres:
        from .postgres.requests import PostgresRequestStore

        return PostgresRequestStore(db.raw)
    from .orm_requests import OrmRequestStore

    return OrmRequestStore(db)
