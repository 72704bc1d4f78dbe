"""The hot paths' own pool of psycopg connections, kept in autocommit mode.

The hot paths (:mod:`workmanager.db.raw`) first borrowed the engine's pooled connections.
A borrow through SQLAlchemy's pool (its connection record, reset-on-return, events) and
the switch to autocommit and back cost ~65 µs of client CPU per checkout → submit cycle,
~7 % of its time (measured in-process, A/B in alternating rounds); this pool costs under
a microsecond per borrow.

What it keeps from SQLAlchemy's ``QueuePool``, as the ORM's connections behave:

* **fail fast**: a new connection is made in the caller's thread, so a server that is
  down is an error at once (a 503), not a wait. psycopg_pool connects in background
  workers and makes the caller wait its whole timeout instead; its threads do not
  survive a fork either.
* **bounded**: at most ``max_size`` connections are lent at once; a caller beyond that
  waits up to ``timeout`` seconds, then gets :class:`~workmanager.errors.Unavailable`.
  ``max_idle`` are kept between uses for good; a connection beyond them is kept while
  load keeps using it and closed once it sat unused for ``trim_after`` seconds (checked
  as connections come back). Closing it at once, as ``QueuePool`` closes its overflow,
  made a server with more concurrent requests than ``max_idle`` connect afresh on
  almost every request (16 HTTP clients against 10 kept: checkout at 22-27 % of
  ``/healthz``, 32-34 % with the extra connections kept; ``docs/benchmarks.md``).
* **pinged only when it matters**: a connection idle for ``ping_after`` seconds, or
  pooled before the server was last seen going away (``lost_at()``: the engine's mark,
  set by a disconnect on either path), is pinged before it is lent, and replaced if
  dead. One in steady use is proven by its last use.

Unlike ``QueuePool`` (first in, first out unless ``pool_use_lifo``), it lends the most
recently returned connection first: a sequential caller keeps reusing one warm
connection and its prepared statements. A connection that comes back inside a
transaction is closed, never pooled: the next borrower's autocommit statements would
otherwise run inside it.

One pool per process: :class:`~workmanager.db.raw.RawPostgres` builds a new one after a
fork (the parent's connections are left alone; psycopg does not close a connection from
another process).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from ..errors import Unavailable
from .session import needs_ping

Conn = psycopg.Connection[Any]


class RawPool:
    """A bounded LIFO pool of connections made by ``connect`` (autocommit ones)."""

    def __init__(
        self,
        connect: Callable[[], Conn],
        *,
        max_size: int,
        max_idle: int,
        timeout: float,
        ping_after: float,
        trim_after: float = 60.0,
        lost_at: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self._connect = connect
        self._slots = threading.BoundedSemaphore(max_size)
        self._lock = threading.Lock()
        self._idle: list[tuple[Conn, float]] = []  # (connection, returned at)
        self._max_idle = max_idle
        self._timeout = timeout
        self._ping_after = ping_after
        self._trim_after = trim_after
        self._lost_at = lost_at
        self._lent = 0
        self._closed = False

    @property
    def lent(self) -> int:
        """Connections out on loan now."""
        return self._lent

    @property
    def idle(self) -> int:
        """Connections waiting in the pool."""
        return len(self._idle)

    def checkout(self) -> Conn:
        """Lend a connection: an idle one (pinged first if it may be stale) or a new one.
        Every failure gives the slot back."""
        acquired = False
        try:
            acquired = self._slots.acquire(timeout=self._timeout)
            if not acquired:
                raise Unavailable(
                    f"no database connection free after {self._timeout:g} s (hot-path pool full)"
                )
            conn = self._reuse()
            if conn is None:
                conn = self._connect()
            with self._lock:
                self._lent += 1
            return conn
        except BaseException:
            if acquired:
                self._slots.release()
            raise

    def checkin(self, conn: Conn, *, healthy: bool) -> None:
        """Take a lent connection back; one that is not ``healthy``, closed, or still
        inside a transaction is closed instead of pooled."""
        usable = healthy and not conn.closed
        if usable and conn.info.transaction_status != TransactionStatus.IDLE:
            usable = False  # a BEGIN without its COMMIT: its locks go with the connection
        surplus = None
        try:
            with self._lock:
                self._lent -= 1
                kept = usable and not self._closed
                now = time.monotonic()
                if kept:
                    self._idle.append((conn, now))
                idle = self._idle
                if len(idle) > self._max_idle and now - idle[0][1] > self._trim_after:
                    surplus = idle.pop(0)[0]  # the longest unused: load no longer needs it
        finally:
            self._slots.release()
        if not kept:
            _close(conn)
        if surplus is not None:
            _close(surplus)

    def close(self) -> None:
        """Close the idle connections; lent ones are closed as they come back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            _close(conn)

    def _reuse(self) -> Conn | None:
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn, since = self._idle.pop()
            if not needs_ping(since, self._lost_at(), self._ping_after):
                return conn
            try:
                conn.execute("SELECT 1")
                return conn
            except psycopg.Error:
                _close(conn)  # dead: try the next one, or connect afresh


def _close(conn: Conn) -> None:
    with contextlib.suppress(psycopg.Error):
        conn.close()
