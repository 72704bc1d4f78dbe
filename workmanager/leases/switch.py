"""Leases held across a switch of the lease backend, or of the Redis lock store (its
prefix, or a cluster), recorded by ``workmanager db upgrade --record-settings`` with every
process stopped (:func:`carry`): what the old backend knows of each held lease is carried
to the new one, so its holder carries on where it left off.

* **database → Redis.** The row is the lease. Its lock is taken in Redis under the row's
  fence, holder and secret hash, for the time the row gives it, so the audit sweep that
  follows the switch (the lock keys of an earlier period were deleted) finds it there: an
  operator pass found every lease held then reclaimed, an attempt spent on each, and an
  item on its last attempt failed with its order while its agent was alive.
* **Redis → database.** A heartbeat without progress renews only the lock, so the row's
  expiry lags behind what its holder was told: each held row gets its lock's end (the
  pass found every lease cut short, its holder's next heartbeat refused).
* **Redis → Redis** (another prefix or cluster): both, the rows first.

Only the rows of leases that are still held under the same fence are touched. A lease
whose lock could not be carried (a limit of the new backend reached, Redis away) stays as
it was: the sweep then ends it as it would have before.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update

from ..db.models import Item
from ..db.predicates import held
from ..db.session import Database
from ..errors import WorkManagerError
from ..settings import Settings
from .base import LeaseBackend, LeaseLock

#: What, changed in the record, makes the Redis lock store another one.
LOCK_STORE = ("lease_backend", "redis_prefix", "redis_cluster")

#: Held rows read (and locks carried) at a time.
BATCH = 500


def _held(db: Database) -> Iterator[list[Any]]:
    """Every held row's lease, ``BATCH`` at a time, by id."""
    columns: tuple[Any, ...] = (Item.id, Item.leased_by_agent_id, Item.lease_token)
    columns += (Item.lease_secret_hash, Item.lease_expires_at, Item.order_type)
    after: uuid.UUID | None = None
    while True:
        stmt = select(*columns).where(held()).order_by(Item.id).limit(BATCH)
        if after is not None:
            stmt = stmt.where(Item.id > after)
        with db.transaction() as session:
            rows = list(session.execute(stmt))
        if not rows:
            return
        yield rows
        after = rows[-1].id


def into_locks(db: Database, lock: LeaseLock, now: datetime) -> int:
    """database → lock store: each lease the rows hold, unexpired, locked in the store
    under its row's fence, holder and secret hash until its row's expiry; how many."""
    carried = 0
    for rows in _held(db):
        for row in rows:
            expires = row.lease_expires_at
            left_ms = int((expires - now).total_seconds() * 1000) if expires else 0
            if left_ms <= 0 or row.leased_by_agent_id is None:
                continue  # ended already: the sweep's
            token = lock.acquire(
                row.id,
                row.leased_by_agent_id,
                left_ms,
                row.lease_token,
                row.order_type,
                row.lease_secret_hash or "",
            )
            carried += token > 0
    return carried


def into_rows(db: Database, lock: LeaseLock) -> int:
    """lock store → database: each held row's expiry set to its lock's end, where the
    lock ends later than the row says; how many rows."""
    carried = 0
    for rows in _held(db):
        ends = lock.ends([row.id for row in rows])
        later = [
            {"i": row.id, "t": row.lease_token, "e": ends[row.id]}
            for row in rows
            if row.id in ends
            and (row.lease_expires_at is None or ends[row.id] > row.lease_expires_at)
        ]
        if not later:
            continue
        stmt = (
            update(Item)
            .where(Item.id == bindparam("i"), Item.lease_token == bindparam("t"), held())
            .values(lease_expires_at=bindparam("e"))
        )
        with db.transaction() as session:
            result = session.connection().execute(stmt, later)
            carried += int(result.rowcount or 0)
    return carried


@dataclass
class Carried:
    """What a switch did with the held leases (``None``: not that kind of switch)."""

    #: lock keys of an earlier period deleted under the new prefix
    forgotten: int | None = None
    #: rows whose expiry was brought up to their old lock's end
    rows: int | None = None
    #: leases locked in the new lock store
    locks: int | None = None
    #: why the old lock store could not be read (its leases then end at their rows')
    unread: str | None = None

    @property
    def warning(self) -> str | None:
        """What an operator must hear on stderr: the old locks could not be read."""
        if self.unread is None:
            return None
        return (
            f"leases held: their Redis locks could not be read ({self.unread}); each ends at"
            " its row's expiry, which lags its heartbeats: stop the agents first, or run"
            " this again with WORK_MANAGER_REDIS_URL set to that Redis"
        )

    def said(self, prefix: str) -> str:
        """The lines ``db upgrade`` prints."""
        lines = [self.warning] if self.warning else []
        if self.rows is not None:
            lines.append(f"leases held: {self.rows} row expiries brought up to their Redis locks")
        if self.forgotten is not None:
            lines.append(
                f"lease locks: {self.forgotten} key(s) of an earlier period under {prefix!r}"
                " deleted; the first sweep checks every held lease"
            )
        if self.locks is not None:
            lines.append(f"leases held: {self.locks} locked in Redis under their rows' fences")
        return "".join(f"\n{line}" for line in lines)


def carry(
    db: Database,
    settings: Settings,
    recorded: dict[str, Any] | None,
    leases: LeaseBackend,
    now: Callable[[], datetime],
) -> Carried:
    """Before ``settings`` are recorded over ``recorded``: when the lock store changes,
    the old one's lock ends carried into the rows (Redis before), the new one's keys of an
    earlier period forgotten (a lock left there refused the item it named) and the held
    leases locked in it (Redis after: ``leases``, this process's backend)."""
    carried = Carried()
    if recorded is None:
        return carried
    from .. import deployment  # the record's own comparison

    changed = deployment.differences(deployment.shared(settings), recorded)
    if not any(difference.name in LOCK_STORE for difference in changed):
        return carried
    if recorded.get("lease_backend") == "redis":
        from .factory import build_lease_backend

        earlier = dataclasses.replace(
            settings,
            lease_backend="redis",
            redis_prefix=recorded.get("redis_prefix", settings.redis_prefix),
            redis_cluster=bool(recorded.get("redis_cluster", settings.redis_cluster)),
        )
        try:
            old = build_lease_backend(earlier)
            assert old.lock is not None
            carried.rows = into_rows(db, old.lock)
        except WorkManagerError as exc:  # Redis away: the rows' expiries stay as they were
            carried.unread = exc.message
    if settings.lease_backend == "redis" and leases.lock is not None:
        carried.forgotten = leases.forget_locks()
        carried.locks = into_locks(db, leases.lock, now())
    return carried
