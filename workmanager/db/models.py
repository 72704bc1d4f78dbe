"""SQLAlchemy 2 models of SPEC §3. Portable across SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    DDL,
    JSON,
    BigInteger,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    event,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from . import sql

# Python None is SQL NULL (not JSON 'null'), for ORM and Core inserts alike.
JSONType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSONType, datetime: UTCDateTime}


class Order(Base):
    __tablename__ = "work_orders"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    type: Mapped[str] = mapped_column(String(191))
    state: Mapped[str] = mapped_column(String(32))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    requested_by_type: Mapped[str] = mapped_column(String(16), default="system")
    requested_by_id: Mapped[str | None] = mapped_column(String(191))
    dedupe_key: Mapped[str | None] = mapped_column(String(191), unique=True)
    # The tenant the order belongs to (migration 0009): set at propose, inherited by its
    # items; a token bound to a tenant sees and acts on its tenant's orders only.
    tenant_id: Mapped[str | None] = mapped_column(String(191), index=True)
    last_error: Mapped[dict[str, Any] | None] = mapped_column()
    apply_attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The apply claim (services/apply.py): at most one apply body runs per order at a
    # time, and only the run holding the claim records its outcome. NULL when unclaimed; a
    # claim past its expiry has lapsed (its worker died).
    apply_claim: Mapped[str | None] = mapped_column(String(36))
    apply_claim_expires_at: Mapped[datetime | None] = mapped_column()
    diff: Mapped[dict[str, Any] | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    last_transitioned_at: Mapped[datetime] = mapped_column(default=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column()
    applied_at: Mapped[datetime | None] = mapped_column()
    completed_at: Mapped[datetime | None] = mapped_column()

    items: Mapped[list[Item]] = relationship(
        back_populates="order",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Item.created_at",
    )

    __table_args__ = (
        Index("ix_work_orders_state_priority", "state", "priority", "created_at"),
        Index("ix_work_orders_type_state", "type", "state"),
        Index("ix_work_orders_created_at", "created_at"),
        Index("ix_work_orders_transitioned", "state", "last_transitioned_at"),
    )


class Item(Base):
    __tablename__ = "work_items"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("work_orders.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(191))
    # Copied from the order at planning time so checkout reads one table (SPEC §4.5 order).
    order_type: Mapped[str] = mapped_column(String(191))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    tenant_id: Mapped[str | None] = mapped_column(String(191))
    state: Mapped[str] = mapped_column(String(32))
    input: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column()
    assembled_result: Mapped[dict[str, Any] | None] = mapped_column()
    error: Mapped[dict[str, Any] | None] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    leased_by_agent_id: Mapped[str | None] = mapped_column(String(191))
    # The last fencing token granted; never decreases. A lease is held while the item is
    # leased/in_progress, and its token is this one.
    lease_token: Mapped[int] = mapped_column(BigInteger, default=0)
    # sha256 (hex) of the current lease's secret: the lease token an agent presents is
    # ``<lease_token>.<secret>`` and proves possession (lease_tokens.py). NULL when no
    # lease was ever granted under this scheme.
    lease_secret_hash: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    last_heartbeat_at: Mapped[datetime | None] = mapped_column()
    available_at: Mapped[datetime | None] = mapped_column()
    progress: Mapped[dict[str, Any] | None] = mapped_column()
    parts_required: Mapped[list[str] | None] = mapped_column(JSONType)
    parts_state: Mapped[dict[str, Any] | None] = mapped_column()
    accepted_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    order: Mapped[Order] = relationship(back_populates="items")

    __table_args__ = (
        # Checkouts: queued items by priority desc, then age (partial on both backends),
        # globally, and under a type, a tenant (migration 0013) or both (0017).
        *(
            Index(
                "ix_work_items_checkout" + "".join(f"_{name}" for name, _ in under),
                *(column for _, column in under),
                text("priority DESC"),
                "created_at",
                "id",
                postgresql_where=text("state = 'queued'"),
                sqlite_where=text("state = 'queued'"),
            )
            for under in (
                (),
                (("type", "order_type"),),
                (("tenant", "tenant_id"),),
                (("tenant", "tenant_id"), ("type", "order_type")),
            )
        ),
        Index("ix_work_items_order_state", "order_id", "state"),
        # The sweep: held leases by expiry.
        Index(
            "ix_work_items_lease_expiry",
            "lease_expires_at",
            postgresql_where=text("state IN ('leased', 'in_progress')"),
            sqlite_where=text("state IN ('leased', 'in_progress')"),
        ),
        # Held items by agent, type and tenant: the lease limits' counts (leases/limits.py;
        # type and tenant since 0016) and an agent's leases.
        *(
            Index(
                f"ix_work_items_{name}_held",
                column,
                postgresql_where=text(f"state IN ('leased', 'in_progress'){extra}"),
                sqlite_where=text(f"state IN ('leased', 'in_progress'){extra}"),
            )
            for name, column, extra in (
                ("agent", "leased_by_agent_id", ""),
                ("type", "order_type", ""),
                ("tenant", "tenant_id", " AND tenant_id IS NOT NULL"),
            )
        ),
        Index("ix_work_items_state_updated", "state", "updated_at"),
    )


class Part(Base):
    __tablename__ = "work_item_parts"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    item_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("work_items.id", ondelete="CASCADE"))
    part_key: Mapped[str] = mapped_column(String(191))
    seq: Mapped[int | None] = mapped_column(Integer)
    # seq with NULL folded to -1, so the unique slot treats "no seq" as one slot everywhere.
    seq_slot: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column()
    evidence: Mapped[Any] = mapped_column(JSONType, nullable=True)
    notes: Mapped[str | None] = mapped_column(Text)
    errors: Mapped[dict[str, Any] | None] = mapped_column()
    checksum: Mapped[str] = mapped_column(String(64))
    submitted_by_agent_id: Mapped[str | None] = mapped_column(String(191))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("item_id", "part_key", "seq_slot", name="uq_part_slot"),)


class Event(Base):
    """One audit event. No foreign keys (migration 0003): rows are written in the
    transaction of the change they record; a trigger deletes them with their order."""

    __tablename__ = "work_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    item_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    event: Mapped[str] = mapped_column(String(64))
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str | None] = mapped_column(String(191))
    payload: Mapped[dict[str, Any] | None] = mapped_column()
    diff: Mapped[dict[str, Any] | None] = mapped_column()
    message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_work_events_order", "order_id", "id"),
        Index("ix_work_events_item", "item_id", "id"),
        Index("ix_work_events_created", "created_at"),  # recent events (the dashboard)
    )


class Provenance(Base):
    """Who did what (SPEC §4.7). No foreign keys, as :class:`Event`."""

    __tablename__ = "work_provenance"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    item_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    action: Mapped[str] = mapped_column(String(32))
    agent_id: Mapped[str | None] = mapped_column(String(191))
    agent_name: Mapped[str | None] = mapped_column(String(191))
    agent_version: Mapped[str | None] = mapped_column(String(64))
    agent_type: Mapped[str | None] = mapped_column(String(191))
    model_name: Mapped[str | None] = mapped_column(String(191))
    runtime: Mapped[str | None] = mapped_column(String(191))
    request_id: Mapped[str | None] = mapped_column(String(191))
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    ip_address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(Text)
    principal: Mapped[str | None] = mapped_column(String(191))
    idempotency_key_hash: Mapped[str | None] = mapped_column(String(64))
    extra: Mapped[dict[str, Any] | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_work_provenance_order", "order_id"),
        Index("ix_work_provenance_agent", "agent_id"),
        Index("ix_work_provenance_model", "model_name"),
        Index("ix_work_provenance_ip", "ip_address"),
        Index("ix_work_provenance_created", "created_at"),  # agents seen lately (dashboard)
    )


class IdempotencyKey(Base):
    __tablename__ = "work_idempotency_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # sha256 of (endpoint, target, principal, key): the key itself is never stored.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    endpoint: Mapped[str] = mapped_column(String(64))
    request_fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # in_flight | done
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[dict[str, Any] | None] = mapped_column()
    locked_until: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()

    __table_args__ = (Index("ix_work_idempotency_expires", "expires_at"),)


class ApiToken(Base):
    __tablename__ = "work_api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(191), unique=True)
    agent_id: Mapped[str | None] = mapped_column(String(191))
    # A token bound to a tenant acts within that tenant only (migration 0009).
    tenant_id: Mapped[str | None] = mapped_column(String(191))
    scopes: Mapped[list[str]] = mapped_column(JSONType)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()


class UiSession(Base):
    """A signed-in review console session (migration 0008). The cookie carries a random
    secret; only its sha256 is stored. The token it was opened with is read again on every
    request, so revoking the token (or removing a scope) ends what the session may do."""

    __tablename__ = "work_ui_sessions"

    # sha256 (hex) of the cookie's secret: the secret itself is never stored.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # the API token signed in with (NULL under WORK_MANAGER_AUTH=none)
    token_id: Mapped[int | None] = mapped_column(BigInteger)
    principal: Mapped[str] = mapped_column(String(191))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()

    __table_args__ = (Index("ix_work_ui_sessions_expires", "expires_at"),)


class RateBucket(Base):
    """One token bucket of the rate limits (migration 0010, :mod:`workmanager.ratelimit`):
    ``tokens`` left at ``updated_at`` (seconds since the epoch, the database's clock on
    PostgreSQL). A missing row is a full bucket. Used when the lease backend is not Redis."""

    __tablename__ = "work_rate_buckets"

    # "<limit>@<capacity>/<rate per second>:<agent|tenant>:<id>", e.g. "checkout@20/20:agent:a-1"
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    tokens: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)


class DeploymentRecord(Base):
    """The settings every process of the deployment must share (migration 0012,
    :mod:`workmanager.deployment`): one row, key ``settings``, written by ``db upgrade``
    (or by the first process to start when there is none) and compared at start-up."""

    __tablename__ = "work_deployment"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column()
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    recorded_by: Mapped[str] = mapped_column(String(255))


# Deleting an order deletes its events and provenance (SPEC §3). Audit rows carry no
# foreign keys (migration 0003: a key cost a lookup and a lock per audit row on the hottest
# statements), so a trigger does what ON DELETE CASCADE did. Items and parts keep theirs.
# The PostgreSQL store's order functions come with the schema on PostgreSQL.
# ``create_all`` runs the SQL files the migrations' frozen copies must agree with
# (:mod:`.sql`, ``tests/integration/test_sql_files.py``).
_DROP_FUNCTIONS = "; ".join(f"DROP FUNCTION IF EXISTS {f}" for f in sql.function_signatures())
event.listen(
    Order.__table__,
    "after_create",
    DDL(sql.script("sqlite.sql")).execute_if(dialect="sqlite"),  # type: ignore[no-untyped-call]
)
event.listen(
    Order.__table__,
    "after_drop",
    DDL("DROP FUNCTION IF EXISTS work_orders_delete_audit()").execute_if(dialect="postgresql"),  # type: ignore[no-untyped-call]
)
for _ddl, _when in ((sql.script("functions.sql"), "after_create"), (_DROP_FUNCTIONS, "after_drop")):
    event.listen(Base.metadata, _when, DDL(_ddl).execute_if(dialect="postgresql"))  # type: ignore[no-untyped-call]


def _record_head(_metadata: Any, connection: Any, **_: Any) -> None:
    """``create_all`` builds the migrations' head schema: record it as such, so the check
    that the schema is at head (``serve``, workers, ``/readyz``) passes on it."""
    from .migrate import stamp_head  # alembic: only when a schema is built

    stamp_head(connection)


event.listen(Base.metadata, "after_create", _record_head)

#: The append-only tables, for Core inserts (see :mod:`workmanager.db.pending`).
EVENTS_TABLE = cast(Table, Event.__table__)
PROVENANCE_TABLE = cast(Table, Provenance.__table__)
