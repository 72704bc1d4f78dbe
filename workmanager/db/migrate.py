"""``workmanager db upgrade``: Alembic migrations with the scripts shipped in the package,
and the one check that a database's schema is at their head (:func:`require_head`)."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import RootTransaction
from sqlalchemy.exc import DBAPIError

from ..errors import ConfigurationError, SchemaBehind, Unavailable
from . import driver_errors, sql
from .session import Database, display_url, unavailable_when_down

MIGRATIONS = Path(__file__).with_name("migrations")
UPGRADE = "run `workmanager db upgrade`"
#: Where Alembic records the revision (its default name, as the migrations' env.py uses).
VERSION_TABLE = "alembic_version"
#: A table every revision has: a database holding it is workmanager's.
TABLE = "work_orders"
#: The PostgreSQL advisory lock an upgrade holds for its transaction ("wm-migr").
UPGRADE_LOCK = 0x776D2D6D69677200
#: The trigger ``functions.sql`` puts on :data:`TABLE` (the audit rows' cascade).
AUDIT_TRIGGER = "work_orders_delete_audit"
log = logging.getLogger("workmanager.db")


def alembic_config(db: Database) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    return cfg


#: How long one statement of an upgrade waits for a table lock on PostgreSQL, and how
#: many times the upgrade is tried when it waited that long or was a deadlock's victim.
#: Without a limit it queued behind a long reader (a dump, a report) while every request
#: touching the table queued behind it (a propose took 39 s), or died with a traceback.
LOCK_TIMEOUT = "5s"
ATTEMPTS = 6
#: A deadlock, or a lock not granted within LOCK_TIMEOUT: the upgrade rolled back whole.
CONTENDED = frozenset({"40P01", "55P03"})


def upgrade(db: Database, revision: str = "head") -> None:
    """Create or migrate the schema; running it again changes nothing. A database at a
    revision these scripts do not know is left as it is: newer code migrated it (a rolling
    deploy's older processes may run their upgrade), as :func:`require_head` accepts it.
    On PostgreSQL the chain is one transaction, tried again when tables in use held it
    up (:data:`CONTENDED`); past :data:`ATTEMPTS` it is :class:`Unavailable`, nothing
    changed."""
    db.allow_create()  # the one command that asks for a new database
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with _server_refusals(db):
                made = _upgrade(db, revision)
            if made:  # said once it committed (an attempt rolled back made nothing)
                log.warning("recreated what the schema lacked: %s", ", ".join(made))
            return
        except DBAPIError as exc:
            if driver_errors.sqlstate(exc.orig or exc) not in CONTENDED:
                raise
            if attempt == ATTEMPTS:
                raise Unavailable(
                    f"the upgrade of {display_url(db.url)} waited on tables in use {ATTEMPTS}"
                    f" times ({str(exc.orig or exc).splitlines()[0]}); nothing was changed",
                    hint="run it again; a long transaction (a dump, a report) may hold the"
                    " tables: see pg_stat_activity",
                ) from exc
            time.sleep(attempt)
    raise AssertionError("unreachable")


def _upgrade(db: Database, revision: str) -> list[str]:
    cfg = alembic_config(db)
    with _connected(db) as connection, _begun(db, connection):
        if connection.dialect.name == "postgresql":
            # Upgrades started at once (every web host's ExecStartPre, a Job beside an
            # init container) take turns: the next one finds the head recorded and does
            # nothing, where both creating alembic_version made one fail on its key.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": UPGRADE_LOCK})
            connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        recorded = MigrationContext.configure(connection).get_current_heads()
        _check_owner(connection, recorded, display_url(db.url))
        if any(not known(r) for r in recorded):
            return []
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)
        if revision == "head":
            return _restore_objects(connection)
        return []


def _missing_objects(connection: Connection) -> list[str]:
    """PostgreSQL: the functions and the trigger of ``functions.sql`` the database lacks
    (a restore of its tables alone, ``pg_dump -t``, leaves them out, and every checkout
    then failed while every check said the schema was at head); none elsewhere."""
    if connection.dialect.name != "postgresql":
        return []
    signatures = [s.signature for s in sql.sections("functions.sql") if s.signature]
    gone = [f"to_regprocedure(:f{n}) IS NULL" for n in range(len(signatures))]
    gone.append("NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = :t AND NOT tgisinternal)")
    values = {f"f{n}": signature for n, signature in enumerate(signatures)} | {"t": AUDIT_TRIGGER}
    row = connection.execute(text(f"SELECT {', '.join(gone)}"), values).one()
    names = [*signatures, f"trigger {AUDIT_TRIGGER}"]
    return [name for name, missing in zip(names, row, strict=True) if missing]


def _restore_objects(connection: Connection) -> list[str]:
    """At head: make what :func:`_missing_objects` finds missing, as the head defines it
    (``functions.sql``, which a test holds equal to what the migrations make), each
    section whose object is gone and no other: a function's ``CREATE OR REPLACE`` locks
    no table, where dropping the trigger to make it again locked ``work_orders`` while
    requests waited. Returns what was missing."""
    missing = _missing_objects(connection)
    trigger = f"trigger {AUDIT_TRIGGER}"
    for section in sql.sections("functions.sql"):
        if section.signature in missing or (section.name == AUDIT_TRIGGER and trigger in missing):
            connection.exec_driver_sql(section.sql)
    return missing


def _check_owner(connection: Connection, recorded: Sequence[str], where: str) -> None:
    """Refuse a database whose recorded revision and tables do not go together: another
    application's Alembic revision over no workmanager table, or workmanager's tables with
    no revision (restored without ``alembic_version``, or made by an old ``create_all``),
    where the first migration failed on a table that exists, in two tracebacks."""
    ours = inspect(connection).has_table(TABLE)
    foreign = [r for r in recorded if not known(r)]
    if foreign and not ours:
        raise ConfigurationError(
            f"{where} is another application's: its {VERSION_TABLE} records revision"
            f" {', '.join(foreign)}, and it has no workmanager table",
            hint="give workmanager a database of its own (WORK_MANAGER_DATABASE_URL)",
        )
    if not recorded and ours:
        raise ConfigurationError(
            f"{where} has workmanager's tables but no recorded migration ({VERSION_TABLE}"
            " is missing: restored without it, or made by an old create_all)",
            hint=f"restore {VERSION_TABLE} with the tables (pg_dump -t 'work_*' -t"
            f" {VERSION_TABLE}, then `workmanager db upgrade` makes the functions such a"
            " dump leaves out), or restore into an empty database and run `workmanager db"
            " upgrade` there first",
        )


def known(revision: str) -> bool:
    """Whether ``revision`` is one of the package's migrations."""
    try:
        return scripts().get_revision(revision) is not None
    except CommandError:  # not one of ours: newer code migrated the database
        return False


def current(db: Database) -> str | None:
    with _connected(db) as connection:
        return MigrationContext.configure(connection).get_current_revision()


@contextmanager
def _server_refusals(db: Database) -> Iterator[None]:
    """What the server says of itself or of the role while migrating (read-only, a
    privilege missing, no schema on the search path: ``driver_errors.SERVER_STATES``) is
    one line with its hint, as for every other command; a traceback named none of it."""
    try:
        yield
    except DBAPIError as exc:
        error = driver_errors.translate(exc.orig or exc, display_url(db.url))
        if driver_errors.sqlstate(exc.orig or exc) in driver_errors.SERVER_STATES and error:
            raise error from exc
        raise


def _connected(db: Database) -> Connection:
    """A connection; a server down or a database missing is :class:`Unavailable` with
    its hint (one line from the CLI), as for every other command. What goes wrong in a
    migration itself is not translated."""
    with unavailable_when_down(db.url):
        return db.engine.connect()


def _begun(db: Database, connection: Connection) -> RootTransaction:
    """The upgrade's transaction; on SQLite its ``BEGIN IMMEDIATE`` waiting out the busy
    timeout behind another writer is :class:`Unavailable` with its hint (was a traceback)."""
    with unavailable_when_down(db.url):
        return connection.begin()


@functools.cache
def scripts() -> ScriptDirectory:
    """The package's migration scripts (read once per process)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg)


def head() -> str:
    """The latest revision of the package's migrations."""
    return ", ".join(sorted(scripts().get_heads()))


def stamp_head(connection: Connection) -> None:
    """Record the head on a schema built from the models (``create_all``, which builds
    the head's schema), unless a revision is recorded already: a database the migrations
    made keeps its own."""
    context = MigrationContext.configure(connection)
    if not context.get_current_heads():
        context.stamp(scripts(), "head")


def _recorded(db: Database) -> tuple[str, ...]:
    """The revisions recorded in the database (read directly: a ``MigrationContext`` logs
    two INFO lines each time, and ``/readyz`` asks on every probe)."""
    with unavailable_when_down(db.url), db.reading() as connection:
        if not inspect(connection).has_table(VERSION_TABLE):
            return ()
        rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))
        return tuple(str(row[0]) for row in rows)


def require_head(db: Database) -> None:
    """Raise :class:`SchemaBehind` unless the schema is at the migrations' head: the code
    needs every table, column and function of every migration (on PostgreSQL its SQL
    functions), and there is no other path to fall back on. Run at the start of
    ``workmanager serve`` and of Celery workers, and by ``/readyz``.

    A revision these scripts do not know is accepted: newer code migrated the database
    (migrations add what the next code needs; during a rolling deploy the processes of the
    code before keep serving and stay ready). A database that cannot be reached raises
    :class:`~workmanager.errors.Unavailable` as every other use of it does."""
    recorded = _recorded(db)
    latest = scripts().get_heads()
    if set(recorded) == set(latest):
        with unavailable_when_down(db.url), db.reading() as connection:
            missing = _missing_objects(connection)
        if missing:
            raise SchemaBehind(
                f"the schema of {display_url(db.url)} lacks {', '.join(missing)} (restored"
                f" from a dump of its tables alone?); {UPGRADE}"
            )
        return
    where = display_url(db.url)
    with unavailable_when_down(db.url), db.engine.connect() as connection:
        _check_owner(connection, recorded, where)
    if not recorded:
        raise SchemaBehind(f"{where} has no workmanager schema (no migration ran); {UPGRADE}")
    for revision in recorded:
        if known(revision) and revision not in latest:
            raise SchemaBehind(
                f"the schema of {where} is at revision {', '.join(recorded)}, behind this "
                f"code's {head()}; {UPGRADE}"
            )
