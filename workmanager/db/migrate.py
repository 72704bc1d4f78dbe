"""``workmanager db upgrade``: Alembic migrations with the scripts shipped in the package,
and the one check that a database's schema is at their head (:func:`require_head`)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import DBAPIError

from ..errors import SchemaBehind
from . import driver_errors
from .session import Database, display_url, unavailable_when_down

MIGRATIONS = Path(__file__).with_name("migrations")
UPGRADE = "run `workmanager db upgrade`"
#: Where Alembic records the revision (its default name, as the migrations' env.py uses).
VERSION_TABLE = "alembic_version"
#: The PostgreSQL advisory lock an upgrade holds for its transaction ("wm-migr").
UPGRADE_LOCK = 0x776D2D6D69677200


def alembic_config(db: Database) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    return cfg


def upgrade(db: Database, revision: str = "head") -> None:
    """Create or migrate the schema; running it again changes nothing. A database at a
    revision these scripts do not know is left as it is: newer code migrated it (a rolling
    deploy's older processes may run their upgrade), as :func:`require_head` accepts it."""
    cfg = alembic_config(db)
    db.allow_create()  # the one command that asks for a new database
    with _server_refusals(db), _connected(db) as connection, connection.begin():
        if connection.dialect.name == "postgresql":
            # Upgrades started at once (every web host's ExecStartPre, a Job beside an
            # init container) take turns: the next one finds the head recorded and does
            # nothing, where both creating alembic_version made one fail on its key.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": UPGRADE_LOCK})
        recorded = MigrationContext.configure(connection).get_current_heads()
        if any(not known(r) for r in recorded):
            return
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


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
    with unavailable_when_down(db.url), db.engine.connect() as connection:
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
        return
    where = display_url(db.url)
    if not recorded:
        raise SchemaBehind(f"{where} has no workmanager schema (no migration ran); {UPGRADE}")
    for revision in recorded:
        if known(revision) and revision not in latest:
            raise SchemaBehind(
                f"the schema of {where} is at revision {', '.join(recorded)}, behind this "
                f"code's {head()}; {UPGRADE}"
            )
