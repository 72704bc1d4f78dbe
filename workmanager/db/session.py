"""The engine and transactions. One :class:`Database` per WorkManager, built from settings."""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    DisconnectionError,
    NoSuchModuleError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from .. import events
from ..errors import ConfigurationError, Contention, DatabaseMissing, Unavailable
from ..saying import one_line
from . import claims, driver_errors, pending

T = TypeVar("T")
#: What :class:`DatabaseMissing` suggests (only some processes create the file:
#: :meth:`Database.allow_create`).
CREATE_HINT = (
    "run `workmanager db upgrade` to create it, or point WORK_MANAGER_DATABASE_URL at an"
    " existing database"
)


#: How long a SQLite connection waits for another's write lock before "database is locked".
SQLITE_BUSY_MS = 30_000


def sqlite_file(url: str) -> str | None:
    """The absolute path of a file-based SQLite URL (None: a server, or in memory)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return os.path.abspath(parsed.database or "")


def display_url(url: str) -> str:
    """``url`` for people: the password masked, a SQLite path made absolute."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return url  # not a URL: nothing to mask
    path = sqlite_file(url)
    if path is not None:
        parsed = parsed.set(database=path)
    secret = {k: "MASKED" for k in parsed.query if k.lower() in _SECRET_OPTIONS}
    if secret:  # libpq also takes the password as an option: ?password=...
        parsed = parsed.update_query_dict(secret)
    return parsed.render_as_string(hide_password=True).replace("=MASKED", "=***")


#: URL options that hold a secret (libpq's ``password``; ``sslpassword`` for a key).
_SECRET_OPTIONS = frozenset({"password", "sslpassword"})


def _sqlite_engine(url: str) -> Engine:
    parsed = make_url(url)
    memory = parsed.database in (None, "", ":memory:")
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": 30}}
    if memory:
        kwargs["poolclass"] = StaticPool
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin (see _on_begin).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            # the WAL shrinks back to this once checkpointed: without a limit it kept the
            # size of its busiest moment for good (800 MB beside a 150 MB database after
            # an `ops prune` under traffic)
            cursor.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Every transaction takes the write lock up front, so concurrent writers queue on
        # busy_timeout instead of failing a lock upgrade half-way ("database is locked");
        # but a connection that only reads (a probe) begins deferred: under WAL a reader
        # never waits for a writer (a 2 s write made /readyz say "database down")
        read_only = conn.get_execution_options().get(READS_ONLY)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


#: Execution option of a connection that only reads (:meth:`Database.reading`).
READS_ONLY = "workmanager_reads_only"
#: Bytes an SQLite WAL file is truncated to when a checkpoint resets it.
WAL_SIZE_LIMIT = 64 * 1024 * 1024
#: A pooled connection idle longer than this is pinged before it is handed out again.
PING_AFTER_IDLE_SECONDS = 2.0
#: The engine's pool (and the hot paths' own, :mod:`.rawpool`): connections kept idle,
#: more lent at once beyond those, and how long a caller waits for one when all are out.
POOL_SIZE = 10
MAX_OVERFLOW = 20
POOL_TIMEOUT = 30.0
#: Seconds a new PostgreSQL connection may take (libpq's ``connect_timeout``, unless the
#: URL names one): a server that is frozen accepts the TCP connection and never answers,
#: and a process starting then (``serve``, a worker) waited as long as the freeze.
CONNECT_TIMEOUT_SECONDS = 10


def connect_args(url: str | URL) -> dict[str, Any]:
    """The driver arguments every connection to ``url`` gets (both pools)."""
    if "connect_timeout" in make_url(url).query:
        return {}
    return {"connect_timeout": CONNECT_TIMEOUT_SECONDS}


#: When each engine last saw its server go away (time.monotonic()).
_LOST: weakref.WeakKeyDictionary[Engine, float] = weakref.WeakKeyDictionary()


def mark_lost(engine: Engine) -> None:
    """The server of ``engine`` went away: ping every connection returned to the pool
    before now at its next checkout (a dead one is replaced), not only the idle ones —
    in the engine's pool and in the hot paths' (:mod:`.rawpool`)."""
    _LOST[engine] = time.monotonic()


def lost_at(engine: Engine) -> float:
    """When ``engine``'s server was last seen going away (``time.monotonic()``; 0: never)."""
    return _LOST.get(engine, 0.0)


def needs_ping(since: float, lost: float, ping_after: float = PING_AFTER_IDLE_SECONDS) -> bool:
    """Whether a connection pooled at ``since`` is pinged before it is lent again: it sat
    idle ``ping_after`` seconds or more, or the server went away (at ``lost``) after it
    was pooled. One in steady use is proven by its last use. Both pools follow this."""
    return time.monotonic() - since >= ping_after or since <= lost


def _server_engine(url: str) -> Engine:
    engine = create_engine(
        url,
        pool_size=POOL_SIZE,
        max_overflow=MAX_OVERFLOW,
        pool_timeout=POOL_TIMEOUT,
        connect_args=connect_args(url),
    )

    # Pessimistic disconnect handling, but only for connections that sat idle: a ping on
    # every checkout (``pool_pre_ping``) is one more round trip per transaction, as much as
    # a hot-path statement costs. A connection in steady use is proven by its last use; one
    # that broke in between fails its transaction with a 503 and is discarded.
    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "handle_error")
    def _on_error(context: Any) -> None:
        # A disconnect seen through the ORM: SQLAlchemy replaces its own pool's
        # connections; the mark makes the hot paths' pool ping its idle ones too.
        if context.is_disconnect:
            mark_lost(engine)

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None:
            return  # a new connection
        if not needs_ping(since, lost_at(engine)):
            return
        try:
            cursor = dbapi_conn.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
            dbapi_conn.rollback()
        except Exception as exc:
            raise DisconnectionError(str(exc)) from exc  # the pool reconnects and retries

    return engine


def make_engine(url: str) -> Engine:
    """The engine for ``url``; a URL SQLAlchemy cannot use is a :class:`ConfigurationError`."""
    try:
        parsed: URL = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            engine = _sqlite_engine(url)
        else:
            engine = _server_engine(url)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise ConfigurationError(
            f"WORK_MANAGER_DATABASE_URL: cannot use {display_url(url)!r}: {exc}",
            hint="expected sqlite:///path/to/file.db or postgresql+psycopg://user@host/name",
        ) from exc
    _ENGINES.add(engine)
    return engine


#: Every engine of this process, so that a forked child starts with empty pools.
_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def _forget_parents_connections() -> None:
    """In a forked child (Celery's prefork pool, the beat ``worker -B`` forks, any
    ``os.fork``): drop the pooled connections inherited from the parent without closing
    them, which are the parent's still. Two processes on one connection interleaved their
    statements ("another command is already in progress", "connection socket closed").
    The raw pools check their process themselves (:mod:`.raw`)."""
    for engine in list(_ENGINES):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_parents_connections)


class Database:
    """Owns the engine; hands out sessions in transactions."""

    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine or make_engine(url)
        #: The SQLite file (None: a server, or in memory). A connection never creates it
        #: unless :meth:`allow_create` was called: a command run in the wrong directory or
        #: before ``workmanager db upgrade`` says so instead of leaving an empty database.
        self.file = sqlite_file(url)
        self.may_create = False
        if self.file is not None:
            event.listen(self.engine, "do_connect", self._refuse_missing_file)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        #: sessions that only read (the probes, ``ops check``'s counts): on SQLite their
        #: transactions begin deferred (:data:`READS_ONLY`), never behind a writer's lock
        self._reader = self.engine.execution_options(**{READS_ONLY: True})
        self._read_sessions = sessionmaker(self._reader, expire_on_commit=False)
        claims.install(self._sessions)  # first: it reads the rows pending writes out
        pending.install(self._sessions)
        from .raw import RawPostgres  # it imports this module

        #: Raw psycopg connections for the PostgreSQL hot paths (:mod:`.raw`): one pool,
        #: made on first use, shared by every hot path of this database.
        self.raw = RawPostgres(self.engine)

    def _refuse_missing_file(self, *_: Any) -> None:
        if not self.may_create and self.file and not os.path.exists(self.file):
            raise DatabaseMissing(f"no database at {self.file}", hint=CREATE_HINT)

    def allow_create(self) -> None:
        """Let connections create the SQLite file (and its directory) when missing: only
        ``workmanager db upgrade``, ``create_all`` and the demo ask for a new database."""
        self.may_create = True
        if self.file is not None:
            os.makedirs(os.path.dirname(self.file), exist_ok=True)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on any error.

        Driver-level connection failures become :class:`Unavailable` (HTTP 503). The first
        one that writes while an idempotency claim is active marks its key committed
        before the COMMIT (:mod:`.claims`).
        """
        session = self._sessions()
        # listeners hear its commit once its connection is back in the pool
        with events.holding():
            try:
                with unavailable_when_down(self.url), session.begin():
                    yield session
            finally:
                session.close()

    @contextmanager
    def reads(self) -> Iterator[Session]:
        """A session that only reads, in one transaction that (on SQLite) never waits
        for a writer: what a probe reads while a slow write holds the lock."""
        session = self._read_sessions()
        try:
            with unavailable_when_down(self.url), session.begin():
                yield session
        finally:
            session.close()

    def run(self, fn: Callable[[Session], T], attempts: int = 4) -> T:
        """Run ``fn`` in a transaction, again when the database aborted it as a deadlock
        victim or serialization failure (it changed nothing then)."""
        for attempt in range(1, attempts + 1):
            try:
                with self.transaction() as session:
                    return fn(session)
            except Contention:  # translated by unavailable_when_down
                if attempt == attempts:
                    raise
                time.sleep(0.005 * attempt)
        raise AssertionError("unreachable")

    def create_all(self) -> None:
        """Create the tables directly (tests); production uses ``workmanager db upgrade``.
        The schema is the migrations' head and is recorded as such (``models._record_head``),
        so the start-up and ``/readyz`` check (:func:`.migrate.require_head`) passes on it."""
        from .models import Base

        self.allow_create()
        Base.metadata.create_all(self.engine)

    def drop_all(self) -> None:
        from .models import Base

        Base.metadata.drop_all(self.engine)

    def reading(self) -> Connection:
        """A connection that only reads (the probes), as :meth:`reads`' sessions."""
        return self._reader.connect()

    def ping(self) -> None:
        """The database answers, and (PostgreSQL) takes writes: a standby, or a server
        set read-only, answers every read and refuses every change."""
        probe = "SELECT 1"
        if self.is_postgres:
            probe = "SELECT current_setting('transaction_read_only')"
        try:
            with unavailable_when_down(self.url), self.reading() as conn:
                answer = conn.exec_driver_sql(probe).scalar()
        except DBAPIError as exc:  # a probe: any driver error means "not ready"
            raise Unavailable(f"database unavailable: {one_line(exc.orig)}") from exc
        if answer == "on":
            state, hint = driver_errors.SERVER_STATES["25006"]
            raise Unavailable(f"database unavailable: {state}", hint=hint)

    def dispose(self) -> None:
        self.raw.close()
        self.engine.dispose()


@contextmanager
def unavailable_when_down(url: str = "") -> Iterator[None]:
    """The one place the ORM's driver errors about the database itself become
    :class:`Unavailable` (HTTP 503 with ``Retry-After``, a retry for Celery tasks): the
    server unreachable or gone, the database missing (:class:`DatabaseMissing`), its
    tables missing or older than the code (:class:`SchemaOutdated`), and the engine's pool
    exhausted (every connection lent out past ``POOL_TIMEOUT``); a value it cannot store
    becomes :class:`ValidationFailed`. The rules are :mod:`.driver_errors`', which the
    PostgreSQL store's connections (:mod:`.raw`) use too. ``url`` is named in hints."""
    try:
        yield
    except PoolTimeout as exc:
        raise Unavailable(
            "database busy: no pooled connection was free in time, try again"
        ) from exc
    except DBAPIError as exc:
        error = driver_errors.translate(
            exc.orig or exc,
            display_url(url) if url else "the database",
            data_error=isinstance(exc, DataError),
            operational=isinstance(exc, OperationalError),
            invalidated=exc.connection_invalidated,
        )
        if error is None:
            raise
        raise error from exc
