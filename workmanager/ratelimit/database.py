"""Buckets on the database: ``work_rate_buckets`` (migration 0010).

One statement per bucket, ``INSERT … ON CONFLICT DO UPDATE … RETURNING``, refills and takes
in SQL; the buckets of one call are taken in one transaction, in key order (no deadlock
between two calls), rolled back when any is empty, so nothing is taken then. PostgreSQL
reads its own clock; SQLite takes the process's clock inside its write transaction (every
transaction there begins ``IMMEDIATE``: one writer at a time). The statements run on a
connection of their own, outside the ORM sessions, so they never carry an idempotency
key's mark (:mod:`workmanager.db.claims`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

from sqlalchemy import TextClause, text

from ..db.session import Database, unavailable_when_down
from ..db.sql import queries
from .base import Bucket
from .rules import refill_seconds


def take_sql(postgres: bool) -> str:
    """``rate_take`` (``db/sql/queries.sql``) in the dialect's words."""
    if postgres:
        now = "CAST(extract(epoch FROM clock_timestamp()) AS DOUBLE PRECISION)"
        return queries.template("rate_take", now=now, least="least", greatest="greatest")
    return queries.template("rate_take", now="%(now)s", least="min", greatest="max")


class _Refused(Exception):
    def __init__(self, wait: float) -> None:
        self.wait = wait


class DatabaseBucketStore:
    """Token buckets in ``work_rate_buckets`` (PostgreSQL or SQLite)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # SQLAlchemy's placeholders (``:name``) for psycopg's
        self._take: TextClause = text(re.sub(r"%\((\w+)\)s", r":\1", take_sql(db.is_postgres)))

    def take(self, buckets: Sequence[Bucket]) -> float:
        try:
            with unavailable_when_down(self.db.url), self.db.engine.begin() as conn:
                wait = 0.0
                for bucket in sorted(buckets, key=lambda b: b.key):
                    params = {"key": bucket.key, "capacity": bucket.capacity, "rate": bucket.rate}
                    params["now"] = time.time()  # unused on PostgreSQL
                    left = float(conn.execute(self._take, params).scalar_one())
                    if left < 0:  # it held less than one token (-left short of one)
                        wait = max(wait, -left / bucket.rate)
                if wait > 0:
                    raise _Refused(wait)  # rolls back: nothing taken
        except _Refused as refused:
            return refused.wait
        return 0.0


def purge_full(db: Database) -> int:
    """Delete the buckets untouched long enough to be full again, each by its own
    capacity and rate (:func:`~.rules.refill_seconds`, from its key), plus a margin: a
    missing row is a full bucket, so nothing changes for a caller. Agents come and go (a
    consumer agent's id names its host and pid), and their rows would stay for ever. A
    row touched since it was read stays. The number deleted."""
    now, deleted = time.time(), 0
    with unavailable_when_down(db.url), db.engine.begin() as conn:
        idle = conn.execute(_IDLE, {"cutoff": now - PURGE_MARGIN_SECONDS}).all()
        full = [
            {"key": key, "seen": seen}
            for key, seen in idle
            if seen < now - (refill_seconds(key) or 0.0) - PURGE_MARGIN_SECONDS
        ]
        for start in range(0, len(full), _BATCH):
            found = conn.execute(_PURGE, full[start : start + _BATCH])
            deleted += int(found.rowcount or 0)
    return deleted


#: Beyond the refill time, for the clocks of the database and this process to differ.
PURGE_MARGIN_SECONDS = 300.0
_BATCH = 1000
_IDLE = text("SELECT key, updated_at FROM work_rate_buckets WHERE updated_at < :cutoff")
_PURGE = text("DELETE FROM work_rate_buckets WHERE key = :key AND updated_at = :seen")
