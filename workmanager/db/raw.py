"""Raw psycopg connections for the PostgreSQL hot paths.

The agent and control-plane hot paths (see :mod:`workmanager.db.postgres`) send
hand-written SQL straight to psycopg: a statement through SQLAlchemy costs more Python
than its round trip to a local PostgreSQL. Their connections come from a pool of their
own (:mod:`.rawpool`), kept in autocommit mode, so that one statement is one transaction
and one round trip; several statements are sent in a pipeline between an explicit
``BEGIN`` and ``COMMIT``. They are made from the engine's URL and type adapters (same
server, same adapters as the ORM's connections).

Errors are translated by :mod:`.driver_errors`, as the ORM's are (unreachable server →
503, unstorable value → 422, missing tables → ``schema_outdated``), and a deadlock victim
is run again as :meth:`Database.run` does.
"""

from __future__ import annotations

import os
import threading
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

from .. import events
from ..errors import Contention, SchemaOutdated, WorkManagerError
from . import driver_errors
from .rawpool import RawPool
from .session import (
    MAX_OVERFLOW,
    PING_AFTER_IDLE_SECONDS,
    POOL_SIZE,
    POOL_TIMEOUT,
    connect_args,
    display_url,
    lost_at,
    mark_lost,
)
from .sql import function_signatures

T = TypeVar("T")

#: A connection beyond ``POOL_SIZE`` unused this long is closed (:class:`RawPool`).
TRIM_AFTER_SECONDS = 60.0

Conn = psycopg.Connection[Any]


class RawPostgres:
    """Lends psycopg connections to the hot paths, from a pool of their own.

    Sized as the engine's pool (``POOL_SIZE`` kept idle for good, up to ``POOL_SIZE +
    MAX_OVERFLOW`` lent and kept while load uses them, ``TRIM_AFTER_SECONDS``), so a
    process may hold up to twice that many connections when both are busy. Built on
    first use in each process (a fork gets a pool of its own). Its connections are made
    from the engine's URL (host, database, user, query options such as ``sslmode``) and
    type adapters (``dialect.create_connect_args``); ``connect_args`` or a ``creator``
    given to a hand-built engine do not reach them.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._pool: RawPool | None = None
        self._pid = 0
        #: The database as hints name it (its password masked).
        self._where = display_url(engine.url.render_as_string(hide_password=False))

    @property
    def pool(self) -> RawPool:
        pool, pid = self._pool, self._pid
        if pool is not None and pid == os.getpid():
            return pool
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                self._pool, self._pid = self._new_pool(), os.getpid()
            return self._pool

    def _new_pool(self) -> RawPool:
        args, kwargs = self.engine.dialect.create_connect_args(self.engine.url)
        kwargs = {**connect_args(self.engine.url), **kwargs}

        def connect() -> Conn:
            return psycopg.connect(*args, **{**kwargs, "autocommit": True})

        return RawPool(
            connect,
            max_size=POOL_SIZE + MAX_OVERFLOW,
            max_idle=POOL_SIZE,
            trim_after=TRIM_AFTER_SECONDS,
            timeout=POOL_TIMEOUT,
            ping_after=PING_AFTER_IDLE_SECONDS,
            lost_at=lambda: lost_at(self.engine),
        )

    def close(self) -> None:
        """Close the idle connections of this process's pool (as ``engine.dispose()``)."""
        with self._lock:
            pool, pid, self._pool = self._pool, self._pid, None
        if pool is not None and pid == os.getpid():
            pool.close()

    @contextmanager
    def connection(self) -> Iterator[Conn]:
        """A pooled connection in autocommit mode, back in the pool afterwards; the
        event listeners hear what its statements committed once it is back
        (:func:`workmanager.events.holding`).

        A connection left in a transaction by an error is rolled back before it goes back
        to the pool; one that is broken is closed.
        """
        with events.holding(), self._lent() as conn:
            yield conn

    @contextmanager
    def _lent(self) -> Iterator[Conn]:
        pool = self.pool
        try:
            conn = pool.checkout()  # gives its slot back on any failure
        except psycopg.OperationalError as exc:  # a new connection could not be made
            refused = _translated(exc, self._where, invalidated=True)
            if refused is None:
                raise
            raise refused from exc
        healthy = lost = False
        try:
            yield conn
            healthy = True
        except pgerrors.UndefinedFunction as exc:
            healthy = _reset(conn)
            if not (healthy and _functions_missing(conn, str(exc))):
                raise  # another 42883 (an operator, a mistyped argument): a bug
            raise SchemaOutdated(  # a function of db/sql/functions.sql
                f"the database schema is older than this code ({exc.diag.message_primary});"
                " run `workmanager db upgrade`"
            ) from exc
        except psycopg.Error as exc:
            healthy = _reset(conn)
            lost = isinstance(exc, psycopg.OperationalError) and not healthy
            error = _translated(exc, self._where, invalidated=not healthy)
            if error is None:
                raise  # not the database's state nor the caller's value: a bug
            raise error from exc
        except BaseException:
            healthy = _reset(conn)
            raise
        finally:
            pool.checkin(conn, healthy=healthy)
            if lost:
                # The server went away (restart, failover): every connection pooled before
                # now, here and in the engine's pool, is pinged before it is lent again and
                # replaced if dead, rather than each failing one more request.
                mark_lost(self.engine)

    def run(self, fn: Callable[[Conn], T], attempts: int = 4) -> T:
        """Run ``fn`` on a connection, again when PostgreSQL aborted its transaction as a
        deadlock victim or serialization failure (it changed nothing then)."""
        for attempt in range(1, attempts + 1):
            try:
                with self.connection() as conn:
                    return fn(conn)
            except Contention:  # a deadlock victim, a serialization failure, a lock timeout
                if attempt == attempts:
                    raise
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


def _functions_missing(conn: Conn, message: str) -> bool:
    """Whether the error ``message`` names a function of ``db/sql/functions.sql`` that the catalog
    says is missing. The catalog is asked (``to_regprocedure``) because "does not exist"
    is also what a call with mistyped arguments gets; the name is looked for in the
    message because that is what failed (identifiers are not translated under a
    non-English ``lc_messages``; the surrounding text is). So on a schema that lacks only
    a newer function, another error is still raised as the bug it is."""
    signatures = function_signatures()
    checks = ", ".join(["to_regprocedure(%s) IS NULL"] * len(signatures))
    try:
        row = conn.execute(f"SELECT {checks}", signatures).fetchone()
    except psycopg.Error:
        return False
    if row is None:
        return False
    missing = [sig.split("(")[0] for sig, gone in zip(signatures, row, strict=True) if gone]
    return any(name in message for name in missing)


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


def _translated(exc: psycopg.Error, where: str, invalidated: bool) -> WorkManagerError | None:
    """psycopg's error as the project's (:func:`.driver_errors.translate`, the one set of
    rules; ``where``: the database's URL for hints): its ``OperationalError`` is always
    the connection's or the server's."""
    operational = isinstance(exc, psycopg.OperationalError)
    return driver_errors.translate(
        exc,
        where,
        data_error=isinstance(exc, pgerrors.DataError),
        operational=operational,
        invalidated=invalidated,
        outage=operational,
    )
