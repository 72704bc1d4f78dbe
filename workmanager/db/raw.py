"""Raw psycopg connections from the engine's pool, for the PostgreSQL hot paths.

The agent hot paths (see :mod:`workmanager.services.hotpath`) send hand-written SQL
straight to psycopg: a statement through SQLAlchemy costs more Python than its round trip
to a local PostgreSQL. The connections are the engine's own pooled ones, borrowed in
autocommit mode so that one statement is one transaction and one round trip; several
statements are sent in a pipeline between an explicit ``BEGIN`` and ``COMMIT``.

Errors are mapped as :meth:`Database.transaction` maps them (unreachable server → 503,
unstorable value → 422), and a deadlock victim is run again as :meth:`Database.run`
does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pgerrors
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb
from sqlalchemy import JSON, Engine, Table

from ..errors import SchemaOutdated, Unavailable, ValidationFailed
from .ddl import HOT_PATH_SIGNATURES_V1
from .session import mark_lost

T = TypeVar("T")
Conn = psycopg.Connection[Any]

_RETRYABLE = (pgerrors.DeadlockDetected, pgerrors.SerializationFailure)


class RawPostgres:
    """Borrows psycopg connections from a PostgreSQL engine's pool."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def connection(self) -> Iterator[Conn]:
        """A pooled connection in autocommit mode; rolled back and returned afterwards.

        A connection left in a transaction by an error is rolled back before it goes back
        to the pool; one that is broken is discarded.
        """
        try:
            fairy = self.engine.raw_connection()
        except Exception as exc:  # pool checkout runs the connect and the ping
            raise Unavailable(f"database unavailable: {exc}") from exc
        conn: Conn = fairy.driver_connection  # type: ignore[assignment]
        conn.autocommit = True
        healthy = lost = False
        try:
            yield conn
            healthy = True
        except pgerrors.DataError as exc:
            healthy = _reset(conn)
            raise ValidationFailed(
                [{"path": "$", "message": str(exc).splitlines()[0], "validator": "storable"}],
                "a value cannot be stored",
            ) from exc
        except pgerrors.UndefinedFunction as exc:
            healthy = _reset(conn)
            if not (healthy and _functions_missing(conn)):
                raise  # another 42883 (an operator, a mistyped argument): a bug
            raise SchemaOutdated(  # a function of a newer migration (db/ddl.py)
                f"the database schema is older than this code ({exc.diag.message_primary});"
                " run `workmanager db upgrade`"
            ) from exc
        except psycopg.OperationalError as exc:
            healthy = _reset(conn)
            if isinstance(exc, _RETRYABLE):
                raise
            lost = not healthy
            raise Unavailable(f"database unavailable: {exc}") from exc
        except BaseException:
            healthy = _reset(conn)
            raise
        finally:
            if healthy:
                conn.autocommit = False
                fairy.close()
            else:
                fairy.invalidate()
            if lost:
                # The server went away (restart, failover): every connection pooled before
                # now is pinged at its next checkout and replaced if dead, rather than each
                # failing one more request (lazily, as SQLAlchemy invalidates on a
                # disconnect; emptying the pool would break its size accounting).
                mark_lost(self.engine)

    def run(self, fn: Callable[[Conn], T], attempts: int = 4) -> T:
        """Run ``fn`` on a connection, again when PostgreSQL aborted its transaction as a
        deadlock victim or serialization failure (it changed nothing then)."""
        for attempt in range(1, attempts + 1):
            try:
                with self.connection() as conn:
                    return fn(conn)
            except _RETRYABLE as exc:
                if attempt == attempts:
                    raise Unavailable(f"database contention, try again: {exc}") from exc
                time.sleep(0.005 * attempt)
        raise AssertionError("unreachable")


def _reset(conn: Conn) -> bool:
    """Roll back whatever the failed call left open; False when the connection is broken."""
    if conn.closed or conn.broken:
        return False
    try:
        if conn.info.transaction_status != TransactionStatus.IDLE:
            conn.execute("ROLLBACK")
    except psycopg.Error:
        return False
    return conn.info.transaction_status == TransactionStatus.IDLE


def _functions_missing(conn: Conn) -> bool:
    """Whether a function of :mod:`.ddl` is missing, asked of the catalog (the error's
    text is translated under a non-English ``lc_messages``, and "does not exist" is also
    what a call with mistyped arguments gets)."""
    missing = " OR ".join(["to_regprocedure(%s) IS NULL"] * len(HOT_PATH_SIGNATURES_V1))
    try:
        row = conn.execute(f"SELECT {missing}", HOT_PATH_SIGNATURES_V1).fetchone()
    except psycopg.Error:
        return False
    return bool(row and row[0])


def utc_row(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with its datetimes in UTC, as the ORM gives them (psycopg returns them in
    the session's time zone). Changes and returns the same dict."""
    for key, value in row.items():
        if isinstance(value, datetime):
            row[key] = value.astimezone(UTC)
    return row


class AuditColumns:
    """The columns of an audit table (events, provenance) the hot paths write, as SQL
    placeholders ``%(p_<column>)s`` and as the matching parameters (JSON wrapped)."""

    def __init__(self, table: Table, *, skip: tuple[str, ...] = ("id", "order_id", "item_id")):
        self.names = [c.name for c in table.columns if c.name not in skip]
        self.json = {c.name for c in table.columns if isinstance(c.type, JSON)}

    @property
    def sql_names(self) -> str:
        return ", ".join(self.names)

    @property
    def sql_values(self) -> str:
        return ", ".join(
            f"%(p_{c})s::jsonb" if c in self.json else f"%(p_{c})s" for c in self.names
        )

    def params(self, row: dict[str, Any]) -> dict[str, Any]:
        return {
            f"p_{c}": Jsonb(row[c]) if c in self.json and row[c] is not None else row[c]
            for c in self.names
        }
