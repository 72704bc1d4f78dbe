"""The request store (``db/request_store.py``) keeps its contract on both databases: the
PostgreSQL statements and the SQLite twin under the same tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from tests.support.types import Simple
from workmanager import Registry, WorkManager
from workmanager.db.models import ApiToken, IdempotencyKey
from workmanager.db.request_store import KeyRow, RequestStore, build_request_store

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def wm(make_wm: Any, database: str) -> WorkManager:
    return make_wm(db=database, backend="database")  # type: ignore[no-any-return]


@pytest.fixture
def store(wm: WorkManager) -> RequestStore:
    return build_request_store(wm.db)


#: the in-flight lock of a key claimed at NOW
LOCK = NOW + timedelta(minutes=5)
#: when a stored answer expires (the TTL from when it was stored)
EXPIRES = NOW + timedelta(hours=1)


def row(key: str, created: datetime = NOW) -> dict[str, Any]:
    return {
        **{"key_hash": key, "endpoint": "propose", "request_fingerprint": "fp"},
        **{"status": "in_flight", "locked_until": created + timedelta(minutes=5)},
        **{"created_at": created, "expires_at": created + timedelta(hours=1)},
    }


def claim(store: RequestStore, key: str, created: datetime = NOW) -> int:
    claimed = store.claim_key(row(key, created))
    assert claimed is not None
    return claimed


def set_key(wm: WorkManager, key: str, **values: Any) -> None:
    with wm.db.transaction() as s:
        s.execute(update(IdempotencyKey).where(IdempotencyKey.key_hash == key).values(**values))


def test_a_key_is_claimed_once_and_read_back(store: RequestStore) -> None:
    claim(store, "k")
    assert store.claim_key(row("k", NOW + timedelta(hours=2))) is None  # nothing written
    assert store.existing_key("k", NOW) == KeyRow("fp", "in_flight", None, None, LOCK)
    assert store.existing_key("other", NOW) is None


def test_stale_and_expired_rows_are_cleared_and_committed_ones_kept(
    wm: WorkManager, store: RequestStore
) -> None:
    for key in ("stale", "committed", "expired"):
        claim(store, key)
    set_key(wm, "committed", status="committed", response_body={"order_id": "o"})
    later = NOW + timedelta(minutes=6)  # every lock ran out; nothing expired
    assert store.existing_key("stale", later) is None
    assert store.existing_key("stale", NOW) is None  # deleted, not just hidden
    assert store.existing_key("committed", later) == KeyRow(
        "fp", "committed", None, {"order_id": "o"}, LOCK
    )
    assert store.existing_key("expired", NOW + timedelta(hours=1)) is None
    assert store.existing_key("expired", NOW) is None
    assert store.existing_key("committed", NOW + timedelta(hours=1)) is None


def test_complete_and_abandon_touch_their_claim_only(wm: WorkManager, store: RequestStore) -> None:
    old = ("k", claim(store, "k"), NOW)
    store.abandon_key(old, EXPIRES)
    new = ("k", claim(store, "k", NOW + timedelta(seconds=1)), NOW + timedelta(seconds=1))
    store.complete_key(old, 201, {"x": 1}, EXPIRES)  # the key's later row is left alone
    store.abandon_key(old, EXPIRES)
    later_lock = LOCK + timedelta(seconds=1)
    assert store.existing_key("k", NOW) == KeyRow("fp", "in_flight", None, None, later_lock)
    store.complete_key(new, 201, {"x": 1}, EXPIRES)
    store.abandon_key(new, EXPIRES)  # a stored answer is not in flight: kept
    assert store.existing_key("k", NOW) == KeyRow("fp", "done", 201, {"x": 1}, None)
    set_key(wm, "k", status="committed", locked_until=later_lock)
    store.abandon_key(new, EXPIRES)  # committed: kept, its lock dropped (answered as recovered)
    assert store.existing_key("k", NOW) == KeyRow("fp", "committed", 201, {"x": 1}, None)


def test_a_token_is_read_with_the_owner_of_the_agent_it_acts_as(
    wm: WorkManager, store: RequestStore
) -> None:
    with wm.db.transaction() as s:
        s.add(ApiToken(name="bound", agent_id="a1", scopes=["view"], token_hash="d1"))
        s.add(ApiToken(name="free", scopes=["view"], token_hash="d2", tenant_id="t"))
    bound = store.token("d1", "a1")
    assert bound is not None and (bound.name, bound.agent_id, bound.owner) == ("bound", "a1", None)
    free = store.token("d2", None)
    assert free is not None and (free.scopes, free.tenant_id, free.owner) == (["view"], "t", None)
    assert store.token("d2", "a1") == free._replace(owner="bound")
    assert store.token("nope", None) is None
    store.touch_token("d2", NOW)
    touched = store.token("d2", None)
    assert touched is not None and touched.last_used_at == NOW


def test_the_lease_row_of_a_missing_item_is_none(store: RequestStore) -> None:
    assert store.lease_row(uuid.uuid4()) is None


def test_a_key_is_claimed_with_the_lease_it_presents_read(make_wm: Any, database: str) -> None:
    """``claim_key_reading``: the claim as ``claim_key`` makes it, and the item's row as
    ``lease_row`` reads it, whether or not the claim was taken."""
    wm = make_wm(db=database, backend="database", registry=Registry([Simple()]))
    store = build_request_store(wm.db)
    wm.orders.propose("test.simple", {})
    lease = wm.agent.checkout("agent-1")
    assert lease is not None
    claimed, read = store.claim_key_reading(row("k"), lease.item_id)
    assert claimed is not None and read is not None and read == store.lease_row(lease.item_id)
    assert read.item.id == lease.item_id and read.leased_by_agent_id == "agent-1"
    again, read_again = store.claim_key_reading(row("k"), lease.item_id)
    assert again is None and read_again == read  # nothing written, the row still read
    claimed, missing = store.claim_key_reading(row("k2"), uuid.uuid4())
    assert claimed is not None and missing is None
    assert store.existing_key("k2", NOW) == KeyRow("fp", "in_flight", None, None, LOCK)


def test_a_token_is_read_with_the_lease_it_presents(make_wm: Any, database: str) -> None:
    """``token_reading``: the token as ``token`` reads it and the item's row as
    ``lease_row`` reads it, each ``None`` on its own when missing."""
    from workmanager.services.tokens import TokenService, hash_token

    wm = make_wm(db=database, backend="database", registry=Registry([Simple()]))
    store = build_request_store(wm.db)
    secret, _ = TokenService(wm.ctx).create(
        "reader", ["checkout"], agent_id="agent-1", tenant_id="acme"
    )  # the item has no tenant: the two rows' tenant_id columns must not be mixed up
    digest = hash_token(secret)
    wm.orders.propose("test.simple", {})
    lease = wm.agent.checkout("agent-1")
    assert lease is not None
    token, read = store.token_reading(digest, None, lease.item_id)
    assert token is not None and token == store.token(digest, None)
    assert token.name == "reader" and token.agent_id == "agent-1" and token.tenant_id == "acme"
    assert read is not None and read == store.lease_row(lease.item_id)
    assert read.tenant_id is None and read.item.tenant_id is None
    assert store.token_reading(digest, None, uuid.uuid4()) == (token, None)
    # a request that can only be refused reads no item: an unknown token, a revoked one
    assert store.token_reading(hash_token("wm_unknown"), None, lease.item_id) == (None, None)
    TokenService(wm.ctx).revoke("reader")
    revoked, unread = store.token_reading(digest, None, lease.item_id)
    assert revoked is not None and revoked.revoked_at is not None and unread is None
